/* big: malloc `gib` GiB in 4 MiB blocks (the largest kmem serves from its
 * machine's memory), writing one byte of each, then free them. Prints how
 * many blocks it got; exits 1 at the first NULL.
 *
 * Usage: big <gib> */
#include <stdio.h>
#include <stdlib.h>

#define BLOCK (4u << 20)

int main(int argc, char **argv)
{
    long gib = argc > 1 ? atol(argv[1]) : 1;
    long n = gib * (1024 / 4);
    char **v = malloc(n * sizeof *v);
    if (!v)
        return 1;
    for (long i = 0; i < n; i++) {
        v[i] = malloc(BLOCK);
        if (!v[i]) {
            printf("NULL after %ld blocks\n", i);
            return 1;
        }
        v[i][i % BLOCK] = 1;
    }
    for (long i = 0; i < n; i++)
        free(v[i]);
    free(v);
    printf("%ld blocks of 4 MiB\n", n);
    return 0;
}
