/* Unit tests of the tunnel wire format (src/tunnel/frame.c): round trips and every malformed case. */
#include "unit.h"
#include "common/bytes.h"
#include "tunnel/frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void hdr(uint8_t *b, uint8_t type, uint8_t flags, uint32_t len, uint32_t raw)
{
	struct frame_hdr h = { .type = type, .flags = flags, .len = len, .raw_len = raw };
	frame_hdr_put(b, &h);
}

static int parse(const uint8_t *b, size_t n, const char **why)
{
	struct frame_hdr h;
	*why = NULL;
	return frame_hdr_parse(b, n, &h, why);
}

TEST(frame_hdr_round_trip)
{
	uint8_t b[FRAME_HDR_SIZE];
	hdr(b, FRAME_PACKETS, FRAME_F_ZSTD, 1234, 5678);
	static const uint8_t want[] = { 'T', 'M', 'T', 'N', 1, 2, 1, 0, 0, 0, 0x04, 0xd2,
					0, 0, 0x16, 0x2e };
	CHECK_MEM(b, want, sizeof(want));
	struct frame_hdr h;
	const char *why = NULL;
	if (!CHECK(frame_hdr_parse(b, sizeof(b), &h, &why) == 0))
		return;
	CHECK_EQ(h.type, FRAME_PACKETS);
	CHECK_EQ(h.flags, FRAME_F_ZSTD);
	CHECK_EQ(h.len, 1234);
	CHECK_EQ(h.raw_len, 5678);
}

TEST(frame_hdr_short_prefix_waits_or_fails)
{
	uint8_t b[FRAME_HDR_SIZE];
	const char *why;
	hdr(b, FRAME_GOODBYE, 0, 0, 0);
	for (size_t n = 0; n < FRAME_HDR_SIZE; n++)
		CHECK_EQ(parse(b, n, &why), (uint64_t)-EAGAIN);
	CHECK_EQ(parse(b, FRAME_HDR_SIZE, &why), 0);
	b[1] = 'X';
	CHECK_EQ(parse(b, 2, &why), (uint64_t)-EPROTO);
	CHECK(why && strstr(why, "magic"));
	static const uint8_t tls[] = { 0x16, 0x03, 0x01 };
	CHECK_EQ(parse(tls, 3, &why), (uint64_t)-EPROTO);
}

TEST(frame_hdr_rejects_each_bad_field)
{
	uint8_t b[FRAME_HDR_SIZE];
	const char *why;
	hdr(b, FRAME_PACKETS, 0, 10, 10);
	b[4] = 2;
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	CHECK(strstr(why, "version"));
	hdr(b, 0, 0, 0, 0);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	hdr(b, 5, 0, 0, 0);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	CHECK(strstr(why, "type"));
	hdr(b, FRAME_PACKETS, 0x80, 10, 10);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	hdr(b, FRAME_PACKETS, 0, 10, 10);
	b[7] = 1;
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	hdr(b, FRAME_HELLO, FRAME_F_ZSTD, 10, 10);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	hdr(b, FRAME_PACKETS, 0, 10, 11);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	hdr(b, FRAME_GOODBYE, 0, 1, 1);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	hdr(b, FRAME_HEARTBEAT, 0, 15, 15);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	hdr(b, FRAME_HELLO, 0, FRAME_HELLO_MAX + 1, FRAME_HELLO_MAX + 1);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
}

TEST(frame_hdr_rejects_oversized)
{
	uint8_t b[FRAME_HDR_SIZE];
	const char *why;
	hdr(b, FRAME_PACKETS, 0, FRAME_MAX_PAYLOAD, FRAME_MAX_PAYLOAD);
	CHECK_EQ(parse(b, sizeof(b), &why), 0);
	hdr(b, FRAME_PACKETS, 0, FRAME_MAX_PAYLOAD + 1, FRAME_MAX_PAYLOAD + 1);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	CHECK(strstr(why, "oversized"));
	hdr(b, FRAME_PACKETS, 0, 0xffffffffu, 0xffffffffu);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	hdr(b, FRAME_PACKETS, FRAME_F_ZSTD, 100, FRAME_MAX_PAYLOAD + 1);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
}

TEST(frame_hello_round_trip_and_limits)
{
	uint8_t b[FRAME_HELLO_MAX];
	struct frame_hello h;
	const char *why;
	int n = frame_hello_put(b, "web-1", "web-1.example");
	if (!CHECK(n == 4 + 5 + 13))
		return;
	CHECK_EQ(frame_hello_parse(b, (size_t)n, &h, &why), 0);
	CHECK(!strcmp(h.name, "web-1") && !strcmp(h.host, "web-1.example"));
	CHECK_EQ(frame_hello_parse(b, (size_t)n - 1, &h, &why), (uint64_t)-EPROTO);
	b[n] = 0;
	CHECK_EQ(frame_hello_parse(b, (size_t)n + 1, &h, &why), (uint64_t)-EPROTO);
	char big[FRAME_MAX_NAME + 2];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	CHECK_EQ(frame_hello_put(b, big, NULL), (uint64_t)-EINVAL);
	CHECK_EQ(frame_hello_put(b, "", NULL), (uint64_t)-EINVAL);
	CHECK_EQ(frame_hello_put(b, "a b", NULL), (uint64_t)-EINVAL);
	n = frame_hello_put(b, "x", NULL);
	CHECK_EQ(frame_hello_parse(b, (size_t)n, &h, &why), 0);
	b[3] = '\n';
	CHECK_EQ(frame_hello_parse(b, (size_t)n, &h, &why), (uint64_t)-EPROTO);
	b[3] = 'x';
	b[2] = 0;
	CHECK_EQ(frame_hello_parse(b, (size_t)n, &h, &why), (uint64_t)-EPROTO);
	b[2] = 200;
	CHECK_EQ(frame_hello_parse(b, (size_t)n, &h, &why), (uint64_t)-EPROTO);
	n = frame_hello_put(b, "x", NULL);
	b[1] = 9;
	CHECK_EQ(frame_hello_parse(b, (size_t)n, &h, &why), (uint64_t)-EPROTO);
}

TEST(frame_heartbeat_round_trip)
{
	uint8_t b[FRAME_HEARTBEAT_LEN];
	struct frame_heartbeat hb = { .dropped_packets = 0x0102030405060708ull,
				      .dropped_bytes = 42 }, got;
	const char *why;
	frame_heartbeat_put(b, &hb);
	CHECK_EQ(b[0], 1);
	CHECK_EQ(b[7], 8);
	CHECK_EQ(frame_heartbeat_parse(b, sizeof(b), &got, &why), 0);
	CHECK_EQ(got.dropped_packets, hb.dropped_packets);
	CHECK_EQ(got.dropped_bytes, 42);
	CHECK_EQ(frame_heartbeat_parse(b, sizeof(b) - 1, &got, &why), (uint64_t)-EPROTO);
}

/* count packets of sizes 14, 15, ... with ts 1000+i. Returns the payload length. */
static size_t build_packets(uint8_t *b, uint32_t count)
{
	size_t off = 4;
	put_be32(b, count);
	for (uint32_t i = 0; i < count; i++) {
		uint8_t f[64];
		memset(f, (int)i, sizeof(f));
		uint32_t len = 14 + i;
		frame_pkt_put(b + off, 1000 + i, f, 10, f + 10, len - 10);
		off += FRAME_PKT_HDR + len;
	}
	return off;
}

TEST(frame_packets_round_trip)
{
	uint8_t b[2048];
	const char *why;
	size_t n = build_packets(b, 5);
	if (!CHECK_EQ(frame_packets_check(b, n, &why), 5))
		return;
	size_t off = 4;
	struct frame_pkt p;
	uint32_t i = 0;
	while (frame_packets_next(b, n, &off, &p)) {
		CHECK_EQ(p.ts_ns, 1000 + i);
		CHECK_EQ(p.len, 14 + i);
		CHECK(p.data[0] == (uint8_t)i && p.data[p.len - 1] == (uint8_t)i);
		i++;
	}
	CHECK_EQ(i, 5);
}

TEST(frame_packets_rejects_malformed)
{
	uint8_t b[2048];
	const char *why;
	size_t n = build_packets(b, 3);
	for (size_t cut = 0; cut < n; cut++)
		CHECK_EQ(frame_packets_check(b, cut, &why), (uint64_t)-EPROTO);
	b[n] = 0;
	CHECK_EQ(frame_packets_check(b, n + 1, &why), (uint64_t)-EPROTO);
	CHECK(strstr(why, "trailing"));
	put_be32(b, 0);
	CHECK_EQ(frame_packets_check(b, n, &why), (uint64_t)-EPROTO);
	put_be32(b, 4);
	CHECK_EQ(frame_packets_check(b, n, &why), (uint64_t)-EPROTO);
	put_be32(b, FRAME_MAX_PACKETS + 1);
	CHECK_EQ(frame_packets_check(b, n, &why), (uint64_t)-EPROTO);
	n = build_packets(b, 3);
	put_be32(b + 4 + 8, 13);     /* first packet shorter than an Ethernet header */
	CHECK_EQ(frame_packets_check(b, n, &why), (uint64_t)-EPROTO);
	put_be32(b + 4 + 8, FRAME_MAX_PKT + 1);
	CHECK_EQ(frame_packets_check(b, n, &why), (uint64_t)-EPROTO);
	put_be32(b + 4 + 8, 0xffffffffu);
	CHECK_EQ(frame_packets_check(b, n, &why), (uint64_t)-EPROTO);
}

TEST(frame_zstd_round_trip)
{
	size_t cap = 1 << 16;
	uint8_t *src = malloc(cap), *z = malloc(cap), *out = malloc(cap);
	if (!CHECK(src && z && out))
		goto out;
	uint32_t count = 40;
	size_t n = 4;
	put_be32(src, count);
	for (uint32_t i = 0; i < count; i++) {
		uint8_t f[1000];
		memset(f, 'a' + (int)(i % 3), sizeof(f));
		frame_pkt_put(src + n, i, f, 14, f + 14, sizeof(f) - 14);
		n += FRAME_PKT_HDR + sizeof(f);
	}
	int zl = frame_compress_zstd(src, n, z, cap, 1);
	if (!CHECK(zl > 0 && (size_t)zl < n / 4))
		goto out;
	struct frame_hdr h = { .type = FRAME_PACKETS, .flags = FRAME_F_ZSTD, .len = (uint32_t)zl,
			       .raw_len = (uint32_t)n };
	const char *why;
	CHECK_EQ(frame_decompress(&h, z, out, &why), 0);
	CHECK_MEM(out, src, n);
	CHECK_EQ(frame_packets_check(out, n, &why), count);
	/* a raw length that the zstd frame does not declare */
	h.raw_len = (uint32_t)n - 1;
	CHECK_EQ(frame_decompress(&h, z, out, &why), (uint64_t)-EPROTO);
	h.raw_len = (uint32_t)n;
	/* truncated and corrupted compressed data */
	h.len = (uint32_t)zl - 1;
	CHECK_EQ(frame_decompress(&h, z, out, &why), (uint64_t)-EPROTO);
	h.len = (uint32_t)zl;
	memset(z + 4, 0xff, 8);
	CHECK_EQ(frame_decompress(&h, z, out, &why), (uint64_t)-EPROTO);
	/* incompressible input is sent as is */
	for (size_t i = 0; i < 4096; i++)
		src[i] = (uint8_t)(i * 2654435761u >> 13);
	CHECK_EQ(frame_compress_zstd(src, 64, z, cap, 1), (uint64_t)-ENOSPC);
out:
	frame_zstd_release();
	free(src);
	free(z);
	free(out);
}

TEST(frame_lz4_round_trip_and_corruption)
{
	static uint8_t src[8192], z[8192], out[8192];
	size_t n = 4;
	put_be32(src, 6);
	for (uint32_t i = 0; i < 6; i++) {
		uint8_t f[1000];
		memset(f, 'x', sizeof(f));
		frame_pkt_put(src + n, i, f, 14, f + 14, sizeof(f) - 14);
		n += FRAME_PKT_HDR + sizeof(f);
	}
	int zl = frame_compress_lz4(src, n, z, sizeof(z));
	if (!CHECK(zl > 0 && (size_t)zl < n / 4))
		return;
	struct frame_hdr h = { .type = FRAME_PACKETS, .flags = FRAME_F_LZ4, .len = (uint32_t)zl,
			       .raw_len = (uint32_t)n };
	const char *why;
	CHECK_EQ(frame_decompress(&h, z, out, &why), 0);
	CHECK_MEM(out, src, n);
	h.raw_len = (uint32_t)n + 1;   /* says more than it holds */
	CHECK_EQ(frame_decompress(&h, z, out, &why), (uint64_t)-EPROTO);
	h.raw_len = (uint32_t)n - 1;   /* says less: would overflow */
	CHECK_EQ(frame_decompress(&h, z, out, &why), (uint64_t)-EPROTO);
	h.raw_len = (uint32_t)n;
	h.len = (uint32_t)zl - 3;
	CHECK_EQ(frame_decompress(&h, z, out, &why), (uint64_t)-EPROTO);
	/* both compressions at once is refused in the header */
	uint8_t b[FRAME_HDR_SIZE];
	hdr(b, FRAME_PACKETS, FRAME_F_ZSTD | FRAME_F_LZ4, 10, 20);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
}
