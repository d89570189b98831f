/* Resident memory after a program frees: allocate 256 MiB in 1 KiB and
 * 64 KiB blocks, touch it, free it all, then keep making small calls for
 * up to 3 s and print the resident size at its peak and at the end, in
 * MiB (from /proc/self/statm). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long rss_mib(void) {
    long size, res;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &size, &res) != 2) abort();
    fclose(f);
    return res * sysconf(_SC_PAGESIZE) >> 20;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    double wait = argc > 1 ? atof(argv[1]) : 3.0;
    enum { SMALL = 192 * 1024, LARGE = 1024 };
    static void *s[SMALL], *l[LARGE];
    for (int i = 0; i < SMALL; i++) { s[i] = malloc(1024); memset(s[i], 1, 1024); }
    for (int i = 0; i < LARGE; i++) { l[i] = malloc(64 << 10); memset(l[i], 1, 64 << 10); }
    long peak = rss_mib();
    for (int i = 0; i < SMALL; i++) free(s[i]);
    for (int i = 0; i < LARGE; i++) free(l[i]);
    double end = now() + wait;
    long rss = rss_mib();
    while (now() < end && rss > peak / 4) {
        for (int i = 0; i < 1000; i++) free(malloc(100));
        usleep(1000);
        rss = rss_mib();
    }
    /* The memory given back is allocated again, whole. */
    for (int i = 0; i < SMALL; i++) { s[i] = malloc(1024); memset(s[i], (char)i, 1024); }
    for (int i = 0; i < LARGE; i++) { l[i] = malloc(64 << 10); memset(l[i], (char)i, 64 << 10); }
    for (int i = 0; i < SMALL; i++) {
        for (int j = 0; j < 1024; j++) if (((char *)s[i])[j] != (char)i) abort();
        free(s[i]);
    }
    for (int i = 0; i < LARGE; i++) {
        for (int j = 0; j < 64 << 10; j += 4096) if (((char *)l[i])[j] != (char)i) abort();
        free(l[i]);
    }
    printf("peak %ld MiB, after %ld MiB\n", peak, rss);
    return 0;
}
