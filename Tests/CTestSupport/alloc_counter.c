/* The one allocation counter. It interposes glibc's allocation functions and
 * counts calls (frees are not counted: the budget is about calls to the
 * allocator on the hot path). Built two ways:
 *
 *   - linked into the test executable (SwiftPM target CTestSupport): counts
 *     the calls of tracked threads (the server's loop thread), so a test can
 *     assert how many allocations one request costs;
 *   - as an LD_PRELOAD library for a release server process (the benchmarks,
 *     scripts/measure-core.sh), with -DALLOC_COUNTER_WHOLE_PROCESS: counts
 *     every thread, and SIGUSR1 prints "alloccount N" on stderr:
 *       cc -O2 -shared -fPIC -DALLOC_COUNTER_WHOLE_PROCESS -ITests/CTestSupport/include \
 *          Tests/CTestSupport/alloc_counter.c -o alloccount.so */
#define _GNU_SOURCE
#include "alloc_counter.h"

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define ALLOC_COUNTER_DISABLED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ALLOC_COUNTER_DISABLED 1
#endif

static _Atomic uint64_t total;
static _Thread_local int tracked;

void alloc_counter_track_current_thread(void) { tracked = 1; }
void alloc_counter_untrack_current_thread(void) { tracked = 0; }
uint64_t alloc_counter_total(void) { return atomic_load(&total); }

#ifdef ALLOC_COUNTER_DISABLED
int alloc_counter_available(void) { return 0; }
#else
int alloc_counter_available(void) { return 1; }

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static inline void count(void) {
#ifdef ALLOC_COUNTER_WHOLE_PROCESS
    atomic_fetch_add_explicit(&total, 1, memory_order_relaxed);
#else
    if (tracked) atomic_fetch_add_explicit(&total, 1, memory_order_relaxed);
#endif
}

void *malloc(size_t n) { count(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count(); return __libc_realloc(p, n); }
void *memalign(size_t al, size_t n) { count(); return __libc_memalign(al, n); }
void *aligned_alloc(size_t al, size_t n) { count(); return __libc_memalign(al, n); }
int posix_memalign(void **out, size_t al, size_t n) {
    count();
    void *p = __libc_memalign(al, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

#ifdef ALLOC_COUNTER_WHOLE_PROCESS
#include <signal.h>
#include <unistd.h>

/* SIGUSR1: "alloccount N\n" on stderr, formatted without allocating. */
static void report(int sig) {
    (void)sig;
    char buf[40] = "alloccount ";
    char digits[21];
    int n = 0;
    uint64_t v = atomic_load(&total);
    do { digits[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    int at = 11;
    while (n) buf[at++] = digits[--n];
    buf[at++] = '\n';
    ssize_t w = write(2, buf, (size_t)at);
    (void)w;
}

__attribute__((constructor)) static void install_report(void) {
    struct sigaction sa = {0};
    sa.sa_handler = report;
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGUSR1, &sa, NULL) != 0) {
        static const char msg[] = "alloccount: sigaction(SIGUSR1) failed: no counts will be reported\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
    }
}
#endif
#endif
