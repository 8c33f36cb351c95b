/*
 * asyncio without the GIL: the coroutine chain that serves a request on an
 * asyncio loop (uvicorn, asyncio.start_server), on CPython 3.8 to 3.15
 * (3.16+ read as 3.15, with the same checks, and said to be untested).
 * The layouts of tasks, coroutines, frames, dicts and instance attributes
 * are the version's (a table per minor version in aio.c, checked against
 * each interpreter by tests/eventloop/aio_layout.py; on 3.13+ where
 * sys.modules lies, on 3.14+ the frame, generator and tuple offsets come
 * from _PyRuntime.debug_offsets, and the task's coroutine and the thread's
 * task list from the _asyncio module's _AsyncioDebug offsets). Every read is fault tolerant and every object type-checked;
 * where a stack cannot be found the report says why.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "capture.h"
#include "reqinfo.h"

struct sd_thread;

/* Watchdog: fills out (CAPTURE_SUSPENDED) with the Python frames of the
 * task that serves the connection on fd of loop thread t (info: its
 * request line, NULL if unknown), innermost awaited coroutine first, and
 * on through the tasks a gathering future (gather, wait_for, TaskGroup)
 * waits for; out->why says whose, how the task was matched, or why there
 * are none. */
void aio_capture_task(struct sd_thread *t, int fd, const struct reqinfo *info,
		      struct capture *out);

/* Watchdog: the fd of the connection whose request the loop thread t is
 * running right now (its transport's socket or its ASGI scope among its
 * live frames' locals), or -1. *why says how it was found, or why not. */
int aio_running_fd(struct sd_thread *t, const int *fds, int nfds, const char **why);
