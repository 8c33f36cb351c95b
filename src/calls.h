/*
 * The libc calls slowdog interposes, written once. Everything that names
 * them comes from this list: the call numbers, the real-function pointers
 * and their names (real.h, real.c), the entry-stub table (preload.c) and
 * the exported names of the library (slowdog.map.in). No includes: the
 * version script is made from this file by the C preprocessor alone.
 *
 * CALLS(B, P):
 *   B(ID, name, ret, params)  a call a thread can block in: it gets an
 *                             entry stub and a call number CALL_<ID>
 *   P(name, ret, params)      a plain wrapper (nothing blocks in it)
 */
#pragma once

#define CALLS(B, P)                                                                  \
	B(READ, read, ssize_t, (int, void *, size_t))                                \
	B(READV, readv, ssize_t, (int, const struct iovec *, int))                   \
	B(RECV, recv, ssize_t, (int, void *, size_t, int))                           \
	B(RECVFROM, recvfrom, ssize_t,                                               \
	  (int, void *, size_t, int, struct sockaddr *, socklen_t *))                \
	B(RECVMSG, recvmsg, ssize_t, (int, struct msghdr *, int))                    \
	B(WRITE, write, ssize_t, (int, const void *, size_t))                        \
	B(WRITEV, writev, ssize_t, (int, const struct iovec *, int))                 \
	B(SEND, send, ssize_t, (int, const void *, size_t, int))                     \
	B(SENDTO, sendto, ssize_t,                                                   \
	  (int, const void *, size_t, int, const struct sockaddr *, socklen_t))      \
	B(SENDMSG, sendmsg, ssize_t, (int, const struct msghdr *, int))              \
	B(SENDFILE, sendfile, ssize_t, (int, int, off_t *, size_t))                  \
	B(SENDFILE64, sendfile64, ssize_t, (int, int, off_t *, size_t))              \
	B(ACCEPT, accept, int, (int, struct sockaddr *, socklen_t *))                \
	B(ACCEPT4, accept4, int, (int, struct sockaddr *, socklen_t *, int))         \
	B(POLL, poll, int, (struct pollfd *, nfds_t, int))                           \
	B(PPOLL, ppoll, int,                                                         \
	  (struct pollfd *, nfds_t, const struct timespec *, const sigset_t *))      \
	B(SELECT, select, int, (int, fd_set *, fd_set *, fd_set *, struct timeval *)) \
	B(PSELECT, pselect, int,                                                     \
	  (int, fd_set *, fd_set *, fd_set *, const struct timespec *,               \
	   const sigset_t *))                                                        \
	B(EPOLL_WAIT, epoll_wait, int, (int, struct epoll_event *, int, int))        \
	B(EPOLL_PWAIT, epoll_pwait, int,                                             \
	  (int, struct epoll_event *, int, int, const sigset_t *))                   \
	B(NANOSLEEP, nanosleep, int, (const struct timespec *, struct timespec *))   \
	B(CLOCK_NANOSLEEP, clock_nanosleep, int,                                     \
	  (clockid_t, int, const struct timespec *, struct timespec *))              \
	B(CONNECT, connect, int, (int, const struct sockaddr *, socklen_t))          \
	B(WAITPID, waitpid, pid_t, (pid_t, int *, int))                              \
	B(WAIT4, wait4, pid_t, (pid_t, int *, int, struct rusage *))                 \
	B(WAIT, wait, pid_t, (int *))                                                \
	B(WAITID, waitid, int, (idtype_t, id_t, siginfo_t *, int))                   \
	B(SEM_TIMEDWAIT, sem_timedwait, int, (sem_t *, const struct timespec *))     \
	B(SEM_CLOCKWAIT, sem_clockwait, int,                                         \
	  (sem_t *, clockid_t, const struct timespec *))                             \
	B(USLEEP, usleep, int, (useconds_t))                                         \
	B(SLEEP, sleep, unsigned, (unsigned))                                        \
	P(close, int, (int))                                                         \
	P(shutdown, int, (int, int))                                                 \
	P(close_range, int, (unsigned, unsigned, int))                               \
	P(dup, int, (int))                                                           \
	P(dup2, int, (int, int))                                                     \
	P(dup3, int, (int, int, int))                                                \
	P(fcntl, int, (int, int, ...))                                               \
	P(fcntl64, int, (int, int, ...))                                             \
	P(epoll_ctl, int, (int, int, int, struct epoll_event *))                     \
	P(kill, int, (pid_t, int))                                                   \
	P(sigaction, int, (int, const struct sigaction *, struct sigaction *))       \
	P(signal, sighandler_t, (int, sighandler_t))                                 \
	P(pthread_sigmask, int, (int, const sigset_t *, sigset_t *))                 \
	P(sigprocmask, int, (int, const sigset_t *, sigset_t *))
