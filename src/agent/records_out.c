/* HTTP records out of the agent (--http-log, docs/http.md): the record builder the chain's http stage feeds, and the record sinks behind their queues. */
#include "agent/agent.h"
#include "common/log.h"
#include "http/records.h"
#include "sinks/sink_queue.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * The builder formats each finished exchange in the agent's thread; the
 * line is copied into every record sink's queue (never blocking: a full
 * queue drops and counts it, like packets) and the sink's worker writes it.
 */

static void emit(void *arg, const uint8_t *line, size_t n, uint64_t ts_ns)
{
	struct agent *a = arg;
	struct pkt k = { .ts_ns = ts_ns, .hdr = line, .hdr_len = (uint32_t)n };
	sink_set_write(&a->records, &k, 1);
}

/* "a,b,c" into v (at most max, pointing into a copy kept in *keep). */
static size_t split_list(const char *s, const char **v, size_t max, char **keep)
{
	size_t n = 0;
	*keep = s ? strdup(s) : NULL;
	for (char *save = NULL, *t = *keep ? strtok_r(*keep, ",", &save) : NULL; t && n < max;
	     t = strtok_r(NULL, ",", &save))
		if (*t)
			v[n++] = t;
	return n;
}

/* Opens one record sink, saying why not. */
static int add(struct agent *a, const char *opt, const struct sink_ops *ops, const char *target,
	       const struct sink_opts *o)
{
	const char *why = NULL;
	int err = sink_set_add(&a->records, ops, target, o, &why);
	if (err < 0)
		log_err("%s %s: %s%s%s", opt, strcmp(target, "-") ? target : "(stdout)",
			why ? why : "", why && ops == &sink_jsonl_ops ? ": " : "",
			ops == &sink_jsonl_ops || !why ? strerror(-err) : "");
	return err;
}

int records_wanted(const struct agent_config *c)
{
	return c->n_http_log || c->n_http_post || c->kafka;
}

int records_open(struct agent *a)
{
	const struct agent_config *c = &a->cfg;
	int err;
	if (!records_wanted(c))
		return 0;
	struct sink_opts so = c->sink;
	so.kafka_topic = c->kafka_topic;
	so.kafka_conf = c->kafka_conf;
	so.n_kafka_conf = c->n_kafka_conf;
	so.post_ca = c->http_post_ca;
	so.post_akto = c->http_format && !strcmp(c->http_format, "akto");
	for (size_t i = 0; i < c->n_http_log; i++)
		if ((err = add(a, "--http-log", &sink_jsonl_ops, c->http_log[i], &so)) < 0)
			return err;
	for (size_t i = 0; i < c->n_http_post; i++)
		if ((err = add(a, "--http-post", &sink_httppost_ops, c->http_post[i], &so)) < 0)
			return err;
	if (c->kafka && (err = add(a, "--kafka", &sink_kafka_ops, c->kafka, &so)) < 0)
		return err;
	/* always queued: a record sink never makes the agent wait; its worker
	 * comes by itself at least every 50 ms (sink_queue.c) */
	for (size_t i = 0; i < a->records.n; i++)
		a->records.v[i]->lazy = 1;
	struct sink_opts qo = c->sink;
	if (qo.queue_bytes < SINK_QUEUE_DEFAULT)
		qo.queue_bytes = SINK_QUEUE_DEFAULT;
	err = sink_set_start_queues(&a->records, &qo);
	if (err < 0) {
		log_err("cannot start the record queues: %s", strerror(-err));
		return err;
	}
	struct rec_config rc = {
		.body_max = c->http_body_max_set ? c->http_body_max : REC_DEFAULT_BODY_MAX,
		.emit = emit, .emit_arg = a,
	};
	if (c->http_format && rec_parse_format(c->http_format, &rc.format) < 0)
		return -EINVAL; /* checked at parse time */
	rc.n_headers_only = split_list(c->http_headers_only, rc.headers_only, REC_MAX_TYPES,
				       &a->headers_only_copy);
	a->rec = rec_new(&rc);
	if (!a->rec) {
		log_err("cannot set up the HTTP records: out of memory");
		return -ENOMEM;
	}
	return 0;
}

void records_drain(struct agent *a)
{
	sink_set_drain(&a->records);
}

void records_close(struct agent *a)
{
	sink_set_close(&a->records);
	rec_free(a->rec);
	a->rec = NULL;
	free(a->headers_only_copy);
	a->headers_only_copy = NULL;
}

int records_gone(const struct agent *a)
{
	for (size_t i = 0; i < a->records.n; i++)
		if (!__atomic_load_n(&a->records.v[i]->ctr.broken, __ATOMIC_RELAXED))
			return 0;
	return 1;
}
