/* Counts heap allocations made by threads that asked to be counted.
 * Linked into the test executable, it interposes malloc and friends. */
#ifndef ALLOC_COUNTER_H
#define ALLOC_COUNTER_H
#include <stdint.h>
/* 1 when the interposer is active (not under a sanitizer, which owns malloc). */
int alloc_counter_available(void);
/* Count allocations made by the calling thread from now on. */
void alloc_counter_track_current_thread(void);
/* Stop counting the calling thread's allocations. */
void alloc_counter_untrack_current_thread(void);
/* Allocations made so far by tracked threads. */
uint64_t alloc_counter_total(void);
#endif
