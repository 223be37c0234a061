/*
 * LD_PRELOAD shim for profiled guests (built for aarch64 by setup.sh): a clock that advances by a fixed step per
 * reading instead of with the host's wall time.
 *
 * Why: emulated, one inference takes seconds of host time, and code that acts on elapsed time does so in a
 * different inference each run. ONNX Runtime did: with the host's clock its block counts differed between runs
 * by ~200 (int8) to ~1,900 (fp32) instructions per inference of the demo bundle, mostly in glibc malloc's loops,
 * and one function of its library ran once per run but in a different inference each time: something on a timer
 * (most likely the run statistics InferenceSession::Run logs every so often), leaving the heap in another state
 * for every later inference. With this clock both runtimes' counts repeat bit for bit (benchmarks/README.md).
 * With readings that depend only on how many readings came before, the guest's work is a function of its inputs.
 * Sleeping and timeouts still use the host's clock (futex, nanosleep): only what the guest reads changes.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <sys/time.h>
#include <time.h>

#define STEP_NS 1000ull                 /* one microsecond per reading */
#define EPOCH 1767225600ull             /* 2026-01-01T00:00:00Z: realtime readings start there */

static uint64_t readings;

int clock_gettime(clockid_t clk, struct timespec *ts)
{
    uint64_t ns = __atomic_add_fetch(&readings, 1, __ATOMIC_RELAXED) * STEP_NS;
    uint64_t base = (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE) ? EPOCH : 0;
    ts->tv_sec = (time_t)(base + ns / 1000000000ull);
    ts->tv_nsec = (long)(ns % 1000000000ull);
    return 0;
}

int gettimeofday(struct timeval *tv, void *tz)
{
    struct timespec ts;
    (void)tz;
    clock_gettime(CLOCK_REALTIME, &ts);
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

time_t time(time_t *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) {
        *out = ts.tv_sec;
    }
    return ts.tv_sec;
}
