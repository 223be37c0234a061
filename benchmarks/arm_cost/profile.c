/*
 * QEMU TCG plugin: per-block execution counts, and the data-cache misses of one or more boards' cache
 * hierarchies, between two marks inside one guest process (benchmarks/arm_cost/predict.py reads them).
 *
 * Why per block: a block's instructions are costed once (llvm-mca, per board CPU) and weighted by how often it
 * ran, so cycles follow what each instruction costs on that core, not how many there were. A qemu translation
 * block is straight-line code that runs to its end (it stops at the first branch; qemu may cut a basic block into
 * several, or translate one address twice): each is reported with its address and its instruction words.
 * Why marks: the counts between two marks of one process repeat bit for bit, where N vs N + k runs in two
 * processes scatter by ~1 % (allocation, thread start-up, first-run effects land differently).
 * Why a cache simulator of our own rather than qemu's contrib/plugins/cache.c (which this was checked against,
 * benchmarks/README.md): that one reports at exit only (start-up included), simulates one hierarchy per run and
 * has no L3; here every board that shares an emulated core is simulated on the same access stream, between marks.
 *
 * Marks: the guest calls lseek(-1, 0x5EED0000 + n, SEEK_SET) (fails with EBADF, nothing else happens).
 * Arguments:
 *   out=PATH                 where to write (default stderr)
 *   spans=A-B[+C-D...]       count blocks and cache misses between marks A and B (C and D, ...), added up over
 *                            every A ... B stretch until mark B + 1 reports them; the caches are simulated from
 *                            mark A - 1 on, so the guest's warm-up runs between A - 1 and A fill them; the span 0-0
 *                            is the whole process, reported at exit (to check the cache simulation against qemu's
 *                            contrib/plugins/cache.c, which reports the whole process)
 *   cache=NAME:L1:A1:L2:A2:S[:L3:A3]   a hierarchy (sizes in KiB, associativity, 64-byte lines, LRU, write-allocate;
 *                            S = 1 when the L2 is shared by the cores, 0 when private); repeatable
 * Output at each span's report mark B + 1:
 *   span A B
 *   block <pc hex> <n insns> <executions> <word hex>,<word hex>,...      (blocks that ran in the span)
 *   cache <name> <accesses> <L1 misses> <L2 misses> <L3 misses> <L1 misses by writes>
 *   end
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARK_SYSCALL 62 /* lseek on aarch64 Linux */
#define MARK_MAGIC 0x5EED0000u
#define LINE_SHIFT 6
#define MAX_SPANS 32
#define MAX_HIER 8
#define MAX_CPUS 8      /* guest threads beyond this share a core's private caches (index % MAX_CPUS) */

typedef struct Block {
    uint64_t exec;  /* incremented inline each time the block runs */
    uint64_t snap;  /* exec at the current stretch's start */
    uint64_t acc;   /* executions over the span's stretches so far */
    uint64_t pc;
    uint32_t n;
    uint32_t *words;
    struct Block *next;
} Block;

typedef struct {
    uint64_t *tags;  /* sets x ways; 0 = empty, else line + 1 */
    uint64_t *age;   /* LRU stamps */
    uint32_t sets, ways;
    uint64_t clock;
} Cache;

typedef struct {
    char name[32];
    Cache l1[MAX_CPUS], l2[MAX_CPUS], l3;
    int l2_shared, has_l3;
    uint64_t acc, m1, m2, m3, m1w;
} Hier;

static Block *blocks;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *out;
static int span_a[MAX_SPANS], span_b[MAX_SPANS], nspans;
static Hier hier[MAX_HIER];
static int nhier;
static volatile int simulating, counting;

static int cache_init(Cache *c, uint32_t kib, uint32_t ways)
{
    uint32_t lines = kib * 1024 >> LINE_SHIFT;
    if (ways == 0 || lines % ways) {
        return -1;
    }
    c->sets = lines / ways;
    c->ways = ways;
    c->tags = calloc(lines, sizeof(uint64_t));
    c->age = calloc(lines, sizeof(uint64_t));
    return c->tags && c->age ? 0 : -1;
}

/* true on a hit; on a miss the least recently used way takes the line */
static int cache_access(Cache *c, uint64_t line)
{
    uint32_t set = (uint32_t)(line % c->sets);
    uint64_t *tags = c->tags + (uint64_t)set * c->ways, *age = c->age + (uint64_t)set * c->ways;
    uint32_t victim = 0;
    c->clock++;
    for (uint32_t w = 0; w < c->ways; w++) {
        if (tags[w] == line + 1) {
            age[w] = c->clock;
            return 1;
        }
        if (age[w] < age[victim]) {
            victim = w;
        }
    }
    tags[victim] = line + 1;
    age[victim] = c->clock;
    return 0;
}

static void hier_access(Hier *h, unsigned cpu, uint64_t line, int write)
{
    h->acc += counting;
    if (cache_access(&h->l1[cpu], line)) {
        return;
    }
    h->m1 += counting;
    h->m1w += counting && write;
    if (cache_access(h->l2_shared ? &h->l2[0] : &h->l2[cpu], line)) {
        return;
    }
    h->m2 += counting;
    if (h->has_l3 && cache_access(&h->l3, line)) {
        return;
    }
    h->m3 += counting;
}

static void on_mem(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata)
{
    if (!simulating) {
        return;
    }
    unsigned size = 1u << qemu_plugin_mem_size_shift(info);
    int write = qemu_plugin_mem_is_store(info);
    uint64_t first = vaddr >> LINE_SHIFT, last = (vaddr + size - 1) >> LINE_SHIFT;
    pthread_mutex_lock(&lock);
    for (int k = 0; k < nhier; k++) {
        for (uint64_t line = first; line <= last; line++) {
            hier_access(&hier[k], vcpu % MAX_CPUS, line, write);
        }
    }
    pthread_mutex_unlock(&lock);
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    Block *b = calloc(1, sizeof(Block));
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (!b || !(b->words = calloc(n, sizeof(uint32_t)))) {
        abort();
    }
    b->n = (uint32_t)n;
    b->pc = qemu_plugin_tb_vaddr(tb);
    for (size_t k = 0; k < n; k++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, k);
        memcpy(&b->words[k], qemu_plugin_insn_data(insn), sizeof(uint32_t));
        if (nhier) {
            qemu_plugin_register_vcpu_mem_cb(insn, on_mem, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW, NULL);
        }
    }
    pthread_mutex_lock(&lock);
    b->next = blocks;
    blocks = b;
    pthread_mutex_unlock(&lock);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->exec, 1);
}

static void stretch_start(void)
{
    pthread_mutex_lock(&lock);
    for (Block *b = blocks; b; b = b->next) {
        b->snap = __atomic_load_n(&b->exec, __ATOMIC_RELAXED);
    }
    counting = 1;
    pthread_mutex_unlock(&lock);
}

static void stretch_end(void)
{
    pthread_mutex_lock(&lock);
    counting = 0;
    for (Block *b = blocks; b; b = b->next) {
        b->acc += __atomic_load_n(&b->exec, __ATOMIC_RELAXED) - b->snap;
        b->snap = b->exec;
    }
    pthread_mutex_unlock(&lock);
}

static void report(int s)
{
    pthread_mutex_lock(&lock);
    fprintf(out, "span %d %d\n", span_a[s], span_b[s]);
    for (Block *b = blocks; b; b = b->next) {
        if (b->acc == 0) {
            continue;
        }
        fprintf(out, "block %" PRIx64 " %u %" PRIu64 " ", b->pc, b->n, b->acc);
        for (uint32_t k = 0; k < b->n; k++) {
            fprintf(out, k ? ",%08x" : "%08x", b->words[k]);
        }
        fputc('\n', out);
        b->acc = 0;
    }
    for (int k = 0; k < nhier; k++) {
        Hier *h = &hier[k];
        fprintf(out, "cache %s %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", h->name, h->acc, h->m1,
                h->m2, h->m3, h->m1w);
        h->acc = h->m1 = h->m2 = h->m3 = h->m1w = 0;
    }
    fprintf(out, "end\n");
    fflush(out);
    pthread_mutex_unlock(&lock);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    if (!(num == MARK_SYSCALL && a1 == UINT64_MAX && (a2 & 0xFFFF0000u) == MARK_MAGIC && a2 >> 32 == 0)) {
        return;
    }
    int n = (int)(a2 & 0xFFFF);
    for (int s = 0; s < nspans; s++) {
        if (span_a[s] == 0) {
            continue;  /* the whole process: reported at exit */
        } else if (n == span_a[s] - 1 && nhier) {
            simulating = 1;  /* and on from here: what runs between stretches shapes the caches too */
        } else if (n == span_a[s]) {
            stretch_start();
        } else if (n == span_b[s]) {
            stretch_end();
        } else if (n == span_b[s] + 1) {
            report(s);
        }
    }
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    for (int s = 0; s < nspans; s++) {
        if (span_a[s] == 0) {
            stretch_end();
            report(s);
        }
    }
}

static int parse_spans(char *text)
{
    for (char *tok = strtok(text, "+"); tok; tok = strtok(NULL, "+")) {
        if (nspans == MAX_SPANS || sscanf(tok, "%d-%d", &span_a[nspans], &span_b[nspans]) != 2 ||
            span_a[nspans] < 0 || span_b[nspans] < span_a[nspans] || (span_a[nspans] == 0) != (span_b[nspans] == 0) ||
            (span_a[nspans] > 0 && span_b[nspans] == span_a[nspans])) {
            return -1;
        }
        nspans++;
    }
    return 0;
}

static int parse_cache(const char *text)
{
    unsigned l1, a1, l2, a2, shared, l3 = 0, a3 = 0;
    Hier *h = &hier[nhier];
    int got = sscanf(text, "%31[^:]:%u:%u:%u:%u:%u:%u:%u", h->name, &l1, &a1, &l2, &a2, &shared, &l3, &a3);
    if (nhier == MAX_HIER || (got != 6 && got != 8)) {
        return -1;
    }
    for (int c = 0; c < MAX_CPUS; c++) {
        if (cache_init(&h->l1[c], l1, a1) || ((c == 0 || !shared) && cache_init(&h->l2[c], l2, a2))) {
            return -1;
        }
    }
    h->l2_shared = shared != 0;
    h->has_l3 = got == 8;
    if (h->has_l3 && cache_init(&h->l3, l3, a3)) {
        return -1;
    }
    nhier++;
    return 0;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    out = stderr;
    for (int k = 0; k < argc; k++) {
        if (strncmp(argv[k], "out=", 4) == 0) {
            if (!(out = fopen(argv[k] + 4, "w"))) {
                fprintf(stderr, "profile plugin: cannot write %s\n", argv[k] + 4);
                return -1;
            }
        } else if (strncmp(argv[k], "spans=", 6) == 0) {
            if (parse_spans(argv[k] + 6)) {
                fprintf(stderr, "profile plugin: bad %s (expected spans=A-B[+C-D...], 1 <= A < B, or 0-0)\n",
                        argv[k]);
                return -1;
            }
        } else if (strncmp(argv[k], "cache=", 6) == 0) {
            if (parse_cache(argv[k] + 6)) {
                fprintf(stderr, "profile plugin: bad %s (expected cache=NAME:L1KiB:ways:L2KiB:ways:shared"
                                "[:L3KiB:ways], at most %d)\n", argv[k], MAX_HIER);
                return -1;
            }
        } else {
            fprintf(stderr, "profile plugin: unknown argument %s (expected out=, spans=, cache=)\n", argv[k]);
            return -1;
        }
    }
    if (!nspans) {
        fprintf(stderr, "profile plugin: no spans= given\n");
        return -1;
    }
    for (int s = 0; s < nspans; s++) {
        if (span_a[s] == 0) {  /* the whole process */
            simulating = nhier > 0;
            counting = 1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
