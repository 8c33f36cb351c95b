/*
 * slowdog: find out why a request is slow while it is still running.
 *
 * Preloaded (LD_PRELOAD=libslowdog.so), slowdog needs no code at all. This
 * header is for work that is not an HTTP request (a job runner, a cron task):
 * bracket it with slowdog_begin() and slowdog_end() and it is watched and
 * reported like a request, the label in place of the request line.
 * See slowdog_begin(3) and slowdog(7).
 */
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

#define SLOWDOG_VERSION "0.1.0"

/* The version of the loaded library, e.g. "0.1.0". */
const char *slowdog_version(void);

/* Starts watching the calling thread's work, named label (copied). Returns 0,
 * or -1 if slowdog is disabled or the thread cannot be tracked. */
int slowdog_begin(const char *label);

/* Ends the work begun on this thread. Returns 0, or -1 if none was begun. */
int slowdog_end(void);

#ifdef __cplusplus
}
#endif
