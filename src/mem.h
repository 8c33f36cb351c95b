/*
 * Fault-tolerant reads of this process's own memory.
 *
 * Two readers with one signature, so the Python walker runs unchanged in the
 * signal handler and in the watchdog thread:
 *  - mem_read_safe:   process_vm_readv on our own pid (EFAULT instead of
 *                     SIGSEGV); watchdog thread only (about 1 us a call).
 *  - mem_read_mapped: checks the range against a table of readable mappings
 *                     taken from /proc/self/maps by mem_maps_refresh() just
 *                     before a signal capture, then memcpy.
 *                     async-signal-safe, lock-free, a few ns.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef bool (*mem_reader)(void *dst, uintptr_t src, size_t n);

bool mem_read_safe(void *dst, uintptr_t src, size_t n);
bool mem_read_mapped(void *dst, uintptr_t src, size_t n); /* async-signal-safe */

/*
 * Copies memory that slowdog reads on purpose although AddressSanitizer may
 * have poisoned it: a thread's whole stack (redzones between the locals of
 * instrumented frames), a fixed-size header past the end of a heap object.
 * The caller has checked that the range is mapped. memcpy, unless built
 * with ASan. async-signal-safe.
 */
void mem_copy_raw(void *dst, const void *src, size_t n);

/* Watchdog only: rebuilds the readable-mapping table. 0 or -errno. */
int mem_maps_refresh(void);

/* async-signal-safe: the readable mapping containing addr, if any. */
bool mem_mapping_of(uintptr_t addr, uintptr_t *lo, uintptr_t *hi);
