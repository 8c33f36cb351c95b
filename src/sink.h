/*
 * Where reports go: a file opened O_APPEND (many workers share it; each
 * record is one write()), standard error, or syslog (the local /dev/log,
 * or RFC 5424 over UDP), one datagram a record. Watchdog thread only.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Opens path ("" = standard error, "syslog", "syslog://HOST:PORT"). An
 * unusable one gives one warning and standard error instead. */
void sink_open(const char *path);

/* Appends one record. Never blocks the server: errors are counted, a full
 * disk is said once, and the record is dropped. */
void sink_write(const char *buf, size_t len, bool report);

/* The same, with the RFC 5424 STRUCTURED-DATA of the record (sd, one or
 * more "[...]" elements; NULL or "" for none) when the sink is syslog over
 * UDP; elsewhere sd is not written. */
void sink_write_sd(const char *buf, size_t len, bool report, const char *sd);
