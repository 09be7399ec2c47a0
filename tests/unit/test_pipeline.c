/* Unit tests for pipeline/pipeline.c: who owns a connection, where its events go, origins, and the port map. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "pipeline/pipeline.h"
#include "transforms/dedup.h"
#include "unit.h"

/*
 * Two recording stages: "pass" passes every open (and counts what it
 * sees), "take" takes every open over. A stage that takes and later hands
 * the connection on (a fallback) or invents one is driven by the tests
 * through stage_emit_* on the stage the chain gave it.
 */
struct rec {
	unsigned opens, datas, gaps, closes, origins;
	int take;                /* open returns this */
	struct stage *self;
	uint64_t last_origin_ev;
};

static struct rec recs[3];

static int r_open(struct stage *s, struct conn_open *o)
{
	struct rec *r = s->priv;
	r->opens++;
	return r->take;
}

static int r_data(struct stage *s, const struct conn_id *id, int dir, uint64_t ts,
		  uint64_t off, const uint8_t *p, size_t n, uint64_t *gap)
{
	((struct rec *)s->priv)->datas++;
	return 0;
}

static int r_gap(struct stage *s, const struct conn_id *id, int dir, uint64_t ts, uint64_t n)
{
	((struct rec *)s->priv)->gaps++;
	return 0;
}

static int r_close(struct stage *s, const struct conn_id *id, uint64_t ts, unsigned flags)
{
	((struct rec *)s->priv)->closes++;
	return 0;
}

static void r_origin(struct stage *s, uint64_t origin, int ev, uint64_t ts)
{
	struct rec *r = s->priv;
	r->origins++;
	r->last_origin_ev = (uint64_t)ev;
}

static void r_free(struct stage *s)
{
}

static const struct stage_ops rec_ops = {
	.name = "rec", .open = r_open, .data = r_data, .gap = r_gap, .close = r_close,
	.origin = r_origin, .free = r_free,
};

static int rec_init(struct stage *s, const char *arg, const struct pipeline_opts *o,
		    const char **why)
{
	struct rec *r = &recs[s->idx];
	memset(r, 0, sizeof(*r));
	r->take = s->idx == 0 ? 0 : 1; /* stage 0 passes, stages 1 and 2 take */
	r->self = s;
	s->priv = r;
	s->ops = &rec_ops;
	return 0;
}

static const struct stage_def three[] = {
	{ "a", NULL, NULL, NULL, NULL, rec_init, NULL },
	{ "b", NULL, NULL, NULL, NULL, rec_init, NULL },
	{ "c", NULL, NULL, NULL, NULL, rec_init, NULL },
};

static struct pipeline *chain3(void)
{
	struct pipeline_opts po = { 0 };
	const char *why;
	return pipeline_new_from(three, 3, &po, &why);
}

static struct conn_open mkopen(uint64_t origin, uint64_t conn, uint16_t cport)
{
	struct conn_open o = { .id = { origin, conn }, .family = 4, .side = 1,
			       .client_port = cport, .server_port = 443 };
	memcpy(o.client_addr, "\x0a\x00\x00\x01", 4);
	memcpy(o.server_addr, "\x0a\x00\x00\x02", 4);
	return o;
}

TEST(pipeline_events_go_to_the_owner_only)
{
	struct pipeline *pl = chain3();
	if (!CHECK(pl))
		return;
	uint64_t org = pipeline_origin_new(pl);
	struct conn_open o = mkopen(org, 7, 40000);
	CHECK_EQ(pipeline_open(pl, &o), 0);
	CHECK_EQ(recs[0].opens, 1);      /* passed by a */
	CHECK_EQ(recs[1].opens, 1);      /* taken by b */
	CHECK_EQ(recs[2].opens, 0);      /* c never asked */
	CHECK(!strcmp(pipeline_owner(pl, &o.id), "rec"));
	CHECK_EQ(pipeline_data(pl, &o.id, 0, 1, 0, (const uint8_t *)"x", 1, NULL), 0);
	CHECK_EQ(pipeline_gap(pl, &o.id, 1, 1, 5), 0);
	CHECK_EQ(recs[1].datas, 1);
	CHECK_EQ(recs[1].gaps, 1);
	CHECK_EQ(recs[0].datas + recs[2].datas + recs[0].gaps + recs[2].gaps, 0);
	CHECK_EQ(pipeline_close(pl, &o.id, 2, 0), 0);
	CHECK_EQ(recs[1].closes, 1);
	/* closed: forgotten, later events are orphans */
	CHECK(pipeline_owner(pl, &o.id) == NULL);
	CHECK_EQ(pipeline_data(pl, &o.id, 0, 3, 1, (const uint8_t *)"y", 1, NULL), -ENOENT);
	CHECK_EQ(pipeline_close(pl, &o.id, 3, 0), -ENOENT);
	CHECK_EQ(pipeline_counters(pl)->orphan_records, 2);
	CHECK_EQ(pipeline_counters(pl)->orphan_bytes, 1);
	CHECK_EQ(recs[1].datas, 1);
	CHECK_EQ(pipeline_counters(pl)->owned, 0);
	pipeline_free(pl);
}

TEST(pipeline_reannounce_and_reused_id)
{
	struct pipeline *pl = chain3();
	if (!CHECK(pl))
		return;
	uint64_t org = pipeline_origin_new(pl);
	struct conn_open o = mkopen(org, 1, 40000);
	CHECK_EQ(pipeline_open(pl, &o), 0);
	/* the same connection announced again: recognised once, by the chain */
	CHECK_EQ(pipeline_open(pl, &o), -EEXIST);
	CHECK_EQ(recs[0].opens + recs[1].opens, 2);
	CHECK_EQ(pipeline_counters(pl)->reannounced, 1);
	/* the same id, another 4-tuple: the old one is closed at its owner first */
	struct conn_open n = mkopen(org, 1, 40001);
	CHECK_EQ(pipeline_open(pl, &n), 0);
	CHECK_EQ(recs[1].closes, 1);
	CHECK_EQ(recs[1].opens, 2);
	CHECK_EQ(pipeline_counters(pl)->replaced, 1);
	CHECK_EQ(pipeline_counters(pl)->owned, 1);
	/* the other side of the same 4-tuple is another connection's end */
	struct conn_open other = mkopen(org, 1, 40001);
	other.side = 0;
	CHECK_EQ(pipeline_open(pl, &other), 0);
	CHECK_EQ(recs[1].closes, 2);
	pipeline_free(pl);
}

TEST(pipeline_handoff_moves_ownership)
{
	struct pipeline *pl = chain3();
	if (!CHECK(pl))
		return;
	uint64_t org = pipeline_origin_new(pl);
	struct conn_open o = mkopen(org, 3, 40000);
	CHECK_EQ(pipeline_open(pl, &o), 0);
	struct stage *b = recs[1].self;
	/* b falls back: it hands its own connection on, c takes it */
	CHECK_EQ(stage_emit_open(b, &o), 0);
	CHECK_EQ(recs[2].opens, 1);
	CHECK_EQ(pipeline_data(pl, &o.id, 0, 1, 0, (const uint8_t *)"x", 1, NULL), 0);
	CHECK_EQ(recs[2].datas, 1);     /* straight to the new owner */
	CHECK_EQ(recs[1].datas, 0);
	/* an event emitted by the stage after the owner never goes back up */
	struct stage *c = recs[2].self;
	CHECK_EQ(stage_emit_data(c, &o.id, 0, 1, 1, (const uint8_t *)"y", 1, NULL), -EINVAL);
	CHECK_EQ(pipeline_counters(pl)->emit_errors, 1);
	CHECK_EQ(pipeline_close(pl, &o.id, 2, 0), 0);
	CHECK_EQ(recs[2].closes, 1);
	CHECK_EQ(recs[1].closes, 0);
	pipeline_free(pl);
}

TEST(pipeline_invented_connections_have_their_own_origin)
{
	struct pipeline *pl = chain3();
	if (!CHECK(pl))
		return;
	uint64_t org = pipeline_origin_new(pl);
	struct conn_open real = mkopen(org, 1, 40000);
	CHECK_EQ(pipeline_open(pl, &real), 0);
	struct stage *b = recs[1].self;
	/* b may not invent a connection under a producer's origin (a free id
	 * of it), and a stage that does not own the real one cannot take its id */
	struct conn_open fake = mkopen(org, 2, 10000);
	CHECK_EQ(stage_emit_open(b, &fake), -EPERM);
	fake.id.conn = 1;
	struct stage *a = recs[0].self;
	CHECK_EQ(stage_emit_open(a, &fake), -EPERM);
	CHECK(!strcmp(pipeline_owner(pl, &real.id), "rec"));
	/* under an origin of its own it may, taken by the stage after it */
	uint64_t mine = stage_origin(b);
	CHECK(mine != 0 && mine != org);
	struct conn_open inv = mkopen(mine, 1, 10000);
	CHECK_EQ(stage_emit_open(b, &inv), 0);
	CHECK_EQ(recs[2].opens, 1);
	CHECK_EQ(stage_emit_data(b, &inv.id, 0, 1, 0, (const uint8_t *)"s", 1, NULL), 0);
	CHECK_EQ(recs[2].datas, 1);
	/* another stage cannot use b's origin either */
	struct conn_open steal = mkopen(mine, 2, 10001);
	CHECK_EQ(stage_emit_open(a, &steal), -EPERM);
	CHECK_EQ(pipeline_counters(pl)->emit_errors, 3);
	pipeline_free(pl);
}

TEST(pipeline_origin_closed_forgets_its_connections)
{
	struct pipeline *pl = chain3();
	if (!CHECK(pl))
		return;
	uint64_t p1 = pipeline_origin_new(pl), p2 = pipeline_origin_new(pl);
	struct conn_open a = mkopen(p1, 1, 40000), b = mkopen(p2, 1, 40001);
	CHECK_EQ(pipeline_open(pl, &a), 0);
	CHECK_EQ(pipeline_open(pl, &b), 0);
	pipeline_origin(pl, p1, ORIGIN_CLOSED, 5);
	CHECK_EQ(recs[0].origins, 1); /* every stage hears it */
	CHECK_EQ(recs[1].origins, 1);
	CHECK_EQ(recs[2].origins, 1);
	CHECK_EQ(recs[2].last_origin_ev, ORIGIN_CLOSED);
	CHECK(pipeline_owner(pl, &a.id) == NULL);
	CHECK(pipeline_owner(pl, &b.id) != NULL);
	CHECK_EQ(pipeline_counters(pl)->owned, 1);
	pipeline_free(pl);
}

/* ---- the real stages: port map, flows ---- */

struct tagcap {
	unsigned begins, ends, pkts, tagged;
	uint16_t sport_seen, tag_sport, real_port;
};

static int tc_write(struct sink *s, const struct pkt *p, size_t n)
{
	struct tagcap *c = s->priv;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *tcp = p[i].hdr + 14 + (p[i].hdr[14] & 0x0f) * 4;
		uint16_t sp = get_be16(tcp), dp = get_be16(tcp + 2);
		c->pkts++;
		c->tagged += p[i].conn != NULL;
		c->sport_seen = sp < dp ? sp : dp; /* the server's (lower) port */
	}
	return 0;
}

static void tc_begin(struct sink *s, const struct conn_tag *t, uint64_t ts)
{
	struct tagcap *c = s->priv;
	c->begins++;
	c->tag_sport = t->server_port;
	c->real_port = t->meta->real_server_port;
}

static void tc_end(struct sink *s, const struct conn_tag *t, uint64_t ts)
{
	((struct tagcap *)s->priv)->ends++;
}

static const struct sink_ops tagcap_ops = {
	.name = "tagcap", .write = tc_write, .conn_begin = tc_begin, .conn_end = tc_end,
};

TEST(portmap_shows_the_mapped_port_keeps_the_real_one)
{
	const char *why = NULL;
	CHECK_EQ(portmap_check("443:80,8443:8080", &why), 0);
	CHECK_EQ(portmap_check("443:80,443:81", &why), -EINVAL); /* 443 twice */
	CHECK_EQ(portmap_check("443:", &why), -EINVAL);
	CHECK_EQ(portmap_check("0:80", &why), -EINVAL);
	CHECK_EQ(portmap_check("443:70000", &why), -EINVAL);
	CHECK_EQ(portmap_check("443:80,", &why), -EINVAL);
	struct tagcap cap = { 0 };
	struct sink sk = { .ops = &tagcap_ops, .priv = &cap };
	struct sink *v[1] = { &sk };
	struct sink_set set = { .v = v, .n = 1 };
	struct pipeline_opts po = { .flow = { .mss = 1460, .sinks = &set } };
	for (size_t i = 0; i < stage_table_len; i++)
		if (!strcmp(stage_table[i].name, "portmap"))
			po.arg[i] = "443:80,8443:8080";
	struct pipeline *pl = pipeline_new(&po, &why);
	if (!CHECK(pl))
		return;
	uint64_t org = pipeline_origin_new(pl);
	struct conn_meta *m = conn_meta_new();
	m->real_server_port = 443;
	struct conn_open o = mkopen(org, 1, 40000);
	o.meta = m;
	CHECK_EQ(pipeline_open(pl, &o), 0);
	conn_meta_unref(m);
	CHECK_EQ(pipeline_data(pl, &o.id, 0, 1, 0, (const uint8_t *)"GET /", 5, NULL), 0);
	CHECK_EQ(pipeline_close(pl, &o.id, 2, 0), 0);
	CHECK_EQ(cap.begins, 1);
	CHECK_EQ(cap.ends, 1);
	CHECK_EQ(cap.sport_seen, 80);   /* the packets show port 80 */
	CHECK_EQ(cap.tag_sport, 80);
	CHECK_EQ(cap.real_port, 443);   /* the metadata keeps the real port */
	CHECK_EQ(cap.tagged, cap.pkts); /* every packet names its connection */
	CHECK(cap.pkts >= 8);
	/* an unmapped port goes through as it is */
	struct conn_open u = mkopen(org, 2, 40001);
	u.server_port = 993;
	CHECK_EQ(pipeline_open(pl, &u), 0);
	CHECK_EQ(cap.tag_sport, 993);
	pipeline_close_all(pl, 3);
	CHECK_EQ(cap.ends, 2);
	pipeline_free(pl);
}

TEST(pipeline_flow_stage_real_wins_over_invented)
{
	/* a connection a stage invents (synthetic, its own origin) and a real
	 * one on the same 4-tuple: the real one gets it, the invented one moves */
	struct tagcap cap = { 0 };
	struct sink sk = { .ops = &tagcap_ops, .priv = &cap };
	struct sink *v[1] = { &sk };
	struct sink_set set = { .v = v, .n = 1 };
	struct pipeline_opts po = { .flow = { .mss = 1460, .sinks = &set } };
	const char *why;
	struct pipeline *pl = pipeline_new(&po, &why);
	if (!CHECK(pl))
		return;
	uint64_t org = pipeline_origin_new(pl);
	struct conn_open real = mkopen(org, 1, 10000);
	struct conn_open syn = mkopen(org + 1000, 1, 10000);
	syn.synthetic = 1;
	/* the synthetic first, straight at the flow engine's stage as an invented one would */
	struct flow_table *ft = pipeline_stage_priv(pl, "flows");
	CHECK_EQ(flow_open(ft, &syn), 0);
	CHECK_EQ(pipeline_open(pl, &real), 0);
	CHECK_EQ(flow_counters(ft)->synthetic_moved, 1);
	CHECK_EQ(flow_counters(ft)->flows_duplicate, 0);
	CHECK_EQ(cap.begins, 3);        /* synthetic, real, synthetic on its new port */
	CHECK_EQ(cap.ends, 1);          /* the synthetic's old 4-tuple ended */
	pipeline_close_all(pl, 3);
	CHECK_EQ(cap.ends, 3);
	pipeline_free(pl);
}

/* ---- the dedup stage: both ends of one connection shown once ---- */

struct dx {
	struct tagcap cap;
	struct sink sk;
	struct sink *v[1];
	struct sink_set set;
	struct pipeline *pl;
	const struct dedup_counters *dc;
	struct flow_table *ft;
};

static int dx_init(struct dx *x, const char *h2, size_t max_conns)
{
	memset(x, 0, sizeof(*x));
	x->sk.ops = &tagcap_ops;
	x->sk.priv = &x->cap;
	x->v[0] = &x->sk;
	x->set.v = x->v;
	x->set.n = 1;
	struct pipeline_opts po = { .flow = { .mss = 1460, .sinks = &x->set,
					      .max_flows = max_conns } };
	for (size_t i = 0; i < stage_table_len; i++)
		if (h2 && !strcmp(stage_table[i].name, "http"))
			po.arg[i] = h2;
	const char *why;
	x->pl = pipeline_new(&po, &why);
	if (!x->pl)
		return 0;
	x->dc = dedup_counters(pipeline_stage_priv(x->pl, "dedup"));
	x->ft = pipeline_stage_priv(x->pl, "flows");
	return 1;
}

static void dx_free(struct dx *x)
{
	pipeline_close_all(x->pl, 99);
	pipeline_free(x->pl);
}

/* The client end of mkopen's connection, seen from another producer. */
static struct conn_open other_end(uint64_t origin, uint64_t conn, uint16_t cport)
{
	struct conn_open o = mkopen(origin, conn, cport);
	o.side = 0;
	return o;
}

static int owned_by(struct pipeline *pl, const struct conn_open *o, const char *name)
{
	const char *s = pipeline_owner(pl, &o->id);
	return s && !strcmp(s, name);
}

TEST(dedup_other_end_is_shown_once)
{
	struct dx x;
	if (!CHECK(dx_init(&x, NULL, 0)))
		return;
	uint64_t p1 = pipeline_origin_new(x.pl), p2 = pipeline_origin_new(x.pl);
	struct conn_open srv = mkopen(p1, 1, 40000), cli = other_end(p2, 9, 40000);
	CHECK_EQ(pipeline_open(x.pl, &srv), 0);
	CHECK_EQ(pipeline_open(x.pl, &cli), 0);
	CHECK(owned_by(x.pl, &srv, "flows"));
	CHECK(owned_by(x.pl, &cli, "dedup"));  /* the flow engine never sees it */
	CHECK_EQ(x.dc->duplicates, 1);
	CHECK_EQ(flow_counters(x.ft)->flows_duplicate, 0);
	CHECK_EQ(x.cap.pkts, 3);
	CHECK_EQ(pipeline_data(x.pl, &cli.id, 0, 1, 0, (const uint8_t *)"GET", 3, NULL), 0);
	CHECK_EQ(x.cap.pkts, 3);               /* the duplicate's bytes: nothing */
	CHECK_EQ(x.dc->dup_bytes, 3);
	CHECK_EQ(pipeline_data(x.pl, &srv.id, 0, 1, 0, (const uint8_t *)"GET", 3, NULL), 0);
	CHECK_EQ(x.cap.pkts, 5);
	CHECK_EQ(pipeline_close(x.pl, &cli.id, 2, 0), 0);
	CHECK_EQ(x.dc->dup_open, 0);
	CHECK_EQ(x.cap.ends, 0);               /* the shown end goes on */
	CHECK_EQ(pipeline_close(x.pl, &srv.id, 2, 0), 0);
	CHECK_EQ(x.cap.ends, 1);
	CHECK_EQ(x.dc->tracked, 0);
	/* swapped tuple (the producer names its own end first): still the other end */
	struct conn_open a = mkopen(p1, 2, 40001), b = mkopen(p2, 3, 443);
	memcpy(b.client_addr, a.server_addr, 16);
	memcpy(b.server_addr, a.client_addr, 16);
	b.server_port = 40001;
	CHECK_EQ(pipeline_open(x.pl, &a), 0);
	CHECK_EQ(pipeline_open(x.pl, &b), 0);
	CHECK(owned_by(x.pl, &b, "dedup"));
	/* both ends in one process (client and server of a loopback connection) */
	struct conn_open s1 = mkopen(p1, 4, 40002), c1 = other_end(p1, 5, 40002);
	CHECK_EQ(pipeline_open(x.pl, &s1), 0);
	CHECK_EQ(pipeline_open(x.pl, &c1), 0);
	CHECK(owned_by(x.pl, &c1, "dedup"));
	CHECK_EQ(x.dc->duplicates, 3);
	dx_free(&x);
}

TEST(dedup_after_the_first_end_closed)
{
	/* the server's whole connection is drained before the client's OPEN */
	struct dx x;
	if (!CHECK(dx_init(&x, NULL, 0)))
		return;
	uint64_t p1 = pipeline_origin_new(x.pl), p2 = pipeline_origin_new(x.pl);
	uint64_t p3 = pipeline_origin_new(x.pl);
	struct conn_open srv = mkopen(p1, 1, 40000), cli = other_end(p2, 9, 40000);
	CHECK_EQ(pipeline_open(x.pl, &srv), 0);
	CHECK_EQ(pipeline_data(x.pl, &srv.id, 0, 1, 0, (const uint8_t *)"GET", 3, NULL), 0);
	CHECK_EQ(pipeline_close(x.pl, &srv.id, 1, 0), 0);
	unsigned n = x.cap.pkts;
	cli.ts_ns = 2;
	CHECK_EQ(pipeline_open(x.pl, &cli), 0);
	CHECK(owned_by(x.pl, &cli, "dedup"));
	CHECK_EQ(pipeline_data(x.pl, &cli.id, 0, 3, 0, (const uint8_t *)"GET", 3, NULL), 0);
	CHECK_EQ(pipeline_close(x.pl, &cli.id, 4, 0), 0);
	CHECK_EQ(x.cap.pkts, n);               /* nothing more emitted */
	/* the same end again a moment later is a new connection, not a duplicate */
	struct conn_open again_srv = mkopen(p3, 7, 40000);
	again_srv.ts_ns = 5;
	CHECK_EQ(pipeline_open(x.pl, &again_srv), 0);
	CHECK(owned_by(x.pl, &again_srv, "flows"));
	CHECK_EQ(pipeline_close(x.pl, &again_srv.id, 6, 0), 0);
	/* the other end a minute later is a new connection */
	struct conn_open again = other_end(p3, 5, 40000);
	again.ts_ns = 60ull * 1000000000ull;
	CHECK_EQ(pipeline_open(x.pl, &again), 0);
	CHECK(owned_by(x.pl, &again, "flows"));
	CHECK_EQ(x.dc->duplicates, 1);
	dx_free(&x);
}

static int yes(const struct conn_open *o, void *arg)
{
	return 1;
}

TEST(dedup_rules_reuse_fork_refusal_origin_end)
{
	struct dx x;
	if (!CHECK(dx_init(&x, NULL, 3)))
		return;
	uint64_t p1 = pipeline_origin_new(x.pl), p2 = pipeline_origin_new(x.pl);
	uint64_t kid = pipeline_origin_new(x.pl);
	/* the same end of one 4-tuple again in one producer: the old one is gone */
	struct conn_open a = mkopen(p1, 1, 40000), a2 = mkopen(p1, 2, 40000);
	CHECK_EQ(pipeline_open(x.pl, &a), 0);
	CHECK_EQ(pipeline_open(x.pl, &a2), 0);
	CHECK(owned_by(x.pl, &a2, "flows"));
	CHECK_EQ(x.dc->stale, 1);
	CHECK_EQ(x.dc->duplicates, 0);
	/* a child continuing it (fork inheritance claim) passes: the engine adopts */
	struct conn_open k = mkopen(kid, 2, 40000);
	k.parent_origin = p1;
	k.parent_ok = yes;
	CHECK_EQ(pipeline_open(x.pl, &k), 0);
	CHECK(owned_by(x.pl, &k, "flows"));
	CHECK_EQ(flow_counters(x.ft)->flows_handed_over, 1);
	/* a claim naming another conn id is the other process's copy: a duplicate */
	struct conn_open liar = mkopen(p2, 3, 40000);
	liar.parent_origin = p1;
	CHECK_EQ(pipeline_open(x.pl, &liar), 0);
	CHECK(owned_by(x.pl, &liar, "dedup"));
	/* refused after the stage let it through (--max-conns 3, the engine's cap):
	 * the stage forgets it, so its other end is not a duplicate of nothing */
	struct conn_open b = mkopen(p2, 4, 40001), c = mkopen(p2, 5, 40002);
	CHECK_EQ(pipeline_open(x.pl, &b), 0);
	size_t tracked = x.dc->tracked;
	CHECK_EQ(pipeline_open(x.pl, &c), -ENFILE);
	CHECK_EQ(x.dc->tracked, tracked);
	/* the duplicates count against the cap too */
	struct conn_open bo = other_end(p1, 6, 40001);
	CHECK_EQ(pipeline_open(x.pl, &bo), 0);
	CHECK(owned_by(x.pl, &bo, "dedup"));
	/* a producer's end: its connections are gone, recent for their other end */
	pipeline_origin(x.pl, p2, ORIGIN_CLOSED, 10);
	CHECK_EQ(x.dc->dup_open, 1); /* bo is p1's */
	pipeline_origin(x.pl, p1, ORIGIN_CLOSED, 11);
	CHECK_EQ(x.dc->dup_open, 0);
	CHECK(pipeline_owner(x.pl, &bo.id) == NULL);
	struct conn_open late = other_end(p2 + 10, 1, 40001);
	late.ts_ns = 12;
	CHECK_EQ(pipeline_open(x.pl, &late), 0);
	CHECK(owned_by(x.pl, &late, "dedup"));
	dx_free(&x);
}

TEST(dedup_before_h2_converts_one_end)
{
	/* both ends of an HTTP/2 connection: the converter sees one */
	struct dx x;
	if (!CHECK(dx_init(&x, "", 0)))
		return;
	uint64_t p1 = pipeline_origin_new(x.pl), p2 = pipeline_origin_new(x.pl);
	struct conn_meta *m = conn_meta_new();
	if (!CHECK(m))
		goto out;
	snprintf(m->alpn, sizeof(m->alpn), "h2");
	struct conn_open srv = mkopen(p1, 1, 40000), cli = other_end(p2, 1, 40000);
	srv.meta = cli.meta = m;
	CHECK_EQ(pipeline_open(x.pl, &srv), 0);
	CHECK_EQ(pipeline_open(x.pl, &cli), 0);
	conn_meta_unref(m);
	CHECK(owned_by(x.pl, &srv, "http"));
	CHECK(owned_by(x.pl, &cli, "dedup"));
out:
	dx_free(&x);
}
