/* churn: mixed sizes, randomly replaced, as a long-running program's heap.
 *
 * Each thread keeps SLOTS live blocks of its own and replaces a random
 * one, STEPS times among all the threads. Sizes are log-uniform from 8
 * bytes to 64 KiB (a power of two picked uniformly, then a size up to the
 * next one), so small records, strings and buffers of a page or more come
 * mixed, across every size class and into the large blocks. Most
 * replacements free and malloc; one in eight reallocs the block to the
 * new size instead, and one in sixteen callocs it. Every page of every
 * block is written, so the peak RSS is the blocks' real footprint plus
 * what the allocator holds besides.
 *
 * Usage: churn [threads]. Each thread has its own blocks; prints the
 * replacements done and a checksum of the tags read back. */
#include "common.h"
#include <pthread.h>

#define SLOTS 3000
#define STEPS 4000000 /* in all, split among the threads */
#define MIN_SHIFT 3   /* 8 bytes */
#define MAX_SHIFT 16  /* 64 KiB */
#define PAGE 4096

struct worker {
    pthread_t thread;
    int threads;
    uint64_t rng, sum, ops;
    char *slot[SLOTS];
    size_t size[SLOTS];
    uint64_t tag[SLOTS];
};

static size_t pick_size(uint64_t x)
{
    unsigned shift = MIN_SHIFT + (x & 0xff) % (MAX_SHIFT - MIN_SHIFT);
    size_t low = (size_t)1 << shift;
    return low + (x >> 8) % low;
}

/* The tag in the first 8 bytes, its low byte on every further page and
 * in the last byte (of a block longer than the tag). */
static void touch(char *p, size_t size, uint64_t tag)
{
    memcpy(p, &tag, sizeof tag);
    for (size_t off = PAGE; off < size; off += PAGE)
        p[off] = (char)tag;
    if (size > sizeof tag)
        p[size - 1] = (char)tag;
}

static void check(const char *p, size_t size, uint64_t tag)
{
    uint64_t t;
    memcpy(&t, p, sizeof t);
    if (t != tag)
        corrupt("tag changed", p);
    for (size_t off = PAGE; off < size; off += PAGE)
        if (p[off] != (char)tag)
            corrupt("a page's byte changed", p);
    if (size > sizeof t && p[size - 1] != (char)tag)
        corrupt("last byte changed", p);
}

static void fill(struct worker *w, size_t i)
{
    uint64_t x = rng_next(&w->rng);
    size_t size = pick_size(x);
    char *p;
    if ((x >> 60) == 0) {
        p = must(calloc(1, size), size);
        /* calloc's block is zero where it will be written. */
        if (p[0] || p[size / 2] || p[size - 1])
            corrupt("calloc's block is not zero", p);
    } else {
        p = must(malloc(size), size);
    }
    touch(p, size, x);
    w->slot[i] = p;
    w->size[i] = size;
    w->tag[i] = x;
}

static void *churn(void *arg)
{
    struct worker *w = arg;
    for (size_t i = 0; i < SLOTS; i++)
        fill(w, i);
    for (long s = 0; s < STEPS / w->threads; s++) {
        uint64_t x = rng_next(&w->rng);
        size_t i = (x >> 32) % SLOTS;
        check(w->slot[i], w->size[i], w->tag[i]);
        w->sum += w->tag[i];
        if ((x & 7) == 0) {
            /* realloc keeps the tag (every size is at least 8 bytes). */
            size_t size = pick_size(rng_next(&w->rng));
            char *p = must(realloc(w->slot[i], size), size);
            uint64_t t;
            memcpy(&t, p, sizeof t);
            if (t != w->tag[i])
                corrupt("realloc lost the contents", p);
            touch(p, size, w->tag[i]);
            w->slot[i] = p;
            w->size[i] = size;
        } else {
            free(w->slot[i]);
            fill(w, i);
        }
        w->ops++;
    }
    for (size_t i = 0; i < SLOTS; i++) {
        check(w->slot[i], w->size[i], w->tag[i]);
        w->sum += w->tag[i];
        free(w->slot[i]);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 1;
    if (n < 1 || n > 64)
        return 2;
    struct worker *w = must(calloc(n, sizeof *w), n * sizeof *w);
    for (int t = 0; t < n; t++) {
        w[t].threads = n;
        w[t].rng = 0xc4c4 + t;
        if (pthread_create(&w[t].thread, NULL, churn, &w[t]))
            return 3;
    }
    uint64_t sum = 0, ops = 0;
    for (int t = 0; t < n; t++) {
        pthread_join(w[t].thread, NULL);
        sum += w[t].sum;
        ops += w[t].ops;
    }
    free(w);
    printf("churn: %d threads x %d blocks, %llu replacements, "
           "checksum %016llx\n",
           n, SLOTS, (unsigned long long)ops, (unsigned long long)sum);
    return 0;
}
