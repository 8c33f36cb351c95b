/*
 * What preload.c provides to the core library, for test programs that
 * link the core without the interposer (unit tests, fuzzers). None of it
 * is reached while the watchdog is off. Include in one file per program.
 */
#pragma once

#include <pthread.h>
#include <signal.h>
#include <stdint.h>

#include "preload.h"

const char *preload_call_name(int fn)
{
	(void)fn;
	return "?";
}

uintptr_t preload_call_addr(int fn)
{
	(void)fn;
	return 0;
}

uintptr_t preload_stub_addr(int fn)
{
	(void)fn;
	return 0;
}

int preload_real_sigaction(int sig, const void *act, void *old)
{
	return sigaction(sig, act, old);
}

int preload_real_sigmask(int how, const void *set, void *old)
{
	return pthread_sigmask(how, set, old);
}
