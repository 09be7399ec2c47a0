/* Duplicates: both ends of one connection mirrored (two processes, or client and server in one) shown once. */
#include "transforms/dedup.h"
#include "common/text.h"
#include "flows/flow.h"
#include "pipeline/pipeline.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * The first stage of the chain, for connections of every origin (attached
 * processes, agents at a collector). It keeps one entry per real connection
 * it let through, indexed by the 4-tuple (order-insensitive): it passes
 * each open with STAGE_WATCH, so the chain tells it (ended) when the
 * connection ends or was refused further down, without owning it (no
 * per-record cost). An open whose 4-tuple is a connection it let through
 * from the other end (another side, or another origin without a valid
 * fork-inheritance claim), or that was closed from its other end less than
 * DEDUP_RECENT_NS ago (the agent drains one ring at a time, so a short
 * connection can be opened, filled and closed from one end before the
 * other end's OPEN is read; TCP cannot reuse a 4-tuple that soon), is a
 * duplicate: the stage takes it and drops its events. Every stage after it
 * (HTTP/2, the flow engine) sees each connection once.
 *
 * Pre-announced 4-tuples: a producer may announce connections it does not
 * have, to make a real one of another producer look like a duplicate (hidden
 * while its process's stats count it). An entry of another origin whose
 * connection has carried nothing yet (flow_used) and was announced
 * DEDUP_UNUSED_NS or more before the new open gives way: the chain closes it
 * (its producer's later events are orphans) and the new open is let through
 * (evicted). Both ends of a real connection announce themselves within
 * milliseconds of each other, so they stay one shown connection; an entry
 * announced again by its producer keeps the time of its first announcement.
 * One still unused DEDUP_EXPIRE_NS after its announcement expires: the stage
 * forgets it (expired; the connection itself stays open at the flow engine,
 * within --max-conns-per-proc, so nothing its producer sends later is lost),
 * so it can mark nothing a duplicate any more.
 *
 * A recently ended connection marks a new open of its 4-tuple (the other
 * end) a duplicate only if both were announced within DEDUP_PAIR_NS of each
 * other: the two ends of one real connection announce themselves within
 * milliseconds, while a producer that announces and closes tuples in turn
 * cannot hide a connection opened later.
 *
 * Synthetic opens (invented by a stage) pass untouched: they come from
 * after this stage anyway, and the flow engine moves them off real 4-tuples.
 */

#define DEDUP_MIN_BUCKETS 256
#define DEDUP_RECENT 256         /* recently ended connections, reused in turn */
#define DEDUP_RECENT_NS (10ull * 1000000000ull)
#define DEDUP_FILTER 4096        /* recent entries per hash bucket: most look-ups stop at a 0 */
#define DEDUP_UNUSED_NS (1000ull * 1000000) /* an unused announcement this old gives way */
#define DEDUP_EVICT_MAX 8        /* entries one open may make give way */
#define DEDUP_EXPIRE_NS (10ull * 1000000000ull) /* an unused announcement this old is forgotten */
#define DEDUP_PAIR_NS DEDUP_UNUSED_NS /* the two ends of one connection announce within this */
#define DEDUP_SWEEP_NS 1000000000ull /* expiry sweep interval */

struct tuple {
	uint8_t family, side;
	uint16_t client_port, server_port;
	uint8_t client_addr[16], server_addr[16];
};

struct dentry {
	struct dentry *next;
	struct conn_id id;
	uint32_t hash;
	uint8_t dup;             /* a duplicate this stage owns (its events dropped) */
	uint64_t since_ns;       /* first announced (kept over a re-announcement) */
	struct tuple t;
};

struct recent {
	struct tuple t;
	uint32_t hash;
	uint8_t used;
	uint64_t closed_ns;
	uint64_t since_ns;       /* announced */
};

struct dedup {
	struct dentry **b;
	size_t mask;
	size_t count;
	size_t max_dups;
	struct dedup_counters ctr;
	struct recent recent[DEDUP_RECENT];
	size_t recent_next;
	uint16_t recent_n[DEDUP_FILTER];
	int evicting;            /* closing entries that gave way: not recent ends */
	uint64_t next_sweep_ns;  /* expiry of unused announcements */
};

static void tuple_of(struct tuple *t, const struct conn_open *o)
{
	memset(t, 0, sizeof(*t));
	t->family = o->family;
	t->side = o->side ? 1 : 0;
	t->client_port = o->client_port;
	t->server_port = o->server_port;
	memcpy(t->client_addr, o->client_addr, 16);
	memcpy(t->server_addr, o->server_addr, 16);
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 29;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 32);
}

static uint64_t end_sum(const uint8_t a[16], uint16_t port)
{
	uint64_t x, y;
	memcpy(&x, a, 8);
	memcpy(&y, a + 8, 8);
	return mix(x ^ mix(y ^ mix(port)));
}

/* Does not depend on which end is the client (the other end's open swaps nothing,
 * but a producer may report the tuple from its own point of view). */
static uint32_t tuple_hash(const struct tuple *t)
{
	return (uint32_t)mix(t->family + end_sum(t->client_addr, t->client_port) +
			     end_sum(t->server_addr, t->server_port));
}

static int same_end(const uint8_t a[16], uint16_t ap, const uint8_t b[16], uint16_t bp)
{
	return ap == bp && !memcmp(a, b, 16);
}

/* 1: the same 4-tuple; *swapped: given with client and server exchanged. */
static int same_tuple(const struct tuple *a, const struct tuple *b, int *swapped)
{
	*swapped = 0;
	if (a->family != b->family)
		return 0;
	if (same_end(a->client_addr, a->client_port, b->client_addr, b->client_port) &&
	    same_end(a->server_addr, a->server_port, b->server_addr, b->server_port))
		return 1;
	*swapped = 1;
	return same_end(a->client_addr, a->client_port, b->server_addr, b->server_port) &&
	       same_end(a->server_addr, a->server_port, b->client_addr, b->client_port);
}

static struct dentry **bucket(struct dedup *d, uint32_t hash)
{
	return &d->b[hash & d->mask];
}

static void grow(struct dedup *d)
{
	size_t n = (d->mask + 1) * 2;
	struct dentry **b = calloc(n, sizeof(*b));
	if (!b)
		return; /* chains get longer */
	struct dentry **old = d->b;
	size_t old_n = d->mask + 1;
	d->b = b;
	d->mask = n - 1;
	for (size_t i = 0; i < old_n; i++) {
		for (struct dentry *e = old[i], *next; e; e = next) {
			next = e->next;
			struct dentry **h = bucket(d, e->hash);
			e->next = *h;
			*h = e;
		}
	}
	free(old);
}

static int add(struct dedup *d, const struct conn_open *o, const struct tuple *t,
	       uint32_t hash, int dup, uint64_t since_ns)
{
	struct dentry *e = malloc(sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->id = o->id;
	e->hash = hash;
	e->dup = (uint8_t)dup;
	e->since_ns = since_ns;
	e->t = *t;
	if (d->count >= d->mask + 1)
		grow(d);
	struct dentry **h = bucket(d, hash);
	e->next = *h;
	*h = e;
	d->count++;
	d->ctr.tracked = d->count;
	return 0;
}

static void recent_add(struct dedup *d, const struct dentry *e, uint64_t ts_ns)
{
	struct recent *r = &d->recent[d->recent_next++ % DEDUP_RECENT];
	if (r->used)
		d->recent_n[r->hash % DEDUP_FILTER]--;
	d->recent_n[e->hash % DEDUP_FILTER]++;
	r->t = e->t;
	r->hash = e->hash;
	r->used = 1;
	r->closed_ns = ts_ns;
	r->since_ns = e->since_ns;
}

/* Unlinks and frees *pp; a connection it let through is remembered as recent. */
static void drop(struct dedup *d, struct dentry **pp, uint64_t ts_ns)
{
	struct dentry *e = *pp;
	*pp = e->next;
	if (e->dup)
		d->ctr.dup_open--;
	else if (!d->evicting)
		recent_add(d, e, ts_ns);
	d->count--;
	d->ctr.tracked = d->count;
	free(e);
}

/* Was t's connection just ended from its other end? */
static int recent_other_end(const struct dedup *d, const struct tuple *t, uint32_t hash,
			    uint64_t ts_ns)
{
	if (!d->recent_n[hash % DEDUP_FILTER])
		return 0;
	for (size_t i = 0; i < DEDUP_RECENT; i++) {
		const struct recent *r = &d->recent[i];
		int sw;
		if (!r->used || r->hash != hash || !same_tuple(&r->t, t, &sw) ||
		    (r->t.side ^ sw) == t->side)
			continue;
		uint64_t dt = ts_ns > r->closed_ns ? ts_ns - r->closed_ns : r->closed_ns - ts_ns;
		uint64_t da = ts_ns > r->since_ns ? ts_ns - r->since_ns : r->since_ns - ts_ns;
		if (dt < DEDUP_RECENT_NS && da < DEDUP_PAIR_NS)
			return 1;
	}
	return 0;
}

/* e continues the connection a fork-inheritance claim of o names. */
static int inherited(const struct dentry *e, const struct tuple *t, int swapped,
		     const struct conn_open *o)
{
	if (!o->parent_origin || e->id.origin != o->parent_origin || e->id.conn != o->id.conn ||
	    swapped || e->t.side != t->side)
		return 0;
	return !o->parent_ok || o->parent_ok(o, o->parent_arg);
}

/* Has e's connection carried nothing and been announced long enough before
 * ts_ns to be a pre-announcement (the flow engine knows what it carried)? */
static int unused_for(const struct stage *s, const struct dentry *e, uint64_t ts_ns,
		      uint64_t age_ns)
{
	const struct flow_table *ft = pipeline_stage_priv(s->pl, "flows");
	return ft && ts_ns >= e->since_ns && ts_ns - e->since_ns >= age_ns &&
	       flow_used(ft, e->id.origin, e->id.conn) == 0;
}

static int unused_announcement(const struct stage *s, const struct dentry *e, uint64_t ts_ns)
{
	return unused_for(s, e, ts_ns, DEDUP_UNUSED_NS);
}

static int dd_open(struct stage *s, struct conn_open *o)
{
	struct dedup *d = s->priv;
	if (o->synthetic)
		return 0;
	struct tuple t;
	tuple_of(&t, o);
	uint32_t hash = tuple_hash(&t);
	int other = 0, claim = 0;
	uint64_t since = o->ts_ns;
	struct conn_id evict[DEDUP_EVICT_MAX];
	size_t n_evict = 0;
	for (struct dentry **pp = bucket(d, hash); *pp;) {
		struct dentry *e = *pp;
		int sw;
		if (e->dup || e->hash != hash || !same_tuple(&e->t, &t, &sw)) {
			pp = &e->next;
			continue;
		}
		if (e->id.origin == o->id.origin && (e->t.side ^ sw) == t.side) {
			/* the same end of one 4-tuple twice in one producer: the
			 * old connection is gone (its close was missed) */
			if (e->since_ns < since)
				since = e->since_ns;
			drop(d, pp, o->ts_ns);
			d->ctr.stale++;
			continue;
		}
		if (inherited(e, &t, sw, o))
			claim = 1;
		else if (n_evict < DEDUP_EVICT_MAX && unused_announcement(s, e, o->ts_ns))
			evict[n_evict++] = e->id;
		else
			other = 1;
		pp = &e->next;
	}
	if (!other && n_evict) {
		/* unused announcements of others give way to a connection */
		d->evicting = 1;
		for (size_t i = 0; i < n_evict; i++)
			if (pipeline_close(s->pl, &evict[i], o->ts_ns, 0) == 0)
				d->ctr.evicted++;
		d->evicting = 0;
	} else if (n_evict) {
		other = 1;
	}
	if (claim || (!other && !recent_other_end(d, &t, hash, o->ts_ns))) {
		int err = add(d, o, &t, hash, 0, since);
		return err < 0 ? err : STAGE_WATCH;
	}
	/* the other end of a connection shown already */
	if (d->ctr.dup_open >= d->max_dups) {
		d->ctr.refused++;
		return -ENFILE;
	}
	int err = add(d, o, &t, hash, 1, since);
	if (err < 0)
		return err;
	d->ctr.duplicates++;
	d->ctr.dup_open++;
	return 1;
}

/* The entry of id in the bucket of its 4-tuple's hash. */
static struct dentry **find(struct dedup *d, const struct conn_id *id, uint32_t hash)
{
	struct dentry **pp = bucket(d, hash);
	while (*pp && ((*pp)->id.origin != id->origin || (*pp)->id.conn != id->conn))
		pp = &(*pp)->next;
	return pp;
}

static void dd_ended(struct stage *s, const struct conn_open *o)
{
	struct dedup *d = s->priv;
	struct tuple t;
	tuple_of(&t, o);
	struct dentry **pp = find(d, &o->id, tuple_hash(&t));
	if (*pp)
		drop(d, pp, o->ts_ns);
}

static int dd_data(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		   uint64_t off, const uint8_t *p, size_t n, uint64_t *gap)
{
	struct dedup *d = s->priv;
	d->ctr.dup_bytes += n;
	if (gap)
		*gap = 0;
	return 0;
}

static int dd_gap(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		  uint64_t n)
{
	return 0;
}

/* A duplicate ends: its entry goes in dd_ended (which has the 4-tuple). */
static int dd_close(struct stage *s, const struct conn_id *id, uint64_t ts_ns, unsigned flags)
{
	return 0;
}

/* Once a second: unused announcements DEDUP_EXPIRE_NS old are forgotten
 * (not remembered as recent ends: they carried nothing). */
static void dd_tick(struct stage *s, uint64_t now_ns)
{
	struct dedup *d = s->priv;
	if (now_ns < d->next_sweep_ns)
		return;
	d->next_sweep_ns = now_ns + DEDUP_SWEEP_NS;
	if (!d->count)
		return;
	d->evicting = 1;
	for (size_t i = 0; i <= d->mask; i++) {
		for (struct dentry **pp = &d->b[i]; *pp;) {
			if (!(*pp)->dup && unused_for(s, *pp, now_ns, DEDUP_EXPIRE_NS)) {
				drop(d, pp, now_ns);
				d->ctr.expired++;
			} else {
				pp = &(*pp)->next;
			}
		}
	}
	d->evicting = 0;
}

/* The producer is gone: its connections end (the chain forgets their owners). */
static void dd_origin(struct stage *s, uint64_t origin, int ev, uint64_t ts_ns)
{
	struct dedup *d = s->priv;
	if (ev != ORIGIN_CLOSED)
		return;
	for (size_t i = 0; i <= d->mask; i++) {
		for (struct dentry **pp = &d->b[i]; *pp;) {
			if ((*pp)->id.origin == origin)
				drop(d, pp, ts_ns);
			else
				pp = &(*pp)->next;
		}
	}
}

static void clear(struct dedup *d)
{
	for (size_t i = 0; d->b && i <= d->mask; i++) {
		while (d->b[i]) {
			struct dentry *e = d->b[i];
			d->b[i] = e->next;
			free(e);
		}
	}
	d->count = 0;
	d->ctr.tracked = 0;
	d->ctr.dup_open = 0;
}

static void dd_close_all(struct stage *s, uint64_t ts_ns)
{
	clear(s->priv);
}

static size_t dd_counters(const struct stage *s, struct kv *out, size_t max)
{
	const struct dedup_counters *c = dedup_counters(s->priv);
	size_t n = 0;
	n = kv_put(out, max, n, "duplicates", c->duplicates, 0);
	n = kv_put(out, max, n, "open", c->dup_open, 1);
	n = kv_put(out, max, n, "bytes", c->dup_bytes, 0);
	n = kv_put(out, max, n, "stale", c->stale, 0);
	n = kv_put(out, max, n, "refused", c->refused, 0);
	n = kv_put(out, max, n, "tracked", c->tracked, 0);
	n = kv_put(out, max, n, "evicted", c->evicted, 0);
	return kv_put(out, max, n, "expired", c->expired, 0);
}

static void dd_free(struct stage *s)
{
	struct dedup *d = s->priv;
	clear(d);
	free(d->b);
	free(d);
	s->priv = NULL;
}

static const struct stage_ops dedup_ops = {
	.name = "dedup",
	.open = dd_open,
	.ended = dd_ended,
	.data = dd_data,
	.gap = dd_gap,
	.close = dd_close,
	.origin = dd_origin,
	.tick = dd_tick,
	.counters = dd_counters,
	.close_all = dd_close_all,
	.free = dd_free,
};

const struct dedup_counters *dedup_counters(const void *priv)
{
	return &((const struct dedup *)priv)->ctr;
}

int dedup_stage_init(struct stage *s, const char *arg, const struct pipeline_opts *o,
		     const char **why)
{
	struct dedup *d = calloc(1, sizeof(*d));
	if (d)
		d->b = calloc(DEDUP_MIN_BUCKETS, sizeof(*d->b));
	if (!d || !d->b) {
		free(d);
		*why = "out of memory";
		return -ENOMEM;
	}
	d->mask = DEDUP_MIN_BUCKETS - 1;
	d->max_dups = o->flow.max_flows ? o->flow.max_flows : FLOW_DEFAULT_MAX_FLOWS;
	s->priv = d;
	s->ops = &dedup_ops;
	return 0;
}
