/* The ids of a reqinfo as one string, for the unit tests: each as
 * "name=text" (with "+rep" and "+cut" for its flags), " ", then "!" when
 * some were dropped, "T:trace/span" for a valid traceparent and "S:ns" or
 * "S:bad" for a stamp. */
#pragma once

#include <stdio.h>
#include <string.h>

#include "reqids.h"
#include "reqinfo.h"

static inline const char *ids_dump(const struct reqinfo *in, char *out, size_t cap)
{
	size_t o = 0;
	out[0] = '\0';
	for (int i = 0; i < in->nids && o < cap; i++) {
		const struct reqinfo_id *id = &in->ids[i];
		o += (size_t)snprintf(out + o, cap - o, "%s%s=%s%s%s", i ? " " : "",
				      reqid_name(id->slot), in->idtext + id->off,
				      id->flags & REQ_ID_REPEATED ? "+rep" : "",
				      id->flags & REQ_ID_CUT ? "+cut" : "");
	}
	if (o < cap && in->ids_dropped)
		o += (size_t)snprintf(out + o, cap - o, " !");
	if (o < cap && in->trace_ok)
		o += (size_t)snprintf(out + o, cap - o, " T:%s/%s", in->trace.trace_id,
				      in->trace.span_id);
	if (o < cap && in->stamp == REQ_STAMP_OK)
		o += (size_t)snprintf(out + o, cap - o, " S:%lld", (long long)in->stamp_ns);
	else if (o < cap && in->stamp == REQ_STAMP_BAD)
		o += (size_t)snprintf(out + o, cap - o, " S:bad");
	return out;
}

/* Every byte of the ids' text is visible ASCII, each within its room. */
static inline void ids_safe(const struct reqinfo *in)
{
	for (int i = 0; i < in->nids; i++) {
		const char *s = in->idtext + in->ids[i].off;
		cr_assert_lt(in->ids[i].off, sizeof(in->idtext));
		for (; *s; s++)
			cr_assert((unsigned char)*s >= 0x21 && (unsigned char)*s <= 0x7e);
	}
}
