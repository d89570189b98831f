/* What the workloads share: a seeded random generator (so every run, under
 * every allocator, makes the same requests), checked allocation, and a
 * barrier that keeps the compiler from removing a malloc/free pair. */
#ifndef KMEM_BENCH_COMMON_H
#define KMEM_BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64: one 64-bit state, good enough for picking slots and sizes. */
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Out of memory is a failure of the run, not something to measure. */
static inline void *must(void *p, size_t size)
{
    if (!p) {
        fprintf(stderr, "allocation of %zu bytes failed\n", size);
        exit(3);
    }
    return p;
}

/* A damaged block is the allocator's bug: say so and fail the run. */
static inline void corrupt(const char *what, const void *p)
{
    fprintf(stderr, "corrupt block %p: %s\n", p, what);
    exit(4);
}

/* The pointer escapes: gcc may not drop the malloc/free around it. */
static inline void escape(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

#endif
