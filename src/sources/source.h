/* Where connection events come from: one ops table per kind of source, iterated by the agent's loop. */
#ifndef TLSMIRROR_SOURCE_H
#define TLSMIRROR_SOURCE_H

#include <stddef.h>
#include <stdint.h>

struct agent;
struct source;

/*
 * A source turns its input into connection events (pipeline.h) and hands
 * them to the agent's chain. It validates everything it reads: nothing
 * downstream validates again. The loop: poll every source with a budget
 * while any did work; when all are idle, prepare_sleep each (arm the
 * wake-ups) and sleep unless one says work appeared meanwhile.
 */
struct source_ops {
	const char *name;
	/* Sets s->priv. arg: the option's argument ("" when always on). On
	 * error: -errno, and *why says why (NULL: the source logged it). */
	int (*open)(struct source *s, struct agent *a, const char *arg, const char **why);
	/* Does up to about budget units of work (records); returns how many. */
	size_t (*poll)(struct source *s, size_t budget);
	/* Arms the wake-ups the loop sleeps on; 1 if work appeared meanwhile. */
	int (*prepare_sleep)(struct source *s);
	/* On exit: delivers everything accepted so far. */
	void (*drain)(struct source *s);
	/* Appends its lines to the stats (as text_add). Optional. */
	size_t (*format_stats)(const struct source *s, char *buf, size_t len, size_t at);
	/* Releases what open took (after drain). Optional. */
	void (*close)(struct source *s);
};

struct source {
	const struct source_ops *ops;
	void *priv;
	struct agent *a;
};

/* The sources, one row each (sources.c). option NULL: always open; else
 * open when enabled(cfg) says the option was given. */
struct agent_config;
struct source_def {
	const char *option;
	const struct source_ops *ops;
	int (*enabled)(const struct agent_config *cfg);
};

extern const struct source_def source_table[];
extern const size_t source_table_len;

extern const struct source_ops ring_source_ops; /* ring.c: the capture library's rings */
extern const struct source_ops collector_source_ops; /* tunnel/collector.c: -C, agents' tunnels */
extern const struct source_ops decrypt_source_ops; /* decrypt.c: tlsmirror decrypt */

#endif
