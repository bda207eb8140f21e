/* Interposes the allocation functions of glibc in the test executable and
 * counts calls made by tracked threads (the server's loop thread), so a test
 * can assert how many allocations one request costs. Frees are not counted:
 * the budget is about calls to the allocator on the hot path. */
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
    if (tracked) atomic_fetch_add_explicit(&total, 1, memory_order_relaxed);
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
#endif
