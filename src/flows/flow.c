/* Flow engine: one synthetic TCP connection per TLS connection (contract in flow.h). */
#include "flows/flow.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "common/log.h"
#include "packets/synth.h"

/*
 * Per flow, the sender index is the TCP end: 0 client, 1 server. Direction
 * dir 0 (c2s) is sent by end 0, dir 1 (s2c) by end 1, so seq[dir] is the
 * next sequence number of that direction's sender.
 *
 * Window: SYN and SYN/ACK advertise 65535 with window scale 7; every later
 * segment advertises FLOW_WINDOW << 7 bytes. Each data segment is ACKed at
 * once, so at most one MSS is ever in flight.
 *
 * Two indexes: (proc_key, conn_id) -> flow for every flow, and the 4-tuple
 * (order-insensitive) -> flow for flows that emit packets. A flow opened for
 * a 4-tuple that another process (or the other side in the same process)
 * already emits is a duplicate: it is kept so its events can be recognised
 * and ignored, and it emits nothing.
 *
 * Fork handover: a child that continues a connection it inherited (its OPEN
 * names the parent's process and the same conn_id, 4-tuple and side) gets a
 * holder entry in the id index whose `owner` is the parent's flow: its events
 * go to that flow, which emits them. The emitting flow counts its holders
 * (itself until its process lets go: then it leaves the id index, `released`)
 * and ends when the last one closes; released with no holder left (the parent
 * let go first), it lingers in t->linger up to FLOW_LINGER_NS for the child.
 *
 * Packets of one public call are collected in t->batch (headers in t->hdr,
 * payload pointing into the caller's data) and handed to the sinks before
 * the call returns, FLOW_BATCH at a time. A segment of a vectored write
 * (flow_datav) that spans pieces is copied into t->scratch, which the batch
 * it is in keeps until it is handed on.
 */

#define FLOW_BATCH 64
#define FLOW_SYN_WINDOW 65535
#define FLOW_WSCALE 7
#define FLOW_WINDOW 512          /* 512 << 7 = 64 KiB */
#define FLOW_MIN_BUCKETS 64
#define FLOW_DEFAULT_MSS 1460
#define FLOW_MIN_MSS 88          /* IPv6 then still carries 68 bytes */
#define FLOW_MAX_MSS 65495       /* 65535 - IPv4 20 - TCP 20 */
#define FLOW_SCRATCH_SEGS 32     /* segments t->scratch holds (at most 256 KiB) */
#define FLOW_SCRATCH_MAX (256u * 1024)

/* One origin (proc_key): its open flows against the per-origin cap, and
 * what it was refused. In a fixed hash; lives until flow_origin_forget. */
#define ORIGIN_BUCKETS 256
#define ORIGIN_LABEL 48

struct origin {
	struct origin *next;
	uint64_t proc_key;
	struct flow_origin_stats st;
	uint8_t logged;          /* its first refusal was logged */
	char label[ORIGIN_LABEL];
};

struct flow {
	struct flow *next_id;    /* chain in the (proc_key, conn_id) index */
	struct flow *next_tuple; /* chain in the 4-tuple index (emitting flows only) */
	struct origin *origin;
	uint64_t proc_key;
	uint64_t conn_id;
	uint64_t tuple_hash;
	struct synth_conn sc;
	uint64_t emitted[2];     /* stream offset shown so far, per direction */
	uint32_t seq[2];         /* next sequence number, per sender */
	uint16_t mss;
	uint8_t side;            /* end of the mirrored process */
	uint8_t duplicate;
	uint8_t released;        /* emitting flow its own process let go (fork handover) */
	uint64_t seq_no;         /* t->opens when it opened: older than its process's last fork? */
	uint32_t holders;        /* emitting flow: processes holding it */
	struct flow *owner;      /* handover entry: the flow that emits, else NULL */
	uint64_t released_ns;    /* lingering since */
	uint8_t synthetic;       /* invented by a transform: gives way to real flows */
	struct conn_tag *tag;    /* emitting flow: what the sinks see (conn.h), else NULL */
	const struct conn_meta *meta; /* a reference, NULL for none */
};

/* docs/agent.md "Memory": 256 bytes per flow, with malloc's header and the
 * two indexes (at most 2 x 3 pointers per flow while they double). */
_Static_assert(sizeof(struct flow) + 16 + 48 <= 256, "a flow outgrew docs/agent.md");

/* A 4-tuple the engine emitted on and closed recently: an invented flow does
 * not take it (a sensor would see two connections on one 4-tuple). Whether a
 * real OPEN on it is the other end of that connection is the dedup stage's
 * business (transforms/dedup.c), before the engine. */
#define RECENT_SLOTS 256
#define LINGER_SLOTS 256         /* released flows waiting for a child; beyond: ended */
#define FORK_SLOTS 64            /* processes whose last fork is remembered */
#define RECENT_FILTER 4096       /* recent entries per tuple-hash bucket: most lookups stop at a 0 */

struct recent {
	struct synth_conn sc;
	uint64_t tuple_hash;
	uint8_t used;
};

struct flow_table {
	struct sink_set *sinks;
	uint16_t mss4, mss6;
	uint8_t host_mac[6], dst_mac[6]; /* MAC policy (flow_config) */
	uint8_t has_host_mac, has_dst_mac;
	struct flow **by_id;
	struct flow **by_tuple;
	size_t mask;             /* buckets - 1 (a power of two) */
	size_t count;
	size_t max_flows, max_per_origin;
	struct origin *origins[ORIGIN_BUCKETS];
	struct flow_counters ctr;
	struct recent recent[RECENT_SLOTS];
	size_t recent_next;
	struct flow *linger[LINGER_SLOTS];
	size_t nlinger;
	uint64_t opens;          /* flows opened so far (flow.seq_no) */
	struct { uint64_t proc_key, opens; } forks[FORK_SLOTS]; /* last fork per process */
	size_t forks_next;
	uint16_t recent_n[RECENT_FILTER];
	size_t nbatch;
	struct pkt batch[FLOW_BATCH];
	uint8_t hdr[FLOW_BATCH][SYNTH_HDR_MAX];
	uint8_t *scratch;        /* segments spanning pieces (flow_datav), NULL until one */
	size_t scratch_size, scratch_used;
};

/* ---- hashing ---- */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

static uint64_t fnv1a64(uint64_t h, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static uint64_t end_hash(uint64_t h, const struct synth_end *e)
{
	uint8_t port[2] = { (uint8_t)(e->port >> 8), (uint8_t)e->port };
	h = fnv1a64(h, e->addr, sizeof(e->addr));
	return fnv1a64(h, port, sizeof(port));
}

static size_t id_bucket(const struct flow_table *t, uint64_t proc_key, uint64_t conn_id)
{
	return (size_t)(mix64(proc_key ^ mix64(conn_id)) & t->mask);
}

static int end_cmp(const struct synth_end *a, const struct synth_end *b)
{
	int c = memcmp(a->addr, b->addr, sizeof(a->addr));
	return c ? c : (int)a->port - (int)b->port;
}

/* Hash of the 4-tuple that does not depend on which end is the client. */
static uint64_t tuple_hash(const struct synth_conn *c)
{
	int swap = end_cmp(&c->end[0], &c->end[1]) > 0;
	uint64_t h = fnv1a64(0xcbf29ce484222325ull, &c->family, 1);
	h = end_hash(h, &c->end[swap]);
	return mix64(end_hash(h, &c->end[!swap]));
}

static int same_tuple(const struct synth_conn *a, const struct synth_conn *b)
{
	if (a->family != b->family)
		return 0;
	if (!end_cmp(&a->end[0], &b->end[0]) && !end_cmp(&a->end[1], &b->end[1]))
		return 1;
	return !end_cmp(&a->end[0], &b->end[1]) && !end_cmp(&a->end[1], &b->end[0]);
}

/* Initial sequence number of one direction: deterministic, so tests replay. */
static uint32_t flow_isn(const struct synth_conn *c, uint64_t conn_id, int dir)
{
	uint8_t b[9];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(conn_id >> (8 * i));
	b[8] = (uint8_t)dir;
	uint64_t h = fnv1a64(0xcbf29ce484222325ull, &c->family, 1);
	h = end_hash(end_hash(h, &c->end[0]), &c->end[1]);
	return (uint32_t)mix64(fnv1a64(h, b, sizeof(b)));
}

/* ---- indexes ---- */

static struct flow *id_find(const struct flow_table *t, uint64_t proc_key,
			    uint64_t conn_id)
{
	struct flow *f = t->by_id[id_bucket(t, proc_key, conn_id)];
	while (f && (f->proc_key != proc_key || f->conn_id != conn_id))
		f = f->next_id;
	return f;
}

static struct flow *tuple_find(const struct flow_table *t, const struct flow *g)
{
	struct flow *f = t->by_tuple[g->tuple_hash & t->mask];
	while (f && (f->tuple_hash != g->tuple_hash || !same_tuple(&f->sc, &g->sc)))
		f = f->next_tuple;
	return f;
}

static void id_insert(struct flow_table *t, struct flow *f)
{
	struct flow **b = &t->by_id[id_bucket(t, f->proc_key, f->conn_id)];
	f->next_id = *b;
	*b = f;
}

static void tuple_insert(struct flow_table *t, struct flow *f)
{
	struct flow **b = &t->by_tuple[f->tuple_hash & t->mask];
	f->next_tuple = *b;
	*b = f;
}

static void id_unlink(struct flow_table *t, struct flow *f)
{
	struct flow **pp = &t->by_id[id_bucket(t, f->proc_key, f->conn_id)];
	while (*pp && *pp != f)
		pp = &(*pp)->next_id;
	if (*pp)
		*pp = f->next_id;
}

static void tuple_unlink(struct flow_table *t, struct flow *f)
{
	struct flow **pp = &t->by_tuple[f->tuple_hash & t->mask];
	while (*pp && *pp != f)
		pp = &(*pp)->next_tuple;
	if (*pp)
		*pp = f->next_tuple;
}

/* Doubles the bucket arrays; on allocation failure chains just get longer. */
static void grow(struct flow_table *t)
{
	size_t n = (t->mask + 1) * 2;
	struct flow **id = calloc(n, sizeof(*id));
	struct flow **tu = calloc(n, sizeof(*tu));
	if (!id || !tu) {
		free(id);
		free(tu);
		return;
	}
	struct flow **old_id = t->by_id, **old_tu = t->by_tuple;
	size_t old_n = t->mask + 1;
	t->by_id = id;
	t->by_tuple = tu;
	t->mask = n - 1;
	for (size_t i = 0; i < old_n; i++) {
		for (struct flow *f = old_id[i], *next; f; f = next) {
			next = f->next_id;
			id_insert(t, f);
		}
		for (struct flow *f = old_tu[i], *next; f; f = next) {
			next = f->next_tuple;
			tuple_insert(t, f);
		}
	}
	free(old_id);
	free(old_tu);
}

/* ---- packets ---- */

static void batch_flush(struct flow_table *t)
{
	if (t->nbatch && t->sinks)
		sink_set_write(t->sinks, t->batch, t->nbatch);
	t->nbatch = 0;
}

/* Packets are made only for sinks that take them (an agent whose only
 * output is the tunnel hands events on, docs/pipeline.md). */
static int packets_wanted(const struct flow_table *t)
{
	return t->sinks && t->sinks->n > t->sinks->n_event;
}

/* One segment from end `from` with the current sequence numbers of both ends;
 * its payload payload[0..len) then more[0..more_len). */
static void emit2(struct flow_table *t, struct flow *f, int from, uint8_t flags,
		  const struct synth_syn_opts *syn, const uint8_t *payload, size_t len,
		  const uint8_t *more, size_t more_len, uint64_t ts_ns)
{
	if (!packets_wanted(t))
		return;
	if (t->nbatch == FLOW_BATCH)
		batch_flush(t);
	uint8_t *h = t->hdr[t->nbatch];
	uint32_t ack = (flags & TCPF_ACK) ? f->seq[!from] : 0;
	uint16_t win = (flags & TCPF_SYN) ? FLOW_SYN_WINDOW : FLOW_WINDOW;
	uint16_t sum = len ? synth_payload_sum(payload, len) : 0;
	if (more_len)
		sum = synth_sum_join(sum, len, synth_payload_sum(more, more_len));
	size_t hl = synth_tcp_sum(h, &f->sc, from, f->seq[from], ack, flags, win, syn,
				  len + more_len, sum);
	if (t->has_dst_mac)
		memcpy(h, t->dst_mac, 6);
	if (f->meta && f->meta->vlan && hl + 4 <= SYNTH_HDR_MAX) {
		/* the producer's 802.1Q tag (a collector's --tag-agents vlan) */
		memmove(h + 16, h + 12, hl - 12);
		put_be16(h + 12, 0x8100);
		put_be16(h + 14, f->meta->vlan & 0x0fff);
		hl += 4;
	}
	struct pkt *k = &t->batch[t->nbatch++];
	k->ts_ns = ts_ns;
	k->hdr = h;
	k->hdr_len = (uint32_t)hl;
	k->payload = len ? payload : NULL;
	k->payload_len = (uint32_t)len;
	k->more = more_len ? more : NULL;
	k->more_len = (uint32_t)more_len;
	k->conn = f->tag;
	t->ctr.packets++;
}

static void emit(struct flow_table *t, struct flow *f, int from, uint8_t flags,
		 const struct synth_syn_opts *syn, const uint8_t *payload,
		 size_t len, uint64_t ts_ns)
{
	emit2(t, f, from, flags, syn, payload, len, NULL, 0, ts_ns);
}

/* The flow starts emitting on its current 4-tuple: a tag for the sinks,
 * announced before its first packet. Without memory its packets carry none. */
static void tag_begin(struct flow_table *t, struct flow *f, uint64_t ts_ns)
{
	const struct synth_end *c = &f->sc.end[0], *s = &f->sc.end[1];
	struct conn_id id = { f->proc_key, f->conn_id };
	f->tag = conn_tag_new(&id, f->sc.family, c->addr, c->port, s->addr, s->port, f->meta);
	if (!f->tag) {
		t->ctr.tag_failures++;
		return;
	}
	if (t->sinks) {
		sink_set_conn_begin(t->sinks, f->tag, ts_ns);
		sink_set_ev_open(t->sinks, f->tag, ts_ns, f->emitted, f->synthetic);
	}
}

/* After the flow's last packet on this 4-tuple (handed to the sinks first). */
static void tag_end(struct flow_table *t, struct flow *f, uint64_t ts_ns, unsigned how)
{
	if (!f->tag)
		return;
	batch_flush(t);
	if (t->sinks) {
		sink_set_ev_close(t->sinks, f->tag, ts_ns, how);
		sink_set_conn_end(t->sinks, f->tag, ts_ns);
	}
	conn_tag_unref(f->tag);
	f->tag = NULL;
}

static void emit_handshake(struct flow_table *t, struct flow *f, uint64_t ts_ns)
{
	tag_begin(t, f, ts_ns);
	struct synth_syn_opts syn = { .mss = f->mss, .wscale = FLOW_WSCALE, .sack_ok = 1 };
	emit(t, f, 0, TCPF_SYN, &syn, NULL, 0, ts_ns);
	f->seq[0]++;
	emit(t, f, 1, TCPF_SYN | TCPF_ACK, &syn, NULL, 0, ts_ns);
	f->seq[1]++;
	emit(t, f, 0, TCPF_ACK, NULL, NULL, 0, ts_ns);
}

/* Room for a segment of n bytes spanning pieces, valid until the batch is
 * handed on; NULL without memory. */
static uint8_t *scratch_get(struct flow_table *t, size_t n)
{
	if (!t->scratch) {
		size_t sz = (size_t)t->mss4 * FLOW_SCRATCH_SEGS;
		sz = sz > FLOW_SCRATCH_MAX ? FLOW_SCRATCH_MAX : sz;
		t->scratch = malloc(sz);
		if (!t->scratch)
			return NULL;
		t->scratch_size = sz;
	}
	/* emit() may hand the batch on when it is full: before the copy, not after */
	if (n > t->scratch_size - t->scratch_used || t->nbatch + 2 > FLOW_BATCH) {
		batch_flush(t);
		t->scratch_used = 0;
	}
	uint8_t *p = t->scratch + t->scratch_used;
	t->scratch_used += n;
	return p;
}

/* One data segment of end dir, ACKed by the peer; PSH on the last. Inlined:
 * it is the per-segment path of every record. */
static inline __attribute__((always_inline)) void
emit_seg(struct flow_table *t, struct flow *f, int dir, const uint8_t *p, size_t n, int last,
	 uint64_t ts_ns)
{
	emit(t, f, dir, TCPF_ACK | (last ? TCPF_PSH : 0), NULL, p, n, ts_ns);
	f->seq[dir] += (uint32_t)n;
	emit(t, f, !dir, TCPF_ACK, NULL, NULL, 0, ts_ns);
}

/* The same for a segment in two parts: p[0..n) then q[0..m). */
static void emit_seg2(struct flow_table *t, struct flow *f, int dir, const uint8_t *p, size_t n,
		      const uint8_t *q, size_t m, int last, uint64_t ts_ns)
{
	emit2(t, f, dir, TCPF_ACK | (last ? TCPF_PSH : 0), NULL, p, n, q, m, ts_ns);
	f->seq[dir] += (uint32_t)(n + m);
	emit(t, f, !dir, TCPF_ACK, NULL, NULL, 0, ts_ns);
}

/*
 * Segments to the MSS; PSH on the last segment; each segment ACKed by the
 * peer. The bytes are the concatenation of v[0..nv), the first skip of them
 * left out (len remain). A segment inside one piece points into it; one
 * spanning two pieces is handed on as its two parts (struct pkt's more), one
 * spanning more is copied (scratch_get), or without memory cut where the
 * piece ends.
 */
static void emit_data(struct flow_table *t, struct flow *f, int dir, const struct piece *v,
		      size_t nv, uint64_t skip, size_t len, uint64_t ts_ns)
{
	size_t i = 0, at;
	while (i < nv && skip >= v[i].n)
		skip -= v[i++].n;
	at = (size_t)skip;
	if (f->tag && len && t->sinks) {
		uint64_t off = f->emitted[dir];
		for (size_t k = i, o = at; k < nv; k++, o = 0) {
			if (v[k].n > o)
				sink_set_ev_data(t->sinks, f->tag, dir, ts_ns, off, v[k].p + o,
						 v[k].n - o);
			off += v[k].n - o;
		}
	}
	if (!packets_wanted(t))
		return;
	if (i + 1 == nv) { /* one piece (every record of a source) */
		for (const uint8_t *p = v[i].p + at; len;) {
			size_t n = len < f->mss ? len : f->mss;
			emit_seg(t, f, dir, p, n, n == len, ts_ns);
			p += n;
			len -= n;
		}
		return;
	}
	while (len) {
		size_t n = len < f->mss ? len : f->mss, avail = v[i].n - at;
		const uint8_t *p = v[i].p + at;
		uint8_t *cp;
		if (!avail) {
			i++;
			at = 0;
			continue;
		}
		if (avail >= n) {
			at += n;
		} else if (i + 1 < nv && v[i + 1].n >= n - avail) {
			/* two parts: the end of this piece, the start of the next */
			emit_seg2(t, f, dir, p, avail, v[i + 1].p, n - avail, n == len, ts_ns);
			len -= n;
			at = n - avail;
			i++;
			continue;
		} else if ((cp = scratch_get(t, n)) != NULL) {
			for (size_t got = 0;; i++, at = 0) {
				size_t k = v[i].n - at < n - got ? v[i].n - at : n - got;
				memcpy(cp + got, v[i].p + at, k);
				got += k;
				if (got == n) {
					at += k;
					break;
				}
			}
			p = cp;
		} else {
			n = avail; /* without memory: a short segment */
			at = v[i].n;
		}
		emit_seg(t, f, dir, p, n, n == len, ts_ns);
		len -= n;
	}
}

/* FIN/ACK from the mirrored side, FIN/ACK back, last ACK. */
static void emit_close(struct flow_table *t, struct flow *f, uint64_t ts_ns)
{
	int a = f->side, b = !a;
	emit(t, f, a, TCPF_FIN | TCPF_ACK, NULL, NULL, 0, ts_ns);
	f->seq[a]++;
	emit(t, f, b, TCPF_FIN | TCPF_ACK, NULL, NULL, 0, ts_ns);
	f->seq[b]++;
	emit(t, f, a, TCPF_ACK, NULL, NULL, 0, ts_ns);
}

static void recent_add(struct flow_table *t, const struct flow *f)
{
	struct recent *r = &t->recent[t->recent_next++ % RECENT_SLOTS];
	if (r->used)
		t->recent_n[r->tuple_hash % RECENT_FILTER]--;
	t->recent_n[f->tuple_hash % RECENT_FILTER]++;
	r->sc = f->sc;
	r->tuple_hash = f->tuple_hash;
	r->used = 1;
}

/* Did one of the last RECENT_SLOTS closed flows have g's 4-tuple? */
static int recent_tuple(const struct flow_table *t, const struct flow *g)
{
	if (!t->recent_n[g->tuple_hash % RECENT_FILTER])
		return 0;
	for (size_t i = 0; i < RECENT_SLOTS; i++) {
		const struct recent *r = &t->recent[i];
		if (r->used && r->tuple_hash == g->tuple_hash && same_tuple(&r->sc, &g->sc))
			return 1;
	}
	return 0;
}

static void flow_free(struct flow *f)
{
	conn_tag_unref(f->tag);
	conn_meta_unref(f->meta);
	free(f);
}

/* Ends a flow: FIN exchange unless duplicate, out of both indexes, freed. */
static void flow_end(struct flow_table *t, struct flow *f, uint64_t ts_ns)
{
	if (!f->duplicate) {
		emit_close(t, f, ts_ns);
		tag_end(t, f, ts_ns, SINK_EV_CLOSE_END);
		tuple_unlink(t, f);
		t->ctr.flows_closed++;
		recent_add(t, f);
	}
	id_unlink(t, f);
	t->count--;
	t->ctr.flows_open--;
	f->origin->st.open--;
	flow_free(f);
}

/* ---- fork handover ---- */

static int linger_add(struct flow_table *t, struct flow *f, uint64_t ts_ns)
{
	if (t->nlinger == LINGER_SLOTS)
		return 0;
	f->released_ns = ts_ns;
	t->linger[t->nlinger++] = f;
	return 1;
}

static void linger_remove(struct flow_table *t, const struct flow *f)
{
	for (size_t i = 0; i < t->nlinger; i++) {
		if (t->linger[i] == f) {
			t->linger[i] = t->linger[--t->nlinger];
			return;
		}
	}
}

/*
 * One holder lets go of e (a flow or a handover entry). The emitting flow
 * goes on while another holder has it; else it ends, or with linger (the
 * process let go of a connection it forked with) waits for a child.
 */
static void drop_holder(struct flow_table *t, struct flow *e, uint64_t ts_ns, int linger)
{
	struct flow *f = e->owner ? e->owner : e;
	if (e->owner) {
		id_unlink(t, e);
		t->count--;
		t->ctr.flows_open--;
		e->origin->st.open--;
		flow_free(e);
	} else if (f->holders > 1 || (linger && !f->duplicate)) {
		/* out of the id index: its process's later events and exit
		 * no longer reach it */
		id_unlink(t, f);
		f->released = 1;
	}
	if (f->holders)
		f->holders--;
	if (f->holders)
		return;
	if (linger && !f->duplicate && linger_add(t, f, ts_ns))
		return;
	flow_end(t, f, ts_ns);
}

/* Is g (inherited from info->parent_origin) the continuation of flow f? */
static int inherits(const struct flow *f, const struct flow *g,
		    const struct conn_open *info)
{
	if (!info->parent_origin || f->proc_key != info->parent_origin || f->owner ||
	    f->conn_id != info->id.conn || f->duplicate || f->side != g->side ||
	    f->sc.family != g->sc.family || end_cmp(&f->sc.end[0], &g->sc.end[0]) ||
	    end_cmp(&f->sc.end[1], &g->sc.end[1]))
		return 0;
	/* only now, with a flow to continue: is the claim plausible? */
	return !info->parent_ok || info->parent_ok(info, info->parent_arg);
}

/* g becomes a holder of f: its events go to f, nothing emitted now. */
static void adopt(struct flow_table *t, struct flow *f, struct flow *g)
{
	if (!f->holders)
		linger_remove(t, f);
	f->holders++;
	g->owner = f;
	id_insert(t, g);
	t->count++;
	t->ctr.flows_open++;
	g->origin->st.open++; /* a holder counts against its process's cap */
	t->ctr.flows_handed_over++;
}

void flow_proc_forked(struct flow_table *t, uint64_t proc_key)
{
	size_t i = 0;
	while (i < FORK_SLOTS && t->forks[i].proc_key != proc_key)
		i++;
	if (i == FORK_SLOTS) /* forgotten: its exit ends its flows, as before */
		i = t->forks_next++ % FORK_SLOTS;
	t->forks[i].proc_key = proc_key;
	t->forks[i].opens = t->opens;
}

/* Flows of proc_key opened before this are open at its last fork (0: none). */
static uint64_t last_fork(const struct flow_table *t, uint64_t proc_key)
{
	for (size_t i = 0; i < FORK_SLOTS; i++)
		if (proc_key && t->forks[i].proc_key == proc_key)
			return t->forks[i].opens;
	return 0;
}

void flow_expire(struct flow_table *t, uint64_t now_ns)
{
	if (!t->nlinger)
		return;
	for (size_t i = 0; i < t->nlinger;) {
		struct flow *f = t->linger[i];
		if (now_ns - f->released_ns < FLOW_LINGER_NS && now_ns >= f->released_ns) {
			i++;
			continue;
		}
		t->linger[i] = t->linger[--t->nlinger];
		flow_end(t, f, now_ns);
	}
	batch_flush(t);
}

/* ---- public ---- */

struct flow_table *flow_table_new(const struct flow_config *cfg)
{
	struct flow_table *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	uint32_t mss = cfg->mss ? cfg->mss : FLOW_DEFAULT_MSS;
	if (mss < FLOW_MIN_MSS)
		mss = FLOW_MIN_MSS;
	if (mss > FLOW_MAX_MSS)
		mss = FLOW_MAX_MSS;
	t->mss4 = (uint16_t)mss;
	t->mss6 = (uint16_t)(mss - 20);
	t->sinks = cfg->sinks;
	memcpy(t->host_mac, cfg->host_mac, 6);
	memcpy(t->dst_mac, cfg->dst_mac, 6);
	t->has_host_mac = cfg->has_host_mac;
	t->has_dst_mac = cfg->has_dst_mac;
	t->max_flows = cfg->max_flows ? cfg->max_flows : FLOW_DEFAULT_MAX_FLOWS;
	t->max_per_origin = cfg->max_flows_per_origin ? cfg->max_flows_per_origin :
			    FLOW_DEFAULT_MAX_PER_ORIGIN;
	t->mask = FLOW_MIN_BUCKETS - 1;
	t->by_id = calloc(FLOW_MIN_BUCKETS, sizeof(*t->by_id));
	t->by_tuple = calloc(FLOW_MIN_BUCKETS, sizeof(*t->by_tuple));
	if (!t->by_id || !t->by_tuple) {
		flow_table_free(t);
		return NULL;
	}
	return t;
}

void flow_table_free(struct flow_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; t->by_id && i <= t->mask; i++) {
		for (struct flow *f = t->by_id[i], *next; f; f = next) {
			next = f->next_id;
			struct flow *o = f->owner;
			if (!o && f->holders > 1) {
				f->released = 1; /* freed with its last holder */
				f->holders--;
				continue;
			}
			flow_free(f);
			if (o && --o->holders == 0 && o->released)
				flow_free(o);
		}
	}
	for (size_t i = 0; i < ORIGIN_BUCKETS; i++) {
		for (struct origin *o = t->origins[i], *next; o; o = next) {
			next = o->next;
			free(o);
		}
	}
	for (size_t i = 0; i < t->nlinger; i++)
		flow_free(t->linger[i]);
	free(t->by_id);
	free(t->by_tuple);
	free(t->scratch);
	free(t);
}

static struct flow *flow_new(struct flow_table *t,
			     const struct conn_open *info)
{
	struct flow *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->proc_key = info->id.origin;
	f->conn_id = info->id.conn;
	f->side = info->side ? 1 : 0;
	f->holders = 1;
	f->seq_no = ++t->opens;
	f->synthetic = info->synthetic ? 1 : 0;
	f->meta = conn_meta_ref(info->meta);
	synth_conn_init(&f->sc, info->family, info->client_addr, info->client_port,
			info->server_addr, info->server_port);
	if (t->has_host_mac)
		memcpy(f->sc.end[f->side].mac, t->host_mac, 6);
	f->mss = f->sc.family == 6 ? t->mss6 : t->mss4;
	f->tuple_hash = tuple_hash(&f->sc);
	/* A connection announced again mid-stream (an agent restart: the new
	 * agent's OPEN carries the stream offsets) continues the sequence space
	 * of the first announcement: the ISN is the same (deterministic per
	 * connection), the new SYN sits just before offset off[d], so merged
	 * captures place every byte once and never overlap. */
	for (int d = 0; d < 2; d++) {
		uint64_t off = info->midstream ? info->off[d] : 0;
		f->seq[d] = flow_isn(&f->sc, info->isn_seed ? info->isn_seed : info->id.conn, d) +
			    (uint32_t)off;
		f->emitted[d] = off;
	}
	return f;
}

/* ---- origins and caps ---- */

static struct origin **origin_link(struct flow_table *t, uint64_t proc_key)
{
	struct origin **pp = &t->origins[mix64(proc_key) & (ORIGIN_BUCKETS - 1)];
	while (*pp && (*pp)->proc_key != proc_key)
		pp = &(*pp)->next;
	return pp;
}

/* An origin's counters; a new one is named after the producer in meta. */
static struct origin *origin_get(struct flow_table *t, uint64_t proc_key,
				 const struct conn_meta *m)
{
	struct origin **pp = origin_link(t, proc_key);
	if (*pp)
		return *pp;
	struct origin *o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	o->proc_key = proc_key;
	if (m && m->host[0])
		snprintf(o->label, sizeof(o->label), "agent %.40s", m->host);
	else if (m && m->pid)
		snprintf(o->label, sizeof(o->label), "pid %u (%s)", (unsigned)m->pid, m->comm);
	else
		snprintf(o->label, sizeof(o->label), "origin %llu", (unsigned long long)proc_key);
	*pp = o;
	return o;
}

/* Refusal of a new flow over a cap: counted, logged once per origin. */
static int refuse(struct flow_table *t, struct origin *o, int err)
{
	t->ctr.flows_refused++;
	o->st.refused++;
	if (!o->logged) {
		o->logged = 1;
		log_warn("%s: %zu connections open%s (cap --max-conns%s %zu): further ones are "
			 "not mirrored, only counted (refused_conns in tlsmirror stats)", o->label,
			 err == -ENFILE ? t->count : (size_t)o->st.open,
			 err == -ENFILE ? " in total" : " by it",
			 err == -ENFILE ? "" : "-per-proc",
			 err == -ENFILE ? t->max_flows : t->max_per_origin);
	}
	return err;
}

/* May info's flow be opened? A flow replacing one of the same (proc_key,
 * conn_id) always may. O(1): two hash look-ups. */
static int admit(struct flow_table *t, const struct conn_open *info, struct origin **out)
{
	struct origin *o = origin_get(t, info->charge_origin ? info->charge_origin :
				      info->id.origin, info->meta);
	if (!o)
		return -ENOMEM;
	*out = o;
	if (t->count < t->max_flows && o->st.open < t->max_per_origin)
		return 0;
	if (id_find(t, info->id.origin, info->id.conn))
		return 0;
	return refuse(t, o, t->count >= t->max_flows ? -ENFILE : -EMFILE);
}

int flow_origin_label(struct flow_table *t, uint64_t proc_key, const char *label)
{
	struct origin *o = origin_get(t, proc_key, NULL);
	if (!o)
		return -ENOMEM;
	snprintf(o->label, sizeof(o->label), "%s", label);
	return 0;
}

struct flow_origin_stats flow_origin_stats(const struct flow_table *t, uint64_t proc_key)
{
	struct flow_origin_stats z = { 0 };
	struct origin *o = *origin_link((struct flow_table *)t, proc_key);
	return o ? o->st : z;
}

int flow_origin_forget(struct flow_table *t, uint64_t proc_key)
{
	struct origin **pp = origin_link(t, proc_key), *o = *pp;
	if (!o)
		return 0;
	if (o->st.open)
		return -EBUSY;
	*pp = o->next;
	free(o);
	return 0;
}

/* The same connection (addresses, ports and side) as an existing flow. */
static int same_conn(const struct flow *f, const struct flow *g)
{
	return f->side == g->side && f->sc.family == g->sc.family &&
	       !end_cmp(&f->sc.end[0], &g->sc.end[0]) &&
	       !end_cmp(&f->sc.end[1], &g->sc.end[1]);
}

/*
 * A real connection takes the 4-tuple of synthetic flow s: s ends there
 * (FIN exchange) and goes on, same ids and stream offsets, from the next
 * client port of FLOW_SYNTH_PORT_MIN..MAX that is neither open nor recently
 * closed, with a handshake of its own. No free port at all: s shows nothing
 * more.
 */
static void synthetic_move(struct flow_table *t, struct flow *s, uint64_t ts_ns)
{
	emit_close(t, s, ts_ns);
	tag_end(t, s, ts_ns, SINK_EV_CLOSE_MOVED);
	tuple_unlink(t, s);
	recent_add(t, s);
	t->ctr.synthetic_moved++;
	uint16_t p = s->sc.end[0].port;
	for (uint32_t n = 0; n <= FLOW_SYNTH_PORT_MAX - FLOW_SYNTH_PORT_MIN; n++) {
		p = p < FLOW_SYNTH_PORT_MIN || p >= FLOW_SYNTH_PORT_MAX ? FLOW_SYNTH_PORT_MIN : p + 1;
		s->sc.end[0].port = p;
		s->tuple_hash = tuple_hash(&s->sc);
		if (tuple_find(t, s) || recent_tuple(t, s))
			continue;
		tuple_insert(t, s);
		for (int d = 0; d < 2; d++)
			s->seq[d] = flow_isn(&s->sc, s->conn_id, d);
		emit_handshake(t, s, ts_ns);
		return;
	}
	s->duplicate = 1;
}

int flow_open(struct flow_table *t, const struct conn_open *info)
{
	struct origin *org;
	int err = admit(t, info, &org);
	if (err)
		return err;
	struct flow *f = flow_new(t, info);
	if (!f)
		return -ENOMEM;
	f->origin = org;
	struct flow *old = id_find(t, info->id.origin, info->id.conn);
	if (old && same_conn(old, f)) {
		/* announced again: the flow goes on (a new SYN would reuse the ISN) */
		flow_free(f);
		return -EEXIST;
	}
	if (old)
		drop_holder(t, old, info->ts_ns, 0);
	struct flow *prim = tuple_find(t, f);
	if (f->synthetic && (prim || recent_tuple(t, f))) {
		flow_free(f);
		return -EADDRINUSE; /* never on a 4-tuple in use: the caller picks another */
	}
	if (prim && inherits(prim, f, info)) {
		if (t->count >= t->mask + 1)
			grow(t);
		adopt(t, prim, f);
		goto out;
	}
	if (prim && prim->synthetic) {
		synthetic_move(t, prim, info->ts_ns); /* a real connection wins its 4-tuple */
		prim = NULL;
	}
	if (prim && prim->proc_key == f->proc_key && prim->side == f->side &&
	    !prim->released && prim->holders == 1) {
		/* the same end of one 4-tuple twice in one process: the old
		 * connection is gone (its close was missed) */
		flow_end(t, prim, info->ts_ns);
		prim = NULL;
	}
	if (t->count >= t->mask + 1)
		grow(t);
	id_insert(t, f);
	t->count++;
	t->ctr.flows_open++;
	org->st.open++;
	if (prim) {
		/* the 4-tuple has its emitter: this one shows nothing (the dedup
		 * stage before the engine decides which end is a duplicate;
		 * here only a failed inheritance claim gets this far) */
		f->duplicate = 1;
		t->ctr.flows_duplicate++;
		goto out;
	}
	tuple_insert(t, f);
	t->ctr.flows_opened++;
	emit_handshake(t, f, info->ts_ns);
out:
	batch_flush(t);
	return 0;
}

/* Finds the flow of an event; counts an orphan when there is none. */
static struct flow *event_flow(struct flow_table *t, uint64_t proc_key,
			       uint64_t conn_id)
{
	struct flow *f = id_find(t, proc_key, conn_id);
	if (!f)
		t->ctr.orphan_records++;
	return f;
}

/* Clear text for no flow: counted, in total and for its origin if known. */
static void orphan_data(struct flow_table *t, uint64_t proc_key, size_t len)
{
	struct origin *o = *origin_link(t, proc_key);
	t->ctr.orphan_bytes += len;
	if (o)
		o->st.orphan_bytes += len;
}

/* Advances a direction over bytes that are not shown. */
static void skip_bytes(struct flow_table *t, struct flow *f, int dir, uint64_t n,
		       uint64_t ts_ns)
{
	if (f->tag && n && t->sinks)
		sink_set_ev_gap(t->sinks, f->tag, dir, ts_ns, f->emitted[dir], n);
	f->seq[dir] += (uint32_t)n;
	f->emitted[dir] += n;
	t->ctr.gap_bytes[dir] += n;
}

int flow_datav(struct flow_table *t, uint64_t proc_key, uint64_t conn_id, int dir,
	       uint64_t ts_ns, uint64_t off, const struct piece *v, size_t nv, uint64_t *gap)
{
	if (gap)
		*gap = 0;
	if (dir != 0 && dir != 1)
		return -EINVAL;
	size_t len = 0;
	for (size_t i = 0; i < nv; i++)
		len += v[i].n;
	struct flow *f = event_flow(t, proc_key, conn_id);
	if (!f) {
		orphan_data(t, proc_key, len);
		return -ENOENT;
	}
	if (f->owner)
		f = f->owner;
	if (f->duplicate)
		return 0;
	uint64_t behind = 0;
	if (off > f->emitted[dir]) {
		uint64_t g = off - f->emitted[dir];
		skip_bytes(t, f, dir, g, ts_ns);
		if (gap)
			*gap = g;
	} else if (off < f->emitted[dir]) {
		behind = f->emitted[dir] - off;
		if (behind >= len) {
			t->ctr.bad_offsets++;
			return -ERANGE;
		}
		len -= (size_t)behind;
	}
	emit_data(t, f, dir, v, nv, behind, len, ts_ns);
	f->emitted[dir] += len;
	t->ctr.bytes[dir] += len;
	batch_flush(t);
	t->scratch_used = 0;
	return 0;
}

int flow_data(struct flow_table *t, uint64_t proc_key, uint64_t conn_id,
	      int dir, uint64_t ts_ns, uint64_t off, const uint8_t *data,
	      size_t len, uint64_t *gap)
{
	struct piece v = { data, len };
	return flow_datav(t, proc_key, conn_id, dir, ts_ns, off, &v, 1, gap);
}

int flow_gap(struct flow_table *t, uint64_t proc_key, uint64_t conn_id,
	     int dir, uint64_t ts_ns, uint64_t len)
{
	if (dir != 0 && dir != 1)
		return -EINVAL;
	struct flow *f = event_flow(t, proc_key, conn_id);
	if (!f)
		return -ENOENT;
	if (f->owner)
		f = f->owner;
	if (!f->duplicate)
		skip_bytes(t, f, dir, len, ts_ns);
	return 0;
}

int flow_close(struct flow_table *t, uint64_t proc_key, uint64_t conn_id,
	       uint64_t ts_ns)
{
	struct flow *f = event_flow(t, proc_key, conn_id);
	if (!f)
		return -ENOENT;
	drop_holder(t, f, ts_ns, 0);
	batch_flush(t);
	return 0;
}

int flow_release(struct flow_table *t, uint64_t proc_key, uint64_t conn_id,
		 uint64_t ts_ns)
{
	struct flow *f = event_flow(t, proc_key, conn_id);
	if (!f)
		return -ENOENT;
	drop_holder(t, f, ts_ns, 1);
	flow_expire(t, ts_ns);
	batch_flush(t);
	return 0;
}

/* Closes every flow (all) or every flow of one process. */
static void close_matching(struct flow_table *t, int all, uint64_t proc_key,
			   uint64_t ts_ns)
{
	uint64_t forked = all ? 0 : last_fork(t, proc_key);
	for (size_t i = 0; i <= t->mask; i++) {
		for (struct flow *f = t->by_id[i], *next; f; f = next) {
			next = f->next_id;
			if (all || f->proc_key == proc_key)
				drop_holder(t, f, ts_ns, f->seq_no <= forked);
		}
	}
	while (all && t->nlinger)
		flow_end(t, t->linger[--t->nlinger], ts_ns);
	batch_flush(t);
}

void flow_close_proc(struct flow_table *t, uint64_t proc_key, uint64_t ts_ns)
{
	close_matching(t, 0, proc_key, ts_ns);
}

void flow_close_all(struct flow_table *t, uint64_t ts_ns)
{
	close_matching(t, 1, 0, ts_ns);
}

const struct flow_counters *flow_counters(const struct flow_table *t)
{
	return &t->ctr;
}

int flow_used(const struct flow_table *t, uint64_t proc_key, uint64_t conn_id)
{
	const struct flow *f = id_find(t, proc_key, conn_id);
	if (!f)
		return -1;
	if (f->owner)
		f = f->owner;
	return f->emitted[0] || f->emitted[1] || f->duplicate;
}

int flow_tuple_busy(const struct flow_table *t, uint8_t family,
		    const uint8_t client_addr[16], uint16_t client_port,
		    const uint8_t server_addr[16], uint16_t server_port)
{
	struct flow g;
	memset(&g, 0, sizeof(g));
	synth_conn_init(&g.sc, family, client_addr, client_port, server_addr, server_port);
	g.tuple_hash = tuple_hash(&g.sc);
	return tuple_find(t, &g) != NULL || recent_tuple(t, &g);
}
