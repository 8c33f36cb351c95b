/*
 * Small system helpers of the bottom layer, each the one way to do its
 * thing: a diagnostic line on standard error, a UDP socket to HOST:PORT,
 * a small /proc file read whole. All go through real.h, never through
 * slowdog's own interposers. None is async-signal-safe.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Writes line and a newline to standard error in one write. The line is
 * the whole message: "slowdog: ..." as the caller made it. */
void sys_warn(const char *line);

/* The same, formatted. */
void sys_warnf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A connected, non-blocking UDP socket to "HOST:PORT" (HOST may be
 * "[v6]"), close-on-exec. -1 with *why set (a static string) on failure. */
int sys_udp_open(const char *spec, const char **why);

/* Reads the file at path (a small one: /proc/self/cmdline, a thread's
 * comm) into buf, at most cap bytes, not terminated. Returns the bytes
 * read, 0 on any error. */
size_t sys_read_small(const char *path, char *buf, size_t cap);

/* The file that counts the OOM kills in this process's cgroup (v1
 * memory.oom_control, or v2 memory.events); false if none. */
bool sys_oom_file(char *path, size_t cap);

/* Its count, -1 if unknown. */
long sys_oom_kills(const char *path);
