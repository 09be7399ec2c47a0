/* Unit tests of the tunnel wire format (src/tunnel/frame.c): round trips and every malformed case. */
#include "unit.h"
#include "common/bytes.h"
#include "tunnel/frame.h"

#include <errno.h>
#include <stdio.h>
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
	hdr(b, FRAME_EVENTS, FRAME_F_ZSTD, 1234, 5678);
	static const uint8_t want[] = { 'T', 'M', 'T', 'N', 2, 5, 1, 0, 0, 0, 0x04, 0xd2,
					0, 0, 0x16, 0x2e };
	CHECK_MEM(b, want, sizeof(want));
	struct frame_hdr h;
	const char *why = NULL;
	if (!CHECK(frame_hdr_parse(b, sizeof(b), &h, &why) == 0))
		return;
	CHECK_EQ(h.type, FRAME_EVENTS);
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
	hdr(b, FRAME_EVENTS, 0, 10, 10);
	b[4] = 3;
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	CHECK(strstr(why, "version"));
	b[4] = 1;   /* an old agent: named as such */
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	CHECK(strstr(why, "version 1") && strstr(why, "upgrade the agent"));
	hdr(b, 0, 0, 0, 0);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	hdr(b, 6, 0, 0, 0);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	CHECK(strstr(why, "type"));
	hdr(b, FRAME_PACKETS_V1, 0, 0, 0);   /* version 1's PACKETS in a version 2 header */
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	hdr(b, FRAME_EVENTS, 0x80, 10, 10);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	hdr(b, FRAME_EVENTS, 0, 10, 10);
	b[7] = 1;
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	hdr(b, FRAME_HELLO, FRAME_F_ZSTD, 10, 10);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	hdr(b, FRAME_EVENTS, 0, 10, 11);
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
	hdr(b, FRAME_EVENTS, 0, FRAME_MAX_PAYLOAD, FRAME_MAX_PAYLOAD);
	CHECK_EQ(parse(b, sizeof(b), &why), 0);
	hdr(b, FRAME_EVENTS, 0, FRAME_MAX_PAYLOAD + 1, FRAME_MAX_PAYLOAD + 1);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	CHECK(strstr(why, "oversized"));
	hdr(b, FRAME_EVENTS, 0, 0xffffffffu, 0xffffffffu);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
	hdr(b, FRAME_EVENTS, FRAME_F_ZSTD, 100, FRAME_MAX_PAYLOAD + 1);
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
	struct frame_heartbeat hb = { .dropped_events = 0x0102030405060708ull,
				      .dropped_bytes = 42 }, got;
	const char *why;
	frame_heartbeat_put(b, &hb);
	CHECK_EQ(b[0], 1);
	CHECK_EQ(b[7], 8);
	CHECK_EQ(frame_heartbeat_parse(b, sizeof(b), &got, &why), 0);
	CHECK_EQ(got.dropped_events, hb.dropped_events);
	CHECK_EQ(got.dropped_bytes, 42);
	CHECK_EQ(frame_heartbeat_parse(b, sizeof(b) - 1, &got, &why), (uint64_t)-EPROTO);
}

static void fill_open(struct frame_open *o)
{
	memset(o, 0, sizeof(*o));
	o->flags = FRAME_OPEN_SERVER | FRAME_OPEN_MIDSTREAM;
	o->family = 4;
	o->client_port = 40000;
	o->server_port = 443;
	memcpy(o->client_addr, "\x7f\x00\x00\x01", 4);
	memcpy(o->server_addr, "\x7f\x00\x00\x02", 4);
	o->off[0] = 100;
	o->off[1] = 200;
	o->seed = 77;
	o->kind = 1;
	o->map_method = 1;
	o->tls_version = 0x0304;
	o->real_server_port = 443;
	o->pid = 1234;
	o->uid = 1000;
	strcpy(o->comm, "nginx");
	strcpy(o->sni, "www.example.com");
	strcpy(o->alpn, "h2");
	strcpy(o->cipher, "TLS_AES_128_GCM_SHA256");
}

/* OPEN, DATA of 5 bytes, GAP, CLOSE for connection 9. Returns the payload length. */
static size_t build_events(uint8_t *b)
{
	struct frame_open o;
	fill_open(&o);
	size_t off = 4;
	put_be32(b, 4);
	off += frame_ev_open_put(b + off, 9, 1000, &o);
	off += frame_ev_data_put(b + off, 9, 1001, 1, 200, (const uint8_t *)"hello", 5);
	off += frame_ev_gap_put(b + off, 9, 1002, 0, 100, 50, 1);
	off += frame_ev_close_put(b + off, 9, 1003, FRAME_CLOSE_END);
	return off;
}

TEST(frame_events_round_trip)
{
	uint8_t b[2048];
	const char *why = NULL;
	size_t n = build_events(b);
	struct frame_open want, got;
	fill_open(&want);
	CHECK_EQ(n, 4 + frame_ev_open_len(&want) + FRAME_EV_DATA_HDR + 5 + FRAME_EV_GAP_LEN +
		 FRAME_EV_CLOSE_LEN);
	if (!CHECK_EQ(frame_events_check(b, n, &why), 4))
		return;
	size_t off = 4;
	struct frame_event ev = { .open = &got };
	CHECK_EQ(frame_event_next(b, n, &off, &ev, &why), 1);
	CHECK(ev.type == FRAME_EV_OPEN && ev.conn == 9 && ev.ts_ns == 1000);
	CHECK(got.flags == want.flags && got.family == 4 && got.client_port == 40000 &&
	      got.server_port == 443 && got.off[0] == 100 && got.off[1] == 200 && got.seed == 77 &&
	      got.kind == 1 && got.tls_version == 0x0304 && got.pid == 1234 && got.uid == 1000);
	CHECK_MEM(got.client_addr, want.client_addr, 16);
	CHECK(!strcmp(got.comm, "nginx") && !strcmp(got.sni, "www.example.com") &&
	      !strcmp(got.alpn, "h2") && !strcmp(got.cipher, "TLS_AES_128_GCM_SHA256"));
	CHECK_EQ(frame_event_next(b, n, &off, &ev, &why), 1);
	CHECK(ev.type == FRAME_EV_DATA && ev.dir == 1 && ev.off == 200 && ev.len == 5 &&
	      !memcmp(ev.data, "hello", 5));
	CHECK_EQ(frame_event_next(b, n, &off, &ev, &why), 1);
	CHECK(ev.type == FRAME_EV_GAP && ev.dir == 0 && ev.off == 100 && ev.len == 50 &&
	      ev.flags == FRAME_GAP_EXACT);
	CHECK_EQ(frame_event_next(b, n, &off, &ev, &why), 1);
	CHECK(ev.type == FRAME_EV_CLOSE && ev.how == FRAME_CLOSE_END && ev.ts_ns == 1003);
	CHECK_EQ(frame_event_next(b, n, &off, &ev, &why), 0);
}

TEST(frame_open_strings_are_capped_and_cleaned)
{
	uint8_t b[1024];
	struct frame_open o, got;
	fill_open(&o);
	memset(o.sni, 'a', sizeof(o.sni) - 1);  /* 255: the cap */
	o.comm[1] = '\n';                        /* a control byte becomes '?' */
	size_t n = frame_ev_open_put(b, 1, 1, &o);
	CHECK(n <= FRAME_EV_OPEN_MAX && n == frame_ev_open_len(&o));
	size_t off = 0;
	struct frame_event ev = { .open = &got };
	const char *why = NULL;
	CHECK_EQ(frame_event_next(b, n, &off, &ev, &why), 1);
	CHECK(strlen(got.sni) == 255 && !strcmp(got.comm, "n?inx"));
}

/* The payload with byte i set to v is refused. */
static void refused_with(const uint8_t *b, size_t n, size_t i, uint8_t v, const char *what)
{
	uint8_t c[2048];
	memcpy(c, b, n);
	c[i] = v;
	const char *why = NULL;
	if (!CHECK_EQ(frame_events_check(c, n, &why), (uint64_t)-EPROTO))
		fprintf(stderr, "  (byte %zu = 0x%02x, want \"%s\")\n", i, v, what);
	else if (!CHECK(why && strstr(why, what)))
		fprintf(stderr, "  (byte %zu: \"%s\", want \"%s\")\n", i, why, what);
}

TEST(frame_events_rejects_malformed)
{
	uint8_t b[2048];
	const char *why;
	size_t n = build_events(b);
	for (size_t cut = 0; cut < n; cut++)
		CHECK_EQ(frame_events_check(b, cut, &why), (uint64_t)-EPROTO);
	b[n] = 0;
	CHECK_EQ(frame_events_check(b, n + 1, &why), (uint64_t)-EPROTO);
	CHECK(strstr(why, "trailing"));
	put_be32(b, 0);
	CHECK_EQ(frame_events_check(b, n, &why), (uint64_t)-EPROTO);
	put_be32(b, 5);
	CHECK_EQ(frame_events_check(b, n, &why), (uint64_t)-EPROTO);
	put_be32(b, 3);
	CHECK_EQ(frame_events_check(b, n, &why), (uint64_t)-EPROTO);
	put_be32(b, FRAME_MAX_EVENTS + 1);
	CHECK_EQ(frame_events_check(b, n, &why), (uint64_t)-EPROTO);
	n = build_events(b);
	const size_t ev0 = 4, o = ev0 + FRAME_EV_HDR;   /* the OPEN's fields */
	refused_with(b, n, ev0, 9, "unknown event");
	refused_with(b, n, ev0 + 8, 0, "connection 0");   /* conn 9 -> 0 */
	refused_with(b, n, o, 0x80, "unknown flags");
	refused_with(b, n, o, 0, "not mid-stream");       /* offsets without the flag */
	refused_with(b, n, o + 1, 5, "family");
	b[o + 2] = 0;                                     /* client port 40000 -> 0x0040 */
	refused_with(b, n, o + 3, 0, "port 0");           /* ... -> 0 */
	n = build_events(b);
	refused_with(b, n, o + 62, 0, "source kind");     /* kind */
	refused_with(b, n, o + 76, 16, "string");         /* comm longer than 15 */
	refused_with(b, n, o + 77, 0x7f, "string");       /* not printable */
	refused_with(b, n, o + 77, 0, "string");          /* NUL */
	struct frame_open fo;
	fill_open(&fo);
	size_t data = 4 + frame_ev_open_len(&fo), d = data + FRAME_EV_HDR;
	refused_with(b, n, d, 2, "direction");
	refused_with(b, n, d + 9, 0x80, "DATA length");   /* len 5 -> > FRAME_MAX_DATA */
	size_t gap = data + FRAME_EV_DATA_HDR + 5, g = gap + FRAME_EV_HDR;
	refused_with(b, n, g + 1, 2, "GAP with unknown flags");
	refused_with(b, n, g + 2, 0x40, "offset out of range");
	refused_with(b, n, g + 17, 0, "GAP length");      /* len 50 -> 0 */
	size_t cl = gap + FRAME_EV_GAP_LEN;
	refused_with(b, n, cl + FRAME_EV_HDR, FRAME_CLOSE_MAX + 1, "CLOSE of an unknown");
	/* a DATA of 0 bytes */
	uint8_t z[64];
	put_be32(z, 1);
	size_t zn = 4 + frame_ev_data_put(z + 4, 1, 1, 0, 0, (const uint8_t *)"", 0);
	CHECK_EQ(frame_events_check(z, zn, &why), (uint64_t)-EPROTO);
}

/* count DATA events of 1000 bytes each (compressible). Returns the payload length. */
static size_t build_data(uint8_t *b, uint32_t count)
{
	size_t off = 4;
	put_be32(b, count);
	for (uint32_t i = 0; i < count; i++) {
		uint8_t f[1000];
		memset(f, 'a' + (int)(i % 3), sizeof(f));
		off += frame_ev_data_put(b + off, 1, i, 0, (uint64_t)i * sizeof(f), f, sizeof(f));
	}
	return off;
}

TEST(frame_zstd_round_trip)
{
	size_t cap = 1 << 16;
	uint8_t *src = malloc(cap), *z = malloc(cap), *out = malloc(cap);
	if (!CHECK(src && z && out))
		goto out;
	uint32_t count = 40;
	size_t n = build_data(src, count);
	int zl = frame_compress_zstd(src, n, z, cap, 1);
	if (!CHECK(zl > 0 && (size_t)zl < n / 4))
		goto out;
	struct frame_hdr h = { .type = FRAME_EVENTS, .flags = FRAME_F_ZSTD, .len = (uint32_t)zl,
			       .raw_len = (uint32_t)n };
	const char *why;
	CHECK_EQ(frame_decompress(&h, z, out, &why), 0);
	CHECK_MEM(out, src, n);
	CHECK_EQ(frame_events_check(out, n, &why), count);
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
	size_t n = build_data(src, 6);
	int zl = frame_compress_lz4(src, n, z, sizeof(z));
	if (!CHECK(zl > 0 && (size_t)zl < n / 4))
		return;
	struct frame_hdr h = { .type = FRAME_EVENTS, .flags = FRAME_F_LZ4, .len = (uint32_t)zl,
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
	hdr(b, FRAME_EVENTS, FRAME_F_ZSTD | FRAME_F_LZ4, 10, 20);
	CHECK_EQ(parse(b, sizeof(b), &why), (uint64_t)-EPROTO);
}

TEST(frame_key_event_round_trip_and_checks)
{
	uint8_t b[256], cr[32], sec[48];
	memset(cr, 0xab, sizeof(cr));
	memset(sec, 0x5a, sizeof(sec));
	put_be32(b, 1);
	size_t n = 4 + frame_ev_key_put(b + 4, 77, 0, cr, sec, 48); /* CLIENT_RANDOM */
	const char *why = NULL;
	if (!CHECK_EQ(frame_events_check(b, n, &why), 1))
		return;
	size_t off = 4;
	struct frame_event ev = { 0 };
	CHECK_EQ(frame_event_next(b, n, &off, &ev, &why), 1);
	CHECK(ev.type == FRAME_EV_KEY && ev.flags == 0 && ev.len == 48 && ev.ts_ns == 77);
	CHECK_MEM(ev.data, cr, 32);
	CHECK_MEM(ev.data + 32, sec, 48);
	/* a master secret is 48 bytes; labels stop at EXPORTER_SECRET (7) */
	n = 4 + frame_ev_key_put(b + 4, 77, 0, cr, sec, 32);
	CHECK(frame_events_check(b, n, &why) < 0);
	n = 4 + frame_ev_key_put(b + 4, 77, 8, cr, sec, 32);
	CHECK(frame_events_check(b, n, &why) < 0);
	n = 4 + frame_ev_key_put(b + 4, 77, 4, cr, sec, 32);
	CHECK_EQ(frame_events_check(b, n, &why), 1);
	CHECK(frame_events_check(b, n - 1, &why) < 0); /* cut in its secret */
}
