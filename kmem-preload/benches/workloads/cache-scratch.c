/* cache-scratch: passive false sharing, after Hoard's cache-scratch
 * (Berger et al., "Hoard: a scalable memory allocator for multithreaded
 * applications", ASPLOS 2000).
 *
 * The main thread mallocs one SIZE-byte object per thread, back to back,
 * so that they likely share a cache line, and hands one to each thread.
 * Each thread frees it, then ITERATIONS times mallocs SIZE bytes, writes
 * every byte WRITES times and frees the object. An allocator that gives a
 * thread back the object it just freed hands it bytes of a cache line that
 * the other threads are writing too: every write then moves the line
 * between CPUs, and the run is many times slower. One that serves each
 * thread from memory of its own is not.
 *
 * Usage: cache-scratch [threads]. Prints a checksum of the bytes
 * written. */
#include "common.h"
#include <pthread.h>

#define SIZE 8
#define ITERATIONS 1000
#define WRITES 200000

struct worker {
    pthread_t thread;
    char *first;
    uint64_t sum;
};

static void *scratch(void *arg)
{
    struct worker *w = arg;
    free(w->first);
    for (int i = 0; i < ITERATIONS; i++) {
        volatile char *p = must(malloc(SIZE), SIZE);
        for (int k = 0; k < SIZE; k++)
            p[k] = (char)(i + k);
        for (int j = 0; j < WRITES; j++)
            for (int k = 0; k < SIZE; k++)
                p[k] = (char)(p[k] + 1);
        for (int k = 0; k < SIZE; k++)
            w->sum += (unsigned char)p[k];
        free((void *)p);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2;
    if (n < 1 || n > 64)
        return 2;
    struct worker w[64] = {0};
    for (int t = 0; t < n; t++)
        w[t].first = must(malloc(SIZE), SIZE);
    for (int t = 0; t < n; t++)
        if (pthread_create(&w[t].thread, NULL, scratch, &w[t]))
            return 3;
    uint64_t sum = 0;
    for (int t = 0; t < n; t++) {
        pthread_join(w[t].thread, NULL);
        sum += w[t].sum;
    }
    printf("cache-scratch: %d threads, %d objects of %d bytes each, "
           "checksum %llu\n",
           n, ITERATIONS, SIZE, (unsigned long long)sum);
    return 0;
}
