/*
 * Formatting reports and "finished" lines, in the watchdog thread.
 * Text in the manner of dogslow: see slowdog(7) for the format.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "capture.h"
#include "config.h"
#include "gil.h"
#include "reqinfo.h"

/* What a worker's last words say of its death. */
struct report_death {
	int sig;            /* the deadly signal */
	pid_t from;         /* who sent it (si_pid), 0 when the kernel did */
	const char *sender; /* "parent", "self", "kernel", "other" */
	int64_t into_ns;    /* when it came, into the request */
	bool announced;     /* a SIGKILL the parent said was coming */
	bool crash;         /* a fault of the thread itself (SIGSEGV, ...) */
	uintptr_t addr;     /* crash: the faulting address */
};

struct report {
	uint64_t id;           /* request number in this process */
	pid_t pid, tid;
	int64_t now_real_ns;   /* CLOCK_REALTIME at capture */
	int64_t start_real_ns; /* when the request started */
	int64_t running_ns;
	int repeat;            /* 1 for the first capture of a request */
	const struct reqinfo *info; /* NULL: not known */
	const char *label;     /* explicit work (slowdog_begin) instead of info */
	const struct capture *cap;
	const struct report_death *death; /* last words, or NULL */
	/* Event loops: "stall" for a stalled loop (its request, if known,
	 * is the culprit), "await" for a request waiting on a free loop, NULL
	 * otherwise; loop_lines: lines that say so (Loop:, Culprit:,
	 * Starved:), each ending in a newline. */
	const char *loop_kind;
	const char *loop_lines;
	const struct gil_wait *gil; /* the thread waits for the GIL, or NULL */
};

/* "SIGABRT", "SIGRTMIN+3", "signal 77". */
const char *report_signal_name(int sig, char *buf, size_t cap);

/* Formats into buf (NUL-terminated); returns the length. A report longer
 * than cap is cut at a line boundary and says so. */
size_t report_format(char *buf, size_t cap, const struct report *r,
		     const struct config *cfg);

/* "METHOD target" (or the label) for the finished line. */
void report_request_line(char *buf, size_t cap, const struct reqinfo *info,
			 const char *label);

/* The request's ids as "name=value" words, one space between (a valid
 * traceparent as trace-id=... span-id=...; the stamps left out): the
 * text report's Ids: line and the end of a finished line. Returns the
 * length (0: none, or no room). */
size_t report_ids(char *buf, size_t cap, const struct reqinfo *info);

/* The syslog STRUCTURED-DATA of a record about request pid-id: its ids
 * as SD-PARAMs of [slowdog@32473 ...]. */
size_t report_sd(char *buf, size_t cap, pid_t pid, uint64_t id,
		 const struct reqinfo *info, const char *label);

struct finished {
	uint64_t id;
	pid_t pid;
	int64_t now_real_ns;
	int64_t total_ns;
	const char *request_line;   /* as report_request_line made it */
	const struct reqinfo *info; /* NULL: not known */
	const char *label;
};

size_t report_finished(char *buf, size_t cap, const struct finished *f,
		       const struct config *cfg);

/* Drops cached source files (after fork, or when they may have changed). */
void report_flush_sources(void);
