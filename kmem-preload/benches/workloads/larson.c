/* larson: a long-running server, after Larson & Krishnan's benchmark
 * ("Memory allocation for long-running server applications", ISMM 1998).
 *
 * LINEAGES threads run at once. Each keeps an array of SLOTS blocks and,
 * ROUNDS times, frees a random slot and mallocs 16..1024 bytes into it.
 * Then it creates a fresh thread, hands it the array and exits, as a
 * server's thread per connection does; GENERATIONS threads follow one
 * another so. Nearly every block is thus freed by a thread other than the
 * one that allocated it, and threads come and go all the time.
 *
 * Usage: larson [lineages]. Prints the replacements done and a checksum
 * of the tags read back from the blocks freed. */
#include "common.h"
#include <pthread.h>
#include <semaphore.h>

#define SLOTS 4000
#define ROUNDS 100000
#define GENERATIONS 200
#define MIN_SIZE 16
#define MAX_SIZE 1024

struct lineage {
    void **slot;
    size_t *size;
    uint64_t rng;
    uint64_t sum;
    uint64_t ops;
    int gen;
    /* The thread that handed the array over, for its successor to join. */
    pthread_t prev;
    int has_prev;
    /* The last generation, for main to join once `done` is posted. */
    pthread_t last;
    sem_t done;
};

/* Each block carries a tag in its first 8 bytes and the tag's low byte in
 * its last: both are checked when it is freed. */
static void fill(struct lineage *l, size_t i, uint64_t tag)
{
    size_t size = MIN_SIZE + tag % (MAX_SIZE - MIN_SIZE + 1);
    char *p = must(malloc(size), size);
    memcpy(p, &tag, sizeof tag);
    p[size - 1] = (char)tag;
    l->slot[i] = p;
    l->size[i] = size;
}

static void release(struct lineage *l, size_t i)
{
    char *p = l->slot[i];
    uint64_t tag;
    memcpy(&tag, p, sizeof tag);
    if (p[l->size[i] - 1] != (char)tag)
        corrupt("last byte changed", p);
    l->sum += tag;
    free(p);
}

static void *generation(void *arg)
{
    struct lineage *l = arg;
    if (l->has_prev)
        pthread_join(l->prev, NULL);
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t x = rng_next(&l->rng);
        size_t i = (x >> 40) % SLOTS;
        release(l, i);
        fill(l, i, rng_next(&l->rng));
        l->ops++;
    }
    if (++l->gen < GENERATIONS) {
        pthread_t next;
        l->prev = pthread_self();
        l->has_prev = 1;
        /* Nothing of `l` is touched after this: it is the successor's. */
        if (pthread_create(&next, NULL, generation, l) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            exit(3);
        }
        return NULL;
    }
    for (size_t i = 0; i < SLOTS; i++)
        release(l, i);
    l->last = pthread_self();
    sem_post(&l->done);
    return NULL;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2;
    if (n < 1 || n > 64)
        return 2;
    struct lineage *ls = must(calloc(n, sizeof *ls), n * sizeof *ls);
    for (int t = 0; t < n; t++) {
        struct lineage *l = &ls[t];
        l->rng = 0x1a2b3c4d + t;
        l->slot = must(malloc(SLOTS * sizeof *l->slot), SLOTS);
        l->size = must(malloc(SLOTS * sizeof *l->size), SLOTS);
        sem_init(&l->done, 0, 0);
        /* The main thread fills the arrays, as Larson's warm-up does: the
         * first generation already frees blocks it did not allocate. */
        for (size_t i = 0; i < SLOTS; i++)
            fill(l, i, rng_next(&l->rng));
    }
    pthread_t first[64];
    for (int t = 0; t < n; t++)
        if (pthread_create(&first[t], NULL, generation, &ls[t]) != 0)
            return 3;
    uint64_t sum = 0, ops = 0;
    for (int t = 0; t < n; t++) {
        sem_wait(&ls[t].done);
        pthread_join(ls[t].last, NULL);
        sum += ls[t].sum;
        ops += ls[t].ops;
        free(ls[t].slot);
        free(ls[t].size);
    }
    free(ls);
    printf("larson: %d lineages x %d generations, %llu replacements, "
           "checksum %016llx\n",
           n, GENERATIONS, (unsigned long long)ops, (unsigned long long)sum);
    return 0;
}
