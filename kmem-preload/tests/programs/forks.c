/* fork() while other threads allocate and free without pause: each child
 * must find the allocator whole (no lock held by a thread that does not
 * exist in it, no half-done free), allocate, start a thread, and exit. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int stop;

static void *busy(void *arg) {
    unsigned seed = (unsigned)(size_t)arg;
    void *keep[32] = {0};
    while (!atomic_load(&stop)) {
        seed = seed * 1103515245 + 12345;
        unsigned k = seed % 32;
        free(keep[k]);
        /* Small, large (kmalloc_large) and huge (own mapping) sizes. */
        size_t n = (seed >> 8) % 100 == 0 ? (size_t)5 << 20 : 1 + (seed >> 8) % 20000;
        keep[k] = malloc(n);
        memset(keep[k], 1, n < 64 ? n : 64);
    }
    for (int k = 0; k < 32; k++) free(keep[k]);
    return NULL;
}

static void *child_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) free(malloc(i * 7 % 5000 + 1));
    return NULL;
}

int main(void) {
    pthread_t t[4];
    for (size_t i = 0; i < 4; i++) pthread_create(&t[i], NULL, busy, (void *)i);
    int ok = 0;
    for (int f = 0; f < 200; f++) {
        pid_t pid = fork();
        if (pid == 0) {
            void *p[100];
            for (int i = 0; i < 100; i++) p[i] = malloc(i * 100 + 1);
            for (int i = 0; i < 100; i++) free(p[i]);
            pthread_t ct;
            pthread_create(&ct, NULL, child_thread, NULL);
            pthread_join(ct, NULL);
            _exit(0);
        }
        int st;
        waitpid(pid, &st, 0);
        ok += WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("%d of 200 children exited 0\n", ok);
    return 0;
}
