/* The flow engine as the chain's last stage: it takes every connection that reaches it. */
#include "flows/flow.h"
#include "common/text.h"
#include "pipeline/pipeline.h"

#include <errno.h>

static struct flow_table *ft(const struct stage *s)
{
	return s->priv;
}

static int fs_open(struct stage *s, struct conn_open *o)
{
	int err = flow_open(ft(s), o);
	return err < 0 ? err : 1;
}

static int fs_data(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		   uint64_t off, const uint8_t *p, size_t n, uint64_t *gap)
{
	return flow_data(ft(s), id->origin, id->conn, dir, ts_ns, off, p, n, gap);
}

static int fs_datav(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		    uint64_t off, const struct piece *v, size_t nv, uint64_t *gap)
{
	return flow_datav(ft(s), id->origin, id->conn, dir, ts_ns, off, v, nv, gap);
}

static int fs_gap(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns, uint64_t n)
{
	return flow_gap(ft(s), id->origin, id->conn, dir, ts_ns, n);
}

static int fs_close(struct stage *s, const struct conn_id *id, uint64_t ts_ns, unsigned flags)
{
	if (flags & CONN_CLOSE_HANDOVER)
		return flow_release(ft(s), id->origin, id->conn, ts_ns);
	return flow_close(ft(s), id->origin, id->conn, ts_ns);
}

static void fs_origin(struct stage *s, uint64_t origin, int ev, uint64_t ts_ns)
{
	switch (ev) {
	case ORIGIN_CLOSED:
		flow_close_proc(ft(s), origin, ts_ns);
		break;
	case ORIGIN_FORKED:
		flow_proc_forked(ft(s), origin);
		break;
	case ORIGIN_FORGOTTEN:
		flow_origin_forget(ft(s), origin); /* -EBUSY: its flows still count */
		break;
	default:
		break;
	}
}

static void fs_tick(struct stage *s, uint64_t now_ns)
{
	flow_expire(ft(s), now_ns);
}

static size_t fs_counters(const struct stage *s, struct kv *out, size_t max)
{
	const struct flow_counters *c = flow_counters(ft(s));
	size_t n = 0;
	n = kv_put(out, max, n, "opened", c->flows_opened, 0);
	n = kv_put(out, max, n, "closed", c->flows_closed, 0);
	n = kv_put(out, max, n, "open", c->flows_open, 1);
	n = kv_put(out, max, n, "duplicate", c->flows_duplicate, 0);
	n = kv_put(out, max, n, "refused", c->flows_refused, 0);
	n = kv_put(out, max, n, "handed_over", c->flows_handed_over, 0);
	n = kv_put(out, max, n, "synthetic_moved", c->synthetic_moved, 0);
	n = kv_put(out, max, n, "packets", c->packets, 0);
	n = kv_put(out, max, n, "orphan_records", c->orphan_records, 0);
	n = kv_put(out, max, n, "bad_offsets", c->bad_offsets, 0);
	return kv_put(out, max, n, "tag_failures", c->tag_failures, 0);
}

static void fs_close_all(struct stage *s, uint64_t ts_ns)
{
	flow_close_all(ft(s), ts_ns);
}

static void fs_free(struct stage *s)
{
	flow_table_free(ft(s));
	s->priv = NULL;
}

static const struct stage_ops flow_stage_ops = {
	.name = "flows",
	.open = fs_open,
	.data = fs_data,
	.datav = fs_datav,
	.gap = fs_gap,
	.close = fs_close,
	.origin = fs_origin,
	.tick = fs_tick,
	.counters = fs_counters,
	.close_all = fs_close_all,
	.free = fs_free,
};

int flow_stage_init(struct stage *s, const char *arg, const struct pipeline_opts *o,
		    const char **why)
{
	s->priv = flow_table_new(&o->flow);
	if (!s->priv) {
		*why = "out of memory";
		return -ENOMEM;
	}
	s->ops = &flow_stage_ops;
	return 0;
}
