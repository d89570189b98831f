/* xmalloc: producers and consumers, after xmalloc-test (Lever and
 * Boreham's, as in mimalloc-bench).
 *
 * PRODUCERS threads malloc small objects (8..256 bytes, random), write a
 * tag into each and pass them, BATCH at a time, through a bounded queue to
 * CONSUMERS threads, which check and free them: a pipeline in which every
 * object is freed by a thread that did not allocate it, and the allocator
 * must move memory back from the freeing threads to the allocating ones.
 * The batch records themselves are malloc'd and freed the same way.
 *
 * Prints the objects passed and a checksum of their tags. */
#include "common.h"
#include <pthread.h>

#define PRODUCERS 2
#define CONSUMERS 2
#define OBJECTS 8000000 /* per producer */
#define BATCH 100
#define QUEUE 64 /* batches in flight, at most */
#define MIN_SIZE 8
#define MAX_SIZE 256

struct batch {
    int n;
    void *obj[BATCH];
    size_t size[BATCH];
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t nonempty, nonfull;
    struct batch *ring[QUEUE];
    unsigned head, tail; /* free-running: tail - head batches queued */
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
       PTHREAD_COND_INITIALIZER, {0}, 0, 0};

static void put(struct batch *b)
{
    pthread_mutex_lock(&q.lock);
    while (q.tail - q.head == QUEUE)
        pthread_cond_wait(&q.nonfull, &q.lock);
    q.ring[q.tail++ % QUEUE] = b;
    pthread_cond_signal(&q.nonempty);
    pthread_mutex_unlock(&q.lock);
}

static struct batch *take(void)
{
    pthread_mutex_lock(&q.lock);
    while (q.tail == q.head)
        pthread_cond_wait(&q.nonempty, &q.lock);
    struct batch *b = q.ring[q.head++ % QUEUE];
    pthread_cond_signal(&q.nonfull);
    pthread_mutex_unlock(&q.lock);
    return b;
}

static void *producer(void *arg)
{
    uint64_t rng = 0x5eed0000 + (uintptr_t)arg;
    for (int done = 0; done < OBJECTS; done += BATCH) {
        struct batch *b = must(malloc(sizeof *b), sizeof *b);
        b->n = BATCH;
        for (int i = 0; i < BATCH; i++) {
            uint64_t tag = rng_next(&rng);
            size_t size = MIN_SIZE + tag % (MAX_SIZE - MIN_SIZE + 1);
            char *p = must(malloc(size), size);
            memcpy(p, &tag, sizeof tag);
            if (size > sizeof tag)
                p[size - 1] = (char)tag; /* the far end too */
            b->obj[i] = p;
            b->size[i] = size;
        }
        put(b);
    }
    return NULL;
}

struct consumer {
    pthread_t thread;
    uint64_t sum, count;
};

static void *consumer(void *arg)
{
    struct consumer *c = arg;
    struct batch *b;
    /* An empty batch (n == 0) is the end. */
    while ((b = take())->n) {
        for (int i = 0; i < b->n; i++) {
            uint64_t tag;
            memcpy(&tag, b->obj[i], sizeof tag);
            if (tag % (MAX_SIZE - MIN_SIZE + 1) + MIN_SIZE != b->size[i])
                corrupt("tag does not match the size", b->obj[i]);
            if (b->size[i] > sizeof tag &&
                ((char *)b->obj[i])[b->size[i] - 1] != (char)tag)
                corrupt("last byte changed", b->obj[i]);
            c->sum += tag;
            c->count++;
            free(b->obj[i]);
        }
        free(b);
    }
    free(b);
    return NULL;
}

int main(void)
{
    pthread_t prod[PRODUCERS];
    struct consumer cons[CONSUMERS] = {0};
    for (int i = 0; i < CONSUMERS; i++)
        if (pthread_create(&cons[i].thread, NULL, consumer, &cons[i]))
            return 3;
    for (int i = 0; i < PRODUCERS; i++)
        if (pthread_create(&prod[i], NULL, producer, (void *)(uintptr_t)i))
            return 3;
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(prod[i], NULL);
    for (int i = 0; i < CONSUMERS; i++) {
        struct batch *end = must(calloc(1, sizeof *end), sizeof *end);
        put(end);
    }
    uint64_t sum = 0, count = 0;
    for (int i = 0; i < CONSUMERS; i++) {
        pthread_join(cons[i].thread, NULL);
        sum += cons[i].sum;
        count += cons[i].count;
    }
    printf("xmalloc: %d producers, %d consumers, %llu objects, "
           "checksum %016llx\n",
           PRODUCERS, CONSUMERS, (unsigned long long)count,
           (unsigned long long)sum);
    return 0;
}
