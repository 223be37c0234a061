/*
 * QEMU TCG plugin: counts the aarch64 instructions a guest executes, split into load/store, SIMD/FP,
 * dot-product (SDOT/UDOT/USDOT/SUDOT, a subset of SIMD/FP) and scalar (everything else: integer, branches).
 *
 * Why this shape: an instruction's class is decoded once, when QEMU translates its block; each block then
 * carries one inline "exec += 1" (no helper call), and the class totals are exec x per-block counts. That
 * keeps emulation near full speed and makes the count exact and deterministic for one guest thread.
 *
 * Marks: the guest calls lseek(-1, 0x5EED0000 + n, SEEK_SET) (it fails with EBADF, nothing else happens);
 * the plugin appends the totals at that moment as "mark n ..." to its output, so a runner can take the
 * difference between two marks and leave interpreter start-up and model loading out.
 *
 * Output (to the file named by the plugin argument out=PATH, else stderr), one line per mark and at exit:
 *   mark <n> total <N> ldst <N> simd <N> dot <N> scalar <N>
 *   exit total <N> ldst <N> simd <N> dot <N> scalar <N>
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

enum { LDST, SIMD, DOT, NCLASS };

typedef struct Block {
    uint64_t exec;           /* incremented inline each time the block runs */
    uint32_t insns;          /* instructions in the block */
    uint32_t n[NCLASS];      /* of which load/store, SIMD/FP, dot product */
    struct Block *next;
} Block;

static Block *blocks;        /* every translated block; guarded by lock for insertion */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *out;

#define MARK_SYSCALL 62      /* lseek on aarch64 Linux */
#define MARK_MAGIC 0x5EED0000u

static int is_dot(uint32_t i)
{
    /* SDOT/UDOT (vector) and USDOT (vector): 0 Q U 01110 10 0 Rm 1 001x 1 Rn Rd */
    if ((i & 0x9FE0F400u) == 0x0E809400u) {
        return 1;
    }
    /* SDOT/UDOT (by element): 0 Q U 01111 10 L M Rm 1110 H 0 Rn Rd */
    if ((i & 0x9FC0F400u) == 0x0F80E000u) {
        return 1;
    }
    /* SUDOT/USDOT (by element): 0 Q 0 01111 x0 L M Rm 1111 H 0 Rn Rd */
    return (i & 0xBF40F400u) == 0x0F00F000u;
}

static void classify(uint32_t i, uint32_t n[NCLASS])
{
    uint32_t op0 = (i >> 25) & 0xF;
    if ((op0 & 0x5) == 0x4) {           /* x1x0: loads and stores (scalar, SIMD, pairs, exclusives) */
        n[LDST]++;
    } else if ((op0 & 0x7) == 0x7 || op0 == 0x2) { /* x111: SIMD and FP data processing; 0010: SVE */
        n[SIMD]++;
        n[DOT] += is_dot(i);
    }
}

static void totals(uint64_t t[NCLASS + 1])
{
    memset(t, 0, sizeof(uint64_t) * (NCLASS + 1));
    pthread_mutex_lock(&lock);
    for (Block *b = blocks; b; b = b->next) {
        uint64_t e = __atomic_load_n(&b->exec, __ATOMIC_RELAXED);
        t[NCLASS] += e * b->insns;
        for (int c = 0; c < NCLASS; c++) {
            t[c] += e * b->n[c];
        }
    }
    pthread_mutex_unlock(&lock);
}

static void report(const char *what)
{
    uint64_t t[NCLASS + 1];
    totals(t);
    fprintf(out, "%s total %" PRIu64 " ldst %" PRIu64 " simd %" PRIu64 " dot %" PRIu64 " scalar %" PRIu64 "\n",
            what, t[NCLASS], t[LDST], t[SIMD], t[DOT], t[NCLASS] - t[LDST] - t[SIMD]);
    fflush(out);
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    Block *b = calloc(1, sizeof(Block));
    if (!b) {
        abort();
    }
    size_t n = qemu_plugin_tb_n_insns(tb);
    b->insns = (uint32_t)n;
    for (size_t k = 0; k < n; k++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, k);
        uint32_t word;
        memcpy(&word, qemu_plugin_insn_data(insn), sizeof(word));
        classify(word, b->n);
    }
    pthread_mutex_lock(&lock);
    b->next = blocks;
    blocks = b;
    pthread_mutex_unlock(&lock);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->exec, 1);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    if (num == MARK_SYSCALL && a1 == UINT64_MAX && (a2 & 0xFFFF0000u) == MARK_MAGIC && a2 >> 32 == 0) {
        char what[32];
        snprintf(what, sizeof(what), "mark %u", (unsigned)(a2 & 0xFFFF));
        report(what);
    }
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    report("exit");
    if (out != stderr) {
        fclose(out);
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    out = stderr;
    for (int k = 0; k < argc; k++) {
        if (strncmp(argv[k], "out=", 4) == 0) {
            out = fopen(argv[k] + 4, "w");
            if (!out) {
                fprintf(stderr, "count plugin: cannot write %s\n", argv[k] + 4);
                return -1;
            }
        } else {
            fprintf(stderr, "count plugin: unknown argument %s (expected out=PATH)\n", argv[k]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
