/* libc's functions behind the interposed names. See real.h. */
#include "real.h"

#include <dlfcn.h>

#include "common.h"

#define REAL_DEF_B(id, name, ret, params) ret(*real_##name) params;
#define REAL_DEF_P(name, ret, params) ret(*real_##name) params;
CALLS(REAL_DEF_B, REAL_DEF_P)

struct real_fn {
	const char *name;
	void **ptr;
};

/* The blocking calls, by number; then the others. */
static const struct real_fn blocking[CALL_COUNT] = {
#define REAL_BLOCKING_B(id, name, ret, params) [CALL_##id] = {#name, (void **)&real_##name},
#define REAL_BLOCKING_P(name, ret, params)
	CALLS(REAL_BLOCKING_B, REAL_BLOCKING_P)
};
static const struct real_fn plain[] = {
#define REAL_PLAIN_B(id, name, ret, params)
#define REAL_PLAIN_P(name, ret, params) {#name, (void **)&real_##name},
	CALLS(REAL_PLAIN_B, REAL_PLAIN_P)
};

static uintptr_t stub_addr[CALL_COUNT];

void real_resolve(void)
{
	for (int i = 1; i < CALL_COUNT; i++)
		if (!*blocking[i].ptr)
			*blocking[i].ptr = dlsym(RTLD_NEXT, blocking[i].name);
	for (size_t i = 0; i < ARRAY_LEN(plain); i++)
		if (!*plain[i].ptr)
			*plain[i].ptr = dlsym(RTLD_NEXT, plain[i].name);
}

/* Before anything of the application runs, and in programs that link the
 * core without the entry points (unit tests). */
__attribute__((constructor)) static void real_init(void)
{
	real_resolve();
}

const char *real_call_name(int fn)
{
	return fn > 0 && fn < CALL_COUNT ? blocking[fn].name : "?";
}

uintptr_t real_call_addr(int fn)
{
	return fn > 0 && fn < CALL_COUNT ? (uintptr_t)*blocking[fn].ptr : 0;
}

uintptr_t real_stub_addr(int fn)
{
	return fn > 0 && fn < CALL_COUNT ? stub_addr[fn] : 0;
}

void real_set_stubs(const uintptr_t stubs[CALL_COUNT])
{
	for (int i = 0; i < CALL_COUNT; i++)
		stub_addr[i] = stubs[i];
}
