/* stdiofork: fork while one thread reads lines with getline (which
 * reallocates under its FILE's lock) and another flushes every stream
 * (which takes stdio's list lock, then each FILE's lock). glibc's fork()
 * takes the list lock after the atfork prepare handlers: an allocator
 * whose prepare handler stops malloc calls then deadlocks unless it takes
 * the list lock first.
 *
 * Usage: stdiofork [forks]. Prints "ok" after the forks; hangs (and is
 * killed by its alarm, exit 3) on a deadlock. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int stop;
static FILE *in;

static void *reader(void *arg)
{
    (void)arg;
    while (!stop) {
        char *line = NULL;
        size_t cap = 0;
        /* A fresh buffer each time: getline mallocs and reallocs while it
         * holds the stream's lock. */
        if (getline(&line, &cap, in) < 0)
            rewind(in);
        free(line);
    }
    return NULL;
}

static void *flusher(void *arg)
{
    (void)arg;
    while (!stop)
        fflush(NULL);
    return NULL;
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "stdiofork: deadlock\n";
    write(2, msg, sizeof msg - 1);
    _exit(3);
}

int main(int argc, char **argv)
{
    int forks = argc > 1 ? atoi(argv[1]) : 200;
    signal(SIGALRM, on_alarm);
    alarm(20);
    in = tmpfile();
    if (!in)
        return 1;
    /* Lines long enough that getline grows its buffer several times. */
    char buf[600];
    memset(buf, 'x', sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    for (int i = 0; i < 64; i++)
        fprintf(in, "%s\n", buf);
    rewind(in);
    pthread_t r, f;
    pthread_create(&r, NULL, reader, NULL);
    pthread_create(&f, NULL, flusher, NULL);
    for (int i = 0; i < forks; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            /* A child that hangs ends too (its alarm is not inherited),
             * and the parent's status check then fails. */
            alarm(10);
            /* The child allocates too: the allocator works there. */
            free(malloc(100));
            _exit(0);
        }
        int st;
        if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
            return 2;
    }
    stop = 1;
    pthread_join(r, NULL);
    pthread_join(f, NULL);
    puts("ok");
    return 0;
}
