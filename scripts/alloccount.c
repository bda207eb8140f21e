/* LD_PRELOAD allocation counter for a release server process: counts every
 * malloc-family call in the process; SIGUSR1 prints "alloccount N" to stderr.
 * Build: cc -O2 -shared -fPIC scripts/alloccount.c -o alloccount.so */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static _Atomic uint64_t total;
#define COUNT() atomic_fetch_add_explicit(&total, 1, memory_order_relaxed)

void *malloc(size_t n) { COUNT(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { COUNT(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { COUNT(); return __libc_realloc(p, n); }
void *memalign(size_t al, size_t n) { COUNT(); return __libc_memalign(al, n); }
void *aligned_alloc(size_t al, size_t n) { COUNT(); return __libc_memalign(al, n); }
int posix_memalign(void **out, size_t al, size_t n) {
    COUNT();
    void *p = __libc_memalign(al, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

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

__attribute__((constructor)) static void install(void) {
    struct sigaction sa = {0};
    sa.sa_handler = report;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
}
