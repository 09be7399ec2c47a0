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

int records_open(struct agent *a)
{
	const struct agent_config *c = &a->cfg;
	if (!c->n_http_log)
		return 0;
	for (size_t i = 0; i < c->n_http_log; i++) {
		const char *why = NULL;
		int err = sink_set_add(&a->records, &sink_jsonl_ops, c->http_log[i], &c->sink, &why);
		if (err < 0) {
			log_err("--http-log %s: %s%s%s", strcmp(c->http_log[i], "-") ? c->http_log[i] :
				"(stdout)", why ? why : "", why ? ": " : "", strerror(-err));
			return err;
		}
	}
	/* always queued: a record sink never makes the agent wait */
	struct sink_opts qo = c->sink;
	if (qo.queue_bytes < SINK_QUEUE_DEFAULT)
		qo.queue_bytes = SINK_QUEUE_DEFAULT;
	int err = sink_set_start_queues(&a->records, &qo);
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

void records_flush(struct agent *a)
{
	sink_set_flush(&a->records);
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
