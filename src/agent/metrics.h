/* The counters as samples (name, labels, value): Prometheus text, JSON, and the --metrics HTTP server. */
#ifndef TLSMIRROR_METRICS_H
#define TLSMIRROR_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct agent;

#define METRICS_MAX_LABELS 6
#define METRICS_MAX_SAMPLES 16384    /* beyond: not shown, counted (tlsmirror_metrics_truncated) */
#define METRICS_PROC_SERIES 64       /* processes shown one by one; the others: pid="other" */
#define METRICS_FOLD_SECONDS 300     /* an exited process is folded into pid="other" after this */
#define METRICS_MAX_CLIENTS 8        /* HTTP connections at once; more are closed at once */
#define METRICS_MAX_REQUEST 4096     /* request head; longer: 431 and closed */
#define METRICS_TIMEOUT_MS 10000     /* whole exchange; a slower client is closed */

struct metric_sample {
	const char *name;            /* tlsmirror_..._total, or a gauge's name */
	int gauge;
	size_t nl;
	const char *lk[METRICS_MAX_LABELS], *lv[METRICS_MAX_LABELS];
	uint64_t v;
	size_t seq;                  /* order of collection (a family's samples keep it) */
};

struct metric_set {
	struct metric_sample *v;
	size_t n, cap;
	char *arena;                 /* names and label values */
	size_t used, arena_cap;
	uint64_t truncated;          /* samples that did not fit */
};

/* Collects every counter of the agent, grouped by name. 0 or -ENOMEM. */
int metrics_collect(struct agent *a, struct metric_set *set);
int metrics_set_init(struct metric_set *set);
/* Collects the samples of stats text lines ("KIND key=value ..."): exposed for the unit tests. */
void metrics_parse_lines(struct metric_set *set, const char *text);
void metrics_sort(struct metric_set *set);
void metrics_free(struct metric_set *set);
/* The Prometheus text format (0.0.4) / JSON of the set, malloc'ed; *len its length. NULL: no memory. */
char *metrics_prometheus(const struct metric_set *set, size_t *len);
char *metrics_json(const struct metric_set *set, size_t *len);

/* --metrics ADDR:PORT: listens in the agent's event loop. 0 or -errno (logged). */
int metrics_open(struct agent *a, const char *addr);
void metrics_close(struct agent *a);
/* Parses ADDR:PORT, [ADDR6]:PORT or PORT (loopback). 0 or -EINVAL. */
int metrics_parse_addr(const char *s, void *ss, unsigned *sslen);
/* Appends "metrics listen=... scrapes=..." when serving; returns the new length. */
size_t metrics_stats_format(struct agent *a, char *buf, size_t len, size_t at);

#endif
