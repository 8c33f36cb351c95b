/*
 * Unwinding a stack snapshot with libunwind, in the watchdog thread.
 *
 * The snapshot is a copy of a stopped (or blocked) thread's registers and
 * live stack. libunwind reads it through an address space of slowdog's own:
 * registers from the copy, stack memory from the copy, code and unwind
 * tables from the loaded objects' PT_LOAD segments, anything else refused.
 * So the unwind never touches the target thread's live stack and never
 * faults, and the target thread runs on while it happens.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* libunwind's x86-64 register numbers. */
enum {
	UW_RAX, UW_RDX, UW_RCX, UW_RBX, UW_RSI, UW_RDI, UW_RBP, UW_RSP,
	UW_R8, UW_R9, UW_R10, UW_R11, UW_R12, UW_R13, UW_R14, UW_R15, UW_RIP,
	UW_NREGS,
};

struct uw_snapshot {
	uint64_t regs[UW_NREGS];
	uint32_t valid;       /* bit i: regs[i] is known */
	uintptr_t stack_addr; /* address the copy was taken from */
	const void *stack;    /* the copy */
	size_t stack_len;
};

/* Once, in the watchdog thread: address space, caching, warm-up. */
bool unwind_init(void);

/* Unwinds into ips[0..max): ips[0] is the interrupted instruction, the rest
 * return addresses. *truncated: stopped at max frames. Returns the count. */
int unwind_snapshot(const struct uw_snapshot *s, uintptr_t *ips, int max,
		    bool *truncated);
