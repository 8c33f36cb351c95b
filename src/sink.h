/*
 * Where reports go: a file opened O_APPEND (many workers share it; each
 * record is one write()), or standard error. Watchdog thread only.
 */
#pragma once

#include <stddef.h>

/* Opens path ("" = standard error). An unusable path gives one warning and
 * standard error instead. */
void sink_open(const char *path);

/* Appends one record. Never blocks the server: errors are counted, a full
 * disk is said once, and the record is dropped. */
void sink_write(const char *buf, size_t len);

/* After fork: the descriptor is inherited and still good; nothing to do
 * but forget the warnings said. */
void sink_atfork_child(void);
