/* Unit tests for packets/synth.c: checksums and frames against known-good bytes. */
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "packets/synth.h"
#include "unit.h"

/*
 * The frames below were built by an independent Python implementation and
 * checked with tshark (ip.check_checksum, tcp.check_checksum: Good).
 */

static const uint8_t addr_c4[16] = { 10, 0, 0, 1 };
static const uint8_t addr_s4[16] = { 10, 0, 0, 2 };
static const uint8_t addr_c6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
static const uint8_t addr_s6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 2 };

/* Straightforward RFC 1071 over big-endian 16-bit words, as a reference. */
static uint16_t ref_csum(const uint8_t *p, size_t len)
{
	uint32_t s = 0;
	for (size_t i = 0; i + 1 < len; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		s += (uint32_t)p[len - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

TEST(csum_rfc1071_example)
{
	/* RFC 1071 section 3: the sum of these words is 0xddf2 */
	static const uint8_t b[] = { 0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7 };
	CHECK_EQ(csum_fold(csum_add(0, b, sizeof(b))), 0x220d);
}

TEST(csum_ipv4_header_example)
{
	static const uint8_t h[] = {
		0x45, 0x00, 0x00, 0x73, /* version 4, IHL 5, total length 115 */
		0x00, 0x00, 0x40, 0x00, /* id 0, DF */
		0x40, 0x11, 0x00, 0x00, /* TTL 64, UDP, checksum zeroed */
		0xc0, 0xa8, 0x00, 0x01, /* 192.168.0.1 */
		0xc0, 0xa8, 0x00, 0xc7, /* 192.168.0.199 */
	};
	CHECK_EQ(csum_fold(csum_add(0, h, sizeof(h))), 0xb861);
}

TEST(csum_odd_length_pads_low_byte)
{
	/* 0x0102 + 0x0300 = 0x0402 -> ~ = 0xfbfd */
	static const uint8_t b[] = { 0x01, 0x02, 0x03 };
	CHECK_EQ(csum_fold(csum_add(0, b, sizeof(b))), 0xfbfd);
}

TEST(csum_over_correct_checksum_is_zero)
{
	static const uint8_t h[] = {
		0x45, 0x00, 0x00, 0x73, /* as above, with */
		0x00, 0x00, 0x40, 0x00,
		0x40, 0x11, 0xb8, 0x61, /* the correct checksum filled in */
		0xc0, 0xa8, 0x00, 0x01,
		0xc0, 0xa8, 0x00, 0xc7,
	};
	CHECK_EQ(csum_fold(csum_add(0, h, sizeof(h))), 0);
}

TEST(csum_matches_reference_all_lengths_and_alignments)
{
	uint8_t *buf = malloc(4096 + 8);
	if (!CHECK(buf))
		return;
	srand(7);
	for (size_t i = 0; i < 4096 + 8; i++)
		buf[i] = (uint8_t)rand();
	int bad = 0;
	for (size_t align = 0; align < 8; align++)
		for (size_t len = 0; len <= 600 && !bad; len++)
			bad = csum_fold(csum_add(0, buf + align, len)) != ref_csum(buf + align, len);
	CHECK(!bad);
	CHECK_EQ(csum_fold(csum_add(0, buf + 3, 4093)), ref_csum(buf + 3, 4093));
	free(buf);
}

TEST(csum_even_pieces_equal_whole)
{
	uint8_t b[1501];
	for (size_t i = 0; i < sizeof(b); i++)
		b[i] = (uint8_t)(i * 37 + 11);
	uint64_t s = csum_add(0, b, 2);
	s = csum_add(s, b + 2, 498);
	s = csum_add(s, b + 500, 1001);
	CHECK_EQ(csum_fold(s), ref_csum(b, sizeof(b)));
}

TEST(csum_all_ones_large)
{
	/* 64 KiB of 0xff: every word 0xffff; the complement sum is 0 (-0) */
	size_t n = 65536;
	uint8_t *b = malloc(n);
	if (!CHECK(b))
		return;
	memset(b, 0xff, n);
	CHECK_EQ(csum_fold(csum_add(0, b, n)), ref_csum(b, n));
	free(b);
}

static void conn4(struct synth_conn *c)
{
	synth_conn_init(c, 4, addr_c4, 40000, addr_s4, 443);
}

TEST(synth_ipv4_syn_bytes)
{
	static const uint8_t want[] = {
		0x02, 0x00, 0x0a, 0x00, 0x00, 0x02, /* dst MAC: 02:00 + 10.0.0.2 */
		0x02, 0x00, 0x0a, 0x00, 0x00, 0x01, /* src MAC: 02:00 + 10.0.0.1 */
		0x08, 0x00,             /* IPv4 */
		0x45, 0x00, 0x00, 0x34, /* version 4, IHL 5, total length 52 */
		0x12, 0x34, 0x40, 0x00, /* id 0x1234, DF */
		0x40, 0x06, 0x14, 0x8e, /* TTL 64, TCP, header checksum */
		0x0a, 0x00, 0x00, 0x01, /* 10.0.0.1 */
		0x0a, 0x00, 0x00, 0x02, /* 10.0.0.2 */
		0x9c, 0x40, 0x01, 0xbb, /* ports 40000 -> 443 */
		0x01, 0x02, 0x03, 0x04, /* seq */
		0x00, 0x00, 0x00, 0x00, /* ack */
		0x80, 0x02, 0xff, 0xff, /* data offset 8 words, SYN, window 65535 */
		0xb9, 0x0d, 0x00, 0x00, /* TCP checksum, urgent pointer */
		0x02, 0x04, 0x05, 0xb4, /* MSS 1460 */
		0x01, 0x01, 0x04, 0x02, /* NOP NOP SACK-permitted */
		0x01, 0x03, 0x03, 0x07, /* NOP window scale 7 */
	};
	struct synth_conn c;
	struct synth_syn_opts syn = { .mss = 1460, .wscale = 7, .sack_ok = 1 };
	uint8_t hdr[SYNTH_HDR_MAX];
	conn4(&c);
	c.ip_id[0] = 0x1234;
	size_t n = synth_tcp(hdr, &c, 0, 0x01020304, 0, TCPF_SYN, 65535, &syn, NULL, 0);
	CHECK_EQ(n, sizeof(want));
	CHECK_MEM(hdr, want, sizeof(want));
	CHECK_EQ(c.ip_id[0], 0x1235);
}

TEST(synth_ipv4_data_odd_payload_bytes)
{
	static const uint8_t want[] = {
		0x02, 0x00, 0x0a, 0x00, 0x00, 0x01, /* dst MAC: the client */
		0x02, 0x00, 0x0a, 0x00, 0x00, 0x02, /* src MAC: the server */
		0x08, 0x00,             /* IPv4 */
		0x45, 0x00, 0x00, 0x2d, /* total length 45 */
		0x01, 0x02, 0x40, 0x00, /* id 0x0102, DF */
		0x40, 0x06, 0x25, 0xc7, /* TTL 64, TCP, header checksum */
		0x0a, 0x00, 0x00, 0x02, /* 10.0.0.2 */
		0x0a, 0x00, 0x00, 0x01, /* 10.0.0.1 */
		0x01, 0xbb, 0x9c, 0x40, /* ports 443 -> 40000 */
		0xa0, 0xb0, 0xc0, 0xd0, /* seq */
		0x01, 0x02, 0x03, 0x05, /* ack */
		0x50, 0x18, 0x02, 0x00, /* data offset 5, PSH ACK, window 512 */
		0x52, 0x6f, 0x00, 0x00, /* TCP checksum over an odd payload */
		'h', 'e', 'l', 'l', 'o', /* payload, 5 bytes */
	};
	struct synth_conn c;
	uint8_t hdr[SYNTH_HDR_MAX];
	conn4(&c);
	c.ip_id[1] = 0x0102;
	size_t n = synth_tcp(hdr, &c, 1, 0xa0b0c0d0, 0x01020305, TCPF_PSH | TCPF_ACK,
			     512, NULL, (const uint8_t *)"hello", 5);
	CHECK_EQ(n, sizeof(want) - 5);
	CHECK_MEM(hdr, want, sizeof(want) - 5);
}

TEST(synth_ipv6_data_bytes)
{
	static const uint8_t want[] = {
		0x02, 0x06, 0x71, 0x5b, 0x09, 0xad, /* dst MAC: 02:06 + FNV-1a of 2001:db8::2 */
		0x02, 0x06, 0x6e, 0x5b, 0x04, 0xf4, /* src MAC: 02:06 + FNV-1a of 2001:db8::1 */
		0x86, 0xdd,             /* IPv6 */
		0x60, 0x00, 0x00, 0x00, /* version 6, class 0, flow label 0 */
		0x00, 0x17, 0x06, 0x40, /* payload length 23, TCP, hop limit 64 */
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, /* 2001:db8::1 */
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, /* 2001:db8::2 */
		0x9c, 0x40, 0x01, 0xbb, /* ports 40000 -> 443 */
		0x11, 0x22, 0x33, 0x44, /* seq */
		0x55, 0x66, 0x77, 0x88, /* ack */
		0x50, 0x18, 0x02, 0x00, /* data offset 5, PSH ACK, window 512 */
		0xde, 0xa1, 0x00, 0x00, /* TCP checksum (IPv6 pseudo-header), urgent */
		'a', 'b', 'c',          /* payload, 3 bytes */
	};
	struct synth_conn c;
	uint8_t hdr[SYNTH_HDR_MAX];
	synth_conn_init(&c, 6, addr_c6, 40000, addr_s6, 443);
	size_t n = synth_tcp(hdr, &c, 0, 0x11223344, 0x55667788, TCPF_PSH | TCPF_ACK,
			     512, NULL, (const uint8_t *)"abc", 3);
	CHECK_EQ(n, sizeof(want) - 3);
	CHECK_MEM(hdr, want, sizeof(want) - 3);
}

TEST(synth_ip_id_increments_per_sender)
{
	struct synth_conn c;
	uint8_t hdr[SYNTH_HDR_MAX];
	conn4(&c);
	uint16_t c0 = c.ip_id[0], s0 = c.ip_id[1];
	synth_tcp(hdr, &c, 0, 1, 1, TCPF_ACK, 512, NULL, NULL, 0);
	CHECK_EQ(get_be16(hdr + 18), c0);
	synth_tcp(hdr, &c, 0, 1, 1, TCPF_ACK, 512, NULL, NULL, 0);
	CHECK_EQ(get_be16(hdr + 18), (uint16_t)(c0 + 1));
	synth_tcp(hdr, &c, 1, 1, 1, TCPF_ACK, 512, NULL, NULL, 0);
	CHECK_EQ(get_be16(hdr + 18), s0);
}

TEST(synth_mac_is_per_host)
{
	struct synth_conn a, b;
	synth_conn_init(&a, 4, addr_c4, 40000, addr_s4, 443);
	synth_conn_init(&b, 4, addr_s4, 5555, addr_c4, 80); /* roles swapped */
	CHECK_MEM(a.end[0].mac, b.end[1].mac, 6);
	CHECK_MEM(a.end[1].mac, b.end[0].mac, 6);
	CHECK_EQ(a.end[0].mac[0] & 0x03, 0x02); /* locally administered, unicast */
}

TEST(synth_rejects_payload_too_big)
{
	struct synth_conn c;
	uint8_t hdr[SYNTH_HDR_MAX];
	static uint8_t big[65536];
	conn4(&c);
	CHECK_EQ(synth_tcp(hdr, &c, 0, 1, 1, TCPF_ACK, 512, NULL, big, 65496), 0);
	CHECK_EQ(synth_tcp(hdr, &c, 0, 1, 1, TCPF_ACK, 512, NULL, big, 65495), 54);
}

/*
 * The header checksums are summed from the values (synth.c): every field,
 * both families, SYN options either way, any payload length and alignment,
 * checked by the reference sum over the bytes written (IP header and TCP
 * pseudo-header + segment both sum to zero).
 */
TEST(synth_checksums_over_random_segments)
{
	static uint8_t pay[2100];
	uint32_t x = 12345;
	for (size_t i = 0; i < sizeof(pay); i++) {
		x = x * 1103515245u + 12345u;
		pay[i] = (uint8_t)(x >> 16);
	}
	int bad = 0;
	for (int it = 0; it < 4000; it++) {
		x = x * 1103515245u + 12345u;
		uint32_t r = x;
		int fam = (r & 1) ? 6 : 4, from = (r >> 1) & 1;
		uint8_t ca[16], sa[16];
		for (int i = 0; i < 16; i++) {
			x = x * 1103515245u + 12345u;
			ca[i] = (uint8_t)(x >> 8);
			sa[i] = (uint8_t)(x >> 16);
		}
		x = x * 1103515245u + 12345u;
		struct synth_conn c;
		synth_conn_init(&c, (uint8_t)fam, ca, (uint16_t)x, sa, (uint16_t)(x >> 16));
		x = x * 1103515245u + 12345u;
		c.ip_id[from] = (uint16_t)x;
		uint32_t seq = x * 2654435761u, ack = x * 40503u + 7;
		uint8_t flags = (uint8_t)(x >> 24);
		struct synth_syn_opts syn = { .mss = (uint16_t)(x >> 5), .wscale = (uint8_t)(x >> 13),
					      .sack_ok = (x >> 21) & 1 };
		size_t align = (x >> 3) % 5, len = (x >> 7) % 2000;
		uint8_t pkt[SYNTH_HDR_MAX + 2000];
		size_t n = synth_tcp(pkt, &c, from, seq, ack, flags, (uint16_t)(x >> 9), &syn,
				     pay + align, len);
		memcpy(pkt + n, pay + align, len);
		size_t ip = 14, iphl = fam == 6 ? 40 : 20, tcp_total = n - ip - iphl + len;
		uint8_t ph[40];
		size_t phl;
		if (fam == 6) {
			memcpy(ph, pkt + ip + 8, 32);
			put_be32(ph + 32, (uint32_t)tcp_total);
			put_be32(ph + 36, 6);
			phl = 40;
		} else {
			bad += ref_csum(pkt + ip, 20) != 0;
			memcpy(ph, pkt + ip + 12, 8);
			put_be32(ph + 8, (uint32_t)tcp_total | 6u << 16);
			phl = 12;
		}
		uint8_t seg[40 + SYNTH_HDR_MAX + 2000];
		memcpy(seg, ph, phl);
		memcpy(seg + phl, pkt + ip + iphl, tcp_total);
		bad += ref_csum(seg, phl + tcp_total) != 0;
	}
	CHECK_EQ(bad, 0);
}

/* A payload in two parts sums as the whole, odd first parts included. */
TEST(synth_sum_join_any_split)
{
	static uint8_t b[3001];
	for (size_t i = 0; i < sizeof(b); i++)
		b[i] = (uint8_t)(i * 7 + 3);
	int bad = 0;
	for (size_t len = 0; len < 300; len += 7)
		for (size_t cut = 0; cut <= len; cut++) {
			uint16_t j = synth_sum_join(synth_payload_sum(b + 1, cut), cut,
						    synth_payload_sum(b + 1 + cut, len - cut));
			/* equal as one's complement numbers: 0 and 0xffff are both zero */
			uint16_t w = synth_payload_sum(b + 1, len);
			bad += j != w && !((j == 0 || j == 0xffff) && (w == 0 || w == 0xffff));
		}
	CHECK_EQ(bad, 0);
}
