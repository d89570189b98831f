/* The corners of the C allocation functions, printing what any correct
 * allocator must give. `api.c bad <case>` makes one bad free. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <pthread.h>
#include <unistd.h>

void free_sized(void *, size_t) __attribute__((weak));

/* Keeps the compiler from removing a malloc/free pair or a store before
 * a free: the bad cases must reach the allocator. */
static void *escape(void *p) {
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

static void *spin(void *arg) {
    (void)arg;
    for (int i = 0; i < 100000; i++) free(malloc(64 + i % 500));
    return NULL;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "bad")) {
        char *p = escape(malloc(100)), *q = escape(malloc(100));
        if (!strcmp(argv[2], "double")) { free(p); free(escape(p)); }
        else if (!strcmp(argv[2], "interior")) free(p + 8);
        else if (!strcmp(argv[2], "foreign")) { static char x[64]; free(x + 16); }
        else if (!strcmp(argv[2], "large-double")) { char *b = escape(malloc(64 << 20)); free(b); free(escape(b)); }
        else if (!strcmp(argv[2], "sized")) free_sized(p, 4096);
        else if (!strcmp(argv[2], "overrun")) { memset(p, 1, 140); free(escape(p)); }
        else if (!strcmp(argv[2], "double-later")) { free(p); free(q); free(escape(p)); }
        printf("survived\n");
        return 0;
    }
    void *z = malloc(0), *z2 = malloc(0);
    printf("malloc(0): %s\n", z && z2 && z != z2 ? "distinct non-null" : "bad");
    free(z); free(z2);
    errno = 0;
    void *h = malloc(SIZE_MAX - 4096);
    printf("huge: %s %s\n", h ? "non-null" : "null", errno == ENOMEM ? "ENOMEM" : "no errno");
    errno = 0;
    void *c = calloc(SIZE_MAX / 2, 3);
    printf("calloc overflow: %s %s\n", c ? "non-null" : "null", errno == ENOMEM ? "ENOMEM" : "no errno");
    errno = 0;
    void *ra = reallocarray(NULL, SIZE_MAX / 2, 3);
    printf("reallocarray overflow: %s %s\n", ra ? "non-null" : "null", errno == ENOMEM ? "ENOMEM" : "no errno");
    /* calloc after dirty blocks of the same size were freed, which
     * allocators hand out again: a slab size, page blocks of a per-CPU
     * list's order and of a larger one. */
    int zero = 1;
    static unsigned char *blk[300];
    size_t sizes[] = {200, 20000, 100000};
    for (int k = 0; k < 3; k++) {
        size_t n = sizes[k];
        /* escape(): the compiler may neither drop the dirtying stores
         * before the free nor assume calloc's memory reads as zero. */
        for (int b = 0; b < 300; b++) {
            blk[b] = malloc(n);
            memset(escape(blk[b]), 0xab, n);
        }
        for (int b = 0; b < 300; b++) free(escape(blk[b]));
        for (int b = 0; b < 300; b++) {
            blk[b] = escape(calloc(n / 100, 100));
            for (size_t i = 0; i < n; i++) zero &= blk[b][i] == 0;
        }
        for (int b = 0; b < 300; b++) free(blk[b]);
    }
    printf("calloc zeroed: %d\n", zero);
    int ok = 1;
    for (size_t a = sizeof(void *); a <= (1 << 22); a <<= 1) {
        for (size_t s = 1; s < 3 * a; s += a / 2 + 1) {
            void *p;
            if (posix_memalign(&p, a, s)) { ok = 0; continue; }
            if ((uintptr_t)p & (a - 1)) ok = 0;
            memset(p, 1, s);
            if (malloc_usable_size(p) < s) ok = 0;
            free(p);
        }
        void *q = aligned_alloc(a, a * 3);
        if (!q || ((uintptr_t)q & (a - 1))) ok = 0;
        free(q);
        q = memalign(a, 5);
        if (!q || ((uintptr_t)q & (a - 1))) ok = 0;
        free(q);
    }
    printf("alignments up to 4 MiB: %d\n", ok);
    void *bad;
    printf("posix_memalign(3): %s\n", posix_memalign(&bad, 3, 8) == EINVAL ? "EINVAL" : "bad");
    void *v = valloc(10), *pv = pvalloc(5000);
    printf("valloc/pvalloc page aligned: %d %d\n", ((uintptr_t)v & 4095) == 0,
           ((uintptr_t)pv & 4095) == 0 && malloc_usable_size(pv) >= 8192);
    free(v); free(pv);
    ok = 1;
    for (size_t s = 1; s < (1 << 16); s = s * 3 / 2 + 1) {
        void *p = malloc(s);
        ok &= ((uintptr_t)p & 15) == 0 && malloc_usable_size(p) >= s;
        free(p);
    }
    printf("16-byte aligned, usable >= asked: %d\n", ok);
    char *r = malloc(10);
    strcpy(r, "abcdefghi");
    for (size_t s = 16; s < (64 << 20); s *= 3) {
        r = realloc(r, s);
        if (!r || strcmp(r, "abcdefghi")) { printf("realloc lost data at %zu\n", s); return 1; }
    }
    r = realloc(r, 5);
    printf("realloc keeps data: %.5s\n", r);
    printf("realloc(p, 0): %s\n", realloc(r, 0) ? "non-null" : "null");
    char *big = malloc(100 << 20);
    memset(big, 7, 100 << 20);
    printf("100 MiB block: %d\n", big[(100 << 20) - 1]);
    free(big);
    if (free_sized) { void *fs = malloc(100); free_sized(fs, 100); }
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, spin, NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* The child of a threaded parent allocates and frees on its own. */
        for (int i = 0; i < 10000; i++) free(malloc(i % 3000 + 1));
        pthread_t ct;
        pthread_create(&ct, NULL, spin, NULL);
        pthread_join(ct, NULL);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("fork child: %s\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "exited 0" : "failed");
    return 0;
}
