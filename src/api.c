/* The explicit API of include/slowdog.h. */
#include "slowdog.h"

#include "common.h"
#include "conn.h"
#include "thread.h"
#include "watchdog.h"

SD_EXPORT const char *slowdog_version(void)
{
	return SLOWDOG_VERSION;
}

SD_EXPORT int slowdog_begin(const char *label)
{
	watchdog_setup();
	if (slowdog_off)
		return -1;
	struct sd_thread *t = thread_get();
	if (!t)
		return -1;
	watchdog_began(t);
	conn_begin_label(t, label);
	return 0;
}

SD_EXPORT int slowdog_end(void)
{
	struct sd_thread *t = thread_self();
	if (!t || !atomic_load(&t->req_id) || t->fd != -1)
		return -1;
	conn_end_label(t);
	return 0;
}
