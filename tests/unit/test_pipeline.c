/* Unit tests for pipeline/pipeline.c: who owns a connection, where its events go, origins, and the port map. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "pipeline/pipeline.h"
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
	{ "a", NULL, NULL, NULL, NULL, rec_init },
	{ "b", NULL, NULL, NULL, NULL, rec_init },
	{ "c", NULL, NULL, NULL, NULL, rec_init },
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
