/*
 * asyncio without the GIL: the coroutine chain that serves a request on an
 * asyncio loop (uvicorn), found by its ASGI scope. CPython 3.11 only: the
 * layouts of tasks, coroutines and instance attributes are the version's
 * (research/eventloops.md); elsewhere the report says the stack cannot be
 * found. Every read is fault tolerant and every object type-checked.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "capture.h"

struct sd_thread;

/* Watchdog: fills out (CAPTURE_SUSPENDED) with the Python frames of the
 * task that serves the connection on fd of loop thread t, innermost
 * awaited coroutine first; out->why says whose, or why there are none. */
void aio_capture_task(struct sd_thread *t, int fd, struct capture *out);

/* Watchdog: the fd of the connection whose request the loop thread t is
 * running right now (the ASGI scope among its live frames' locals), or -1
 * with *why set. */
int aio_running_fd(struct sd_thread *t, const int *fds, int nfds, const char **why);
