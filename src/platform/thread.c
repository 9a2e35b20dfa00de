/* The library's own threads (the timer, the executor's workers, the signal
 * watcher) start here, with every signal blocked, so that a signal meant for
 * the application's threads never lands on one of them. */
#include "platform.h"

#include <errno.h>
#include <signal.h>

int ctx__thread_start(pthread_t *th, void *(*fn)(void *), void *arg,
                      bool detached)
{
    pthread_attr_t attr;
    sigset_t all, old;
    int e = pthread_attr_init(&attr);
    if (e != 0)
        return EAGAIN;
    if (detached)
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    e = pthread_create(th, &attr, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return e == 0 ? 0 : EAGAIN;
}
