/*
 * The interposed libc entry points. Each calls the real function and tells
 * conn.c what happened on a tracked connection; it returns exactly what the
 * real function returned, with errno as the real one left it.
 *
 * Calls a thread may block in go through an assembler entry stub that first
 * records where the caller resumes (the return address, the stack pointer
 * after return and the callee-saved registers) in a thread-local staging
 * area, clobbering only r10 and r11, then jumps to the C body. The body
 * publishes that record in the thread's sd_thread under call_seq, so the
 * watchdog can capture a blocked thread's stack with no signal at all.
 *
 * Hot path: no system call of slowdog's own, no lock, no allocation.
 */

/* We define both fcntl and fcntl64, sendfile and sendfile64: no redirection
 * of the 32-bit-offset names to the 64-bit ones. */
#undef _FILE_OFFSET_BITS

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "capture_sig.h"
#include "common.h"
#include "conn.h"
#include "deaths.h"
#include "lastwords.h"
#include "python.h"
#include "real.h"
#include "share.h"
#include "thread.h"
#include "watchdog.h"

/*
 * The entry stub of each interposed function: when the calling thread has
 * a record and is not inside another interposed call, it writes the
 * callee-saved registers, the caller's stack pointer after the return and
 * the return address into the record's regs (the blocked-call record, made
 * valid by call_enter), then jumps to the C body. It touches only r10 and
 * r11, which the ABI leaves to the callee.
 *
 * call_depth above 0 means a signal handler calls in while the thread is
 * inside an interposed call, or that the call it counts is gone: a signal
 * handler longjmp'ed out of it, and it will never return. The stub tells
 * the two apart on the thread's own stack (where the recorded call's
 * frame was): a call made at or above that frame, or with that frame's
 * return address overwritten, is a new call on a stack the old one left,
 * and starts the count afresh. A nested call sits below the intact frame.
 */
#define STUB_STR_(x) #x
#define STUB_STR(x) STUB_STR_(x)
#define STUB_REG(n) STUB_STR(SD_THREAD_REGS_OFF + (n))
#define STUB(name)                                                        \
	__asm__(".text\n"                                                 \
		".globl " #name "\n"                                      \
		".type " #name ", @function\n"                            \
		".p2align 4\n" #name ":\n"                                \
		".cfi_startproc\n"                                        \
		"movq sd_tls_self@gottpoff(%rip), %r11\n"                 \
		"movq %fs:(%r11), %r11\n"                                 \
		"testq %r11, %r11\n"                                      \
		"jz 1f\n"                                                 \
		"cmpl $0, " STUB_STR(SD_THREAD_DEPTH_OFF) "(%r11)\n"      \
		"jne 2f\n"                                                \
		"0: movq %rbx, " STUB_REG(0) "(%r11)\n"                   \
		"movq %rbp, " STUB_REG(8) "(%r11)\n"                      \
		"movq %r12, " STUB_REG(16) "(%r11)\n"                     \
		"movq %r13, " STUB_REG(24) "(%r11)\n"                     \
		"movq %r14, " STUB_REG(32) "(%r11)\n"                     \
		"movq %r15, " STUB_REG(40) "(%r11)\n"                     \
		"leaq 8(%rsp), %r10\n"                                    \
		"movq %r10, " STUB_REG(48) "(%r11)\n"                     \
		"movq (%rsp), %r10\n"                                     \
		"movq %r10, " STUB_REG(56) "(%r11)\n"                     \
		"1: jmp sd_body_" #name "\n"                              \
		/* r10: the recorded call's return address slot */        \
		"2: movq " STUB_REG(SD_REGS_CFA_OFF) "(%r11), %r10\n"     \
		"subq $8, %r10\n"                                         \
		"cmpq " STUB_STR(SD_THREAD_STACK_LO_OFF) "(%r11), %r10\n" \
		"jb 1b\n"              /* not on the thread's stack */     \
		"cmpq " STUB_STR(SD_THREAD_STACK_HI_OFF) "(%r11), %r10\n" \
		"jae 1b\n"                                                \
		"cmpq %r10, %rsp\n"                                       \
		"jae 3f\n"             /* at or above that frame: gone */  \
		"movq (%r10), %r10\n"                                     \
		"cmpq " STUB_REG(SD_REGS_RET_OFF) "(%r11), %r10\n"        \
		"je 1b\n"              /* intact: a nested call */         \
		/* the record changes: a copy being taken is dropped */   \
		"3: addl $2, " STUB_STR(SD_THREAD_SEQ_OFF) "(%r11)\n"     \
		"movl $0, " STUB_STR(SD_THREAD_DEPTH_OFF) "(%r11)\n"      \
		"jmp 0b\n"                                                \
		".cfi_endproc\n"                                          \
		".size " #name ", .-" #name "\n")

/* The entry stubs, by call number (for the blocked captures' frames). */
#define STUB_DECL_B(id, name, ret, params) extern char stub_##name __asm__(#name);
#define STUB_DECL_P(name, ret, params)
CALLS(STUB_DECL_B, STUB_DECL_P)
static const uintptr_t stubs[CALL_COUNT] = {
#define STUB_ADDR_B(id, name, ret, params) [CALL_##id] = (uintptr_t)&stub_##name,
#define STUB_ADDR_P(name, ret, params)
	CALLS(STUB_ADDR_B, STUB_ADDR_P)
};

/*
 * A vfork child runs in our memory until it execs or exits, and Python's
 * subprocess closes every descriptor there: those closes must not change
 * the connection table. vfork below marks the calling thread (whose TLS
 * the child runs on) for as long as the child runs; the parent clears the
 * mark when it resumes. Like glibc's vfork, the return address is kept in
 * a register across the system call, never on the stack the child shares.
 * A child made some other way (clone with CLONE_VM) is told by its pid,
 * which close_range, the child's usual way, asks.
 */
__thread bool sd_tls_vfork
	__attribute__((tls_model("initial-exec"), visibility("hidden")));
static pid_t our_pid;

__attribute__((used, visibility("hidden"))) long sd_vfork_error(long r)
{
	errno = (int)-r;
	return -1;
}

__asm__(".text\n"
	".globl vfork\n"
	".type vfork, @function\n"
	".p2align 4\n"
	"vfork:\n"
	".cfi_startproc\n"
	"popq %rdi\n"
	".cfi_adjust_cfa_offset -8\n"
	".cfi_register %rip, %rdi\n"
	"movq sd_tls_vfork@gottpoff(%rip), %rsi\n"
	"movb $1, %fs:(%rsi)\n"
	"movl $" STUB_STR(SYS_vfork) ", %eax\n"
	"syscall\n"
	"pushq %rdi\n"
	".cfi_adjust_cfa_offset 8\n"
	".cfi_rel_offset %rip, 0\n"
	"testq %rax, %rax\n"
	"jz 1f\n"                /* the child keeps the mark */
	"movb $0, %fs:(%rsi)\n"
	"cmpq $-4095, %rax\n"
	"jae 2f\n"
	"1: ret\n"
	"2: movq %rax, %rdi\n"
	"jmp sd_vfork_error\n"
	".cfi_endproc\n"
	".size vfork, .-vfork\n");

static inline bool vfork_child(void)
{
	return sd_tls_vfork;
}

/* The coarse clock's tick (see wait_deadline). */
static int64_t coarse_tick_ns = 10 * NS_PER_MS;

static inline int64_t timespec_ns(const struct timespec *ts)
{
	return ts->tv_sec * NS_PER_SEC + ts->tv_nsec;
}

/* A process that forks may become a master: the table its children will
 * share with it is made before its first fork. */
static void atfork_prepare(void)
{
	if (!vfork_child())
		share_create();
}

/* A master that exits without reaping its last workers. */
__attribute__((destructor)) static void preload_fini(void)
{
	if (share_table && getpid() == our_pid)
		deaths_at_exit();
}

static void atfork_child(void)
{
	our_pid = getpid();
	share_atfork_child();
	thread_atfork_child();
	conn_atfork_child();
	lastwords_atfork_child();
	watchdog_atfork_child();
}

__attribute__((constructor)) static void preload_init(void)
{
	real_resolve();
	real_set_stubs(stubs);
	our_pid = getpid();
	struct timespec res;
	if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0 && timespec_ns(&res) > 0)
		coarse_tick_ns = timespec_ns(&res);
	pthread_atfork(atfork_prepare, NULL, atfork_child);
}

/* ---- call bracketing (blocked-call record) ---- */

static inline struct sd_thread *call_enter(int fn)
{
	struct sd_thread *t = thread_self();
	if (t && t->call_depth++ == 0) {
		/* regs: written by the entry stub. Odd already when the stub
		 * found the call before gone: odd again, and changed. */
		t->call_fn = (uint16_t)fn;
		uint32_t s = atomic_load_explicit(&t->call_seq, memory_order_relaxed);
		atomic_store_explicit(&t->call_seq, (s + 1) | 1, memory_order_release);
	}
	return t;
}

static inline void call_leave(struct sd_thread *t)
{
	/* 0: a call the stub counted afresh under this one has left. */
	if (t && t->call_depth && --t->call_depth == 0) {
		uint32_t s = atomic_load_explicit(&t->call_seq, memory_order_relaxed);
		atomic_store_explicit(&t->call_seq, s + 1, memory_order_release);
		atomic_signal_fence(memory_order_seq_cst);
	}
}

static inline uint32_t intr_mark(struct sd_thread *t)
{
	return t ? atomic_load_explicit(&t->intr, memory_order_relaxed) : 0;
}

/* Whether slowdog's signal ran on t since intr_mark gave mark. */
static inline bool intr_since(struct sd_thread *t, uint32_t mark)
{
	return t && atomic_load_explicit(&t->intr, memory_order_relaxed) != mark;
}

/*
 * The one retry of the waits: r = call, made again while it was cut short
 * (interrupted, an expression of r and errno) by slowdog's own signal;
 * before each new try, `again` sets up what is left of the wait (it may
 * break out). An interruption of anyone else's is returned as it came.
 */
#define WAIT_AGAIN(t, r, call, interrupted, again)         \
	for (;;) {                                         \
		uint32_t mark_ = intr_mark(t);             \
		r = (call);                                \
		if (!((interrupted) && intr_since(t, mark_))) \
			break;                             \
		again;                                     \
	}
#define EINTR_RESULT(r) ((r) < 0 && errno == EINTR)

/* An interposed call can come before the constructor ran (from another
 * library's constructor). */
#define RESOLVE(name)                       \
	do {                                \
		if (unlikely(!real_##name)) \
			real_resolve();     \
	} while (0)

/* A tracked connection, remembered with its generation across the call. */
struct tracked {
	struct conn *c;
	uint32_t gen;
};

static inline struct tracked track(int fd)
{
	struct tracked k = {conn_get(fd), 0};
	if (k.c)
		k.gen = atomic_load_explicit(&k.c->gen, memory_order_relaxed);
	return k;
}

static inline bool still(struct tracked k)
{
	return k.c && atomic_load_explicit(&k.c->gen, memory_order_relaxed) == k.gen;
}

/* ---- reads ---- */

/*
 * Read and write bodies come in two parts. The entry, for every call: an fd
 * slowdog does not track (a pipe, a file, a database socket) gets only the
 * blocked-call record, errno is left as the call set it, and the function
 * is small enough to save few registers. A tracked connection goes on in
 * a separate function, tracked_<name>.
 */
#define ENTRY(fn, name, call, tracked_call)                              \
	RESOLVE(name);                                                  \
	struct tracked k = track(fd);                                   \
	if (likely(!k.c)) {                                             \
		struct sd_thread *t = call_enter(fn);                   \
		ssize_t r = call;                                       \
		call_leave(t);                                          \
		return r;                                               \
	}                                                               \
	return tracked_call;

/* Bytes read on a tracked connection (call: conn_read_done or
 * conn_read_iov, true when they began a request). */
#define READ_SEEN(call)                                \
	do {                                           \
		if (unlikely(call))                    \
			watchdog_began(thread_self()); \
	} while (0)

#define READ_TRACKED(fn, call)                                          \
	conn_read_enter(k.c);                                           \
	struct sd_thread *t = call_enter(fn);                           \
	ssize_t r = call;                                               \
	int e = errno;                                                  \
	call_leave(t);

static __attribute__((noinline)) ssize_t tracked_read(struct tracked k, int fd, void *buf, size_t n)
{
	READ_TRACKED(CALL_READ, real_read(fd, buf, n));
	if (r > 0 && still(k))
		READ_SEEN(conn_read_done(k.c, fd, buf, (size_t)r));
	errno = e;
	return r;
}

__attribute__((used, visibility("hidden"))) ssize_t sd_body_read(int fd, void *buf, size_t n)
{
	ENTRY(CALL_READ, read, real_read(fd, buf, n),
	      tracked_read(k, fd, buf, n));
}
STUB(read);

static __attribute__((noinline)) ssize_t tracked_recv(struct tracked k, int fd, void *buf, size_t n, int fl)
{
	READ_TRACKED(CALL_RECV, real_recv(fd, buf, n, fl));
	if (r > 0 && still(k) && !(fl & MSG_PEEK))
		READ_SEEN(conn_read_done(k.c, fd, buf, (size_t)r));
	errno = e;
	return r;
}

__attribute__((used, visibility("hidden"))) ssize_t sd_body_recv(int fd, void *buf, size_t n, int fl)
{
	ENTRY(CALL_RECV, recv, real_recv(fd, buf, n, fl),
	      tracked_recv(k, fd, buf, n, fl));
}
STUB(recv);

static __attribute__((noinline)) ssize_t tracked_recvfrom(struct tracked k, int fd, void *buf, size_t n, int fl,
				   struct sockaddr *a, socklen_t *al)
{
	READ_TRACKED(CALL_RECVFROM, real_recvfrom(fd, buf, n, fl, a, al));
	if (r > 0 && still(k) && !(fl & MSG_PEEK))
		READ_SEEN(conn_read_done(k.c, fd, buf, (size_t)r));
	errno = e;
	return r;
}

__attribute__((used, visibility("hidden"))) ssize_t sd_body_recvfrom(int fd, void *buf, size_t n, int fl,
				   struct sockaddr *a, socklen_t *al)
{
	ENTRY(CALL_RECVFROM, recvfrom, real_recvfrom(fd, buf, n, fl, a, al),
	      tracked_recvfrom(k, fd, buf, n, fl, a, al));
}
STUB(recvfrom);

static __attribute__((noinline)) ssize_t tracked_readv(struct tracked k, int fd, const struct iovec *iov, int cnt)
{
	READ_TRACKED(CALL_READV, real_readv(fd, iov, cnt));
	if (r > 0 && still(k))
		READ_SEEN(conn_read_iov(k.c, fd, iov, cnt, (size_t)r));
	errno = e;
	return r;
}

__attribute__((used, visibility("hidden"))) ssize_t sd_body_readv(int fd, const struct iovec *iov, int cnt)
{
	ENTRY(CALL_READV, readv, real_readv(fd, iov, cnt),
	      tracked_readv(k, fd, iov, cnt));
}
STUB(readv);

static __attribute__((noinline)) ssize_t tracked_recvmsg(struct tracked k, int fd, struct msghdr *m, int fl)
{
	READ_TRACKED(CALL_RECVMSG, real_recvmsg(fd, m, fl));
	if (r > 0 && still(k) && !(fl & MSG_PEEK) && m)
		READ_SEEN(conn_read_iov(k.c, fd, m->msg_iov, (int)m->msg_iovlen, (size_t)r));
	errno = e;
	return r;
}

__attribute__((used, visibility("hidden"))) ssize_t sd_body_recvmsg(int fd, struct msghdr *m, int fl)
{
	ENTRY(CALL_RECVMSG, recvmsg, real_recvmsg(fd, m, fl),
	      tracked_recvmsg(k, fd, m, fl));
}
STUB(recvmsg);

/* ---- writes ---- */

#define WRITE_TRACKED(fn, call)                                         \
	struct sd_thread *t = call_enter(fn);                           \
	ssize_t r = call;                                               \
	int e = errno;                                                  \
	call_leave(t);                                                  \
	if (r < 0 && still(k))                                          \
		conn_write_failed(k.c, e);

static __attribute__((noinline)) ssize_t tracked_write(struct tracked k, int fd, const void *buf, size_t n)
{
	WRITE_TRACKED(CALL_WRITE, real_write(fd, buf, n));
	if (r > 0 && still(k))
		conn_write_done(k.c, buf, (size_t)r);
	errno = e;
	return r;
}

__attribute__((used, visibility("hidden"))) ssize_t sd_body_write(int fd, const void *buf, size_t n)
{
	ENTRY(CALL_WRITE, write, real_write(fd, buf, n),
	      tracked_write(k, fd, buf, n));
}
STUB(write);

static __attribute__((noinline)) ssize_t tracked_send(struct tracked k, int fd, const void *buf, size_t n, int fl)
{
	WRITE_TRACKED(CALL_SEND, real_send(fd, buf, n, fl));
	if (r > 0 && still(k))
		conn_write_done(k.c, buf, (size_t)r);
	errno = e;
	return r;
}

__attribute__((used, visibility("hidden"))) ssize_t sd_body_send(int fd, const void *buf, size_t n, int fl)
{
	ENTRY(CALL_SEND, send, real_send(fd, buf, n, fl),
	      tracked_send(k, fd, buf, n, fl));
}
STUB(send);

static __attribute__((noinline)) ssize_t tracked_sendto(struct tracked k, int fd, const void *buf, size_t n, int fl,
				 const struct sockaddr *a, socklen_t al)
{
	WRITE_TRACKED(CALL_SENDTO, real_sendto(fd, buf, n, fl, a, al));
	if (r > 0 && still(k))
		conn_write_done(k.c, buf, (size_t)r);
	errno = e;
	return r;
}

__attribute__((used, visibility("hidden"))) ssize_t sd_body_sendto(int fd, const void *buf, size_t n, int fl,
				 const struct sockaddr *a, socklen_t al)
{
	ENTRY(CALL_SENDTO, sendto, real_sendto(fd, buf, n, fl, a, al),
	      tracked_sendto(k, fd, buf, n, fl, a, al));
}
STUB(sendto);

static __attribute__((noinline)) ssize_t tracked_writev(struct tracked k, int fd, const struct iovec *iov, int cnt)
{
	WRITE_TRACKED(CALL_WRITEV, real_writev(fd, iov, cnt));
	if (r > 0 && still(k))
		conn_write_iov(k.c, iov, cnt, (size_t)r);
	errno = e;
	return r;
}

__attribute__((used, visibility("hidden"))) ssize_t sd_body_writev(int fd, const struct iovec *iov, int cnt)
{
	ENTRY(CALL_WRITEV, writev, real_writev(fd, iov, cnt),
	      tracked_writev(k, fd, iov, cnt));
}
STUB(writev);

static __attribute__((noinline)) ssize_t tracked_sendmsg(struct tracked k, int fd, const struct msghdr *m, int fl)
{
	WRITE_TRACKED(CALL_SENDMSG, real_sendmsg(fd, m, fl));
	if (r > 0 && still(k) && m)
		conn_write_iov(k.c, m->msg_iov, (int)m->msg_iovlen, (size_t)r);
	errno = e;
	return r;
}

__attribute__((used, visibility("hidden"))) ssize_t sd_body_sendmsg(int fd, const struct msghdr *m, int fl)
{
	ENTRY(CALL_SENDMSG, sendmsg, real_sendmsg(fd, m, fl),
	      tracked_sendmsg(k, fd, m, fl));
}
STUB(sendmsg);

/* sendfile and sendfile64 (the same call on x86-64), through real. */
static __attribute__((noinline)) ssize_t tracked_sendfile(struct tracked k, int fn,
		ssize_t (*real)(int, int, off_t *, size_t), int fd, int in, off_t *off, size_t n)
{
	WRITE_TRACKED(fn, real(fd, in, off, n));
	if (r > 0 && still(k))
		conn_sendfile_done(k.c, (size_t)r);
	errno = e;
	return r;
}

__attribute__((used, visibility("hidden"))) ssize_t sd_body_sendfile(int fd, int in, off_t *off, size_t n)
{
	ENTRY(CALL_SENDFILE, sendfile, real_sendfile(fd, in, off, n),
	      tracked_sendfile(k, CALL_SENDFILE, real_sendfile, fd, in, off, n));
}
STUB(sendfile);

__attribute__((used, visibility("hidden"))) ssize_t sd_body_sendfile64(int fd, int in, off_t *off, size_t n)
{
	ENTRY(CALL_SENDFILE64, sendfile64, real_sendfile64(fd, in, off, n),
	      tracked_sendfile(k, CALL_SENDFILE64, real_sendfile64, fd, in, off, n));
}
STUB(sendfile64);

/* ---- accept ---- */

static void accepted(int lfd, int fd)
{
	watchdog_setup();
	if (!slowdog_off) {
		conn_listener(lfd);
		conn_accepted(fd);
	}
}

__attribute__((used, visibility("hidden"))) int sd_body_accept(int fd, struct sockaddr *a, socklen_t *al)
{
	RESOLVE(accept);
	struct sd_thread *t = call_enter(CALL_ACCEPT);
	int r = real_accept(fd, a, al);
	int e = errno;
	call_leave(t);
	if (r >= 0)
		accepted(fd, r);
	errno = e;
	return r;
}
STUB(accept);

__attribute__((used, visibility("hidden"))) int sd_body_accept4(int fd, struct sockaddr *a, socklen_t *al, int fl)
{
	RESOLVE(accept4);
	struct sd_thread *t = call_enter(CALL_ACCEPT4);
	int r = real_accept4(fd, a, al, fl);
	int e = errno;
	call_leave(t);
	if (r >= 0)
		accepted(fd, r);
	errno = e;
	return r;
}
STUB(accept4);

/* ---- waiting ---- */

/*
 * A wait that a signal of slowdog's cut short is made again for what is
 * left of its time. The waits of event loops (poll, pselect, epoll) take
 * their deadlines on the coarse clock: a few nanoseconds to read where the
 * precise one costs tens, and these calls are every event loop's. The
 * coarse clock is behind by a tick at most (coarse_tick_ns: clock_getres
 * at start), so what is left is rounded up by a tick and a millisecond
 * more, for a tick that comes late: a wait made again never ends before
 * its time, at most two ticks and two milliseconds after it. A timeout
 * beyond WAIT_SEC_MAX is waited again whole: it means "forever". The
 * sleeps keep the precise clock.
 */
#define WAIT_SEC_MAX ((int64_t)1 << 32)
static inline int64_t wait_deadline(int64_t ns)
{
	return clock_coarse_ns() + ns;
}

static int64_t wait_left_ns(int64_t deadline, int64_t total)
{
	int64_t left = deadline - clock_coarse_ns() + coarse_tick_ns + NS_PER_MS;
	return left <= 0 ? 0 : left > total ? total : left;
}

/* A timespec timeout that gets a deadline: a valid one, not "forever". */
static inline bool wait_timed(const struct timespec *ts)
{
	return ts && ts->tv_sec >= 0 && ts->tv_sec <= WAIT_SEC_MAX &&
	       ts->tv_nsec >= 0 && ts->tv_nsec < NS_PER_SEC;
}

static int remaining_ms(int64_t deadline, int total_ms)
{
	int64_t left = wait_left_ns(deadline, (int64_t)total_ms * NS_PER_MS);
	return (int)((left + NS_PER_MS - 1) / NS_PER_MS);
}

/* The time left of a timespec wait, in *left. */
static const struct timespec *wait_left_ts(int64_t deadline, int64_t total,
					   struct timespec *left)
{
	int64_t l = wait_left_ns(deadline, total);
	left->tv_sec = l / NS_PER_SEC;
	left->tv_nsec = l % NS_PER_SEC;
	return left;
}

static void poll_inputs(const struct pollfd *p, nfds_t n)
{
	for (nfds_t i = 0; i < n; i++) {
		if (!(p[i].events & (POLLIN | POLLRDNORM)))
			continue;
		struct conn *c = conn_get(p[i].fd);
		if (c)
			conn_wait_input(c);
	}
}

__attribute__((used, visibility("hidden"))) int sd_body_poll(struct pollfd *p, nfds_t n, int ms)
{
	RESOLVE(poll);
	poll_inputs(p, n);
	struct sd_thread *lt = thread_self();
	bool loop = conn_wait_maybe_loop(lt) && conn_poll_wait(lt, p, n);
	struct sd_thread *t = call_enter(CALL_POLL);
	int64_t deadline = ms > 0 && t ? wait_deadline(ms * NS_PER_MS) : 0;
	int ms0 = ms, r;
	WAIT_AGAIN(t, r, real_poll(p, n, ms), EINTR_RESULT(r),
		   if (ms > 0) ms = remaining_ms(deadline, ms0));
	int e = errno;
	if (loop)
		conn_loop_left(t);
	call_leave(t);
	errno = e;
	return r;
}
STUB(poll);

__attribute__((used, visibility("hidden"))) int sd_body_ppoll(struct pollfd *p, nfds_t n, const struct timespec *ts,
			 const sigset_t *mask)
{
	RESOLVE(ppoll);
	poll_inputs(p, n);
	struct sd_thread *lt = thread_self();
	bool loop = conn_wait_maybe_loop(lt) && conn_poll_wait(lt, p, n);
	struct sd_thread *t = call_enter(CALL_PPOLL);
	bool timed = t && wait_timed(ts);
	int64_t total = timed ? timespec_ns(ts) : 0;
	int64_t deadline = timed ? wait_deadline(total) : 0;
	struct timespec left;
	int r;
	WAIT_AGAIN(t, r, real_ppoll(p, n, ts, mask), EINTR_RESULT(r),
		   if (timed) ts = wait_left_ts(deadline, total, &left));
	int e = errno;
	if (loop)
		conn_loop_left(t);
	call_leave(t);
	errno = e;
	return r;
}
STUB(ppoll);

static void select_inputs(int nfds, const fd_set *rd)
{
	if (!rd || nfds <= 0)
		return;
	if (nfds > FD_SETSIZE)
		nfds = FD_SETSIZE;
	const unsigned long *w = (const unsigned long *)rd;
	int bits = 8 * (int)sizeof(unsigned long);
	for (int i = 0; i * bits < nfds; i++) {
		unsigned long word = w[i];
		while (word) {
			int b = __builtin_ctzl(word);
			word &= word - 1;
			int fd = i * bits + b;
			if (fd >= nfds)
				break;
			struct conn *c = conn_get(fd);
			if (c)
				conn_wait_input(c);
		}
	}
}

/* The words of a set that hold its first nfds bits: all that select reads
 * and writes of it. */
static inline size_t set_bytes(int nfds)
{
	int bits = 8 * (int)sizeof(unsigned long);
	if (nfds <= 0)
		return 0;
	if (nfds > FD_SETSIZE)
		nfds = FD_SETSIZE;
	return (size_t)((nfds + bits - 1) / bits) * sizeof(unsigned long);
}

/* One word (the usual: descriptors below 64) without a call. */
static inline void set_copy(fd_set *dst, const fd_set *src, size_t bytes)
{
	if (bytes == sizeof(unsigned long))
		memcpy(dst, src, sizeof(unsigned long));
	else
		memcpy(dst, src, bytes);
}

/* Copies the sets in use (each may be NULL) from s* to d*: an interrupted
 * select leaves its sets undefined. */
static inline void sets_restore(fd_set *drd, fd_set *dwr, fd_set *dex,
				const fd_set *srd, const fd_set *swr,
				const fd_set *sex, size_t bytes)
{
	if (srd && drd)
		set_copy(drd, srd, bytes);
	if (swr && dwr)
		set_copy(dwr, swr, bytes);
	if (sex && dex)
		set_copy(dex, sex, bytes);
}

__attribute__((used, visibility("hidden"))) int sd_body_select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex,
			  struct timeval *tv)
{
	RESOLVE(select);
	select_inputs(nfds, rd);
	struct sd_thread *lt = thread_self();
	bool loop = conn_wait_maybe_loop(lt) && conn_select_wait(lt, nfds, rd);
	struct sd_thread *t = call_enter(CALL_SELECT);
	/* An interrupted select leaves the sets undefined: keep copies. */
	fd_set crd, cwr, cex;
	size_t sb = set_bytes(nfds);
	if (t)
		sets_restore(&crd, &cwr, &cex, rd, wr, ex, sb);
	int r;
	/* Linux updates *tv with the time left. */
	WAIT_AGAIN(t, r, real_select(nfds, rd, wr, ex, tv), EINTR_RESULT(r),
		   sets_restore(rd, wr, ex, &crd, &cwr, &cex, sb));
	int e = errno;
	if (loop)
		conn_loop_left(t);
	call_leave(t);
	errno = e;
	return r;
}
STUB(select);

__attribute__((used, visibility("hidden"))) int sd_body_pselect(int nfds, fd_set *rd, fd_set *wr, fd_set *ex,
			   const struct timespec *ts, const sigset_t *mask)
{
	RESOLVE(pselect);
	select_inputs(nfds, rd);
	struct sd_thread *lt = thread_self();
	bool loop = conn_wait_maybe_loop(lt) && conn_select_wait(lt, nfds, rd);
	struct sd_thread *t = call_enter(CALL_PSELECT);
	fd_set crd, cwr, cex;
	size_t sb = set_bytes(nfds);
	if (t)
		sets_restore(&crd, &cwr, &cex, rd, wr, ex, sb);
	bool timed = t && wait_timed(ts);
	int64_t total = timed ? timespec_ns(ts) : 0;
	int64_t deadline = timed ? wait_deadline(total) : 0;
	struct timespec left;
	int r;
	WAIT_AGAIN(t, r, real_pselect(nfds, rd, wr, ex, ts, mask), EINTR_RESULT(r),
		   sets_restore(rd, wr, ex, &crd, &cwr, &cex, sb);
		   if (timed) ts = wait_left_ts(deadline, total, &left));
	int e = errno;
	if (loop)
		conn_loop_left(t);
	call_leave(t);
	errno = e;
	return r;
}
STUB(pselect);

__attribute__((used, visibility("hidden"))) int sd_body_epoll_wait(int epfd, struct epoll_event *ev, int max, int ms)
{
	RESOLVE(epoll_wait);
	bool loop = conn_epoll_wait(epfd);
	struct sd_thread *t = call_enter(CALL_EPOLL_WAIT);
	int64_t deadline = ms > 0 && t ? wait_deadline(ms * NS_PER_MS) : 0;
	int ms0 = ms, r;
	WAIT_AGAIN(t, r, real_epoll_wait(epfd, ev, max, ms), EINTR_RESULT(r),
		   if (ms > 0) ms = remaining_ms(deadline, ms0));
	/* errno as the call left it: neither changes it */
	if (loop)
		conn_loop_left(t);
	call_leave(t);
	return r;
}
STUB(epoll_wait);

__attribute__((used, visibility("hidden"))) int sd_body_epoll_pwait(int epfd, struct epoll_event *ev, int max, int ms,
			       const sigset_t *mask)
{
	RESOLVE(epoll_pwait);
	bool loop = conn_epoll_wait(epfd);
	struct sd_thread *t = call_enter(CALL_EPOLL_PWAIT);
	int64_t deadline = ms > 0 && t ? wait_deadline(ms * NS_PER_MS) : 0;
	int ms0 = ms, r;
	WAIT_AGAIN(t, r, real_epoll_pwait(epfd, ev, max, ms, mask), EINTR_RESULT(r),
		   if (ms > 0) ms = remaining_ms(deadline, ms0));
	/* errno as the call left it: neither changes it */
	if (loop)
		conn_loop_left(t);
	call_leave(t);
	return r;
}
STUB(epoll_pwait);

__attribute__((used, visibility("hidden"))) int sd_body_nanosleep(const struct timespec *req, struct timespec *rem)
{
	RESOLVE(nanosleep);
	struct sd_thread *t = call_enter(CALL_NANOSLEEP);
	struct timespec left, mine;
	int r;
	WAIT_AGAIN(t, r, real_nanosleep(req, rem ? rem : &mine), EINTR_RESULT(r),
		   left = rem ? *rem : mine; req = &left);
	int e = errno;
	call_leave(t);
	errno = e;
	return r;
}
STUB(nanosleep);

__attribute__((used, visibility("hidden"))) int sd_body_clock_nanosleep(clockid_t clk, int fl, const struct timespec *req,
				   struct timespec *rem)
{
	RESOLVE(clock_nanosleep);
	struct sd_thread *t = call_enter(CALL_CLOCK_NANOSLEEP);
	struct timespec left, mine;
	int r;
	/* clock_nanosleep returns the error instead of setting errno. An
	 * absolute time is waited for again as it is. */
	WAIT_AGAIN(t, r, real_clock_nanosleep(clk, fl, req, rem ? rem : &mine),
		   r == EINTR,
		   if (!(fl & TIMER_ABSTIME)) { left = rem ? *rem : mine; req = &left; });
	call_leave(t);
	return r;
}
STUB(clock_nanosleep);

__attribute__((used, visibility("hidden"))) int sd_body_connect(int fd, const struct sockaddr *a, socklen_t al)
{
	RESOLVE(connect);
	struct sd_thread *t = call_enter(CALL_CONNECT);
	int r = real_connect(fd, a, al);
	int e = errno;
	call_leave(t);
	errno = e;
	return r;
}
STUB(connect);

/*
 * Reaping: a child that died with requests in flight gets its records
 * (deaths.c), written by the process that reaps it. A caller that does
 * not ask for the status still has it read for us.
 */
static pid_t reaped(pid_t r, int status)
{
	if (r > 0 && share_table && !vfork_child()) {
		int e = errno;
		deaths_reaped(r, status, false);
		errno = e;
	}
	return r;
}

__attribute__((used, visibility("hidden"))) pid_t sd_body_waitpid(pid_t pid, int *st, int opt)
{
	RESOLVE(waitpid);
	int mine = 0;
	int *sp = st ? st : &mine;
	struct sd_thread *t = call_enter(CALL_WAITPID);
	pid_t r = real_waitpid(pid, sp, opt);
	int e = errno;
	call_leave(t);
	errno = e;
	return reaped(r, *sp);
}
STUB(waitpid);

__attribute__((used, visibility("hidden"))) pid_t sd_body_wait4(pid_t pid, int *st, int opt, struct rusage *ru)
{
	RESOLVE(wait4);
	int mine = 0;
	int *sp = st ? st : &mine;
	struct sd_thread *t = call_enter(CALL_WAIT4);
	pid_t r = real_wait4(pid, sp, opt, ru);
	int e = errno;
	call_leave(t);
	errno = e;
	return reaped(r, *sp);
}
STUB(wait4);

__attribute__((used, visibility("hidden"))) pid_t sd_body_wait(int *st)
{
	RESOLVE(wait);
	int mine = 0;
	int *sp = st ? st : &mine;
	struct sd_thread *t = call_enter(CALL_WAIT);
	pid_t r = real_wait(sp);
	int e = errno;
	call_leave(t);
	errno = e;
	return reaped(r, *sp);
}
STUB(wait);

__attribute__((used, visibility("hidden"))) int sd_body_waitid(idtype_t type, id_t id, siginfo_t *si, int opt)
{
	RESOLVE(waitid);
	struct sd_thread *t = call_enter(CALL_WAITID);
	int r = real_waitid(type, id, si, opt);
	int e = errno;
	call_leave(t);
	if (r == 0 && si && si->si_pid > 0 && share_table && !vfork_child())
		deaths_reaped_info(si, (opt & WNOWAIT) != 0);
	errno = e;
	return r;
}
STUB(waitid);

/*
 * Semaphores and sleeps: the kernel does not restart them after a signal
 * handler ran, so an EINTR that slowdog's signal caused is hidden by
 * waiting again for the time left (absolute timeouts: the same one).
 */
__attribute__((used, visibility("hidden"))) int sd_body_sem_timedwait(sem_t *sem, const struct timespec *abs)
{
	RESOLVE(sem_timedwait);
	struct sd_thread *t = call_enter(CALL_SEM_TIMEDWAIT);
	int r;
	WAIT_AGAIN(t, r, real_sem_timedwait(sem, abs), EINTR_RESULT(r), (void)0);
	int e = errno;
	call_leave(t);
	errno = e;
	return r;
}
STUB(sem_timedwait);

__attribute__((used, visibility("hidden"))) int sd_body_sem_clockwait(sem_t *sem, clockid_t clk,
						    const struct timespec *abs)
{
	RESOLVE(sem_clockwait);
	if (!real_sem_clockwait) {
		errno = ENOSYS;
		return -1;
	}
	struct sd_thread *t = call_enter(CALL_SEM_CLOCKWAIT);
	int r;
	WAIT_AGAIN(t, r, real_sem_clockwait(sem, clk, abs), EINTR_RESULT(r), (void)0);
	int e = errno;
	call_leave(t);
	errno = e;
	return r;
}
STUB(sem_clockwait);

__attribute__((used, visibility("hidden"))) int sd_body_usleep(useconds_t us)
{
	RESOLVE(usleep);
	struct sd_thread *t = call_enter(CALL_USLEEP);
	int64_t deadline = t ? clock_mono_ns() + (int64_t)us * 1000 : 0;
	int r;
	int64_t left;
	WAIT_AGAIN(t, r, real_usleep(us), EINTR_RESULT(r),
		   left = deadline - clock_mono_ns();
		   if (left <= 0) { r = 0; break; }
		   us = (useconds_t)((left + 999) / 1000));
	int e = errno;
	call_leave(t);
	errno = e;
	return r;
}
STUB(usleep);

__attribute__((used, visibility("hidden"))) unsigned sd_body_sleep(unsigned s)
{
	RESOLVE(sleep);
	struct sd_thread *t = call_enter(CALL_SLEEP);
	int64_t deadline = t ? clock_mono_ns() + (int64_t)s * NS_PER_SEC : 0;
	uint32_t mark = intr_mark(t);
	unsigned r = real_sleep(s);
	if (r > 0 && intr_since(t, mark)) {
		/* Ours: sleep out the rest, to the nanosecond. Anyone else's
		 * signal ends it, as it would have ended the sleep. */
		int64_t left = deadline - clock_mono_ns();
		r = 0;
		if (left > 0) {
			struct timespec ts = {left / NS_PER_SEC, left % NS_PER_SEC}, rem;
			int n;
			WAIT_AGAIN(t, n, real_nanosleep(&ts, &rem), EINTR_RESULT(n),
				   ts = rem);
			if (EINTR_RESULT(n))
				r = (unsigned)rem.tv_sec + (rem.tv_nsec != 0);
		}
	}
	int e = errno;
	call_leave(t);
	errno = e;
	return r;
}
STUB(sleep);

/* ---- descriptors: plain wrappers, nothing blocks here ---- */

SD_EXPORT int close(int fd)
{
	RESOLVE(close);
	if (unlikely(conn_get(fd) != NULL) && !vfork_child())
		conn_closed(fd);
	return real_close(fd);
}

SD_EXPORT int shutdown(int fd, int how)
{
	RESOLVE(shutdown);
	int r = real_shutdown(fd, how);
	int e = errno;
	struct conn *c = conn_get(fd);
	if (c && (r == 0 || e == ENOTCONN))
		conn_shutdown(c);
	errno = e;
	return r;
}

SD_EXPORT int close_range(unsigned lo, unsigned hi, int flags)
{
	RESOLVE(close_range);
	if (!real_close_range) {
		errno = ENOSYS;
		return -1;
	}
	int r = real_close_range(lo, hi, flags);
	int e = errno;
	if (r == 0 && !(flags & 4 /* CLOSE_RANGE_CLOEXEC */) && !vfork_child() &&
	    getpid() == our_pid)
		conn_close_range(lo, hi);
	errno = e;
	return r;
}

/* r: the new descriptor that dup, dup2, dup3 or fcntl(F_DUPFD) made of
 * old. What that means for a connection is conn_duped's to say; a vfork
 * child's descriptors are its own. */
static int duped(int old, int r)
{
	if (r >= 0 && !vfork_child()) {
		int e = errno;
		conn_duped(old, r);
		errno = e;
	}
	return r;
}

SD_EXPORT int dup(int fd)
{
	RESOLVE(dup);
	return duped(fd, real_dup(fd));
}

SD_EXPORT int dup2(int old, int new)
{
	RESOLVE(dup2);
	return duped(old, real_dup2(old, new));
}

SD_EXPORT int dup3(int old, int new, int flags)
{
	RESOLVE(dup3);
	return duped(old, real_dup3(old, new, flags));
}

static __attribute__((noinline)) int fcntl_dup(int (*fn)(int, int, ...), int fd,
					       int cmd, void *arg)
{
	return duped(fd, fn(fd, cmd, arg));
}

/* Every command but the two that make a descriptor: a tail call. */
static inline int fcntl_common(int (*fn)(int, int, ...), int fd, int cmd, void *arg)
{
	if (unlikely(cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
		return fcntl_dup(fn, fd, cmd, arg);
	return fn(fd, cmd, arg);
}

/* The third argument is an int or a pointer; passing it on as a pointer-
 * sized value is what the ABI does for both. It comes in the register of
 * a third argument either way (x86-64: a variadic call passes its
 * arguments as a plain one does), so the functions take it as one: no
 * variadic prologue saving every argument register, on a call that
 * Python's sockets make several times a request. */
SD_EXPORT int sd_fcntl(int fd, int cmd, void *arg) __asm__("fcntl");
SD_EXPORT int sd_fcntl64(int fd, int cmd, void *arg) __asm__("fcntl64");

SD_EXPORT int sd_fcntl(int fd, int cmd, void *arg)
{
	RESOLVE(fcntl);
	return fcntl_common(real_fcntl, fd, cmd, arg);
}

SD_EXPORT int sd_fcntl64(int fd, int cmd, void *arg)
{
	RESOLVE(fcntl64);
	return fcntl_common(real_fcntl64 ? real_fcntl64 : real_fcntl, fd, cmd, arg);
}

SD_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	RESOLVE(epoll_ctl);
	int r = real_epoll_ctl(epfd, op, fd, ev);
	if (r == 0) {
		struct conn *c = conn_get(fd);
		if (c) {
			int e = errno;
			conn_epoll_ctl(c, epfd, op, ev ? ev->events : 0);
			errno = e;
		}
	}
	return r;
}

/* ---- kill: a worker about to be SIGKILLed may say its last words ---- */

SD_EXPORT int kill(pid_t pid, int sig)
{
	RESOLVE(kill);
	if (share_table && pid > 0 && !vfork_child()) {
		int e = errno;
		deaths_sending(pid, sig);
		errno = e;
	}
	return real_kill(pid, sig);
}

/* ---- signals: keep slowdog's signal usable on tracked threads, and
 * slowdog's handler in front of the application's deadly ones ---- */

SD_EXPORT int sigaction(int sig, const struct sigaction *act,
			struct sigaction *old)
{
	RESOLVE(sigaction);
	if (act && sig > 0 && sig == capture_signal_number()) {
		/*
		 * Resetting our signal to the default would make the next
		 * capture kill the process: keep our handler and say the reset
		 * was done. A child (Python's subprocess resets every handler
		 * between vfork and exec, sharing our memory) is another
		 * process: let it be. A real handler means the application
		 * wants the signal: give it up.
		 */
		if (getpid() != capture_signal_owner())
			return real_sigaction(sig, act, old);
		if (!(act->sa_flags & SA_SIGINFO) && act->sa_handler == SIG_DFL) {
			if (old)
				real_sigaction(sig, NULL, old);
			return 0;
		}
		capture_signal_taken();
	}
	if (lastwords_armed() && lastwords_watched(sig) && !vfork_child())
		return lastwords_sigaction(sig, act, old);
	return real_sigaction(sig, act, old);
}

/* signal() does not go through sigaction's symbol in glibc: same rules. */
SD_EXPORT sighandler_t signal(int sig, sighandler_t handler)
{
	RESOLVE(signal);
	if (sig > 0 && sig == capture_signal_number() &&
	    getpid() == capture_signal_owner()) {
		if (handler == SIG_DFL)
			return SIG_DFL;
		capture_signal_taken();
	}
	if (lastwords_armed() && lastwords_watched(sig) && !vfork_child())
		return lastwords_signal(sig, handler);
	return real_signal(sig, handler);
}

static const sigset_t *keep_unblocked(int how, const sigset_t *set, sigset_t *copy)
{
	int sig = thread_keep_signal;
	if (!set || sig <= 0 || how == SIG_UNBLOCK || !thread_self() ||
	    !sigismember(set, sig))
		return set;
	*copy = *set;
	sigdelset(copy, sig);
	return copy;
}

SD_EXPORT int pthread_sigmask(int how, const sigset_t *set, sigset_t *old)
{
	RESOLVE(pthread_sigmask);
	sigset_t copy;
	return real_pthread_sigmask(how, keep_unblocked(how, set, &copy), old);
}

SD_EXPORT int sigprocmask(int how, const sigset_t *set, sigset_t *old)
{
	RESOLVE(sigprocmask);
	sigset_t copy;
	return real_sigprocmask(how, keep_unblocked(how, set, &copy), old);
}
