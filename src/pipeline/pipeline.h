/* The stage chain: sources hand connection events in, stages in table order transform them, the flow engine ends it. */
#ifndef TLSMIRROR_PIPELINE_H
#define TLSMIRROR_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "flows/flow.h"
#include "pipeline/conn.h"
#include "pipeline/stage.h"

#define PIPELINE_MAX_STAGES 8

/*
 * Stages are registered in stage_table (pipeline.c), one row each, in the
 * order they run; the last row is the flow engine. A row with an option is
 * enabled by it (main.c builds the command line and the help from the
 * table); arg[i] is that option's argument ("" for a flag, NULL: not given).
 */
struct pipeline_opts {
	struct flow_config flow;     /* the flow engine (mss, sinks, MACs, caps) */
	size_t max_h2_conns;         /* --max-h2-conns, --max-h2-streams (0: defaults) */
	size_t max_h2_streams;
	struct rec_builder *records; /* --http-log: HTTP records are written (NULL: none) */
	size_t max_http_conns;       /* --max-http-conns (0: default) */
	const char *arg[PIPELINE_MAX_STAGES];
};

struct stage_def {
	const char *name;            /* in stats ("stage name=h2") */
	const char *option;          /* long option enabling it; NULL: always there */
	const char *metavar;         /* its argument in the help ("MAP"); NULL: a flag */
	const char *help;            /* one line for --help */
	/* Checks an option argument at parse time (NULL: any); *why says what is wrong. */
	int (*check)(const char *arg, const char **why);
	/* Sets s->ops and s->priv. Returns 0 or -errno (*why: a message). */
	int (*init)(struct stage *s, const char *arg, const struct pipeline_opts *o,
		    const char **why);
	/* Optional: the stage is wanted without its option (init then gets arg
	 * NULL), for what another option asks of it. */
	int (*wanted)(const struct pipeline_opts *o);
};

extern const struct stage_def stage_table[];
extern const size_t stage_table_len;

/* Counters of the chain itself. */
struct pipeline_counters {
	uint64_t opens;              /* opens a stage took */
	uint64_t reannounced;        /* opens of a connection open already (-EEXIST) */
	uint64_t replaced;           /* opens of an id in use by another connection: old one closed */
	uint64_t refused;            /* opens refused over a cap (-ENFILE, -EMFILE) */
	uint64_t open_errors;        /* opens failed otherwise (a stage's -errno, no taker) */
	uint64_t orphan_records;     /* data, gap or close for no connection */
	uint64_t orphan_bytes;       /* clear text of those */
	uint64_t emit_errors;        /* a stage emitted wrongly (not its origin, not downstream) */
	uint64_t owned;              /* connections with an owner now */
};

struct pipeline;
struct rec_builder;

/* Builds the stages enabled in o. NULL on error (*why says which stage and why). */
struct pipeline *pipeline_new(const struct pipeline_opts *o, const char **why);
/* The same from another table (tests: stages of their own). */
struct pipeline *pipeline_new_from(const struct stage_def *table, size_t n,
				   const struct pipeline_opts *o, const char **why);
/* Frees every stage (close_all first to emit the ends). */
void pipeline_free(struct pipeline *pl);

/* A new origin for a producer (a process, a peer). Never 0. */
uint64_t pipeline_origin_new(struct pipeline *pl);

/*
 * Events from a source. pipeline_open returns 0 when a stage took the
 * connection, -EEXIST when the same connection (4-tuple and side) is open
 * under that id already, -ENFILE/-EMFILE over a cap, other -errno. An open
 * of an id in use by a different connection closes the old one first.
 * data/gap/close return -ENOENT for a connection nobody owns (counted as an
 * orphan), else what the owner returned.
 */
int pipeline_open(struct pipeline *pl, struct conn_open *o);
int pipeline_data(struct pipeline *pl, const struct conn_id *id, int dir, uint64_t ts_ns,
		  uint64_t off, const uint8_t *p, size_t n, uint64_t *gap);
int pipeline_gap(struct pipeline *pl, const struct conn_id *id, int dir, uint64_t ts_ns,
		 uint64_t n);
int pipeline_close(struct pipeline *pl, const struct conn_id *id, uint64_t ts_ns,
		   unsigned flags);
/* Tells every stage (enum origin_event); ORIGIN_CLOSED also forgets the
 * owners of the origin's connections. */
void pipeline_origin(struct pipeline *pl, uint64_t origin, int ev, uint64_t ts_ns);
void pipeline_tick(struct pipeline *pl, uint64_t now_ns);
/* Ends every connection (exit), stage by stage in chain order. */
void pipeline_close_all(struct pipeline *pl, uint64_t ts_ns);

const struct pipeline_counters *pipeline_counters(const struct pipeline *pl);
/* The name of the stage that owns id, or NULL (tests, diagnostics). */
const char *pipeline_owner(struct pipeline *pl, const struct conn_id *id);
/* The private data of the stage called name (stats of a known stage), or NULL. */
void *pipeline_stage_priv(const struct pipeline *pl, const char *name);
/* One line for the chain, one per stage ("stage name=.. k=v ..."). */
size_t pipeline_format_stats(const struct pipeline *pl, char *buf, size_t len, size_t at);
/* The chain's own line only ("pipeline stages=.. opens=.. ..."). */
size_t pipeline_format_summary(const struct pipeline *pl, char *buf, size_t len, size_t at);
#define STAGE_MAX_COUNTERS 32        /* rows of one stage's counters */
/* The number of stages, the name of stage i, and its rows: errors (counted
 * by the chain), then the stage's own (stage_ops.counters). */
size_t pipeline_n_stages(const struct pipeline *pl);
const char *pipeline_stage_name(const struct pipeline *pl, size_t i);
size_t pipeline_stage_counters(const struct pipeline *pl, size_t i, struct kv *out, size_t max);

/* The stages' init functions (one row each in stage_table). */
int dedup_stage_init(struct stage *s, const char *arg, const struct pipeline_opts *o,
		     const char **why);
int portmap_stage_init(struct stage *s, const char *arg, const struct pipeline_opts *o,
		       const char **why);
int portmap_check(const char *arg, const char **why);
int h2_stage_wanted(const struct pipeline_opts *o);
int h2_stage_init(struct stage *s, const char *arg, const struct pipeline_opts *o,
		  const char **why);
int flow_stage_init(struct stage *s, const char *arg, const struct pipeline_opts *o,
		    const char **why);

#endif
