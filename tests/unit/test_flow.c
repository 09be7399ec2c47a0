/* Unit tests for flows/flow.c: handshake, segmentation, gaps, trims, duplicates, close. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "flows/flow.h"
#include "packets/synth.h"
#include "unit.h"

#define CAP_MAX 512
#define FRAME_MAX 2048

/* A sink that keeps the frames in memory. */
struct cap {
	size_t n;
	size_t calls;
	uint64_t ts[CAP_MAX];
	size_t len[CAP_MAX];
	int parts[CAP_MAX]; /* payload parts of the struct pkt (1 or 2) */
	uint8_t frame[CAP_MAX][FRAME_MAX];
};

static int cap_write(struct sink *s, const struct pkt *pkts, size_t n)
{
	struct cap *c = s->priv;
	c->calls++;
	for (size_t i = 0; i < n && c->n < CAP_MAX; i++, c->n++) {
		size_t len = pkt_frame_len(&pkts[i]);
		if (len > FRAME_MAX)
			len = FRAME_MAX;
		memcpy(c->frame[c->n], pkts[i].hdr, pkts[i].hdr_len);
		if (len > pkts[i].hdr_len)
			pkt_copy_payload(c->frame[c->n] + pkts[i].hdr_len, &pkts[i],
					 len - pkts[i].hdr_len);
		c->parts[c->n] = pkts[i].more_len ? 2 : 1;
		c->len[c->n] = len;
		c->ts[c->n] = pkts[i].ts_ns;
	}
	return 0;
}

static const struct sink_ops cap_ops = { .name = "cap", .write = cap_write };

/* One test's fixture: a table writing into a capture. */
struct fx {
	struct cap *cap;
	struct sink sink;
	struct sink *sinks[1];
	struct sink_set set;
	struct flow_table *t;
};

static int fx_init(struct fx *f, uint16_t mss)
{
	memset(f, 0, sizeof(*f));
	f->cap = calloc(1, sizeof(*f->cap));
	f->sink.ops = &cap_ops;
	f->sink.priv = f->cap;
	f->sinks[0] = &f->sink;
	f->set.v = f->sinks;
	f->set.n = 1;
	struct flow_config cfg = { .mss = mss, .sinks = &f->set };
	f->t = flow_table_new(&cfg);
	return f->cap && f->t;
}

static void fx_free(struct fx *f)
{
	flow_table_free(f->t);
	free(f->cap);
}

/* A TCP segment as read back from a frame, checksums verified. */
struct seg {
	int v6;
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint8_t flags;
	uint16_t window;
	const uint8_t *opts;
	size_t optlen;
	const uint8_t *payload;
	size_t len;
	int csum_ok;
};

static struct seg parse(const uint8_t *fr, size_t flen)
{
	struct seg s = { 0 };
	const uint8_t *ip = fr + 14;
	size_t iplen;
	uint64_t sum;
	uint8_t ph[8];
	s.v6 = get_be16(fr + 12) == 0x86dd;
	if (s.v6) {
		iplen = 40;
		sum = csum_add(0, ip + 8, 32);
		s.csum_ok = 1;
	} else {
		iplen = 20;
		sum = csum_add(0, ip + 12, 8);
		s.csum_ok = csum_fold(csum_add(0, ip, 20)) == 0;
	}
	const uint8_t *tcp = ip + iplen;
	size_t tcplen = flen - 14 - iplen;
	size_t thl = (size_t)(tcp[12] >> 4) * 4;
	put_be32(ph, (uint32_t)tcplen);
	put_be32(ph + 4, 6);
	sum = csum_add(csum_add(sum, ph, 8), tcp, tcplen);
	s.csum_ok = s.csum_ok && csum_fold(sum) == 0;
	s.sport = get_be16(tcp);
	s.dport = get_be16(tcp + 2);
	s.seq = get_be32(tcp + 4);
	s.ack = get_be32(tcp + 8);
	s.flags = tcp[13];
	s.window = get_be16(tcp + 14);
	s.opts = tcp + 20;
	s.optlen = thl - 20;
	s.payload = tcp + thl;
	s.len = tcplen - thl;
	return s;
}

static struct seg pkt_at(const struct fx *f, size_t i)
{
	return parse(f->cap->frame[i], f->cap->len[i]);
}

static struct conn_open info4(uint64_t proc, uint64_t conn, int side)
{
	struct conn_open in = {
		.id.origin = proc, .id.conn = conn, .ts_ns = 1000, .family = 4,
		.side = (uint8_t)side, .client_port = 40000, .server_port = 443,
		.client_addr = { 10, 0, 0, 1 }, .server_addr = { 10, 0, 0, 2 },
	};
	return in;
}

static uint8_t *pattern(size_t len)
{
	uint8_t *p = malloc(len);
	for (size_t i = 0; p && i < len; i++)
		p[i] = (uint8_t)(i * 7 + 3);
	return p;
}

TEST(flow_handshake_three_packets)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open in = info4(1, 1, 1);
	CHECK_EQ(flow_open(f.t, &in), 0);
	CHECK_EQ(f.cap->n, 3);
	struct seg syn = pkt_at(&f, 0), sa = pkt_at(&f, 1), ack = pkt_at(&f, 2);
	CHECK_EQ(syn.flags, TCPF_SYN);
	CHECK_EQ(syn.sport, 40000);
	CHECK_EQ(syn.window, 65535);
	static const uint8_t opts[] = { 2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7 };
	CHECK_EQ(syn.optlen, sizeof(opts));
	CHECK_MEM(syn.opts, opts, sizeof(opts));
	CHECK_EQ(sa.flags, TCPF_SYN | TCPF_ACK);
	CHECK_EQ(sa.sport, 443);
	CHECK_EQ(sa.ack, syn.seq + 1);
	CHECK_EQ(ack.flags, TCPF_ACK);
	CHECK_EQ(ack.seq, syn.seq + 1);
	CHECK_EQ(ack.ack, sa.seq + 1);
	CHECK(syn.csum_ok && sa.csum_ok && ack.csum_ok);
	CHECK_EQ(f.cap->ts[2], 1000);
	CHECK_EQ(flow_counters(f.t)->flows_opened, 1);
	CHECK_EQ(flow_counters(f.t)->packets, 3);
	fx_free(&f);
}

TEST(flow_isn_is_deterministic)
{
	struct fx a, b;
	if (!CHECK(fx_init(&a, 0) && fx_init(&b, 0)))
		return;
	struct conn_open in = info4(1, 7, 1);
	flow_open(a.t, &in);
	in.id.origin = 99; /* the ISN depends on 4-tuple and conn_id only */
	flow_open(b.t, &in);
	in.id.conn = 8;
	in.client_port = 40001;
	flow_open(b.t, &in);
	CHECK_EQ(pkt_at(&a, 0).seq, pkt_at(&b, 0).seq);
	CHECK_EQ(pkt_at(&a, 1).seq, pkt_at(&b, 1).seq);
	CHECK(pkt_at(&b, 3).seq != pkt_at(&b, 0).seq);
	fx_free(&a);
	fx_free(&b);
}

TEST(flow_data_segments_at_mss_with_acks)
{
	struct fx f;
	uint8_t *d = pattern(4000);
	if (!CHECK(fx_init(&f, 1460) && d))
		return;
	struct conn_open in = info4(1, 1, 1);
	flow_open(f.t, &in);
	uint32_t cseq = pkt_at(&f, 2).seq, sseq = pkt_at(&f, 2).ack;
	CHECK_EQ(flow_data(f.t, 1, 1, 0, 2000, 0, d, 4000, NULL), 0);
	CHECK_EQ(f.cap->n, 3 + 6);
	static const size_t lens[] = { 1460, 1460, 1080 };
	size_t at = 0;
	for (int i = 0; i < 3; i++) {
		struct seg s = pkt_at(&f, 3 + 2 * i), a = pkt_at(&f, 4 + 2 * i);
		CHECK_EQ(s.len, lens[i]);
		CHECK_EQ(s.seq, cseq + at);
		CHECK_EQ(s.ack, sseq);
		CHECK_EQ(s.flags, TCPF_ACK | (i == 2 ? TCPF_PSH : 0));
		CHECK_MEM(s.payload, d + at, lens[i]);
		CHECK(s.csum_ok);
		at += lens[i];
		CHECK_EQ(a.sport, 443);
		CHECK_EQ(a.flags, TCPF_ACK);
		CHECK_EQ(a.len, 0);
		CHECK_EQ(a.seq, sseq);
		CHECK_EQ(a.ack, cseq + at);
	}
	CHECK_EQ(f.cap->ts[8], 2000);
	CHECK_EQ(flow_counters(f.t)->bytes[0], 4000);
	free(d);
	fx_free(&f);
}

/* Pieces cut out of d at the given lengths, skip bytes apart (as DATA
 * payloads between frame headers in one record). */
static size_t cut(const uint8_t *d, const size_t *lens, size_t n, size_t skip,
		  struct piece *v)
{
	size_t at = 0;
	for (size_t i = 0; i < n; i++) {
		v[i] = (struct piece){ d + at, lens[i] };
		at += lens[i] + skip;
	}
	return at;
}

TEST(flow_datav_full_segments_across_pieces)
{
	struct fx f;
	uint8_t *d = pattern(8000), *want = malloc(8000);
	if (!CHECK(fx_init(&f, 1000) && d && want))
		return;
	struct conn_open in = info4(1, 1, 1);
	flow_open(f.t, &in);
	uint32_t cseq = pkt_at(&f, 2).seq;
	/* 2500 + 10 + 1 + 0 + 1489 bytes: 4000 in segments of 1000, the 2nd
	 * and the 3rd and 4th span pieces (the 3rd spans four of them) */
	static const size_t lens[] = { 2500, 10, 1, 0, 1489 };
	struct piece v[5];
	cut(d, lens, 5, 9, v);
	size_t n = 0;
	for (int i = 0; i < 5; i++) {
		memcpy(want + n, v[i].p, v[i].n);
		n += v[i].n;
	}
	CHECK_EQ(flow_datav(f.t, 1, 1, 0, 2000, 0, v, 5, NULL), 0);
	CHECK_EQ(f.cap->n, 3 + 8);
	for (int i = 0; i < 4; i++) {
		struct seg s = pkt_at(&f, 3 + 2 * i);
		CHECK_EQ(s.len, 1000);
		CHECK_EQ(s.seq, cseq + 1000 * (uint32_t)i);
		CHECK_EQ(s.flags, TCPF_ACK | (i == 3 ? TCPF_PSH : 0));
		CHECK_MEM(s.payload, want + 1000 * i, 1000);
		CHECK(s.csum_ok);
		CHECK_EQ(pkt_at(&f, 4 + 2 * i).ack, cseq + 1000 * (uint32_t)(i + 1));
	}
	CHECK_EQ(flow_counters(f.t)->bytes[0], 4000);
	CHECK_EQ(f.cap->parts[3 + 2 * 2], 1); /* over four pieces: gathered into one */
	/* a write of 4500 bytes at 2600: its first 1400 were shown (the first
	 * piece and 100 bytes of the second), 3100 follow */
	static const size_t lens2[] = { 1300, 1300, 1900 };
	cut(d, lens2, 3, 0, v);
	CHECK_EQ(flow_datav(f.t, 1, 1, 0, 3000, 2600, v, 3, NULL), 0);
	CHECK_EQ(f.cap->n, 3 + 8 + 2 * 4); /* 1000, 1000, 1000, 100 */
	struct seg s = pkt_at(&f, 3 + 8);
	CHECK_EQ(s.len, 1000);
	CHECK_EQ(s.seq, cseq + 4000);
	CHECK_MEM(s.payload, d + 1400, 1000);
	/* 200 bytes of the second piece and 800 of the third: two parts, one frame */
	s = pkt_at(&f, 3 + 8 + 2);
	CHECK_EQ(f.cap->parts[3 + 8 + 2], 2);
	CHECK_EQ(s.len, 1000);
	CHECK_MEM(s.payload, d + 2400, 1000);
	CHECK(s.csum_ok);
	s = pkt_at(&f, 3 + 8 + 6);
	CHECK_EQ(s.len, 100);
	CHECK_MEM(s.payload, d + 4400, 100);
	CHECK_EQ(flow_counters(f.t)->bytes[0], 7100);
	CHECK_EQ(flow_datav(f.t, 1, 1, 0, 3000, 0, v, 3, NULL), -ERANGE);
	free(d);
	free(want);
	fx_free(&f);
}

TEST(flow_datav_many_spanning_segments_in_one_write)
{
	/* more spanning segments than one batch of packets and one scratch
	 * area hold: each is handed on before its copy is overwritten */
	struct fx f;
	enum { PIECES = 160, LEN = 150 }; /* 240 segments of 100 */
	uint8_t *d = pattern(PIECES * (LEN + 3));
	struct piece *v = calloc(PIECES, sizeof(*v));
	size_t lens[PIECES];
	if (!CHECK(fx_init(&f, 100) && d && v))
		return;
	struct conn_open in = info4(1, 1, 1);
	flow_open(f.t, &in);
	for (int i = 0; i < PIECES; i++)
		lens[i] = LEN;
	cut(d, lens, PIECES, 3, v);
	CHECK_EQ(flow_datav(f.t, 1, 1, 1, 2000, 0, v, PIECES, NULL), 0);
	size_t segs = PIECES * LEN / 100;
	CHECK_EQ(f.cap->n, 3 + 2 * segs);
	int ok = 1;
	for (size_t k = 0; k < segs; k++) {
		struct seg s = pkt_at(&f, 3 + 2 * k);
		for (size_t b = 0; b < 100; b++) {
			size_t o = k * 100 + b; /* stream offset: piece o / LEN, byte o % LEN */
			ok &= s.len == 100 && s.payload[b] == d[(o / LEN) * (LEN + 3) + o % LEN];
		}
		ok &= s.csum_ok;
	}
	CHECK(ok);
	free(d);
	free(v);
	fx_free(&f);
}

TEST(flow_ipv6_uses_mss_minus_20)
{
	struct fx f;
	uint8_t *d = pattern(3000);
	if (!CHECK(fx_init(&f, 1460) && d))
		return;
	struct conn_open in = info4(1, 1, 1);
	in.family = 6;
	memset(in.client_addr, 0, 16);
	memset(in.server_addr, 0, 16);
	in.client_addr[15] = 1;
	in.server_addr[15] = 2;
	flow_open(f.t, &in);
	CHECK_EQ(get_be16(pkt_at(&f, 0).opts + 2), 1440);
	CHECK(pkt_at(&f, 0).v6);
	flow_data(f.t, 1, 1, 1, 0, 0, d, 3000, NULL);
	CHECK_EQ(pkt_at(&f, 3).len, 1440);
	CHECK_EQ(pkt_at(&f, 5).len, 1440);
	CHECK_EQ(pkt_at(&f, 7).len, 120);
	CHECK(pkt_at(&f, 7).csum_ok);
	free(d);
	fx_free(&f);
}

TEST(flow_gap_is_exact)
{
	struct fx f;
	uint8_t *d = pattern(100);
	if (!CHECK(fx_init(&f, 0) && d))
		return;
	struct conn_open in = info4(1, 1, 1);
	flow_open(f.t, &in);
	uint64_t gap = 99;
	CHECK_EQ(flow_data(f.t, 1, 1, 1, 0, 0, d, 100, &gap), 0);
	CHECK_EQ(gap, 0);
	uint32_t s1 = pkt_at(&f, 3).seq;
	CHECK_EQ(flow_data(f.t, 1, 1, 1, 0, 250, d, 50, &gap), 0);
	CHECK_EQ(gap, 150);
	CHECK_EQ(pkt_at(&f, 5).seq, s1 + 100 + 150);
	CHECK_EQ(pkt_at(&f, 6).ack, s1 + 300);
	CHECK_EQ(flow_counters(f.t)->gap_bytes[1], 150);
	CHECK_EQ(flow_counters(f.t)->bytes[1], 150);
	free(d);
	fx_free(&f);
}

TEST(flow_gap_call_advances_sequence)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open in = info4(1, 1, 1);
	flow_open(f.t, &in);
	uint32_t c0 = pkt_at(&f, 2).seq;
	CHECK_EQ(flow_gap(f.t, 1, 1, 0, 0, 5000), 0);
	CHECK_EQ(f.cap->n, 3);
	flow_data(f.t, 1, 1, 0, 0, 5000, (const uint8_t *)"x", 1, NULL);
	CHECK_EQ(pkt_at(&f, 3).seq, c0 + 5000);
	CHECK_EQ(flow_counters(f.t)->gap_bytes[0], 5000);
	fx_free(&f);
}

TEST(flow_overlap_is_trimmed)
{
	struct fx f;
	uint8_t *d = pattern(100);
	if (!CHECK(fx_init(&f, 0) && d))
		return;
	struct conn_open in = info4(1, 1, 1);
	flow_open(f.t, &in);
	flow_data(f.t, 1, 1, 0, 0, 0, d, 100, NULL);
	uint32_t s1 = pkt_at(&f, 3).seq;
	CHECK_EQ(flow_data(f.t, 1, 1, 0, 0, 50, d, 100, NULL), 0);
	struct seg s = pkt_at(&f, 5);
	CHECK_EQ(s.seq, s1 + 100);
	CHECK_EQ(s.len, 50);
	CHECK_MEM(s.payload, d + 50, 50);
	CHECK_EQ(flow_counters(f.t)->bytes[0], 150);
	free(d);
	fx_free(&f);
}

TEST(flow_data_behind_is_erange)
{
	struct fx f;
	uint8_t *d = pattern(100);
	if (!CHECK(fx_init(&f, 0) && d))
		return;
	struct conn_open in = info4(1, 1, 1);
	flow_open(f.t, &in);
	flow_data(f.t, 1, 1, 0, 0, 0, d, 100, NULL);
	size_t n = f.cap->n;
	CHECK_EQ(flow_data(f.t, 1, 1, 0, 0, 10, d, 90, NULL), -ERANGE);
	CHECK_EQ(f.cap->n, n);
	CHECK_EQ(flow_counters(f.t)->bad_offsets, 1);
	free(d);
	fx_free(&f);
}

TEST(flow_midstream_open_shows_no_gap)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open in = info4(1, 1, 1);
	in.midstream = 1;
	in.off[0] = 1000;
	in.off[1] = 5000;
	flow_open(f.t, &in);
	CHECK_EQ(f.cap->n, 3);
	uint32_t s0 = pkt_at(&f, 1).seq + 1;
	uint64_t gap = 1;
	CHECK_EQ(flow_data(f.t, 1, 1, 1, 0, 5000, (const uint8_t *)"abc", 3, &gap), 0);
	CHECK_EQ(gap, 0);
	CHECK_EQ(pkt_at(&f, 3).seq, s0);
	CHECK_EQ(flow_counters(f.t)->gap_bytes[1], 0);
	fx_free(&f);
}

/* The engine keeps one emitter per 4-tuple: an open on a busy one shows
 * nothing. Which end is the duplicate (also after the first end closed, and
 * before the HTTP/2 stage) is the dedup stage's rule: test_pipeline.c. */
TEST(flow_duplicate_from_other_end_is_silent)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open srv = info4(1, 1, 1), cli = info4(2, 9, 0);
	flow_open(f.t, &srv);
	CHECK_EQ(flow_open(f.t, &cli), 0);
	CHECK_EQ(f.cap->n, 3);
	CHECK_EQ(flow_counters(f.t)->flows_duplicate, 1);
	CHECK_EQ(flow_data(f.t, 2, 9, 0, 0, 0, (const uint8_t *)"GET", 3, NULL), 0);
	CHECK_EQ(f.cap->n, 3);
	CHECK_EQ(flow_close(f.t, 2, 9, 0), 0);
	CHECK_EQ(f.cap->n, 3);
	CHECK_EQ(flow_counters(f.t)->flows_closed, 0);
	CHECK_EQ(flow_data(f.t, 1, 1, 0, 0, 0, (const uint8_t *)"GET", 3, NULL), 0);
	CHECK_EQ(f.cap->n, 5);
	fx_free(&f);
}

TEST(flow_duplicate_detected_with_swapped_tuple)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open a = info4(1, 1, 1), b = info4(2, 1, 1);
	memcpy(b.client_addr, a.server_addr, 16);
	memcpy(b.server_addr, a.client_addr, 16);
	b.client_port = a.server_port;
	b.server_port = a.client_port;
	flow_open(f.t, &a);
	flow_open(f.t, &b);
	CHECK_EQ(f.cap->n, 3);
	CHECK_EQ(flow_counters(f.t)->flows_duplicate, 1);
	fx_free(&f);
}

TEST(flow_both_ends_in_one_process_is_duplicate)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open srv = info4(1, 1, 1), cli = info4(1, 2, 0);
	flow_open(f.t, &srv);
	flow_open(f.t, &cli);
	CHECK_EQ(f.cap->n, 3);
	CHECK_EQ(flow_counters(f.t)->flows_duplicate, 1);
	fx_free(&f);
}

TEST(flow_same_end_reused_in_one_process_replaces_stale_flow)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open a = info4(1, 1, 1), b = info4(1, 2, 1);
	flow_open(f.t, &a);
	flow_open(f.t, &b); /* conn 1's close was missed */
	CHECK_EQ(f.cap->n, 3 + 3 + 3);
	CHECK_EQ(pkt_at(&f, 3).flags, TCPF_FIN | TCPF_ACK);
	CHECK_EQ(pkt_at(&f, 6).flags, TCPF_SYN);
	CHECK(pkt_at(&f, 6).seq != pkt_at(&f, 0).seq);
	CHECK_EQ(flow_counters(f.t)->flows_duplicate, 0);
	CHECK_EQ(flow_close(f.t, 1, 1, 0), -ENOENT);
	fx_free(&f);
}

TEST(flow_close_fin_exchange_from_mirrored_side)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open in = info4(1, 1, 1); /* the server is mirrored */
	flow_open(f.t, &in);
	uint32_t c = pkt_at(&f, 2).seq, s = pkt_at(&f, 2).ack;
	CHECK_EQ(flow_close(f.t, 1, 1, 3000), 0);
	CHECK_EQ(f.cap->n, 6);
	struct seg a = pkt_at(&f, 3), b = pkt_at(&f, 4), z = pkt_at(&f, 5);
	CHECK_EQ(a.sport, 443);
	CHECK_EQ(a.flags, TCPF_FIN | TCPF_ACK);
	CHECK_EQ(a.seq, s);
	CHECK_EQ(a.ack, c);
	CHECK_EQ(b.sport, 40000);
	CHECK_EQ(b.flags, TCPF_FIN | TCPF_ACK);
	CHECK_EQ(b.seq, c);
	CHECK_EQ(b.ack, s + 1);
	CHECK_EQ(z.sport, 443);
	CHECK_EQ(z.flags, TCPF_ACK);
	CHECK_EQ(z.seq, s + 1);
	CHECK_EQ(z.ack, c + 1);
	CHECK_EQ(f.cap->ts[5], 3000);
	CHECK_EQ(flow_counters(f.t)->flows_closed, 1);
	CHECK_EQ(flow_data(f.t, 1, 1, 0, 0, 0, (const uint8_t *)"x", 1, NULL), -ENOENT);
	CHECK_EQ(flow_counters(f.t)->orphan_records, 1);
	fx_free(&f);
}

TEST(flow_close_unknown_is_enoent)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	CHECK_EQ(flow_close(f.t, 1, 1, 0), -ENOENT);
	CHECK_EQ(flow_gap(f.t, 1, 1, 0, 0, 10), -ENOENT);
	CHECK_EQ(flow_counters(f.t)->orphan_records, 2);
	CHECK_EQ(f.cap->n, 0);
	fx_free(&f);
}

TEST(flow_reopen_same_id_closes_old_first)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open in = info4(1, 1, 1);
	flow_open(f.t, &in);
	in.client_port = 40001;
	flow_open(f.t, &in);
	CHECK_EQ(f.cap->n, 9);
	CHECK_EQ(pkt_at(&f, 3).flags, TCPF_FIN | TCPF_ACK);
	CHECK_EQ(pkt_at(&f, 6).flags, TCPF_SYN);
	CHECK_EQ(pkt_at(&f, 6).sport, 40001);
	CHECK_EQ(flow_counters(f.t)->flows_closed, 1);
	fx_free(&f);
}

TEST(flow_same_connection_announced_again_is_eexist)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open in = info4(1, 1, 1);
	flow_open(f.t, &in);
	flow_data(f.t, 1, 1, 0, 0, 0, (const uint8_t *)"abc", 3, NULL);
	uint32_t next = pkt_at(&f, 3).seq + 3;
	in.midstream = 1;
	in.off[0] = 3;
	CHECK_EQ(flow_open(f.t, &in), -EEXIST);
	CHECK_EQ(f.cap->n, 5);
	CHECK_EQ(flow_data(f.t, 1, 1, 0, 0, 3, (const uint8_t *)"d", 1, NULL), 0);
	CHECK_EQ(pkt_at(&f, 5).seq, next);
	CHECK_EQ(flow_counters(f.t)->flows_opened, 1);
	fx_free(&f);
}

TEST(flow_close_proc_closes_only_its_flows)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	for (int i = 0; i < 3; i++) {
		struct conn_open in = info4(1 + (i == 2), 1 + i, 1);
		in.client_port = (uint16_t)(40000 + i);
		flow_open(f.t, &in);
	}
	flow_close_proc(f.t, 1, 0);
	CHECK_EQ(flow_counters(f.t)->flows_closed, 2);
	CHECK_EQ(flow_data(f.t, 2, 3, 0, 0, 0, (const uint8_t *)"x", 1, NULL), 0);
	CHECK_EQ(flow_data(f.t, 1, 1, 0, 0, 0, (const uint8_t *)"x", 1, NULL), -ENOENT);
	flow_close_all(f.t, 0);
	CHECK_EQ(flow_counters(f.t)->flows_closed, 3);
	fx_free(&f);
}

TEST(flow_many_flows_survive_table_growth)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	int bad = 0;
	for (int i = 0; i < 1000; i++) {
		struct conn_open in = info4(1, (uint64_t)i + 1, 1);
		in.client_port = (uint16_t)(20000 + i);
		bad |= flow_open(f.t, &in) != 0;
	}
	CHECK(!bad);
	CHECK_EQ(flow_counters(f.t)->flows_duplicate, 0);
	for (int i = 0; i < 1000; i++)
		bad |= flow_gap(f.t, 1, (uint64_t)i + 1, 0, 0, 1) != 0;
	CHECK(!bad);
	flow_close_all(f.t, 0);
	CHECK_EQ(flow_counters(f.t)->flows_closed, 1000);
	fx_free(&f);
}

TEST(flow_large_record_is_batched_in_order)
{
	struct fx f;
	size_t len = 100 * 1460;
	uint8_t *d = pattern(len);
	if (!CHECK(fx_init(&f, 0) && d))
		return;
	struct conn_open in = info4(1, 1, 1);
	flow_open(f.t, &in);
	f.cap->calls = 0;
	CHECK_EQ(flow_data(f.t, 1, 1, 1, 0, 0, d, len, NULL), 0);
	CHECK_EQ(f.cap->n, 3 + 200);
	CHECK(f.cap->calls >= 4); /* 200 packets, at most 64 per call */
	int bad = 0;
	for (size_t i = 0; i < 100; i++) {
		struct seg s = pkt_at(&f, 3 + 2 * i);
		bad |= s.len != 1460 || memcmp(s.payload, d + i * 1460, 1460) != 0 || !s.csum_ok;
	}
	CHECK(!bad);
	free(d);
	fx_free(&f);
}

TEST(flow_bad_direction_is_einval)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open in = info4(1, 1, 1);
	flow_open(f.t, &in);
	CHECK_EQ(flow_data(f.t, 1, 1, 2, 0, 0, (const uint8_t *)"x", 1, NULL), -EINVAL);
	fx_free(&f);
}

/* ---- fork handover ---- */

/* A child's OPEN for the parent's connection (proc 1, conn 5) it inherited. */
static struct conn_open child_of(uint64_t parent, uint64_t conn, uint64_t c2s_off)
{
	struct conn_open in = info4(2, conn, 0);
	in.parent_origin = parent;
	in.midstream = 1;
	in.off[0] = c2s_off;
	return in;
}

TEST(flow_handover_child_continues_one_connection)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open par = info4(1, 5, 0), kid = child_of(1, 5, 2);
	CHECK_EQ(flow_open(f.t, &par), 0);
	CHECK_EQ(flow_data(f.t, 1, 5, 0, 0, 0, (const uint8_t *)"AB", 2, NULL), 0);
	struct seg first = pkt_at(&f, 3);
	size_t n = f.cap->n;
	CHECK_EQ(flow_open(f.t, &kid), 0);
	CHECK_EQ(f.cap->n, n); /* no SYN again */
	CHECK_EQ(flow_counters(f.t)->flows_duplicate, 0);
	CHECK_EQ(flow_counters(f.t)->flows_handed_over, 1);
	CHECK_EQ(flow_release(f.t, 1, 5, 0), 0); /* the parent lets go: no FIN */
	CHECK_EQ(f.cap->n, n);
	uint64_t gap = 1;
	CHECK_EQ(flow_data(f.t, 2, 5, 0, 0, 2, (const uint8_t *)"CD", 2, &gap), 0);
	CHECK_EQ(gap, 0);
	CHECK_EQ(f.cap->n, n + 2);
	struct seg next = pkt_at(&f, n);
	CHECK_EQ(next.seq, first.seq + 2);
	CHECK_MEM(next.payload, "CD", 2);
	CHECK_EQ(flow_close(f.t, 2, 5, 0), 0); /* the last holder: FIN */
	CHECK_EQ(f.cap->n, n + 5);
	CHECK(pkt_at(&f, n + 2).flags & TCPF_FIN);
	CHECK_EQ(flow_counters(f.t)->flows_closed, 1);
	CHECK_EQ(flow_close(f.t, 1, 5, 0), -ENOENT);
	fx_free(&f);
}

TEST(flow_handover_parent_exit_keeps_the_flow)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open par = info4(1, 5, 0), kid = child_of(1, 5, 0);
	flow_open(f.t, &par);
	CHECK_EQ(flow_open(f.t, &kid), 0);
	flow_close_proc(f.t, 1, 0);
	CHECK_EQ(f.cap->n, 3);
	CHECK_EQ(flow_data(f.t, 2, 5, 1, 0, 0, (const uint8_t *)"OK", 2, NULL), 0);
	CHECK_EQ(f.cap->n, 5);
	flow_close_proc(f.t, 2, 0);
	CHECK_EQ(f.cap->n, 8);
	CHECK_EQ(flow_counters(f.t)->flows_closed, 1);
	fx_free(&f);
}

TEST(flow_handover_released_flow_lingers_then_ends)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open par = info4(1, 5, 0);
	par.ts_ns = 1000;
	flow_open(f.t, &par);
	CHECK_EQ(flow_release(f.t, 1, 5, 1000), 0);
	flow_expire(f.t, 2000);
	CHECK_EQ(f.cap->n, 3);
	CHECK(flow_tuple_busy(f.t, 4, par.client_addr, 40000, par.server_addr, 443));
	flow_expire(f.t, 1000 + FLOW_LINGER_NS);
	CHECK_EQ(f.cap->n, 6);
	CHECK_EQ(flow_counters(f.t)->flows_closed, 1);
	/* a released flow the child never adopted is freed with the table too */
	flow_open(f.t, &par);
	CHECK_EQ(flow_release(f.t, 1, 5, 1000), 0);
	fx_free(&f);
}

TEST(flow_handover_needs_the_parents_conn)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open par = info4(1, 5, 0);
	struct conn_open other_id = child_of(1, 6, 0), other_proc = child_of(3, 5, 0);
	flow_open(f.t, &par);
	CHECK_EQ(flow_open(f.t, &other_id), 0);
	other_proc.id.origin = 4;
	CHECK_EQ(flow_open(f.t, &other_proc), 0);
	CHECK_EQ(f.cap->n, 3);
	CHECK_EQ(flow_counters(f.t)->flows_duplicate, 2);
	CHECK_EQ(flow_counters(f.t)->flows_handed_over, 0);
	fx_free(&f);
}

TEST(flow_handover_exit_after_fork_lingers_for_the_child)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open par = info4(1, 5, 0), later = info4(1, 6, 0), kid = child_of(1, 5, 0);
	later.client_port = 40001;
	flow_open(f.t, &par);
	flow_proc_forked(f.t, 1);
	flow_open(f.t, &later); /* opened after the fork: its exit ends it */
	CHECK_EQ(f.cap->n, 6);
	flow_close_proc(f.t, 1, 0);
	CHECK_EQ(f.cap->n, 9);
	CHECK_EQ(flow_counters(f.t)->flows_closed, 1);
	CHECK_EQ(flow_open(f.t, &kid), 0);
	CHECK_EQ(flow_counters(f.t)->flows_handed_over, 1);
	CHECK_EQ(flow_data(f.t, 2, 5, 0, 0, 0, (const uint8_t *)"GET", 3, NULL), 0);
	CHECK_EQ(f.cap->n, 11);
	CHECK_EQ(flow_close(f.t, 2, 5, 0), 0);
	CHECK_EQ(f.cap->n, 14);
	CHECK_EQ(flow_counters(f.t)->flows_closed, 2);
	fx_free(&f);
}

/* ---- synthetic flows (HTTP/2 streams) give way to real connections ---- */

static struct conn_open synth4(uint64_t proc, uint64_t conn, uint16_t port)
{
	struct conn_open in = info4(proc, conn, 1);
	in.client_port = port;
	in.synthetic = 1;
	return in;
}

/* A real connection from another process on a synthetic flow's 4-tuple:
 * the real one gets it (SYN there, not a duplicate); the synthetic one ends
 * there with a FIN and goes on from the next free port with a SYN of its own. */
static void real_takes_synthetic_tuple(uint64_t real_proc)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open s = synth4(1, 1ull << 63 | 1, 10000), r = info4(real_proc, 7, 1);
	r.client_port = 10000;
	CHECK_EQ(flow_open(f.t, &s), 0);
	CHECK_EQ(flow_data(f.t, 1, s.id.conn, 0, 0, 0, (const uint8_t *)"GET", 3, NULL), 0);
	CHECK_EQ(f.cap->n, 5);
	CHECK_EQ(flow_open(f.t, &r), 0);
	CHECK_EQ(flow_counters(f.t)->flows_duplicate, 0);
	CHECK_EQ(flow_counters(f.t)->synthetic_moved, 1);
	/* FIN exchange of the synthetic flow on 10000, SYN on 10001, the real SYN on 10000 */
	if (!CHECK_EQ(f.cap->n, 5 + 3 + 3 + 3))
		goto out;
	CHECK(pkt_at(&f, 5).flags == (TCPF_FIN | TCPF_ACK) && pkt_at(&f, 5).dport == 10000);
	CHECK(pkt_at(&f, 8).flags == TCPF_SYN && pkt_at(&f, 8).sport == 10001);
	CHECK(pkt_at(&f, 11).flags == TCPF_SYN && pkt_at(&f, 11).sport == 10000);
	/* both go on: the synthetic flow at its offsets on its new port */
	CHECK_EQ(flow_data(f.t, 1, s.id.conn, 0, 0, 3, (const uint8_t *)" /", 2, NULL), 0);
	CHECK_EQ(flow_data(f.t, real_proc, 7, 0, 0, 0, (const uint8_t *)"real", 4, NULL), 0);
	if (!CHECK_EQ(f.cap->n, 18))
		goto out;
	struct seg d = pkt_at(&f, 14);
	CHECK(d.sport == 10001 && d.len == 2 && !memcmp(d.payload, " /", 2));
	CHECK_EQ(d.seq, pkt_at(&f, 8).seq + 1);
	d = pkt_at(&f, 16);
	CHECK(d.sport == 10000 && d.len == 4 && d.seq == pkt_at(&f, 11).seq + 1);
	CHECK_EQ(flow_close(f.t, 1, s.id.conn, 0), 0);
	CHECK_EQ(flow_close(f.t, real_proc, 7, 0), 0);
	CHECK_EQ(flow_counters(f.t)->orphan_records, 0);
out:
	fx_free(&f);
}

TEST(flow_real_open_moves_synthetic_flow_other_process)
{
	real_takes_synthetic_tuple(2); /* was: marked duplicate, never shown */
}

TEST(flow_real_open_moves_synthetic_flow_same_process)
{
	real_takes_synthetic_tuple(1); /* was: the synthetic flow ended, its data orphaned */
}

TEST(flow_synthetic_open_never_takes_a_busy_tuple)
{
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open r = info4(2, 7, 1), s = synth4(1, 1ull << 63 | 1, 40000);
	CHECK_EQ(flow_open(f.t, &r), 0);
	CHECK(flow_tuple_busy(f.t, 4, r.client_addr, 40000, r.server_addr, 443));
	CHECK_EQ(flow_open(f.t, &s), -EADDRINUSE); /* open */
	CHECK_EQ(flow_close(f.t, 2, 7, 0), 0);
	CHECK(flow_tuple_busy(f.t, 4, r.client_addr, 40000, r.server_addr, 443));
	CHECK_EQ(flow_open(f.t, &s), -EADDRINUSE); /* just closed: TIME_WAIT */
	size_t n = f.cap->n;
	s.client_port = 10000;
	CHECK(!flow_tuple_busy(f.t, 4, s.client_addr, 10000, s.server_addr, 443));
	CHECK_EQ(flow_open(f.t, &s), 0);
	CHECK_EQ(f.cap->n, n + 3);
	CHECK_EQ(flow_counters(f.t)->flows_opened, 2);
	fx_free(&f);
}

TEST(flow_closed_synthetic_flow_never_makes_a_real_one_duplicate)
{
	/* a synthetic flow has no other end: a real OPEN of the other side on its
	 * 4-tuple right after it closed is a connection of its own */
	struct fx f;
	if (!CHECK(fx_init(&f, 0)))
		return;
	struct conn_open s = synth4(1, 1ull << 63 | 1, 10000), r = info4(2, 7, 0);
	r.client_port = 10000;
	CHECK_EQ(flow_open(f.t, &s), 0);
	CHECK_EQ(flow_close(f.t, 1, s.id.conn, 0), 0);
	size_t n = f.cap->n;
	CHECK_EQ(flow_open(f.t, &r), 0);
	CHECK_EQ(flow_counters(f.t)->flows_duplicate, 0);
	CHECK_EQ(f.cap->n, n + 3);
	fx_free(&f);
}

/* ---- event sinks (the tunnel): what the flow engine hands them ---- */

struct evlog {
	size_t n;
	char line[32][96];
};

static void ev_add(struct sink *s, const char *fmt, unsigned long long a, unsigned long long b,
		   unsigned long long c, unsigned long long d)
{
	struct evlog *l = s->priv;
	if (l->n < 32)
		snprintf(l->line[l->n++], sizeof(l->line[0]), fmt, a, b, c, d);
}

static void ev_open(struct sink *s, const struct conn_tag *t, uint64_t ts, const uint64_t off[2],
		    int synthetic)
{
	ev_add(s, "open port=%llu off=%llu/%llu syn=%llu", t->client_port, off[0], off[1],
	       (unsigned long long)synthetic);
}

static void ev_data(struct sink *s, const struct conn_tag *t, int dir, uint64_t ts, uint64_t off,
		    const uint8_t *p, size_t n)
{
	ev_add(s, "data port=%llu dir=%llu off=%llu n=%llu", t->client_port, (unsigned)dir, off, n);
}

static void ev_gap(struct sink *s, const struct conn_tag *t, int dir, uint64_t ts, uint64_t off,
		   uint64_t n)
{
	ev_add(s, "gap port=%llu dir=%llu off=%llu n=%llu", t->client_port, (unsigned)dir, off, n);
}

static void ev_close(struct sink *s, const struct conn_tag *t, uint64_t ts, unsigned how)
{
	ev_add(s, "close port=%llu how=%llu%.0llu%.0llu", t->client_port, how, 0ull, 0ull);
}

static const struct sink_event_ops ev_ops = { ev_open, ev_data, ev_gap, ev_close, NULL };
static const struct sink_ops evsink_ops = { .name = "ev", .events = &ev_ops };

/* A table whose only output is an event sink (an agent with only -t). */
struct evfx {
	struct evlog log;
	struct sink sink;
	struct sink *sinks[1];
	struct sink_set set;
	struct flow_table *t;
};

static int evfx_init(struct evfx *f)
{
	memset(f, 0, sizeof(*f));
	f->sink.ops = &evsink_ops;
	f->sink.priv = &f->log;
	f->sinks[0] = &f->sink;
	f->set = (struct sink_set){ .v = f->sinks, .n = 1, .n_event = 1 };
	struct flow_config cfg = { .mss = 1460, .sinks = &f->set };
	f->t = flow_table_new(&cfg);
	return f->t != NULL;
}

static int ev_is(const struct evfx *f, size_t i, const char *want)
{
	if (i < f->log.n && !strcmp(f->log.line[i], want))
		return 1;
	fprintf(stderr, "  event %zu: \"%s\", want \"%s\"\n", i, i < f->log.n ? f->log.line[i] : "",
		want);
	return 0;
}

TEST(flow_event_sink_gets_the_shown_connection)
{
	struct evfx f;
	if (!CHECK(evfx_init(&f)))
		return;
	struct conn_open in = info4(1, 1, 1);
	uint8_t d[100] = { 0 };
	uint64_t gap = 0;
	CHECK_EQ(flow_open(f.t, &in), 0);
	CHECK_EQ(flow_data(f.t, 1, 1, 0, 2000, 0, d, 10, &gap), 0);
	CHECK_EQ(flow_data(f.t, 1, 1, 0, 2001, 5, d, 8, &gap), 0);   /* 5 behind: trimmed */
	CHECK_EQ(flow_data(f.t, 1, 1, 1, 2002, 30, d, 4, &gap), 0);  /* 30 skipped: a gap */
	CHECK_EQ(gap, 30);
	CHECK_EQ(flow_gap(f.t, 1, 1, 1, 2003, 6), 0);
	/* the other end of the same connection, from another process: a duplicate */
	struct conn_open other = info4(2, 9, 0);
	CHECK_EQ(flow_open(f.t, &other), 0);
	CHECK_EQ(flow_data(f.t, 2, 9, 0, 2004, 0, d, 50, &gap), 0);
	CHECK_EQ(flow_close(f.t, 1, 1, 2005), 0);
	CHECK_EQ(flow_counters(f.t)->packets, 0);                  /* no packet sink: none made */
	CHECK_EQ(f.log.n, 7);
	CHECK(ev_is(&f, 0, "open port=40000 off=0/0 syn=0"));
	CHECK(ev_is(&f, 1, "data port=40000 dir=0 off=0 n=10"));
	CHECK(ev_is(&f, 2, "data port=40000 dir=0 off=10 n=3"));
	CHECK(ev_is(&f, 3, "gap port=40000 dir=1 off=0 n=30"));
	CHECK(ev_is(&f, 4, "data port=40000 dir=1 off=30 n=4"));
	CHECK(ev_is(&f, 5, "gap port=40000 dir=1 off=34 n=6"));
	CHECK(ev_is(&f, 6, "close port=40000 how=0"));
	flow_table_free(f.t);
}

TEST(flow_event_sink_sees_a_moved_synthetic_flow_as_close_and_open)
{
	struct evfx f;
	if (!CHECK(evfx_init(&f)))
		return;
	struct conn_open syn = info4(5, 1, 0);
	syn.synthetic = 1;
	uint8_t d[20] = { 0 };
	CHECK_EQ(flow_open(f.t, &syn), 0);
	CHECK_EQ(flow_data(f.t, 5, 1, 0, 2000, 0, d, 20, NULL), 0);
	struct conn_open real = info4(6, 1, 0);   /* a real connection takes the 4-tuple */
	CHECK_EQ(flow_open(f.t, &real), 0);
	CHECK_EQ(f.log.n, 5);
	CHECK(ev_is(&f, 0, "open port=40000 off=0/0 syn=1"));
	CHECK(ev_is(&f, 2, "close port=40000 how=1"));
	CHECK(f.log.n > 3 && !strncmp(f.log.line[3], "open port=", 10) &&
	      strstr(f.log.line[3], " off=20/0 syn=1") && strcmp(f.log.line[3], f.log.line[0]));
	CHECK(ev_is(&f, 4, "open port=40000 off=0/0 syn=0"));
	flow_table_free(f.t);
}

TEST(flow_isn_seed_and_vlan)
{
	struct fx a, b;
	if (!CHECK(fx_init(&a, 0) && fx_init(&b, 0)))
		return;
	struct conn_open in = info4(1, 77, 0);
	CHECK_EQ(flow_open(a.t, &in), 0);
	/* another id with the first one's id as the seed: the same sequence numbers */
	struct conn_meta *m = conn_meta_new();
	if (!CHECK(m))
		return;
	m->vlan = 0x123;
	struct conn_open in2 = info4(9, 5, 0);
	in2.isn_seed = 77;
	in2.meta = m;
	CHECK_EQ(flow_open(b.t, &in2), 0);
	conn_meta_unref(m);
	CHECK_EQ(a.cap->n, 3);
	CHECK_EQ(b.cap->n, 3);
	for (size_t i = 0; i < 3 && i < b.cap->n; i++) {
		const uint8_t *x = a.cap->frame[i], *y = b.cap->frame[i];
		CHECK_EQ(b.cap->len[i], a.cap->len[i] + 4);
		CHECK(get_be16(y + 12) == 0x8100 && get_be16(y + 14) == 0x123);
		CHECK_MEM(y, x, 12);
		CHECK_MEM(y + 16, x + 12, a.cap->len[i] - 12);  /* same seq, ack, checksums */
	}
	fx_free(&a);
	fx_free(&b);
}
