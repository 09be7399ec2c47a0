/* Counters as text: the sources' lines (one per process), a total, the chain's and the sinks' lines, key=value (tlsmirror stats, exit). */
#include "agent/agent.h"
#include "agent/metrics.h"
#include "common/text.h"
#include "transforms/h2.h"
#include "transforms/dedup.h"

#include <stdarg.h>
#include <stdio.h>

size_t proc_fields(const struct proc *p, struct kv *kv)
{
	size_t n = 0;
#define KV(k, val) kv[n++] = (struct kv){ k, (uint64_t)(val), 0 }
	KV("conns", p->conns);
	KV("open", p->open_conns);
	KV("c2s_bytes", p->bytes[0]);
	KV("s2c_bytes", p->bytes[1]);
	KV("drop_full_bytes", p->drop_last[RING_DROP_FULL]);
	KV("drop_noring_bytes", p->drop_last[RING_DROP_NO_RING]);
	KV("drop_busy_bytes", p->drop_last[RING_DROP_BUSY]);
	KV("gap_bytes", p->gap_bytes);
	KV("bad_records", p->bad_records);
	KV("orphan_records", p->orphan_records);
	KV("refused_conns", p->refused_conns);
	KV("orphan_bytes", p->orphan_bytes);
	KV("bypassed_conns", p->bypassed_last);
	KV("unpatched_objs", p->unpatched_last);
	KV("synthetic_conns", p->synthetic_conns);
	KV("midstream_conns", p->midstream_conns);
	KV("inline_hooks", p->inline_hooks_last);
	KV("inline_refused", p->inline_refused_last);
	KV("clamped_ts", p->clamped_ts);
	KV("duplicate_conns", p->duplicate_conns);
#undef KV
	return n;
}

size_t stats_kv_format(const struct kv *kv, size_t n, char *buf, size_t len, size_t at)
{
	return text_add(buf, len, text_kv(buf, len, at, kv, n), "\n");
}

size_t stats_total(struct agent *a, struct kv *kv)
{
	uint64_t procs = 0, conns = 0, b0 = 0, b1 = 0, dropped = 0, gap = 0, bad = 0, orphan = 0;
	uint64_t bypassed = 0, unpatched = 0, synthetic = 0, clamped = 0, midstream = 0;
	for (struct proc *p = a->procs; p; p = p->next) {
		for (int i = 0; i < RING_DROP_NREASONS; i++)
			dropped += p->drop_last[i];
		procs++;
		bypassed += p->bypassed_last;
		unpatched += p->unpatched_last;
		synthetic += p->synthetic_conns;
		clamped += p->clamped_ts;
		midstream += p->midstream_conns;
		conns += p->conns;
		b0 += p->bytes[0];
		b1 += p->bytes[1];
		gap += p->gap_bytes;
		bad += p->bad_records;
		orphan += p->orphan_records;
	}
	const struct flow_table *ft = pipeline_stage_priv(a->pl, "flows");
	const struct h2_table *h2 = pipeline_stage_priv(a->pl, "http");
	const void *dd = pipeline_stage_priv(a->pl, "dedup");
	struct dedup_counters dc = { 0 };
	if (dd)
		dc = *dedup_counters(dd);
	const struct pipeline_counters *pc = a->pl ? pipeline_counters(a->pl) : NULL;
	const struct flow_counters *fc = ft ? flow_counters(ft) : NULL;
	struct h2_counters h2c = { 0 };
	if (h2)
		h2c = *h2_counters(h2);
	uint64_t lost = 0;
	for (size_t i = 0; i < a->sinks.n; i++)
		lost += a->sinks.v[i]->ctr.lost_packets;
	size_t n = 0;
#define KV(k, val) kv[n++] = (struct kv){ k, (uint64_t)(val), 0 }
	KV("processes", procs);
	KV("conns", conns);
	KV("c2s_bytes", b0);
	KV("s2c_bytes", b1);
	KV("dropped_bytes", dropped);
	KV("gap_bytes", gap);
	KV("packets", fc ? fc->packets : 0);
	KV("duplicate_conns", (fc ? fc->flows_duplicate : 0) + dc.duplicates);
	KV("bad_records", bad);
	KV("orphan_records", orphan);
	KV("rejected_attach", a->rejected_attach);
	KV("sink_lost_packets", lost);
	if (a->cfg.keylog) {
		KV("keys", a->keys_written);
		KV("keys_lost", a->keys_lost);
		KV("key_tuples", a->tuples_written);
	}
	if (a->cfg.send_keys)
		KV("keys_sent", a->keys_sent);
	KV("uptime_s", (agent_now_ns() - a->started_ns) / 1000000000ULL);
	KV("h2_conns", h2c.conns);
	KV("h2_streams", h2c.streams);
	KV("h2_errors", h2c.errors);
	KV("h2_fallbacks", h2c.fallbacks);
	KV("open_conns", (fc ? fc->flows_open : 0) + dc.dup_open);
	KV("refused_conns", fc ? fc->flows_refused : 0);
	KV("orphan_bytes", (fc ? fc->orphan_bytes : 0) + (pc ? pc->orphan_bytes : 0));
	KV("pending_dropped", a->pending_dropped);
	KV("h2_refused_conns", h2c.conns_refused);
	KV("h2_refused_streams", h2c.streams_refused);
	KV("h2_malformed", h2c.malformed);
	KV("h2_flow_errors", h2c.flow_errors);
	KV("synthetic_moved", fc ? fc->synthetic_moved : 0);
	KV("handed_over", fc ? fc->flows_handed_over : 0);
	KV("bypassed_conns", bypassed);
	KV("unpatched_objs", unpatched);
	KV("synthetic_conns", synthetic);
	KV("midstream_conns", midstream);
	KV("fd_refused", a->fd_refused);
	KV("clamped_ts", clamped);
#undef KV
	return n;
}

/* The lines after the total; rows: with the stages' and the sinks' lines. */
static size_t components(struct agent *a, char *buf, size_t len, size_t at, int rows)
{
	if (a->pl)
		at = rows ? pipeline_format_stats(a->pl, buf, len, at) :
		     pipeline_format_summary(a->pl, buf, len, at);
	at = access_stats_format(&a->access, buf, len, at);
	if (rows) {
		at = sink_set_format(&a->sinks, buf, len, at);
		at = sink_set_format(&a->records, buf, len, at);
	}
	at = tunnel_stats_format(a, buf, len, at);
	return metrics_stats_format(a, buf, len, at);
}

size_t stats_components_format(struct agent *a, char *buf, size_t len, size_t at)
{
	return components(a, buf, len, at, 1);
}

size_t stats_text_lines_format(struct agent *a, char *buf, size_t len, size_t at)
{
	return components(a, buf, len, at, 0);
}

size_t stats_format(struct agent *a, char *buf, size_t len)
{
	size_t at = 0;
	if (!len)
		return 0;
	buf[0] = 0;
	for (size_t i = 0; i < a->n_src; i++)
		if (a->src[i].ops->format_stats)
			at = a->src[i].ops->format_stats(&a->src[i], buf, len, at);
	struct kv kv[STATS_MAX_KV];
	size_t n = stats_total(a, kv);
	at = text_add(buf, len, at, "total");
	at = stats_kv_format(kv, n, buf, len, at);
	return stats_components_format(a, buf, len, at);
}
