/* dontdump: how much of the address space a core dump would leave out
 * (VMAs with "dd" in /proc/self/smaps' VmFlags, MADV_DONTDUMP), in MiB,
 * after one malloc and again after 1 GiB more in 4 MiB blocks (one byte
 * of each written). Prints the two figures on one line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long dontdump_mib(void)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        exit(2);
    char line[512];
    long kib = 0, size = 0;
    while (fgets(line, sizeof line, f)) {
        long v;
        if (sscanf(line, "Size: %ld kB", &v) == 1)
            size = v;
        else if (strncmp(line, "VmFlags:", 8) == 0 && strstr(line, " dd"))
            kib += size;
    }
    fclose(f);
    return kib >> 10;
}

int main(void)
{
    free(malloc(100));
    long before = dontdump_mib();
    enum { N = 256, BLOCK = 4 << 20 };
    static char *v[N];
    for (int i = 0; i < N; i++) {
        v[i] = malloc(BLOCK);
        if (!v[i])
            return 1;
        v[i][i] = 1;
    }
    long after = dontdump_mib();
    for (int i = 0; i < N; i++)
        free(v[i]);
    printf("%ld %ld\n", before, after);
    return 0;
}
