/* The interposed libc entry points: what the rest of slowdog needs of them. */
#pragma once

#include <stdint.h>

/* The interposed calls a thread can be blocked in. */
enum call_fn {
	CALL_NONE = 0,
	CALL_READ, CALL_READV, CALL_RECV, CALL_RECVFROM, CALL_RECVMSG,
	CALL_WRITE, CALL_WRITEV, CALL_SEND, CALL_SENDTO, CALL_SENDMSG,
	CALL_SENDFILE, CALL_SENDFILE64, CALL_ACCEPT, CALL_ACCEPT4,
	CALL_POLL, CALL_PPOLL, CALL_SELECT, CALL_PSELECT,
	CALL_EPOLL_WAIT, CALL_EPOLL_PWAIT, CALL_NANOSLEEP, CALL_CLOCK_NANOSLEEP,
	CALL_CONNECT, CALL_WAITPID, CALL_WAIT4,
	CALL_SEM_TIMEDWAIT, CALL_SEM_CLOCKWAIT, CALL_USLEEP, CALL_SLEEP,
	CALL_COUNT,
};

/* "clock_nanosleep" etc. */
const char *preload_call_name(int fn);

/* Address of libc's own function (frame #0 of a blocked capture), 0 if
 * unknown. */
uintptr_t preload_call_addr(int fn);

/* Address of slowdog's entry stub for fn (where a blocked capture's
 * synthetic frame starts). */
uintptr_t preload_stub_addr(int fn);

/* The real sigaction, for capture.c (ours is interposed). */
int preload_real_sigaction(int sig, const void *act, void *old);
int preload_real_sigmask(int how, const void *set, void *old);
