/*
 * statsd metrics (SLOWDOG_STATSD): a counter for each slow request and a
 * timer with each reported request's final duration, over UDP, never
 * blocking. The watchdog thread, or the master's reaping thread.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "reqinfo.h"

/* Opens the socket if SLOWDOG_STATSD is set; a bad address gives one
 * warning and no metrics. */
void metrics_open(const struct config *cfg, void (*warn)(const char *line));

/* A request was reported slow (its first capture). */
void metrics_slow(const struct reqinfo *info, const char *label);

/* A request never finished: its worker died (the master counts it). */
void metrics_died(const struct reqinfo *info);

/* A reported request ended after total_ns. */
void metrics_finished(const struct reqinfo *info, const char *label,
		      int64_t total_ns);
