/* Counters as text: one line per process and a total, key=value (tlsmirror stats, exit). */
#include "agent/agent.h"
#include "common/text.h"
#include "transforms/h2.h"

#include <stdarg.h>
#include <stdio.h>

static const char *state_name(enum proc_state s)
{
	switch (s) {
	case PROC_ATTACHED: return "attached";
	case PROC_EXITED: return "exited";
	case PROC_REJECTED: return "rejected";
	}
	return "?";
}

size_t stats_format(struct agent *a, char *buf, size_t len)
{
	size_t at = 0;
	uint64_t procs = 0, conns = 0, b0 = 0, b1 = 0, dropped = 0, gap = 0, bad = 0, orphan = 0;
	uint64_t bypassed = 0, unpatched = 0;
	if (!len)
		return 0;
	buf[0] = 0;
	for (struct proc *p = a->procs; p; p = p->next) {
		proc_read_drops(p);
		uint64_t d = 0;
		struct flow_origin_stats os = { 0 };
		if (a->flows)
			os = flow_origin_stats(a->flows, p->key);
		for (int i = 0; i < RING_DROP_NREASONS; i++)
			d += p->drop_last[i];
		at = text_add(buf, len, at,
			 "pid=%d uid=%u auth_pid=%d auth_uid=%u comm=%s state=%s conns=%llu open=%llu c2s_bytes=%llu s2c_bytes=%llu "
			 "drop_full_bytes=%llu drop_noring_bytes=%llu drop_busy_bytes=%llu "
			 "gap_bytes=%llu bad_records=%llu orphan_records=%llu refused_conns=%llu "
			 "orphan_bytes=%llu bypassed_conns=%llu unpatched_objs=%llu\n",
			 (int)p->pid, (unsigned)p->uid, (int)p->auth_pid, (unsigned)p->auth_uid,
			 p->comm[0] ? p->comm : "?",
			 state_name(p->state),
			 (unsigned long long)p->conns, (unsigned long long)p->open_conns,
			 (unsigned long long)p->bytes[0], (unsigned long long)p->bytes[1],
			 (unsigned long long)p->drop_last[RING_DROP_FULL],
			 (unsigned long long)p->drop_last[RING_DROP_NO_RING],
			 (unsigned long long)p->drop_last[RING_DROP_BUSY],
			 (unsigned long long)p->gap_bytes, (unsigned long long)p->bad_records,
			 (unsigned long long)p->orphan_records, (unsigned long long)os.refused,
			 (unsigned long long)os.orphan_bytes, (unsigned long long)p->bypassed_last,
			 (unsigned long long)p->unpatched_last);
		procs++;
		bypassed += p->bypassed_last;
		unpatched += p->unpatched_last;
		conns += p->conns;
		b0 += p->bytes[0];
		b1 += p->bytes[1];
		dropped += d;
		gap += p->gap_bytes;
		bad += p->bad_records;
		orphan += p->orphan_records;
	}
	const struct flow_counters *fc = a->flows ? flow_counters(a->flows) : NULL;
	struct h2_counters h2c = { 0 };
	if (a->h2)
		h2c = *h2_counters(a->h2);
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
		 (unsigned long long)(fc ? fc->flows_duplicate : 0),
		 (unsigned long long)bad, (unsigned long long)orphan,
		 (unsigned long long)a->rejected_attach, (unsigned long long)lost,
		 (unsigned long long)((agent_now_ns() - a->started_ns) / 1000000000ULL),
		 (unsigned long long)h2c.conns, (unsigned long long)h2c.streams,
		 (unsigned long long)h2c.errors, (unsigned long long)h2c.fallbacks,
		 (unsigned long long)(fc ? fc->flows_open : 0),
		 (unsigned long long)(fc ? fc->flows_refused : 0),
		 (unsigned long long)(fc ? fc->orphan_bytes : 0),
		 (unsigned long long)a->pending_dropped,
		 (unsigned long long)h2c.conns_refused, (unsigned long long)h2c.streams_refused,
		 (unsigned long long)h2c.malformed, (unsigned long long)h2c.flow_errors,
		 (unsigned long long)(fc ? fc->synthetic_moved : 0),
		 (unsigned long long)(fc ? fc->flows_handed_over : 0),
		 (unsigned long long)bypassed, (unsigned long long)unpatched);
	at = access_stats_format(&a->access, buf, len, at);
	at = sink_set_format(&a->sinks, buf, len, at);
	at = tunnel_stats_format(a, buf, len, at);
	return at;
}
