/*
 * The bottom layer: libc's own functions behind the names slowdog
 * interposes. Inside libslowdog.so a plain `close` or `write` is slowdog's
 * interposer (src/preload.c); everything below the entry points calls
 * real_close, real_write, ... instead (a test fails when it does not).
 *
 * The pointers are resolved once, by real_resolve (the library's
 * constructor, or the first interposed call that comes earlier). They are
 * written before any thread of the application can call in and never
 * change after, so reading them needs no ordering.
 */
#pragma once

#include <poll.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "calls.h"

/* Everything declared here lives in libslowdog.so itself: reached
 * without the GOT. */
#pragma GCC visibility push(hidden)

/* The interposed calls a thread can be blocked in (a blocked capture
 * names its call by this number). */
enum call_fn {
	CALL_NONE = 0,
#define REAL_ENUM_B(id, name, ret, params) CALL_##id,
#define REAL_ENUM_P(name, ret, params)
	CALLS(REAL_ENUM_B, REAL_ENUM_P)
#undef REAL_ENUM_B
#undef REAL_ENUM_P
	CALL_COUNT,
};

#define REAL_DECL_B(id, name, ret, params) extern ret(*real_##name) params;
#define REAL_DECL_P(name, ret, params) extern ret(*real_##name) params;
CALLS(REAL_DECL_B, REAL_DECL_P)
#undef REAL_DECL_B
#undef REAL_DECL_P

/* Looks up every pointer still unset. Idempotent; not async-signal-safe. */
void real_resolve(void);

/* "clock_nanosleep" etc.; "?" for a number out of range. */
const char *real_call_name(int fn);

/* Address of libc's own function for fn (a blocked capture shows it as
 * frame #0), 0 if unknown. */
uintptr_t real_call_addr(int fn);

/* Address of slowdog's entry stub for fn (where a blocked capture's
 * synthetic frame starts), 0 if unknown. The stubs are the entry points'
 * (preload.c), which hand them down once with real_set_stubs. */
uintptr_t real_stub_addr(int fn);
void real_set_stubs(const uintptr_t stubs[CALL_COUNT]);

#pragma GCC visibility pop
