/*
 * A native recursion 10,000 frames deep for the fault tests: deep(n, spin)
 * calls itself n times, then waits 1.5 s at the bottom, in nanosleep(2)
 * (spin == 0: a blocked capture) or running (spin != 0: a signal capture).
 * Built by tests/faults/run.py with cc -shared, loaded with ctypes.
 *
 * jump_out_of_read() blocks in read(2) on a pipe until a signal handler
 * longjmps out of it, as C code with timeouts by signal does: the read
 * never returns.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

int deep(int n, int spin);
int jump_out_of_read(void);

static volatile int sink;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) int deep(int n, int spin)
{
	volatile char pad[48];

	pad[0] = (char)n;
	if (n <= 1) {
		if (spin) {
			double end = now() + 1.5;
			while (now() < end)
				sink++;
		} else {
			struct timespec ts = {1, 500000000};
			while (nanosleep(&ts, &ts) != 0)
				;
		}
		return 1;
	}
	/* Not a tail call: the frame stays. */
	int r = deep(n - 1, spin) + 1;
	sink += pad[0];
	return r;
}

static sigjmp_buf jump_env;
static pthread_t jump_target, jump_kicker;

static void on_jump(int sig)
{
	(void)sig;
	siglongjmp(jump_env, 1);
}

static void *kick(void *arg)
{
	(void)arg;
	struct timespec ts = {0, 200000000};
	nanosleep(&ts, NULL);
	pthread_kill(jump_target, SIGUSR2);
	return NULL;
}

__attribute__((noinline)) static void left_by_longjmp(int fd)
{
	char b;
	read(fd, &b, 1);
}

/* 1 when the read was left by the longjmp. */
int jump_out_of_read(void)
{
	static int p[2];
	struct sigaction sa = {0}, old;
	volatile int jumped = 0;

	if (pipe(p) != 0)
		return 0;
	sa.sa_handler = on_jump;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR2, &sa, &old);
	jump_target = pthread_self();
	if (sigsetjmp(jump_env, 1) == 0) {
		if (pthread_create(&jump_kicker, NULL, kick, NULL) == 0)
			left_by_longjmp(p[0]);
	} else {
		jumped = 1;
	}
	if (jumped)
		pthread_join(jump_kicker, NULL);
	sigaction(SIGUSR2, &old, NULL);
	close(p[0]);
	close(p[1]);
	return jumped;
}
