/* --port-map 443:80,8443:8080: clear text of a TLS port shown on a clear-text port; the real port stays in the metadata. */
#include "common/text.h"
#include "pipeline/pipeline.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * A stage that passes every connection on and takes none: it rewrites the
 * server port of the open for the stages after it (so HTTP/2 streams and a
 * fallback use the mapped port too). conn_meta.real_server_port, set by the
 * source, keeps the port as seen. Sensors that pick a protocol parser by
 * port (port 80: HTTP) then parse the clear text.
 */

#define PORTMAP_MAX 64

struct portmap {
	size_t n;
	uint16_t from[PORTMAP_MAX], to[PORTMAP_MAX];
	uint64_t mapped;         /* connections shown on another port */
};

static int parse_port(const char **s, uint16_t *out)
{
	char *end;
	if (**s < '0' || **s > '9')
		return -EINVAL;
	unsigned long v = strtoul(*s, &end, 10);
	if (v < 1 || v > 65535 || end - *s > 5)
		return -EINVAL;
	*out = (uint16_t)v;
	*s = end;
	return 0;
}

/* "P:Q[,P:Q...]": each P once. Returns 0 or -EINVAL (*why). */
static int parse(const char *arg, struct portmap *m, const char **why)
{
	const char *s = arg;
	m->n = 0;
	*why = "want P:Q[,P:Q...] with ports 1..65535, each P once (like 443:80,8443:8080)";
	for (;;) {
		uint16_t p, q;
		if (parse_port(&s, &p) || *s++ != ':' || parse_port(&s, &q))
			return -EINVAL;
		for (size_t i = 0; i < m->n; i++)
			if (m->from[i] == p)
				return -EINVAL;
		if (m->n == PORTMAP_MAX) {
			*why = "at most 64 port pairs";
			return -EINVAL;
		}
		m->from[m->n] = p;
		m->to[m->n++] = q;
		if (!*s)
			return 0;
		if (*s++ != ',')
			return -EINVAL;
	}
}

int portmap_check(const char *arg, const char **why)
{
	struct portmap m;
	return parse(arg, &m, why);
}

static int pm_open(struct stage *s, struct conn_open *o)
{
	struct portmap *m = s->priv;
	for (size_t i = 0; i < m->n; i++) {
		if (o->server_port == m->from[i]) {
			o->server_port = m->to[i];
			m->mapped++;
			break;
		}
	}
	return 0;
}

/* It owns no connection: the chain never sends it events of one. */
static int pm_data(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		   uint64_t off, const uint8_t *p, size_t n, uint64_t *gap)
{
	return -ENOENT;
}

static int pm_gap(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns, uint64_t n)
{
	return -ENOENT;
}

static int pm_close(struct stage *s, const struct conn_id *id, uint64_t ts_ns, unsigned flags)
{
	return -ENOENT;
}

static size_t pm_counters(const struct stage *s, struct kv *out, size_t max)
{
	const struct portmap *m = s->priv;
	return kv_put(out, max, 0, "mapped", m->mapped, 0);
}

static void pm_free(struct stage *s)
{
	free(s->priv);
	s->priv = NULL;
}

static const struct stage_ops portmap_ops = {
	.name = "portmap",
	.open = pm_open,
	.data = pm_data,
	.gap = pm_gap,
	.close = pm_close,
	.counters = pm_counters,
	.free = pm_free,
};

int portmap_stage_init(struct stage *s, const char *arg, const struct pipeline_opts *o,
		       const char **why)
{
	struct portmap *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	if (parse(arg, m, why) < 0) {
		free(m);
		return -EINVAL;
	}
	s->priv = m;
	s->ops = &portmap_ops;
	return 0;
}
