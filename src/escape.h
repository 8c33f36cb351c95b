/* Escaping of untrusted request bytes into report-safe text. */
#pragma once

#include <stddef.h>

/*
 * Appends src[0..n) to dst (NUL-terminated, capacity cap) starting at *pos,
 * writing bytes outside 0x21..0x7e and the backslash as \xHH. When dst is
 * full the value ends in "..." and further bytes are dropped.
 * async-signal-safe; no allocation.
 */
void escape_append(char *dst, size_t cap, size_t *pos, const char *src,
		   size_t n);
