/* The stage chain: stage registration, origins, and the one table of who owns each connection (contract in pipeline.h). */
#include "pipeline/pipeline.h"
#include "common/text.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * Ownership: one hash from (origin, conn) to the stage that took the
 * connection over. An event goes straight to its owner, never "try each
 * stage". The entry keeps the 4-tuple and side of the open as the source
 * gave it, so a connection announced again is recognised here, once, for
 * every stage. Entries exist only for connections a stage took, so the
 * stages' caps bound the table.
 *
 * Origins: the chain numbers them. Origins handed to stages (stage_origin)
 * are remembered with the stage, so an open a stage emits under an origin
 * that is not its own is refused: an invented connection can never take
 * the id of a real one.
 */

const struct stage_def stage_table[] = {
	{ "dedup", NULL, NULL, NULL, NULL, dedup_stage_init, NULL },
	{ "portmap", "port-map", "P:Q[,..]",
	  "show clear text of server port P on port Q (443:80,8443:8080)",
	  portmap_check, portmap_stage_init, NULL },
	{ "http", "h2-to-h1", NULL,
	  "mirror HTTP/2 connections as HTTP/1.1 (one TCP connection per stream)",
	  NULL, h2_stage_init, h2_stage_wanted },
	{ "flows", NULL, NULL, NULL, NULL, flow_stage_init, NULL },
};
const size_t stage_table_len = sizeof(stage_table) / sizeof(stage_table[0]);

_Static_assert(sizeof(stage_table) / sizeof(stage_table[0]) <= PIPELINE_MAX_STAGES,
	       "stage_table outgrew PIPELINE_MAX_STAGES");

#define OWN_MIN_BUCKETS 256
#define STAGE_ORIGINS 8          /* origins a chain hands to stages */

struct owner {
	struct owner *next;
	struct conn_id id;
	uint8_t stage;
	uint8_t watch;           /* stages (bit = index) told when it ends (STAGE_WATCH) */
	uint8_t tap;             /* of those, stages that read its data too (STAGE_TAP) */
	uint8_t family, side;
	uint8_t _pad[3];
	uint16_t client_port, server_port;
	uint8_t client_addr[16], server_addr[16];
};

struct pipeline {
	struct stage st[PIPELINE_MAX_STAGES];
	size_t n;
	struct owner **b;
	size_t mask;
	uint64_t next_origin;
	struct { uint64_t origin; unsigned stage; } sorig[STAGE_ORIGINS];
	size_t nsorig;
	struct pipeline_counters ctr;
};

/* ---- the ownership table ---- */

static size_t own_bucket(const struct pipeline *pl, const struct conn_id *id)
{
	uint64_t x = id->origin * 0x9e3779b97f4a7c15ull ^ id->conn;
	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 29;
	return (size_t)(x & pl->mask);
}

static struct owner **own_link(struct pipeline *pl, const struct conn_id *id)
{
	struct owner **pp = &pl->b[own_bucket(pl, id)];
	while (*pp && ((*pp)->id.conn != id->conn || (*pp)->id.origin != id->origin))
		pp = &(*pp)->next;
	return pp;
}

static struct owner *own_find(struct pipeline *pl, const struct conn_id *id)
{
	return *own_link(pl, id);
}

static void own_del(struct pipeline *pl, const struct conn_id *id)
{
	struct owner **pp = own_link(pl, id), *e = *pp;
	if (!e)
		return;
	*pp = e->next;
	free(e);
	pl->ctr.owned--;
}

/* Doubles the buckets; without memory the chains just get longer. */
static void own_grow(struct pipeline *pl)
{
	size_t n = (pl->mask + 1) * 2;
	struct owner **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	struct owner **old = pl->b;
	size_t old_n = pl->mask + 1;
	pl->b = b;
	pl->mask = n - 1;
	for (size_t i = 0; i < old_n; i++) {
		for (struct owner *e = old[i], *next; e; e = next) {
			next = e->next;
			struct owner **h = &pl->b[own_bucket(pl, &e->id)];
			e->next = *h;
			*h = e;
		}
	}
	free(old);
}

_Static_assert(PIPELINE_MAX_STAGES <= 8, "owner.watch has one bit per stage");

static int own_add(struct pipeline *pl, const struct conn_open *o, unsigned stage,
		   unsigned watch, unsigned tap)
{
	struct owner *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->id = o->id;
	e->stage = (uint8_t)stage;
	e->watch = (uint8_t)watch;
	e->tap = (uint8_t)tap;
	e->family = o->family;
	e->side = o->side;
	e->client_port = o->client_port;
	e->server_port = o->server_port;
	memcpy(e->client_addr, o->client_addr, 16);
	memcpy(e->server_addr, o->server_addr, 16);
	if (pl->ctr.owned >= pl->mask + 1)
		own_grow(pl);
	struct owner **h = &pl->b[own_bucket(pl, &e->id)];
	e->next = *h;
	*h = e;
	pl->ctr.owned++;
	return 0;
}

static int same_conn(const struct owner *e, const struct conn_open *o)
{
	return e->family == o->family && e->side == o->side &&
	       e->client_port == o->client_port && e->server_port == o->server_port &&
	       !memcmp(e->client_addr, o->client_addr, 16) &&
	       !memcmp(e->server_addr, o->server_addr, 16);
}

/* The connection o ended: the stages in `watch` hear it (ended), in chain order. */
static void tell_ended(struct pipeline *pl, unsigned watch, const struct conn_open *o,
		       uint64_t ts_ns)
{
	struct conn_open g = *o;
	g.ts_ns = ts_ns;
	for (unsigned i = 0; watch && i < pl->n; i++, watch >>= 1)
		if ((watch & 1) && pl->st[i].ops->ended)
			pl->st[i].ops->ended(&pl->st[i], &g);
}

/* The same from an owner entry (the open as the source gave it). */
static void entry_ended(struct pipeline *pl, const struct owner *e, uint64_t ts_ns)
{
	unsigned watch = e->watch | 1u << e->stage;
	struct conn_open o = { .id = e->id, .family = e->family, .side = e->side,
			       .client_port = e->client_port, .server_port = e->server_port };
	memcpy(o.client_addr, e->client_addr, 16);
	memcpy(o.server_addr, e->server_addr, 16);
	tell_ended(pl, watch, &o, ts_ns);
}

/* ---- routing ---- */

/* A stage's failure: counted against it. Not failures: refusals the source
 * counts (-EEXIST, -ENFILE, -EMFILE), data behind (-ERANGE), and -ENOENT
 * for a connection the owner ended on its own (the flow engine ends the
 * old connection of a 4-tuple reused by the same end; it counts the orphan). */
static int counted(struct pipeline *pl, unsigned i, int r)
{
	if (r < 0 && r != -ERANGE && r != -EEXIST && r != -ENFILE && r != -EMFILE &&
	    r != -ENOENT)
		pl->st[i].errors++;
	return r;
}

/* Offers o to the stages from `from` on; returns the taker's index or
 * -errno. *watch gets the stages that passed it with STAGE_WATCH or
 * STAGE_TAP, *tap those with STAGE_TAP; on a refusal they are told at once
 * (given: o as it came in). */
static int offer(struct pipeline *pl, unsigned from, struct conn_open *o,
		 const struct conn_open *given, unsigned *watch, unsigned *tap)
{
	int r = -ENOENT; /* nobody takes it: the chain has no last stage */
	*watch = *tap = 0;
	for (unsigned i = from; i < pl->n; i++) {
		int v = counted(pl, i, pl->st[i].ops->open(&pl->st[i], o));
		if (v == STAGE_TAP && !pl->st[i].ops->tap_data)
			v = STAGE_WATCH; /* cannot read: watches */
		if (v == STAGE_WATCH || v == STAGE_TAP) {
			*watch |= 1u << i;
			if (v == STAGE_TAP)
				*tap |= 1u << i;
			continue;
		}
		if (v == 1)
			return (int)i;
		if (v < 0) {
			r = v;
			break;
		}
	}
	tell_ended(pl, *watch, given, given->ts_ns);
	*watch = *tap = 0;
	return r;
}

static int open_result(struct pipeline *pl, int r)
{
	if (r >= 0)
		pl->ctr.opens++;
	else if (r == -EEXIST)
		pl->ctr.reannounced++;
	else if (r == -ENFILE || r == -EMFILE)
		pl->ctr.refused++;
	else
		pl->ctr.open_errors++;
	return r < 0 ? r : 0;
}

/* Takes o from `from` on and records the owner. */
static int open_from(struct pipeline *pl, unsigned from, struct conn_open *o)
{
	struct conn_open orig = *o; /* the owner entry keeps the 4-tuple as given */
	unsigned watch, tap;
	int r = offer(pl, from, o, &orig, &watch, &tap);
	if (r >= 0 && own_add(pl, &orig, (unsigned)r, watch, tap) < 0) {
		/* the taker has it, the chain could not note it: end it there */
		pl->st[r].ops->close(&pl->st[r], &o->id, o->ts_ns, 0);
		tell_ended(pl, watch | 1u << r, &orig, o->ts_ns);
		r = -ENOMEM;
	}
	return open_result(pl, r);
}

int pipeline_open(struct pipeline *pl, struct conn_open *o)
{
	struct owner *e = own_find(pl, &o->id);
	if (e && same_conn(e, o))
		return open_result(pl, -EEXIST); /* announced again after a re-attach */
	if (e) {
		/* the id is reused: the old connection is gone (its close was missed) */
		unsigned i = e->stage;
		pl->ctr.replaced++;
		counted(pl, i, pl->st[i].ops->close(&pl->st[i], &o->id, o->ts_ns, 0));
		e = own_find(pl, &o->id);
		if (e) {
			entry_ended(pl, e, o->ts_ns);
			own_del(pl, &o->id);
		}
	}
	return open_from(pl, 0, o);
}

/* The owner of id for an event from stage index `from` (sources: 0);
 * *tap gets the stages from `from` on that read its data before it. */
static int owner_of(struct pipeline *pl, const struct conn_id *id, unsigned from, size_t n,
		    unsigned *tap)
{
	struct owner *e = own_find(pl, id);
	*tap = 0;
	if (!e) {
		pl->ctr.orphan_records++;
		pl->ctr.orphan_bytes += n;
		return -ENOENT;
	}
	if (e->stage < from) {
		pl->ctr.emit_errors++;
		return -EINVAL;
	}
	*tap = e->tap & ~((1u << from) - 1);
	return e->stage;
}

/* The taps in `tap` read the bytes (or a gap of n: p NULL), in chain order. */
static void tell_taps(struct pipeline *pl, unsigned tap, const struct conn_id *id, int dir,
		      uint64_t ts_ns, uint64_t off, const uint8_t *p, size_t n, uint64_t gap)
{
	for (unsigned i = 0; tap && i < pl->n; i++, tap >>= 1) {
		struct stage *s = &pl->st[i];
		if (!(tap & 1))
			continue;
		if (p || !gap)
			s->ops->tap_data(s, id, dir, ts_ns, off, p, n);
		else if (s->ops->tap_gap)
			s->ops->tap_gap(s, id, dir, ts_ns, gap);
	}
}

static int data_from(struct pipeline *pl, unsigned from, const struct conn_id *id, int dir,
		     uint64_t ts_ns, uint64_t off, const uint8_t *p, size_t n, uint64_t *gap)
{
	unsigned tap;
	int i = owner_of(pl, id, from, n, &tap);
	if (i < 0) {
		if (gap)
			*gap = 0;
		return i;
	}
	if (tap)
		tell_taps(pl, tap, id, dir, ts_ns, off, p, n, 0);
	return counted(pl, (unsigned)i,
		       pl->st[i].ops->data(&pl->st[i], id, dir, ts_ns, off, p, n, gap));
}

static int gap_from(struct pipeline *pl, unsigned from, const struct conn_id *id, int dir,
		    uint64_t ts_ns, uint64_t n)
{
	unsigned tap;
	int i = owner_of(pl, id, from, 0, &tap);
	if (i < 0)
		return i;
	if (tap)
		tell_taps(pl, tap, id, dir, ts_ns, 0, NULL, 0, n);
	return counted(pl, (unsigned)i, pl->st[i].ops->gap(&pl->st[i], id, dir, ts_ns, n));
}

/* The owner closes it; then the chain forgets it (unless the owner handed
 * it on meanwhile: the stage that hands on forwards the close itself). */
static int close_from(struct pipeline *pl, unsigned from, const struct conn_id *id,
		      uint64_t ts_ns, unsigned flags)
{
	unsigned tap;
	int i = owner_of(pl, id, from, 0, &tap);
	if (i < 0)
		return i;
	int r = counted(pl, (unsigned)i, pl->st[i].ops->close(&pl->st[i], id, ts_ns, flags));
	struct owner *e = own_find(pl, id);
	if (e && e->stage == (unsigned)i) {
		entry_ended(pl, e, ts_ns);
		own_del(pl, id);
	}
	return r;
}

int pipeline_data(struct pipeline *pl, const struct conn_id *id, int dir, uint64_t ts_ns,
		  uint64_t off, const uint8_t *p, size_t n, uint64_t *gap)
{
	return data_from(pl, 0, id, dir, ts_ns, off, p, n, gap);
}

int pipeline_gap(struct pipeline *pl, const struct conn_id *id, int dir, uint64_t ts_ns,
		 uint64_t n)
{
	return gap_from(pl, 0, id, dir, ts_ns, n);
}

int pipeline_close(struct pipeline *pl, const struct conn_id *id, uint64_t ts_ns,
		   unsigned flags)
{
	return close_from(pl, 0, id, ts_ns, flags);
}

/* ---- emitting from a stage ---- */

static int origin_is(const struct pipeline *pl, uint64_t origin, unsigned stage)
{
	for (size_t i = 0; i < pl->nsorig; i++)
		if (pl->sorig[i].origin == origin)
			return pl->sorig[i].stage == stage;
	return 0;
}

static int emit_open(struct stage *s, struct conn_open *o, int keep_tap)
{
	struct pipeline *pl = s->pl;
	struct owner *e = own_find(pl, &o->id);
	if (e && e->stage == s->idx) {
		/* handed on (a fallback): the taker owns it from now on */
		unsigned watch, tap;
		int r = offer(pl, s->idx + 1, o, o, &watch, &tap);
		e = own_find(pl, &o->id);
		if (r >= 0 && e) {
			e->stage = (uint8_t)r;
			e->watch |= (uint8_t)watch;
			e->tap |= (uint8_t)tap;
			if (keep_tap && s->ops->tap_data) {
				e->watch |= (uint8_t)(1u << s->idx);
				e->tap |= (uint8_t)(1u << s->idx);
			}
		} else if (e) {
			entry_ended(pl, e, o->ts_ns);
			own_del(pl, &o->id);
		}
		return open_result(pl, r);
	}
	if (e || !origin_is(pl, o->id.origin, s->idx)) {
		pl->ctr.emit_errors++;
		return -EPERM; /* not its own connection to invent */
	}
	return open_from(pl, s->idx + 1, o);
}

int stage_emit_open(struct stage *s, struct conn_open *o)
{
	return emit_open(s, o, 0);
}

int stage_hand_on_tapped(struct stage *s, struct conn_open *o)
{
	return emit_open(s, o, 1);
}

int stage_emit_data(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		    uint64_t off, const uint8_t *p, size_t n, uint64_t *gap)
{
	return data_from(s->pl, s->idx + 1, id, dir, ts_ns, off, p, n, gap);
}

int stage_emit_datav(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		     uint64_t off, const struct piece *v, size_t nv, uint64_t *gap)
{
	struct pipeline *pl = s->pl;
	size_t len = 0;
	for (size_t k = 0; k < nv; k++)
		len += v[k].n;
	unsigned tap;
	int i = owner_of(pl, id, s->idx + 1, len, &tap);
	if (i < 0) {
		if (gap)
			*gap = 0;
		return i;
	}
	for (size_t k = 0, at = 0; tap && k < nv; at += v[k++].n)
		tell_taps(pl, tap, id, dir, ts_ns, off + at, v[k].p, v[k].n, 0);
	struct stage *o = &pl->st[i];
	if (o->ops->datav)
		return counted(pl, (unsigned)i, o->ops->datav(o, id, dir, ts_ns, off, v, nv, gap));
	int err = 0;
	for (size_t k = 0; k < nv && !err; k++) {
		err = counted(pl, (unsigned)i, o->ops->data(o, id, dir, ts_ns, off, v[k].p, v[k].n,
							    k ? NULL : gap));
		off += v[k].n;
	}
	return err;
}

int stage_emit_gap(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		   uint64_t n)
{
	return gap_from(s->pl, s->idx + 1, id, dir, ts_ns, n);
}

int stage_emit_close(struct stage *s, const struct conn_id *id, uint64_t ts_ns, unsigned flags)
{
	return close_from(s->pl, s->idx + 1, id, ts_ns, flags);
}

uint64_t stage_origin(struct stage *s)
{
	struct pipeline *pl = s->pl;
	if (pl->nsorig == STAGE_ORIGINS)
		return 0;
	uint64_t o = pipeline_origin_new(pl);
	pl->sorig[pl->nsorig].origin = o;
	pl->sorig[pl->nsorig++].stage = s->idx;
	return o;
}

/* ---- origins, time, life ---- */

uint64_t pipeline_origin_new(struct pipeline *pl)
{
	return ++pl->next_origin;
}

/* Forgets the owners left for an origin's connections (its stages ended them). */
static void forget_origin(struct pipeline *pl, uint64_t origin)
{
	for (size_t i = 0; i <= pl->mask; i++) {
		for (struct owner **pp = &pl->b[i]; *pp;) {
			struct owner *e = *pp;
			if (e->id.origin == origin) {
				*pp = e->next;
				free(e);
				pl->ctr.owned--;
			} else {
				pp = &e->next;
			}
		}
	}
}

void pipeline_origin(struct pipeline *pl, uint64_t origin, int ev, uint64_t ts_ns)
{
	for (size_t i = 0; i < pl->n; i++)
		if (pl->st[i].ops->origin)
			pl->st[i].ops->origin(&pl->st[i], origin, ev, ts_ns);
	if (ev == ORIGIN_CLOSED)
		forget_origin(pl, origin);
}

void pipeline_tick(struct pipeline *pl, uint64_t now_ns)
{
	for (size_t i = 0; i < pl->n; i++)
		if (pl->st[i].ops->tick)
			pl->st[i].ops->tick(&pl->st[i], now_ns);
}

void pipeline_close_all(struct pipeline *pl, uint64_t ts_ns)
{
	for (size_t i = 0; i < pl->n; i++)
		if (pl->st[i].ops->close_all)
			pl->st[i].ops->close_all(&pl->st[i], ts_ns);
	for (size_t i = 0; i <= pl->mask; i++) {
		while (pl->b[i]) {
			struct owner *e = pl->b[i];
			pl->b[i] = e->next;
			free(e);
		}
	}
	pl->ctr.owned = 0;
}

struct pipeline *pipeline_new(const struct pipeline_opts *o, const char **why)
{
	return pipeline_new_from(stage_table, stage_table_len, o, why);
}

struct pipeline *pipeline_new_from(const struct stage_def *table, size_t n,
				   const struct pipeline_opts *o, const char **why)
{
	struct pipeline *pl = calloc(1, sizeof(*pl));
	*why = "out of memory";
	if (!pl)
		return NULL;
	pl->mask = OWN_MIN_BUCKETS - 1;
	pl->b = calloc(OWN_MIN_BUCKETS, sizeof(*pl->b));
	if (!pl->b)
		goto fail;
	for (size_t i = 0; i < n && i < PIPELINE_MAX_STAGES; i++) {
		const struct stage_def *d = &table[i];
		int wanted = d->wanted && d->wanted(o);
		if (d->option && !o->arg[i] && !wanted)
			continue;
		struct stage *s = &pl->st[pl->n];
		s->pl = pl;
		s->idx = (unsigned)pl->n;
		*why = NULL;
		const char *arg = o->arg[i] ? o->arg[i] : d->option && wanted ? NULL : "";
		if (d->init(s, arg, o, why) < 0) {
			if (!*why)
				*why = d->name;
			goto fail;
		}
		pl->n++;
	}
	return pl;
fail:
	pipeline_free(pl);
	return NULL;
}

void pipeline_free(struct pipeline *pl)
{
	if (!pl)
		return;
	for (size_t i = 0; pl->b && i <= pl->mask; i++) {
		while (pl->b[i]) {
			struct owner *e = pl->b[i];
			pl->b[i] = e->next;
			free(e);
		}
	}
	for (size_t i = pl->n; i-- > 0;)
		pl->st[i].ops->free(&pl->st[i]);
	free(pl->b);
	free(pl);
}

const struct pipeline_counters *pipeline_counters(const struct pipeline *pl)
{
	return &pl->ctr;
}

const char *pipeline_owner(struct pipeline *pl, const struct conn_id *id)
{
	struct owner *e = own_find(pl, id);
	return e ? pl->st[e->stage].ops->name : NULL;
}

void *pipeline_stage_priv(const struct pipeline *pl, const char *name)
{
	for (size_t i = 0; pl && i < pl->n; i++)
		if (!strcmp(pl->st[i].ops->name, name))
			return pl->st[i].priv;
	return NULL;
}

size_t pipeline_format_summary(const struct pipeline *pl, char *buf, size_t len, size_t at)
{
	const struct pipeline_counters *c = &pl->ctr;
	at = text_add(buf, len, at, "pipeline stages=");
	for (size_t i = 0; i < pl->n; i++)
		at = text_add(buf, len, at, "%s%s", i ? "," : "", pl->st[i].ops->name);
	return text_add(buf, len, at,
			" opens=%llu reannounced=%llu replaced=%llu refused=%llu open_errors=%llu "
			"orphan_records=%llu orphan_bytes=%llu emit_errors=%llu owned=%llu\n",
			(unsigned long long)c->opens, (unsigned long long)c->reannounced,
			(unsigned long long)c->replaced, (unsigned long long)c->refused,
			(unsigned long long)c->open_errors, (unsigned long long)c->orphan_records,
			(unsigned long long)c->orphan_bytes, (unsigned long long)c->emit_errors,
			(unsigned long long)c->owned);
}

size_t pipeline_n_stages(const struct pipeline *pl)
{
	return pl ? pl->n : 0;
}

const char *pipeline_stage_name(const struct pipeline *pl, size_t i)
{
	return pl->st[i].ops->name;
}

size_t pipeline_stage_counters(const struct pipeline *pl, size_t i, struct kv *out, size_t max)
{
	const struct stage *s = &pl->st[i];
	size_t n = kv_put(out, max, 0, "errors", s->errors, 0);
	if (s->ops->counters && n < max)
		n += s->ops->counters(s, out + n, max - n);
	return n;
}

size_t pipeline_format_stats(const struct pipeline *pl, char *buf, size_t len, size_t at)
{
	at = pipeline_format_summary(pl, buf, len, at);
	for (size_t i = 0; i < pl->n; i++) {
		struct kv kv[STAGE_MAX_COUNTERS];
		at = text_add(buf, len, at, "stage name=%s", pl->st[i].ops->name);
		at = text_kv(buf, len, at, kv, pipeline_stage_counters(pl, i, kv, STAGE_MAX_COUNTERS));
		at = text_add(buf, len, at, "\n");
	}
	return at;
}
