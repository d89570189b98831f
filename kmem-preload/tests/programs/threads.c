/* Producer/consumer: objects allocated on one thread are freed on
 * another, through a ring; then more threads than kmem has CPU slots,
 * each allocating, and threads started one after another (their slots are
 * given back at exit and taken again). Prints a checksum of what the
 * consumers read, the same under any allocator. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RING 1024
#define ITEMS 200000

static void *ring[RING];
static unsigned head, tail;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;

static void *producer(void *arg) {
    (void)arg;
    for (unsigned i = 0; i < ITEMS; i++) {
        size_t n = 8 + (i * 37) % 600;
        uint32_t *p = malloc(n);
        if (!p) abort();
        memset(p, 0, n);
        p[0] = i;
        p[(n / 4) - 1] = i ^ 0x5a5a;
        pthread_mutex_lock(&lock);
        while (head - tail == RING) pthread_cond_wait(&cond, &lock);
        ring[head++ % RING] = p;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static void *consumer(void *arg) {
    uint64_t *sum = arg;
    for (unsigned i = 0; i < ITEMS; i++) {
        pthread_mutex_lock(&lock);
        while (head == tail) pthread_cond_wait(&cond, &lock);
        uint32_t *p = ring[tail++ % RING];
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
        size_t n = 8 + (p[0] * 37) % 600;
        if (p[(n / 4) - 1] != (p[0] ^ 0x5a5a)) abort();
        *sum += p[0];
        free(p);
    }
    return NULL;
}

static void *churn(void *arg) {
    uintptr_t seed = (uintptr_t)arg;
    void *keep[64] = {0};
    for (unsigned i = 0; i < 20000; i++) {
        unsigned k = (seed + i * 7) % 64;
        free(keep[k]);
        keep[k] = malloc(1 + (seed * 131 + i) % 3000);
        if (!keep[k]) abort();
        memset(keep[k], (int)k, 1);
    }
    for (unsigned k = 0; k < 64; k++) free(keep[k]);
    return NULL;
}

int main(void) {
    pthread_t p, c;
    uint64_t sum = 0;
    pthread_create(&p, NULL, producer, NULL);
    pthread_create(&c, NULL, consumer, &sum);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    printf("consumed %llu\n", (unsigned long long)sum);

    enum { MANY = 64 };
    pthread_t t[MANY];
    for (uintptr_t i = 0; i < MANY; i++) pthread_create(&t[i], NULL, churn, (void *)i);
    for (int i = 0; i < MANY; i++) pthread_join(t[i], NULL);
    for (uintptr_t i = 0; i < 300; i++) {
        pthread_create(&t[0], NULL, churn, (void *)i);
        pthread_join(t[0], NULL);
    }
    printf("threads done\n");
    return 0;
}
