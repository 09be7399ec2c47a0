/* Fan-out of packets to every open sink; one failing sink never stops the others. */
#include "sinks/sink.h"
#include "common/text.h"
#include "sinks/sink_queue.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Counters: each sink implementation keeps its own struct sink_counters
 * (only it knows which packets reached the file and which were lost when a
 * buffered write failed). The set only dispatches.
 *
 * With more than one sink (sink_set_start_queues), each sink without
 * SINK_F_OWN_QUEUE gets a bounded queue and a worker thread (sink_queue.c):
 * the agent copies frames into every queue and goes on; a sink that cannot
 * keep up loses packets from its own queue only (ctr.queue_drops). A single
 * sink is called directly: the copy would cost the pcap file a third of
 * its rate. A sink that may block (a pipe: sink->blocks) is queued even
 * alone: only its worker waits for the reader, the agent goes on (and
 * answers `tlsmirror stats`).
 */

int sink_set_add(struct sink_set *set, const struct sink_ops *ops,
		 const char *target, const struct sink_opts *o,
		 const char **err_msg)
{
	static const struct sink_opts no_opts;
	struct sink *s = NULL;
	int ret = -ENOMEM;

	*err_msg = "out of memory";
	struct sink **v = realloc(set->v, (set->n + 1) * sizeof(*v));
	if (!v)
		goto out;
	set->v = v;
	s = calloc(1, sizeof(*s));
	if (!s)
		goto out;
	s->ops = ops;
	s->target = strdup(target);
	if (!s->target)
		goto out;
	*err_msg = NULL;
	ret = ops->open(s, target, o ? o : &no_opts, err_msg);
	if (ret < 0)
		goto out;
	set->v[set->n++] = s;
	if (ops->events)
		set->n_event++;
	else
		set->n_packet++;
	s = NULL;
	ret = 0;
out:
	if (s) {
		free(s->target);
		free(s);
	}
	return ret;
}

void sink_set_write(struct sink_set *set, const struct pkt *pkts, size_t n)
{
	if (!n)
		return;
	for (size_t i = 0; i < set->n; i++) {
		struct sink *s = set->v[i];
		if (s->ops->events)
			continue;
		if (s->queue)
			sink_queue_push(s, pkts, n);
		else
			s->ops->write(s, pkts, n); /* errors are counted by the sink */
	}
}

/* Connection announcements: in order with the packets, so a queued sink gets
 * them through its queue (which holds a reference to the tag meanwhile). */
static void set_conn(struct sink_set *set, const struct conn_tag *t, uint64_t ts_ns, int end)
{
	for (size_t i = 0; i < set->n; i++) {
		struct sink *s = set->v[i];
		void (*fn)(struct sink *, const struct conn_tag *, uint64_t) =
			end ? s->ops->conn_end : s->ops->conn_begin;
		if (!fn || s->ops->events)
			continue;
		if (s->queue)
			sink_queue_push_conn(s, t, ts_ns, end);
		else
			fn(s, t, ts_ns);
	}
}

void sink_set_conn_begin(struct sink_set *set, const struct conn_tag *t, uint64_t ts_ns)
{
	set_conn(set, t, ts_ns, 0);
}

void sink_set_conn_end(struct sink_set *set, const struct conn_tag *t, uint64_t ts_ns)
{
	set_conn(set, t, ts_ns, 1);
}

/* ---- event sinks ---- */

void sink_set_ev_open(struct sink_set *set, const struct conn_tag *t, uint64_t ts_ns,
		      const uint64_t off[2], int synthetic)
{
	for (size_t i = 0; set->n_event && i < set->n; i++)
		if (set->v[i]->ops->events)
			set->v[i]->ops->events->open(set->v[i], t, ts_ns, off, synthetic);
}

void sink_set_ev_data(struct sink_set *set, const struct conn_tag *t, int dir, uint64_t ts_ns,
		      uint64_t off, const uint8_t *p, size_t n)
{
	for (size_t i = 0; set->n_event && i < set->n; i++)
		if (set->v[i]->ops->events)
			set->v[i]->ops->events->data(set->v[i], t, dir, ts_ns, off, p, n);
}

void sink_set_ev_gap(struct sink_set *set, const struct conn_tag *t, int dir, uint64_t ts_ns,
		     uint64_t off, uint64_t n)
{
	for (size_t i = 0; set->n_event && i < set->n; i++)
		if (set->v[i]->ops->events)
			set->v[i]->ops->events->gap(set->v[i], t, dir, ts_ns, off, n);
}

void sink_set_ev_close(struct sink_set *set, const struct conn_tag *t, uint64_t ts_ns,
		       unsigned how)
{
	for (size_t i = 0; set->n_event && i < set->n; i++)
		if (set->v[i]->ops->events)
			set->v[i]->ops->events->close(set->v[i], t, ts_ns, how);
}

void sink_set_flush(struct sink_set *set)
{
	for (size_t i = 0; i < set->n; i++) {
		struct sink *s = set->v[i];
		if (s->queue)
			sink_queue_kick(s);
		else if (s->ops->flush)
			s->ops->flush(s);
	}
}

void sink_set_drain(struct sink_set *set)
{
	for (size_t i = 0; i < set->n; i++) {
		struct sink *s = set->v[i];
		if (s->queue)
			sink_queue_drain(s); /* bounded: a stalled one is cancelled */
		else if (s->ops->flush)
			s->ops->flush(s);
	}
}

int sink_set_start_queues(struct sink_set *set, const struct sink_opts *o)
{
	for (size_t i = 0; i < set->n; i++) {
		struct sink *s = set->v[i];
		if (s->queue || (s->ops->flags & SINK_F_OWN_QUEUE))
			continue;
		int err = sink_queue_start(s, o ? o->queue_bytes : 0);
		if (err < 0)
			return err;
	}
	return 0;
}

int sink_set_blocks(const struct sink_set *set)
{
	for (size_t i = 0; i < set->n; i++)
		if (set->v[i]->blocks)
			return 1;
	return 0;
}

uint32_t sink_set_mtu(const struct sink_set *set)
{
	uint32_t mtu = 0;
	for (size_t i = 0; i < set->n; i++) {
		uint32_t m = set->v[i]->mtu;
		if (m && (!mtu || m < mtu))
			mtu = m;
	}
	return mtu;
}

size_t sink_common_counters(const struct sink *s, struct kv *out, size_t max)
{
	const struct sink_counters *c = &s->ctr;
	size_t n = 0;
#define ROW(k, x, g) n = kv_put(out, max, n, k, __atomic_load_n(&c->x, __ATOMIC_RELAXED), g)
	ROW("packets", packets, 0);
	ROW("bytes", bytes, 0);
	ROW("queue_drops", queue_drops, 0);
	ROW("queue_drop_bytes", queue_drop_bytes, 0);
	ROW("errors", lost_packets, 0);
	ROW("lost_bytes", lost_bytes, 0);
	ROW("failing", failing, 0);
	ROW("loss_episodes", loss_episodes, 0);
	ROW("peers_dropped", peers_dropped, 0);
	n = kv_put(out, max, n, "queued_bytes", sink_queue_pending_bytes(s), 1);
	ROW("broken", broken, 1);
#undef ROW
	return n;
}

size_t sink_record_counters(const struct sink *s, struct kv *out, size_t max)
{
	size_t n = sink_common_counters(s, out, max);
	for (size_t i = 0; i < n; i++)
		if (!strcmp(out[i].key, "packets"))
			out[i].key = "records";
	return n;
}

size_t sink_counters(const struct sink *s, struct kv *out, size_t max)
{
	return s->ops->counters ? s->ops->counters(s, out, max) : sink_common_counters(s, out, max);
}

void sink_shown_target(const struct sink *s, char *out, size_t len)
{
	if (!strcmp(s->target, "-"))
		snprintf(out, len, "stdout");
	else
		text_token(out, len, s->target);
}

/* One line per sink: the set names it, the sink's rows are its counters. */
size_t sink_set_format(const struct sink_set *set, char *buf, size_t len, size_t at)
{
	for (size_t i = 0; i < set->n; i++) {
		const struct sink *s = set->v[i];
		char target[128];
		struct kv kv[SINK_MAX_COUNTERS];
		sink_shown_target(s, target, sizeof(target));
		at = text_add(buf, len, at, "sink name=%s target=%s", s->ops->name, target);
		at = text_kv(buf, len, at, kv, sink_counters(s, kv, SINK_MAX_COUNTERS));
		at = text_add(buf, len, at, "\n");
	}
	return at;
}

void sink_set_close(struct sink_set *set)
{
	for (size_t i = 0; i < set->n; i++) {
		struct sink *s = set->v[i];
		sink_queue_stop(s);
		if (s->ops->close)
			s->ops->close(s);
		free(s->target);
		free(s);
	}
	free(set->v);
	set->v = NULL;
	set->n = set->n_packet = set->n_event = 0;
}
