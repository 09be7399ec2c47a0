/* Unit tests for transforms/h2*.c: hand-built HTTP/2 frames in, HTTP/1.1 exchanges on synthetic connections out. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "flows/flow.h"
#include "pipeline/pipeline.h"
#include "transforms/h2.h"
#include "unit.h"

#define SRV_PORT 443
#define CLI_PORT 40000
#define MAX_CONNS 8
#define DIR_MAX (64 * 1024)

/* A sink that reassembles each TCP connection's two directions (IPv4). */
#define SEGS_MAX 128
struct hconn {
	uint16_t cport;
	int syn, fin;
	size_t len[2];
	uint8_t data[2][DIR_MAX];
	size_t nseg[2];            /* data segments per direction, and their lengths */
	uint16_t seg[2][SEGS_MAX];
};

struct hcap {
	size_t n;
	struct hconn c[MAX_CONNS];
};

static struct hconn *hconn_of(struct hcap *h, uint16_t cport)
{
	for (size_t i = 0; i < h->n; i++)
		if (h->c[i].cport == cport)
			return &h->c[i];
	if (h->n == MAX_CONNS)
		return NULL;
	h->c[h->n].cport = cport;
	return &h->c[h->n++];
}

static int hcap_write(struct sink *s, const struct pkt *pkts, size_t n)
{
	struct hcap *h = s->priv;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *tcp = pkts[i].hdr + 14 + (pkts[i].hdr[14] & 0x0f) * 4;
		uint16_t sport = get_be16(tcp), dport = get_be16(tcp + 2);
		int dir = sport == SRV_PORT;
		struct hconn *c = hconn_of(h, dir ? dport : sport);
		if (!c)
			continue;
		c->syn += !!(tcp[13] & 0x02) && !dir;
		c->fin += !!(tcp[13] & 0x01);
		size_t k = pkt_frame_len(&pkts[i]) - (size_t)(tcp - pkts[i].hdr) -
			   (size_t)(tcp[12] >> 4) * 4;
		if (k && c->nseg[dir] < SEGS_MAX)
			c->seg[dir][c->nseg[dir]++] = (uint16_t)k;
		k = pkts[i].payload_len + pkts[i].more_len;
		if (k && c->len[dir] + k <= DIR_MAX) {
			pkt_copy_payload(c->data[dir] + c->len[dir], &pkts[i], k);
			c->len[dir] += k;
		}
	}
	return 0;
}

static const struct sink_ops hcap_ops = { .name = "hcap", .write = hcap_write };

struct hx {
	struct hcap *cap;
	struct sink sink;
	struct sink *sinks[1];
	struct sink_set set;
	struct pipeline *pl;     /* h2, flows */
	struct flow_table *flows;
	struct h2_table *h2;
	uint64_t off[2];
};

/* An open through the chain with ALPN alpn: 1 if the converter took it, 0
 * if the flow engine did, else the chain's error. */
static int t_open(struct hx *x, struct conn_open *fi, const char *alpn)
{
	struct conn_meta *m = conn_meta_new();
	if (!m)
		return -ENOMEM;
	snprintf(m->alpn, sizeof(m->alpn), "%s", alpn);
	fi->meta = m;
	int err = pipeline_open(x->pl, fi);
	conn_meta_unref(m);
	fi->meta = NULL;
	if (err)
		return err;
	const char *o = pipeline_owner(x->pl, &fi->id);
	return o && !strcmp(o, "http") ? 1 : 0;
}

static int owned_by_h2(struct hx *x, uint64_t origin, uint64_t conn)
{
	const char *o = pipeline_owner(x->pl, &(struct conn_id){ origin, conn });
	return o && !strcmp(o, "http");
}

/* Events through the chain; -ENOENT (as the converter said before the
 * chain) when the connection is not the converter's. */
static int t_data(struct hx *x, uint64_t origin, uint64_t conn, int dir, uint64_t ts,
		  uint64_t off, const uint8_t *p, size_t n, uint64_t *gap)
{
	if (!owned_by_h2(x, origin, conn))
		return -ENOENT;
	return pipeline_data(x->pl, &(struct conn_id){ origin, conn }, dir, ts, off, p, n, gap);
}

static int t_gap(struct hx *x, uint64_t origin, uint64_t conn, int dir, uint64_t ts, uint64_t n)
{
	if (!owned_by_h2(x, origin, conn))
		return -ENOENT;
	return pipeline_gap(x->pl, &(struct conn_id){ origin, conn }, dir, ts, n);
}

static int t_close(struct hx *x, uint64_t origin, uint64_t conn, uint64_t ts)
{
	if (!owned_by_h2(x, origin, conn))
		return -ENOENT;
	return pipeline_close(x->pl, &(struct conn_id){ origin, conn }, ts, 0);
}

/* Any event through the chain, to whichever stage owns it. */
static int p_data(struct hx *x, uint64_t origin, uint64_t conn, int dir, uint64_t ts,
		  uint64_t off, const uint8_t *p, size_t n)
{
	return pipeline_data(x->pl, &(struct conn_id){ origin, conn }, dir, ts, off, p, n, NULL);
}

static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* A chain (h2, flows) over a capturing sink, caps max_conns and
 * max_streams (0: defaults); conn 1 of origin 1 (origin 2 is another
 * process), ALPN alpn. */
static int hx_init_caps(struct hx *x, const char *alpn, size_t max_conns, size_t max_streams)
{
	memset(x, 0, sizeof(*x));
	x->cap = calloc(1, sizeof(*x->cap));
	x->sink.ops = &hcap_ops;
	x->sink.priv = x->cap;
	x->sinks[0] = &x->sink;
	x->set.v = x->sinks;
	x->set.n = 1;
	struct pipeline_opts po = { .flow = { .mss = 1460, .sinks = &x->set },
				    .max_h2_conns = max_conns, .max_h2_streams = max_streams };
	for (size_t i = 0; i < stage_table_len; i++)
		if (!strcmp(stage_table[i].name, "http"))
			po.arg[i] = "";
	const char *why;
	x->pl = pipeline_new(&po, &why);
	if (!x->cap || !x->pl)
		return 0;
	x->flows = pipeline_stage_priv(x->pl, "flows");
	x->h2 = pipeline_stage_priv(x->pl, "http");
	if (pipeline_origin_new(x->pl) != 1 || pipeline_origin_new(x->pl) != 2)
		return 0;
	struct conn_open fi = { .id = { 1, 1 }, .ts_ns = 1, .family = 4,
				.side = 1, .client_port = CLI_PORT, .server_port = SRV_PORT };
	memcpy(fi.client_addr, "\x0a\x00\x00\x01", 4);
	memcpy(fi.server_addr, "\x0a\x00\x00\x02", 4);
	return t_open(x, &fi, alpn) == 1;
}

static int hx_init(struct hx *x, const char *alpn)
{
	return hx_init_caps(x, alpn, 0, 0);
}

static void hx_free(struct hx *x)
{
	if (x->pl)
		pipeline_close_all(x->pl, 9);
	pipeline_free(x->pl);
	free(x->cap);
}

/* Feeds bytes of one direction at the next offset; returns the converter's result. */
static int feed(struct hx *x, int dir, const void *p, size_t n)
{
	int err = t_data(x, 1, 1, dir, 2, x->off[dir], p, n, NULL);
	x->off[dir] += n;
	return err;
}

/* The i-th synthetic connection (client port 10000 + i). */
static struct hconn *syn_conn(struct hx *x, int i)
{
	for (size_t k = 0; k < x->cap->n; k++)
		if (x->cap->c[k].cport == 10000 + i)
			return &x->cap->c[k];
	return NULL;
}

static int has(const struct hconn *c, int dir, const char *s)
{
	size_t n = strlen(s);
	return c && c->len[dir] == n && !memcmp(c->data[dir], s, n);
}

/* A settings frame both ways, as every connection starts. */
static const uint8_t settings[] = {
	0x00, 0x00, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, /* SETTINGS len 6, stream 0 */
	0x00, 0x03, 0x00, 0x00, 0x00, 0x64,                   /* MAX_CONCURRENT_STREAMS 100 */
};

TEST(h2_headers_continuation_and_data)
{
	struct hx x;
	if (!CHECK(hx_init(&x, "h2")))
		goto out;
	static const uint8_t c2s[] = {
		0x00, 0x00, 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x01, /* HEADERS len 2, END_STREAM, stream 1 */
		0x82, 0x87,                                           /* :method GET, :scheme https */
		0x00, 0x00, 0x08, 0x09, 0x04, 0x00, 0x00, 0x00, 0x01, /* CONTINUATION len 8, END_HEADERS */
		0x04, 0x02, '/', 'a',                                 /* :path "/a" (literal, not indexed) */
		0x01, 0x02, 'e', 'x',                                 /* :authority "ex" */
	};
	static const uint8_t s2c[] = {
		0x00, 0x00, 0x05, 0x01, 0x04, 0x00, 0x00, 0x00, 0x01, /* HEADERS len 5, END_HEADERS, stream 1 */
		0x88,                                                 /* :status 200 */
		0x0f, 0x0d, 0x01, '2',                                /* content-length: 2 */
		0x00, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, /* DATA len 2, END_STREAM, stream 1 */
		'h', 'i',
	};
	CHECK_EQ(feed(&x, 0, preface, 24), 0);
	CHECK_EQ(feed(&x, 0, settings, sizeof(settings)), 0);
	CHECK_EQ(feed(&x, 1, settings, sizeof(settings)), 0);
	CHECK_EQ(feed(&x, 0, c2s, sizeof(c2s)), 0);
	CHECK_EQ(feed(&x, 1, s2c, 7), 0); /* split inside a frame */
	CHECK_EQ(feed(&x, 1, s2c + 7, sizeof(s2c) - 7), 0);
	struct hconn *c = syn_conn(&x, 0);
	CHECK(c && c->syn == 1);
	CHECK(has(c, 0, "GET /a HTTP/1.1\r\nHost: ex\r\n\r\n"));
	CHECK(has(c, 1, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"));
	CHECK(c && c->fin == 2); /* both messages ended: the exchange's connection ends */
	CHECK_EQ(h2_counters(x.h2)->conns, 1);
	CHECK_EQ(h2_counters(x.h2)->streams, 1);
	CHECK_EQ(h2_counters(x.h2)->errors, 0);
	CHECK_EQ(t_close(&x, 1, 1, 3), 0);
	CHECK(x.cap->n == 1); /* the original connection never appears */
out:
	hx_free(&x);
}

TEST(h2_padding_priority_post_body)
{
	struct hx x;
	if (!CHECK(hx_init(&x, "h2")))
		goto out;
	static const uint8_t c2s[] = {
		0x00, 0x00, 0x13, 0x01, 0x2c, 0x00, 0x00, 0x00, 0x03, /* HEADERS len 19, PRIORITY|PADDED|END_HEADERS, stream 3 */
		0x03,                                                 /* pad length 3 */
		0x80, 0x00, 0x00, 0x01, 0x10,                         /* exclusive, depends on 1, weight 17 */
		0x83, 0x86, 0x84,                                     /* POST, http, / */
		0x01, 0x01, 'h',                                      /* :authority "h" */
		0x0f, 0x0d, 0x01, '5',                                /* content-length: 5 */
		0x00, 0x00, 0x00,                                     /* padding */
		0x00, 0x00, 0x08, 0x00, 0x09, 0x00, 0x00, 0x00, 0x03, /* DATA len 8, PADDED|END_STREAM, stream 3 */
		0x02,                                                 /* pad length 2 */
		'a', 'b', 'c', 'd', 'e',                              /* body */
		0x00, 0x00,                                           /* padding */
	};
	static const uint8_t s2c[] = {
		0x00, 0x00, 0x01, 0x01, 0x05, 0x00, 0x00, 0x00, 0x03, /* HEADERS len 1, END_HEADERS|END_STREAM */
		0x89,                                                 /* :status 204 */
	};
	feed(&x, 0, preface, 24);
	for (size_t i = 0; i < sizeof(c2s); i++) /* one byte at a time */
		CHECK_EQ(feed(&x, 0, c2s + i, 1), 0);
	CHECK_EQ(feed(&x, 1, s2c, sizeof(s2c)), 0);
	struct hconn *c = syn_conn(&x, 0);
	CHECK(has(c, 0, "POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 5\r\n\r\nabcde"));
	CHECK(has(c, 1, "HTTP/1.1 204 No Content\r\n\r\n"));
	CHECK(c && c->fin == 2); /* both messages ended: FIN at once */
	CHECK_EQ(h2_counters(x.h2)->errors, 0);
out:
	hx_free(&x);
}

/* A header block of one literal field with incremental indexing (new name). */
static size_t lit_inc(uint8_t *p, const char *name, char fill, size_t vlen)
{
	size_t n = strlen(name), at = 0;
	p[at++] = 0x40;                    /* literal, incremental indexing, new name */
	p[at++] = (uint8_t)n;              /* name length (< 127) */
	memcpy(p + at, name, n);
	at += n;
	p[at++] = 0x7f;                    /* value length: 127 + varint */
	size_t rest = vlen - 127;
	p[at++] = (uint8_t)(0x80 | (rest & 0x7f));
	p[at++] = (uint8_t)(rest >> 7);
	memset(p + at, fill, vlen);
	return at + vlen;
}

/* HEADERS (END_HEADERS|END_STREAM) on stream sid around a block. */
static size_t headers_frame(uint8_t *p, uint32_t sid, const uint8_t *blk, size_t n)
{
	p[0] = (uint8_t)(n >> 16);
	p[1] = (uint8_t)(n >> 8);
	p[2] = (uint8_t)n;
	p[3] = 0x01;
	p[4] = 0x05;
	put_be32(p + 5, sid);
	memcpy(p + 9, blk, n);
	return 9 + n;
}

/* A DATA frame header (no flags but flags) on stream sid, n bytes of payload. */
static size_t data_hdr(uint8_t *p, uint32_t sid, size_t n, uint8_t flags)
{
	p[0] = (uint8_t)(n >> 16);
	p[1] = (uint8_t)(n >> 8);
	p[2] = (uint8_t)n;
	p[3] = 0x00;
	p[4] = flags;
	put_be32(p + 5, sid);
	return 9;
}

/* Segments of c's direction dir: all full (1460) but the last of each of
 * the n records whose output ended at the given byte counts. */
static int full_segments(const struct hconn *c, int dir, const size_t *ends, size_t n)
{
	size_t at = 0, k = 0;
	if (!c)
		return 0;
	for (size_t r = 0; r < n; r++) {
		while (at < ends[r]) {
			size_t want = ends[r] - at < 1460 ? ends[r] - at : 1460;
			if (k == c->nseg[dir] || c->seg[dir][k] != want)
				return 0;
			at += c->seg[dir][k++];
		}
	}
	return k == c->nseg[dir];
}

/*
 * The DATA frames of one record become full segments, however the record
 * cuts them (the frame headers between the payloads are not shown): one
 * short segment per record at most, as plain mirroring makes of a record.
 */
static void body_in_full_segments(int chunked)
{
	struct hx x;
	static uint8_t rec[3][20000], body[30000], want[40000];
	size_t rn[3] = { 0 }, ends[3], wn = 0;
	static const size_t frames[] = { 3000, 2000, 4000, 100, 5000, 7000, 1 };
	static const int rec_of[] = { 1, 1, 1, 1, 2, 2, 2 }; /* head alone in record 0 */
	size_t total = 0;
	if (!CHECK(hx_init(&x, "h2")))
		goto out;
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(i * 13 + 5);
	for (size_t i = 0; i < sizeof(frames) / sizeof(frames[0]); i++)
		total += frames[i];
	static const uint8_t get[] = {
		0x00, 0x00, 0x06, 0x01, 0x05, 0x00, 0x00, 0x00, 0x01, /* HEADERS, END_STREAM|END_HEADERS */
		0x82, 0x87, 0x84, 0x01, 0x01, 'h',                    /* GET https / :authority h */
	};
	char head[128];
	uint8_t *r0 = rec[0];
	r0[9] = 0x88;                                 /* :status 200 */
	size_t hl = 1;
	if (!chunked) {
		int k = snprintf(head, sizeof(head), "%zu", total);
		r0[9 + hl++] = 0x0f;                  /* content-length, literal */
		r0[9 + hl++] = 0x0d;
		r0[9 + hl++] = (uint8_t)k;
		memcpy(r0 + 9 + hl, head, (size_t)k);
		hl += (size_t)k;
	}
	headers_frame(r0, 1, r0 + 9, hl);
	r0[4] = 0x04;                                 /* END_HEADERS: the body follows */
	rn[0] = 9 + hl;
	wn = (size_t)snprintf((char *)want, sizeof(want), "HTTP/1.1 200 OK\r\n%s%s\r\n\r\n",
			      chunked ? "transfer-encoding: chunked" : "content-length: ",
			      chunked ? "" : head);
	ends[0] = wn;
	size_t at = 0, nf = sizeof(frames) / sizeof(frames[0]);
	for (size_t i = 0; i < nf; i++) {
		int r = rec_of[i];
		rn[r] += data_hdr(rec[r] + rn[r], 1, frames[i], i + 1 == nf ? 0x01 : 0);
		memcpy(rec[r] + rn[r], body + at, frames[i]);
		rn[r] += frames[i];
		if (chunked)
			wn += (size_t)snprintf((char *)want + wn, sizeof(want) - wn, "%zx\r\n",
					       frames[i]);
		memcpy(want + wn, body + at, frames[i]);
		wn += frames[i];
		at += frames[i];
		if (chunked)
			wn += (size_t)snprintf((char *)want + wn, sizeof(want) - wn, "\r\n%s",
					       i + 1 == nf ? "0\r\n\r\n" : "");
		ends[r] = wn;
	}
	feed(&x, 0, preface, 24);
	CHECK_EQ(feed(&x, 0, get, sizeof(get)), 0);
	for (int r = 0; r < 3; r++)
		CHECK_EQ(feed(&x, 1, rec[r], rn[r]), 0);
	struct hconn *c = syn_conn(&x, 0);
	CHECK(c && c->len[1] == wn && !memcmp(c->data[1], want, wn));
	CHECK(full_segments(c, 1, ends, 3));
	CHECK(c && c->fin == 2);
	CHECK_EQ(h2_counters(x.h2)->errors, 0);
out:
	hx_free(&x);
}

TEST(h2_body_of_a_record_in_full_segments)
{
	body_in_full_segments(0);
}

TEST(h2_chunked_body_of_a_record_in_full_segments)
{
	body_in_full_segments(1);
}

TEST(h2_dynamic_table_eviction)
{
	struct hx x;
	static uint8_t blk[8192], fr[8300];
	char want[4000];
	if (!CHECK(hx_init(&x, "h2")))
		goto out;
	feed(&x, 0, preface, 24);
	/* request 1 adds x-a (3035 bytes of table), request 2 adds x-b: 6070 > 4096 evicts x-a */
	const char *names[2] = { "x-a", "x-b" };
	for (int i = 0; i < 2; i++) {
		size_t n = 0;
		blk[n++] = 0x82;           /* GET */
		blk[n++] = 0x87;           /* https */
		blk[n++] = 0x84;           /* / */
		n += lit_inc(blk + n, names[i], (char)('1' + i), 3000);
		CHECK_EQ(feed(&x, 0, fr, headers_frame(fr, 1 + 2 * (uint32_t)i, blk, n)), 0);
	}
	static const uint8_t third[] = {
		0x00, 0x00, 0x04, 0x01, 0x05, 0x00, 0x00, 0x00, 0x05, /* HEADERS len 4, END_HEADERS|END_STREAM, stream 5 */
		0x82, 0x87, 0x84,                                     /* GET https / */
		0xbe,                                                 /* dynamic index 62: the newest, x-b */
	};
	CHECK_EQ(feed(&x, 0, third, sizeof(third)), 0);
	struct hconn *c = syn_conn(&x, 2);
	char twos[3001];
	memset(twos, '2', 3000);
	twos[3000] = 0;
	snprintf(want, sizeof(want), "GET / HTTP/1.1\r\nx-b: %s\r\n\r\n", twos);
	CHECK(has(c, 0, want));
	static const uint8_t fourth[] = {
		0x00, 0x00, 0x01, 0x01, 0x05, 0x00, 0x00, 0x00, 0x07, /* HEADERS len 1, stream 7 */
		0xbf,                                                 /* dynamic index 63: x-a, evicted */
	};
	CHECK_EQ(feed(&x, 0, fourth, sizeof(fourth)), 0);
	CHECK_EQ(h2_counters(x.h2)->errors, 1); /* HPACK error: fallback */
	CHECK_EQ(h2_counters(x.h2)->fallbacks, 1);
out:
	hx_free(&x);
}

TEST(h2_chunked_response_trailers_and_1xx)
{
	struct hx x;
	if (!CHECK(hx_init(&x, "h2")))
		goto out;
	static const uint8_t req[] = {
		0x00, 0x00, 0x0d, 0x01, 0x04, 0x00, 0x00, 0x00, 0x01, /* HEADERS len 13, END_HEADERS, stream 1 */
		0x83, 0x87, 0x84,                                     /* POST https / */
		0x01, 0x00,                                           /* :authority "" */
		0x0f, 0x11, 0x01, 'a',                                /* cookie: a */
		0x0f, 0x11, 0x01, 'b',                                /* cookie: b */
		0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, /* DATA len 3, END_STREAM */
		'x', 'y', 'z',
	};
	static const uint8_t resp[] = {
		0x00, 0x00, 0x05, 0x01, 0x04, 0x00, 0x00, 0x00, 0x01, /* HEADERS len 5, END_HEADERS */
		0x08, 0x03, '1', '0', '0',                            /* :status 100 */
		0x00, 0x00, 0x01, 0x01, 0x04, 0x00, 0x00, 0x00, 0x01, /* HEADERS len 1, END_HEADERS */
		0x88,                                                 /* :status 200 (no length) */
		0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, /* DATA len 4 */
		'b', 'o', 'd', 'y',
		0x00, 0x00, 0x06, 0x01, 0x05, 0x00, 0x00, 0x00, 0x01, /* HEADERS len 6, END_HEADERS|END_STREAM: trailers */
		0x00, 0x02, 't', 'r', 0x01, '1',                      /* tr: 1 */
	};
	feed(&x, 0, preface, 24);
	CHECK_EQ(feed(&x, 0, req, sizeof(req)), 0);
	CHECK_EQ(feed(&x, 1, resp, sizeof(resp)), 0);
	struct hconn *c = syn_conn(&x, 0);
	CHECK(has(c, 0, "POST / HTTP/1.1\r\nHost: \r\ncookie: a; b\r\ntransfer-encoding: chunked\r\n"
		  "\r\n3\r\nxyz\r\n0\r\n\r\n"));
	CHECK(has(c, 1, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
		  "transfer-encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\ntr: 1\r\n\r\n"));
	CHECK(c && c->fin == 2);
out:
	hx_free(&x);
}

TEST(h2_rst_stream_and_goaway_end_connections)
{
	struct hx x;
	static uint8_t fr[64];
	static const uint8_t get[] = { 0x82, 0x87, 0x84, 0x01, 0x01, 'h' }; /* GET https / :authority h */
	if (!CHECK(hx_init(&x, "h2")))
		goto out;
	feed(&x, 0, preface, 24);
	for (uint32_t sid = 1; sid <= 5; sid += 2) {
		size_t n = headers_frame(fr, sid, get, sizeof(get));
		fr[4] = 0x04; /* END_HEADERS only: the request goes on */
		CHECK_EQ(feed(&x, 0, fr, n), 0);
	}
	static const uint8_t rst[] = {
		0x00, 0x00, 0x04, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01, /* RST_STREAM len 4, stream 1 */
		0x00, 0x00, 0x00, 0x08,                               /* CANCEL */
	};
	static const uint8_t goaway[] = {
		0x00, 0x00, 0x08, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, /* GOAWAY len 8, stream 0 */
		0x00, 0x00, 0x00, 0x03,                               /* last stream 3 */
		0x00, 0x00, 0x00, 0x00,                               /* NO_ERROR */
	};
	CHECK_EQ(feed(&x, 0, rst, sizeof(rst)), 0);
	CHECK(syn_conn(&x, 0) && syn_conn(&x, 0)->fin == 2);
	CHECK(syn_conn(&x, 1) && syn_conn(&x, 1)->fin == 0);
	CHECK_EQ(feed(&x, 1, goaway, sizeof(goaway)), 0);
	CHECK(syn_conn(&x, 1) && syn_conn(&x, 1)->fin == 0); /* stream 3 was processed */
	CHECK(syn_conn(&x, 2) && syn_conn(&x, 2)->fin == 2); /* stream 5 was not */
	CHECK_EQ(t_close(&x, 1, 1, 3), 0);
	CHECK(syn_conn(&x, 1) && syn_conn(&x, 1)->fin == 2);
out:
	hx_free(&x);
}

TEST(h2_push_promise_own_connection)
{
	struct hx x;
	static const uint8_t get[] = { 0x82, 0x87, 0x84, 0x01, 0x01, 'h' };
	static uint8_t fr[64];
	if (!CHECK(hx_init(&x, "h2")))
		goto out;
	feed(&x, 0, preface, 24);
	CHECK_EQ(feed(&x, 0, fr, headers_frame(fr, 1, get, sizeof(get))), 0);
	static const uint8_t s2c[] = {
		0x00, 0x00, 0x0d, 0x05, 0x04, 0x00, 0x00, 0x00, 0x01, /* PUSH_PROMISE len 13, END_HEADERS, stream 1 */
		0x00, 0x00, 0x00, 0x02,                               /* promised stream 2 */
		0x82, 0x87,                                           /* GET https */
		0x04, 0x02, '/', 'p',                                 /* :path /p */
		0x01, 0x01, 'h',                                      /* :authority h */
		0x00, 0x00, 0x01, 0x01, 0x05, 0x00, 0x00, 0x00, 0x01, /* HEADERS len 1, END_HEADERS|END_STREAM, stream 1 */
		0x8d,                                                 /* :status 404 */
		0x00, 0x00, 0x01, 0x01, 0x04, 0x00, 0x00, 0x00, 0x02, /* HEADERS len 1, END_HEADERS, stream 2 */
		0x88,                                                 /* :status 200 */
		0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, /* DATA len 1, END_STREAM, stream 2 */
		'P',
	};
	CHECK_EQ(feed(&x, 1, s2c, sizeof(s2c)), 0);
	CHECK(has(syn_conn(&x, 0), 0, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
	CHECK(has(syn_conn(&x, 0), 1, "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"));
	CHECK(has(syn_conn(&x, 1), 0, "GET /p HTTP/1.1\r\nHost: h\r\n\r\n"));
	CHECK(has(syn_conn(&x, 1), 1, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
		  "1\r\nP\r\n0\r\n\r\n"));
	CHECK(syn_conn(&x, 1) && syn_conn(&x, 1)->fin == 2);
	CHECK_EQ(h2_counters(x.h2)->streams, 2);
out:
	hx_free(&x);
}

TEST(h2_bad_frame_falls_back_raw)
{
	struct hx x;
	static uint8_t fr[64];
	static const uint8_t get[] = { 0x82, 0x87, 0x84, 0x01, 0x01, 'h' };
	if (!CHECK(hx_init(&x, "h2")))
		goto out;
	feed(&x, 0, preface, 24);
	size_t n = headers_frame(fr, 1, get, sizeof(get));
	fr[4] = 0x04;
	CHECK_EQ(feed(&x, 0, fr, n), 0);
	static const uint8_t bad[] = {
		0x00, 0x00, 0x05, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, /* SETTINGS len 5: not a multiple of 6 */
		0x00, 0x01, 0x00, 0x00, 0x10,
		'r', 'a', 'w',                                        /* whatever follows */
	};
	CHECK_EQ(feed(&x, 0, bad, 3), 0); /* frame header split across records */
	CHECK_EQ(feed(&x, 0, bad + 3, sizeof(bad) - 3), 0);
	CHECK_EQ(h2_counters(x.h2)->errors, 1);
	CHECK_EQ(h2_counters(x.h2)->fallbacks, 1);
	CHECK(syn_conn(&x, 0) && syn_conn(&x, 0)->fin == 2); /* the stream's connection ended */
	/* the original connection from the bad frame on, midstream, raw */
	struct hconn *o = hconn_of(x.cap, CLI_PORT);
	CHECK(o && o->syn == 1 && o->len[0] == sizeof(bad) && !memcmp(o->data[0], bad, sizeof(bad)));
	/* no longer the converter's: the caller hands its records to the flow engine */
	CHECK_EQ(t_data(&x, 1, 1, 0, 3, x.off[0], (const uint8_t *)"x", 1, NULL), -ENOENT);
	CHECK_EQ(t_close(&x, 1, 1, 4), -ENOENT);
out:
	hx_free(&x);
}

TEST(h2_oversized_header_list_falls_back)
{
	struct hx x;
	static uint8_t blk[16400], fr[16500];
	if (!CHECK(hx_init(&x, "h2")))
		goto out;
	feed(&x, 0, preface, 24);
	/* 17 blocks of 16 KiB literal fields in one header list: > 256 KiB */
	size_t n = lit_inc(blk, "x-big", 'z', 16000);
	blk[0] = 0x00; /* literal without indexing: the table stays small */
	size_t k = headers_frame(fr, 1, blk, n);
	fr[4] = 0x00; /* no END_HEADERS */
	CHECK_EQ(feed(&x, 0, fr, k), 0);
	fr[3] = 0x09; /* CONTINUATION */
	for (int i = 0; i < 17; i++)
		feed(&x, 0, fr, k);
	CHECK_EQ(h2_counters(x.h2)->errors, 1);
	CHECK_EQ(h2_counters(x.h2)->streams, 0);
out:
	hx_free(&x);
}

TEST(h2_detect_by_preface_without_alpn)
{
	struct hx x;
	static const uint8_t get[] = { 0x82, 0x87, 0x84, 0x01, 0x01, 'h' };
	static uint8_t fr[64];
	if (!CHECK(hx_init(&x, "")))
		goto out;
	CHECK_EQ(feed(&x, 0, preface, 10), 0);
	CHECK_EQ(feed(&x, 0, preface + 10, 14), 0);
	CHECK_EQ(feed(&x, 0, fr, headers_frame(fr, 1, get, sizeof(get))), 0);
	CHECK_EQ(h2_counters(x.h2)->conns, 1);
	CHECK(has(syn_conn(&x, 0), 0, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
out:
	hx_free(&x);
}

TEST(h2_no_alpn_plain_text_is_mirrored_as_is)
{
	struct hx x;
	if (!CHECK(hx_init(&x, "")))
		goto out;
	CHECK_EQ(feed(&x, 0, "PRI * HTTP/1.1\r\n", 16), 0);
	CHECK_EQ(t_close(&x, 1, 1, 3), -ENOENT); /* the flow engine has it */
	struct hconn *o = hconn_of(x.cap, CLI_PORT);
	CHECK(has(o, 0, "PRI * HTTP/1.1\r\n"));
	CHECK_EQ(h2_counters(x.h2)->conns + h2_counters(x.h2)->errors, 0);
	CHECK_EQ(t_open(&x, &(struct conn_open){ .id = { 1, 2 }, .family = 4 }, "http/1.1"), 0);
out:
	hx_free(&x);
}

TEST(h2_gap_falls_back_with_exact_gap)
{
	struct hx x;
	uint64_t gap = 0;
	if (!CHECK(hx_init(&x, "h2")))
		goto out;
	feed(&x, 0, preface, 24);
	CHECK_EQ(t_data(&x, 1, 1, 0, 3, 24 + 100, (const uint8_t *)"abc", 3, &gap), 0);
	CHECK_EQ(gap, 100);
	CHECK_EQ(h2_counters(x.h2)->fallbacks, 1);
	CHECK_EQ(h2_counters(x.h2)->errors, 0);
out:
	hx_free(&x);
}

TEST(h2_reannounce_and_other_end_once)
{
	struct hx x;
	static const uint8_t get[] = { 0x82, 0x87, 0x84, 0x01, 0x01, 'h' };
	static uint8_t fr[64];
	if (!CHECK(hx_init(&x, "h2")))
		goto out;
	struct conn_open fi = { .id = { 1, 1 }, .ts_ns = 1, .family = 4,
				.side = 1, .client_port = CLI_PORT, .server_port = SRV_PORT };
	memcpy(fi.client_addr, "\x0a\x00\x00\x01", 4);
	memcpy(fi.server_addr, "\x0a\x00\x00\x02", 4);
	CHECK_EQ(t_open(&x, &fi, "h2"), -EEXIST); /* the same connection again */
	fi.id.origin = 2;                              /* its client end, in another process */
	fi.side = 0;
	CHECK_EQ(t_open(&x, &fi, "h2"), 0);            /* the dedup stage's, not converted twice */
	CHECK(!strcmp(pipeline_owner(x.pl, &fi.id), "dedup"));
	size_t n = headers_frame(fr, 1, get, sizeof(get));
	CHECK_EQ(p_data(&x, 2, 1, 0, 2, 0, preface, 24), 0);
	CHECK_EQ(p_data(&x, 2, 1, 0, 2, 24, fr, n), 0);
	CHECK(x.cap->n == 0); /* the other end's copy shows nothing */
	feed(&x, 0, preface, 24);
	CHECK_EQ(feed(&x, 0, fr, n), 0);
	CHECK(x.cap->n == 1);
	CHECK_EQ(h2_counters(x.h2)->conns, 1);
	CHECK_EQ(pipeline_close(x.pl, &fi.id, 3, 0), 0);
out:
	hx_free(&x);
}

/* ---- RFC 9113 §8 rules: a message that breaks one falls back to raw HTTP/2 ---- */

struct fld {
	const char *name, *value;
	size_t nlen, vlen;
};

/* A field; sizeof keeps NUL bytes inside values. */
#define FLD(n, v) { n, v, sizeof(n) - 1, sizeof(v) - 1 }
/* An array of fields and its length, as the verdict functions take them. */
#define FIELDS(...) (const struct fld[]){ __VA_ARGS__ }, \
	sizeof((const struct fld[]){ __VA_ARGS__ }) / sizeof(struct fld)

/* A header block of literal fields without indexing, new name (RFC 7541
 * §6.2.2): 0x00, name length, name, value length, value (lengths < 127). */
static size_t lit_block(uint8_t *p, const struct fld *f, size_t n)
{
	size_t at = 0;
	for (size_t i = 0; i < n; i++) {
		p[at++] = 0x00;
		p[at++] = (uint8_t)f[i].nlen;
		memcpy(p + at, f[i].name, f[i].nlen);
		at += f[i].nlen;
		p[at++] = (uint8_t)f[i].vlen;
		memcpy(p + at, f[i].value, f[i].vlen);
		at += f[i].vlen;
	}
	return at;
}

static const struct hconn *find_conn(const struct hx *x, uint16_t cport)
{
	for (size_t i = 0; i < x->cap->n; i++)
		if (x->cap->c[i].cport == cport)
			return &x->cap->c[i];
	return NULL;
}

/*
 * After frames fed in direction dir: 1 if the stream was converted, 0 if
 * the connection fell back as malformed (counted, no HTTP/1.1 written for
 * the offending message, the original connection mirrored raw from the
 * bytes at raw_off of that direction: raw, raw_len), -1 otherwise.
 */
static int verdict(struct hx *x, int dir, uint64_t raw_off, const uint8_t *raw, size_t raw_len,
		   uint64_t streams)
{
	const struct h2_counters *c = h2_counters(x->h2);
	const struct hconn *o = find_conn(x, CLI_PORT);
	if (!c->malformed && !c->fallbacks && c->streams == streams)
		return 1;
	if (c->malformed != 1 || c->errors != 1 || c->fallbacks != 1 || !o || o->syn != 1)
		return -1;
	if (o->len[dir] != x->off[dir] - raw_off || o->len[dir] != raw_len ||
	    memcmp(o->data[dir], raw, raw_len))
		return -1;
	return t_data(x, 1, 1, dir, 3, x->off[dir], (const uint8_t *)"x", 1, NULL) == -ENOENT ?
	       0 : -1;
}

/* One request HEADERS (END_STREAM) of these fields: verdict() of it. */
static int request_verdict(const struct fld *f, size_t n)
{
	struct hx x;
	static uint8_t blk[4096], fr[4200];
	int v = -1;
	if (!hx_init(&x, "h2"))
		goto out;
	feed(&x, 0, preface, 24);
	size_t k = headers_frame(fr, 1, blk, lit_block(blk, f, n));
	if (feed(&x, 0, fr, k))
		goto out;
	v = verdict(&x, 0, 24, fr, k, 1);
	if (v == 0 && find_conn(&x, 10000))
		v = -1; /* not even a SYN for a malformed request */
out:
	hx_free(&x);
	return v;
}

#define GOOD_PSEUDO FLD(":method", "GET"), FLD(":scheme", "https"), FLD(":path", "/x"), \
	FLD(":authority", "h")

TEST(h2_check_request_values_no_cr_lf_nul)
{
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("x-a", "1 2\t3"))), 1);
	/* the reproduction: a second request the client never sent */
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":scheme", "https"),
		FLD(":path", "/a HTTP/1.1\r\nX: 1\r\n\r\nGET /admin"), FLD(":authority", "h"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("x-a", "1\r\n\r\nGET /admin HTTP/1.1"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("x-a", "1\nx-b: 2"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("x-a", "1\rx"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("x-a", "a\0b"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("x-a", " lead"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("x-a", "trail\t"))), 0);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":scheme", "https"),
		FLD(":path", "/x"), FLD(":authority", "h\r\nx-evil: 1"))), 0);
}

TEST(h2_check_request_names_lower_case_tokens)
{
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("x-a_b.c!~", "1"))), 1);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("X-A", "1"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("x a", "1"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("x:a", "1"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("x\r\nb", "1"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("", "1"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("x(a)", "1"))), 0);
}

TEST(h2_check_request_pseudo_headers)
{
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD(":foo", "1"))), 0);      /* unknown */
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD(":path", "/y"))), 0);    /* twice */
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":scheme", "https"),
		FLD("x-a", "1"), FLD(":path", "/x"))), 0);                          /* after a field */
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":path", "/x"))), 0);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":scheme", "https"))), 0);
	CHECK_EQ(request_verdict(FIELDS(FLD(":scheme", "https"), FLD(":path", "/x"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD(":status", "200"))), 0); /* a response's */
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD(":protocol", "websocket"))), 0);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "CONNECT"), FLD(":protocol", "websocket"),
		FLD(":scheme", "https"), FLD(":path", "/chat"), FLD(":authority", "h"))), 1);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "CONNECT"), FLD(":authority", "h:443"))), 1);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "CONNECT"), FLD(":authority", "h:443"),
		FLD(":path", "/"))), 0);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "CONNECT"), FLD(":authority", ""))), 0);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "CONNECT"))), 0);
}

TEST(h2_check_request_line_method_path_scheme_authority)
{
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "OPTIONS"), FLD(":scheme", "https"),
		FLD(":path", "*"), FLD(":authority", "h"))), 1);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":scheme", "https"),
		FLD(":path", "*"))), 0);                                             /* * is OPTIONS' */
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":scheme", "https"),
		FLD(":path", "/a b"))), 0);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":scheme", "https"),
		FLD(":path", "/a\tb"))), 0);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":scheme", "https"),
		FLD(":path", "a"))), 0);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":scheme", "https"),
		FLD(":path", ""))), 0);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GE T"), FLD(":scheme", "https"),
		FLD(":path", "/"))), 0);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", ""), FLD(":scheme", "https"),
		FLD(":path", "/"))), 0);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":scheme", "ht tp"),
		FLD(":path", "/"))), 0);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":scheme", "https"),
		FLD(":path", "/"), FLD(":authority", "user@h"))), 0);               /* userinfo */
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":scheme", "https"),
		FLD(":path", "/"), FLD(":authority", "h x"))), 0);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":scheme", "https"),
		FLD(":path", "/"), FLD(":authority", "h/evil"))), 0);
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":scheme", "https"),
		FLD(":path", "/"), FLD(":authority", "[::1]:8443"))), 1);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("host", "H"))), 1);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("host", "evil"))), 0); /* not :authority */
	CHECK_EQ(request_verdict(FIELDS(FLD(":method", "GET"), FLD(":scheme", "https"),
		FLD(":path", "/"), FLD("host", "a"), FLD("host", "b"))), 0);
}

TEST(h2_check_request_connection_specific_fields)
{
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("te", "trailers"))), 1);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("te", "gzip"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("connection", "close"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("keep-alive", "5"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("proxy-connection", "x"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("transfer-encoding", "chunked"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("upgrade", "h2c"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("content-length", "0"))), 1);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("content-length", "4"))), 0); /* no body */
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("content-length", "1x"))), 0);
	CHECK_EQ(request_verdict(FIELDS(GOOD_PSEUDO, FLD("content-length", "0"),
		FLD("content-length", "0"))), 0);
}

/* A request HEADERS of fields then DATA (END_STREAM) with body: verdict(). */
static int request_body_verdict(const struct fld *f, size_t n, const char *body)
{
	struct hx x;
	static uint8_t blk[4096], fr[4200];
	int v = -1;
	if (!hx_init(&x, "h2"))
		goto out;
	feed(&x, 0, preface, 24);
	size_t k = headers_frame(fr, 1, blk, lit_block(blk, f, n));
	fr[4] = 0x04; /* END_HEADERS: a body follows */
	feed(&x, 0, fr, k);
	uint64_t at = x.off[0];
	size_t bl = strlen(body);
	fr[0] = 0;
	fr[1] = (uint8_t)(bl >> 8);
	fr[2] = (uint8_t)bl;
	fr[3] = 0x00; /* DATA, END_STREAM */
	fr[4] = 0x01;
	memcpy(fr + 9, body, bl);
	if (feed(&x, 0, fr, 9 + bl))
		goto out;
	v = verdict(&x, 0, at, fr, 9 + bl, 1); /* raw from the DATA frame's header */
out:
	hx_free(&x);
	return v;
}

TEST(h2_check_body_longer_than_content_length)
{
	/* the body would read as a request of its own after "content-length: 0" */
	CHECK_EQ(request_body_verdict(FIELDS(FLD(":method", "POST"), FLD(":scheme", "https"),
		FLD(":path", "/"), FLD("content-length", "0")), "GET /admin HTTP/1.1\r\n\r\n"), 0);
	CHECK_EQ(request_body_verdict(FIELDS(FLD(":method", "POST"), FLD(":scheme", "https"),
		FLD(":path", "/"), FLD("content-length", "3")), "abc"), 1);
}

/* After a good GET, the response: HEADERS of fields (END_STREAM unless data),
 * then DATA (END_STREAM) of data. verdict() of the response direction. */
static int response_verdict(const struct fld *f, size_t n, const char *data)
{
	struct hx x;
	static uint8_t blk[4096], fr[4200];
	static const uint8_t get[] = { 0x82, 0x87, 0x84, 0x01, 0x01, 'h' };
	int v = -1;
	if (!hx_init(&x, "h2"))
		goto out;
	feed(&x, 0, preface, 24);
	feed(&x, 0, fr, headers_frame(fr, 1, get, sizeof(get)));
	size_t k = headers_frame(fr, 1, blk, lit_block(blk, f, n));
	size_t dl = data ? strlen(data) : 0;
	if (data) {
		fr[4] = 0x04;
		memcpy(fr + k, "\x00\x00\x00\x00\x01\x00\x00\x00\x01", 9);
		fr[k + 2] = (uint8_t)dl;
		memcpy(fr + k + 9, data, dl);
	}
	if (feed(&x, 1, fr, data ? k + 9 + dl : k))
		goto out;
	uint64_t bad = h2_counters(x.h2)->streams == 1 && find_conn(&x, 10000) &&
		       find_conn(&x, 10000)->len[1] ? k : 0; /* the head was written */
	size_t all = data ? k + 9 + dl : k;
	v = verdict(&x, 1, bad, fr + bad, all - bad, 1);
	if (v < 0 && dl)
		v = verdict(&x, 1, all, fr + all, 0, 1); /* found short at END_STREAM */
	if (v == 1 && (!find_conn(&x, 10000) || find_conn(&x, 10000)->fin != 2))
		v = -1;
out:
	hx_free(&x);
	return v;
}

TEST(h2_check_response_rules)
{
	CHECK_EQ(response_verdict(FIELDS(FLD(":status", "200"), FLD("x-a", "1")), NULL), 1);
	CHECK_EQ(response_verdict(FIELDS(FLD("x-a", "1")), NULL), 0);
	CHECK_EQ(response_verdict(FIELDS(FLD(":status", "20")), NULL), 0);
	CHECK_EQ(response_verdict(FIELDS(FLD(":status", "2x0")), NULL), 0);
	CHECK_EQ(response_verdict(FIELDS(FLD(":status", "600")), NULL), 0);
	CHECK_EQ(response_verdict(FIELDS(FLD(":status", "101")), NULL), 0);
	CHECK_EQ(response_verdict(FIELDS(FLD(":status", "200"), FLD(":status", "200")), NULL), 0);
	CHECK_EQ(response_verdict(FIELDS(FLD(":status", "200"), FLD(":path", "/")), NULL), 0);
	CHECK_EQ(response_verdict(FIELDS(FLD(":status", "200"),
		FLD("x-a", "1\r\nset-cookie: evil=1")), NULL), 0);
	CHECK_EQ(response_verdict(FIELDS(FLD(":status", "200"), FLD("connection", "close")), NULL), 0);
	CHECK_EQ(response_verdict(FIELDS(FLD(":status", "200"), FLD("content-length", "2")), "hi"), 1);
	CHECK_EQ(response_verdict(FIELDS(FLD(":status", "200"), FLD("content-length", "2")),
		"hiHTTP/1.1 200 OK\r\n\r\n"), 0);
	CHECK_EQ(response_verdict(FIELDS(FLD(":status", "200"), FLD("content-length", "5")), "hi"), 0);
	CHECK_EQ(response_verdict(FIELDS(FLD(":status", "200"), FLD("content-length", "5")), NULL), 0);
	CHECK_EQ(response_verdict(FIELDS(FLD(":status", "304"), FLD("content-length", "5")), NULL), 1);
	CHECK_EQ(response_verdict(FIELDS(FLD(":status", "204")), "HTTP/1.1 200 OK\r\n\r\n"), 0);
}

TEST(h2_check_trailers_no_pseudo_headers)
{
	static const struct fld bad[][1] = { { FLD(":status", "200") }, { FLD("x-t", "1\r\n\r\nX") } };
	for (int i = 0; i < 3; i++) {
		struct hx x;
		static uint8_t blk[256], fr[512];
		static const uint8_t get[] = { 0x82, 0x87, 0x84, 0x01, 0x01, 'h' };
		static const uint8_t head[] = {
			0x00, 0x00, 0x01, 0x01, 0x04, 0x00, 0x00, 0x00, 0x01, /* HEADERS len 1, END_HEADERS */
			0x88,                                                 /* :status 200: chunked */
		};
		static const struct fld good[] = { FLD("x-t", "done") };
		if (!CHECK(hx_init(&x, "h2")))
			goto next;
		feed(&x, 0, preface, 24);
		feed(&x, 0, fr, headers_frame(fr, 1, get, sizeof(get)));
		feed(&x, 1, head, sizeof(head));
		uint64_t at = x.off[1];
		size_t k = headers_frame(fr, 1, blk, lit_block(blk, i < 2 ? bad[i] : good, 1));
		CHECK_EQ(feed(&x, 1, fr, k), 0);
		CHECK_EQ(verdict(&x, 1, at, fr, k, 1), i < 2 ? 0 : 1);
		const struct hconn *c = find_conn(&x, 10000);
		if (i < 2 && CHECK(c))
			CHECK(!memchr(c->data[1], 'X', c->len[1]));
next:
		hx_free(&x);
	}
}

TEST(h2_check_pushed_request)
{
	struct hx x;
	static uint8_t blk[256], fr[512];
	static const uint8_t get[] = { 0x82, 0x87, 0x84, 0x01, 0x01, 'h' };
	if (!CHECK(hx_init(&x, "h2")))
		goto out;
	feed(&x, 0, preface, 24);
	feed(&x, 0, fr, headers_frame(fr, 1, get, sizeof(get)));
	static const struct fld f[] = { FLD(":method", "GET"), FLD(":scheme", "https"),
					FLD(":path", "/p HTTP/1.1\r\n\r\nGET /admin") };
	size_t n = lit_block(blk + 4, f, 3);
	put_be32(blk, 2);                       /* promised stream 2 */
	size_t k = headers_frame(fr, 1, blk, n + 4);
	fr[3] = 0x05;                           /* PUSH_PROMISE */
	fr[4] = 0x04;                           /* END_HEADERS */
	CHECK_EQ(feed(&x, 1, fr, k), 0);
	CHECK_EQ(verdict(&x, 1, 0, fr, k, 1), 0);
	CHECK(!find_conn(&x, 10001));           /* no connection for the pushed stream */
out:
	hx_free(&x);
}

/* A converter whose client sent the preface and a POST's HEADERS on stream 1
 * without END_STREAM (a chunked body follows). */
static int hx_post_open(struct hx *x)
{
	static uint8_t fr[64];
	static const uint8_t post[] = { 0x83, 0x87, 0x84, 0x01, 0x01, 'h' }; /* POST https / :authority h */
	if (!hx_init(x, "h2"))
		return 0;
	feed(x, 0, preface, 24);
	size_t n = headers_frame(fr, 1, post, sizeof(post));
	fr[4] = 0x04; /* END_HEADERS only */
	return feed(x, 0, fr, n) == 0;
}

TEST(h2_real_connection_on_a_stream_port_wins_it)
{
	/* a stream's synthetic connection is on 10.0.0.1:10000; a real
	 * connection from that very port (another process) must appear, and the
	 * stream goes on, whole, on another port */
	struct hx x;
	if (!CHECK(hx_post_open(&x)))
		goto out;
	struct conn_open real = { .id = { 2, 5 }, .ts_ns = 2, .family = 4,
				  .side = 1, .client_port = 10000, .server_port = SRV_PORT };
	memcpy(real.client_addr, "\x0a\x00\x00\x01", 4);
	memcpy(real.server_addr, "\x0a\x00\x00\x02", 4);
	CHECK_EQ(t_open(&x, &real, "http/1.1"), 0); /* the flow engine's */
	CHECK_EQ(p_data(&x, 2, 5, 0, 2, 0, (const uint8_t *)"REAL", 4), 0);
	static const uint8_t body[] = {
		0x00, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, /* DATA len 2, END_STREAM */
		'a', 'b',
	};
	CHECK_EQ(feed(&x, 0, body, sizeof(body)), 0);
	CHECK_EQ(flow_counters(x.flows)->flows_duplicate, 0);
	CHECK_EQ(flow_counters(x.flows)->synthetic_moved, 1);
	CHECK_EQ(flow_counters(x.flows)->orphan_records, 0);
	CHECK_EQ(h2_counters(x.h2)->flow_errors, 0);
	/* port 10000: the stream's head, its FIN, then the real SYN and bytes */
	const struct hconn *a = find_conn(&x, 10000), *b = find_conn(&x, 10001);
	CHECK(has(a, 0, "POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: chunked\r\n\r\nREAL"));
	CHECK(a && a->syn == 2);
	/* port 10001: the rest of the stream, with a handshake of its own */
	CHECK(has(b, 0, "2\r\nab\r\n0\r\n\r\n"));
	CHECK(b && b->syn == 1);
out:
	hx_free(&x);
}

TEST(h2_fallback_inside_a_body_starts_at_a_frame)
{
	/* c2s is inside a DATA payload, partly converted, when s2c breaks: the
	 * raw flow must not begin with the rest of that body ("GET /admin ..."
	 * would read as a request), but at the next frame header */
	struct hx x;
	if (!CHECK(hx_post_open(&x)))
		goto out;
	static const uint8_t data[] = {
		0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, /* DATA len 20, stream 1 */
		'a', 'b', 'c', 'd',                                   /* converted */
		'G', 'E', 'T', ' ', '/', 'a', 'd', 'm', 'i', 'n', ' ', 'H', 'T', 'T', 'P', '/',
		0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, /* SETTINGS len 0 */
	};
	CHECK_EQ(feed(&x, 0, data, 13), 0);
	static const uint8_t bad[] = {
		0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, /* SETTINGS len 1: malformed */
		0x00,
	};
	CHECK_EQ(feed(&x, 1, bad, sizeof(bad)), 0);
	CHECK_EQ(h2_counters(x.h2)->fallbacks, 1);
	/* the rest of the record reaches the flow engine as the caller's */
	CHECK_EQ(t_data(&x, 1, 1, 0, 3, x.off[0], data + 13, sizeof(data) - 13, NULL), -ENOENT);
	CHECK_EQ(p_data(&x, 1, 1, 0, 3, x.off[0], data + 13, sizeof(data) - 13), 0);
	const struct hconn *o = find_conn(&x, CLI_PORT);
	CHECK(o && o->len[0] == 9 && !memcmp(o->data[0], data + 29, 9));
	CHECK_EQ(flow_counters(x.flows)->gap_bytes[0], 16);
	CHECK(has(syn_conn(&x, 0), 0, "POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: chunked\r\n"
		  "\r\n4\r\nabcd\r\n"));
out:
	hx_free(&x);
}

TEST(h2_gap_inside_a_body_hides_the_frame_once)
{
	struct hx x;
	static const uint8_t data[] = {
		0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, /* DATA len 20, stream 1 */
		'a', 'b', 'c', 'd',                                   /* converted */
		'x', 'x', 'x', 'x', 'x', 'x',                         /* dropped by the library: a gap */
		'G', 'E', 'T', ' ', '/', 'a', 'd', 'm', 'i', 'n',     /* the frame's rest: not shown */
		0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, /* SETTINGS len 0 */
	};
	if (!CHECK(hx_post_open(&x)))
		goto out;
	CHECK_EQ(feed(&x, 0, data, 13), 0);
	CHECK_EQ(t_gap(&x, 1, 1, 0, 3, 6), 0);
	uint64_t at = x.off[0] + 6;
	CHECK_EQ(p_data(&x, 1, 1, 0, 3, at, data + 19, sizeof(data) - 19), 0);
	const struct hconn *o = find_conn(&x, CLI_PORT);
	CHECK(o && o->len[0] == 9 && !memcmp(o->data[0], data + 29, 9));
	CHECK_EQ(flow_counters(x.flows)->gap_bytes[0], 16); /* the frame's rest, once */
out:
	hx_free(&x);
}

TEST(h2_streams_over_total_cap_fall_back_raw)
{
	struct hx x;
	static const uint8_t get[] = { 0x82, 0x87, 0x84, 0x01, 0x01, 'h' };
	uint8_t fr[3][64];
	size_t n[3];
	if (!CHECK(hx_init_caps(&x, "h2", 0, 2)))
		goto out;
	CHECK_EQ(feed(&x, 0, preface, 24), 0);
	for (int i = 0; i < 3; i++)
		n[i] = headers_frame(fr[i], 1 + 2 * (uint32_t)i, get, sizeof(get));
	CHECK_EQ(feed(&x, 0, fr[0], n[0]), 0);
	CHECK_EQ(feed(&x, 0, fr[1], n[1]), 0);
	CHECK_EQ(h2_counters(x.h2)->streams, 2);
	CHECK_EQ(feed(&x, 0, fr[2], n[2]), 0); /* a third open stream: over the cap */
	CHECK_EQ(h2_counters(x.h2)->streams_refused, 1);
	CHECK_EQ(h2_counters(x.h2)->fallbacks, 1);
	/* the connection is the flow engine's now, mirrored raw from that frame on */
	CHECK_EQ(t_data(&x, 1, 1, 0, 3, x.off[0], get, 1, NULL), -ENOENT);
	CHECK_EQ(flow_counters(x.flows)->flows_open, 1);
out:
	hx_free(&x);
}

TEST(h2_conns_over_cap_are_mirrored_raw)
{
	struct hx x;
	if (!CHECK(hx_init_caps(&x, "h2", 1, 0)))
		goto out;
	struct conn_open fi = { .id = { 1, 2 }, .ts_ns = 1, .family = 4,
				.side = 1, .client_port = CLI_PORT + 1, .server_port = SRV_PORT };
	CHECK_EQ(t_open(&x, &fi, "h2"), 0); /* the caller opens a plain flow */
	CHECK_EQ(h2_counters(x.h2)->conns_refused, 1);
	CHECK_EQ(t_close(&x, 1, 1, 3), 0);  /* one converted connection less */
	CHECK_EQ(t_open(&x, &fi, "h2"), -EEXIST); /* the same connection: the flow engine's */
	CHECK_EQ(pipeline_close(x.pl, &fi.id, 4, 0), 0);
	CHECK_EQ(t_open(&x, &fi, "h2"), 1);
	CHECK_EQ(t_close(&x, 1, 2, 4), 0);
out:
	hx_free(&x);
}
