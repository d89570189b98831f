/* loop: the fast path alone, one thread.
 *
 * First PAIRS times malloc(64) and free it at once: the cost of a call
 * when the allocator's cache of free objects is hot. Then BATCHES times
 * malloc 1000 blocks of 64 bytes and free them all, in the order they
 * were allocated: the cost of filling and draining that cache, and of
 * going past it to the slabs or pages behind it.
 *
 * Prints the calls made and a checksum of what was written. */
#include "common.h"

#define SIZE 64
#define PAIRS 40000000
#define BATCHES 25000
#define BATCH 1000

int main(void)
{
    uint64_t sum = 0;
    for (long i = 0; i < PAIRS; i++) {
        char *p = must(malloc(SIZE), SIZE);
        p[0] = (char)i;
        escape(p);
        sum += (unsigned char)p[0];
        free(p);
    }
    static char *batch[BATCH];
    for (long b = 0; b < BATCHES; b++) {
        for (int i = 0; i < BATCH; i++) {
            batch[i] = must(malloc(SIZE), SIZE);
            batch[i][SIZE - 1] = (char)(b + i);
        }
        escape(batch);
        for (int i = 0; i < BATCH; i++) {
            sum += (unsigned char)batch[i][SIZE - 1];
            free(batch[i]);
        }
    }
    printf("loop: %d pairs, %d batches of %d blocks of %d bytes, "
           "checksum %llu\n",
           PAIRS, BATCHES, BATCH, SIZE, (unsigned long long)sum);
    return 0;
}
