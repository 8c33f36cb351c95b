/*
 * The master's side of last words: records of the requests that a worker
 * had in flight when it died, written by the process that reaps it (the
 * master: gunicorn's Python arbiter, uWSGI's C master), from the table
 * they share (share.h). Also: before the master SIGKILLs a worker with a
 * request in flight, the worker gets a bounded moment to write its report.
 *
 * Called from the interposed kill and wait calls of the master's own
 * threads, in normal context; never from a handler. No thread is started:
 * a master stays single-threaded.
 */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>

/* The master is about to send sig to pid: notes it, and for a SIGKILL to
 * a worker with a request in flight, lets it write its report first
 * (SLOWDOG_LAST_WORDS, bounded). */
void deaths_sending(pid_t pid, int sig);

/* A child was reaped (status as waitpid gives it): one record per
 * request it had in flight. keep: WNOWAIT, the slot stays. */
void deaths_reaped(pid_t pid, int status, bool keep);

/* The same from waitid's answer. */
void deaths_reaped_info(const siginfo_t *si, bool keep);

/* At exit of a master that may not reap its last workers (gunicorn after
 * its graceful timeout): waits for them a little (100 ms in all). */
void deaths_at_exit(void);
