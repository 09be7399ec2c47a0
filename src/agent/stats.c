/* Counters as text: the sources' lines (one per process), a total, the chain's and the sinks' lines, key=value (tlsmirror stats, exit). */
#include "agent/agent.h"
#include "common/text.h"
#include "transforms/h2.h"
#include "transforms/dedup.h"

#include <stdarg.h>
#include <stdio.h>

size_t stats_format(struct agent *a, char *buf, size_t len)
{
	size_t at = 0;
	uint64_t procs = 0, conns = 0, b0 = 0, b1 = 0, dropped = 0, gap = 0, bad = 0, orphan = 0;
	uint64_t bypassed = 0, unpatched = 0;
	if (!len)
		return 0;
	buf[0] = 0;
	for (size_t i = 0; i < a->n_src; i++)
		if (a->src[i].ops->format_stats)
			at = a->src[i].ops->format_stats(&a->src[i], buf, len, at);
	for (struct proc *p = a->procs; p; p = p->next) {
		for (int i = 0; i < RING_DROP_NREASONS; i++)
			dropped += p->drop_last[i];
		procs++;
		bypassed += p->bypassed_last;
		unpatched += p->unpatched_last;
		conns += p->conns;
		b0 += p->bytes[0];
		b1 += p->bytes[1];
		gap += p->gap_bytes;
		bad += p->bad_records;
		orphan += p->orphan_records;
	}
	const struct flow_table *ft = pipeline_stage_priv(a->pl, "flows");
	const struct h2_table *h2 = pipeline_stage_priv(a->pl, "h2");
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
	at = text_add(buf, len, at,
		 "total processes=%llu conns=%llu c2s_bytes=%llu s2c_bytes=%llu dropped_bytes=%llu "
		 "gap_bytes=%llu packets=%llu duplicate_conns=%llu bad_records=%llu "
		 "orphan_records=%llu rejected_attach=%llu sink_lost_packets=%llu uptime_s=%llu "
		 "h2_conns=%llu h2_streams=%llu h2_errors=%llu h2_fallbacks=%llu "
		 "open_conns=%llu refused_conns=%llu orphan_bytes=%llu pending_dropped=%llu "
		 "h2_refused_conns=%llu h2_refused_streams=%llu "
		 "h2_malformed=%llu h2_flow_errors=%llu synthetic_moved=%llu handed_over=%llu "
		 "bypassed_conns=%llu unpatched_objs=%llu\n",
		 (unsigned long long)procs, (unsigned long long)conns,
		 (unsigned long long)b0, (unsigned long long)b1,
		 (unsigned long long)dropped, (unsigned long long)gap,
		 (unsigned long long)(fc ? fc->packets : 0),
		 (unsigned long long)((fc ? fc->flows_duplicate : 0) + dc.duplicates),
		 (unsigned long long)bad, (unsigned long long)orphan,
		 (unsigned long long)a->rejected_attach, (unsigned long long)lost,
		 (unsigned long long)((agent_now_ns() - a->started_ns) / 1000000000ULL),
		 (unsigned long long)h2c.conns, (unsigned long long)h2c.streams,
		 (unsigned long long)h2c.errors, (unsigned long long)h2c.fallbacks,
		 (unsigned long long)((fc ? fc->flows_open : 0) + dc.dup_open),
		 (unsigned long long)(fc ? fc->flows_refused : 0),
		 (unsigned long long)((fc ? fc->orphan_bytes : 0) + (pc ? pc->orphan_bytes : 0)),
		 (unsigned long long)a->pending_dropped,
		 (unsigned long long)h2c.conns_refused, (unsigned long long)h2c.streams_refused,
		 (unsigned long long)h2c.malformed, (unsigned long long)h2c.flow_errors,
		 (unsigned long long)(fc ? fc->synthetic_moved : 0),
		 (unsigned long long)(fc ? fc->flows_handed_over : 0),
		 (unsigned long long)bypassed, (unsigned long long)unpatched);
	if (a->pl)
		at = pipeline_format_stats(a->pl, buf, len, at);
	at = access_stats_format(&a->access, buf, len, at);
	at = sink_set_format(&a->sinks, buf, len, at);
	at = tunnel_stats_format(a, buf, len, at);
	return at;
}
