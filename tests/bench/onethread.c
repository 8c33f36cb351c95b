/*
 * A library that does nothing but keep one sleeping thread in the process
 * (and in each child it forks, as slowdog's watchdog is): what a second
 * thread costs a server by itself, glibc's multi-threaded paths
 * (cancellation points, atomic malloc locks). scripts/bench preloads it
 * beside the runs with and without slowdog.
 */
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

static void *sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause(); /* every signal blocked: never returns */
	return NULL;
}

static void start(void)
{
	sigset_t all, old;
	pthread_t t;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old); /* inherited by the thread */
	if (pthread_create(&t, NULL, sleeper, NULL) == 0)
		pthread_detach(t);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

__attribute__((constructor)) static void init(void)
{
	start();
	pthread_atfork(NULL, NULL, start);
}
