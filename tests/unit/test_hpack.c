/* Unit tests for transforms/hpack.c: RFC 7541 Appendix C vectors, the Huffman table of Appendix B, malformed blocks. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transforms/hpack.h"
#include "unit.h"

static size_t unhex(const char *s, uint8_t *out)
{
	size_t n = 0;
	unsigned v;
	while (*s) {
		if (*s == ' ') {
			s++;
			continue;
		}
		sscanf(s, "%2x", &v);
		out[n++] = (uint8_t)v;
		s += 2;
	}
	return n;
}

/* Decodes hex into h; expect is "name: value\n" for each field. */
static int block_is(struct hpack_dec *d, const char *hex, const char *expect, size_t table_size)
{
	static uint8_t in[4096];
	size_t n = unhex(hex, in);
	struct h2_hdrs h = { 0 };
	h2_hdrs_reset(&h);
	int ok = CHECK_EQ(hpack_decode(d, in, n, &h), 0);
	char got[4096];
	size_t gl = 0, pos = 0;
	struct h2_field f;
	while (h2_hdrs_next(&h, &pos, &f) && gl + f.nlen + f.vlen + 3 < sizeof(got)) {
		memcpy(got + gl, f.name, f.nlen);
		gl += f.nlen;
		got[gl++] = ':';
		got[gl++] = ' ';
		memcpy(got + gl, f.value, f.vlen);
		gl += f.vlen;
		got[gl++] = '\n';
	}
	got[gl] = 0;
	if (strcmp(got, expect)) {
		fprintf(stderr, "got:\n%sexpected:\n%s", got, expect);
		ok = 0;
	}
	ok &= CHECK_EQ(d->size, table_size);
	h2_buf_free(&h.buf);
	return ok;
}

TEST(hpack_c2_literals)
{
	struct hpack_dec d;
	hpack_init(&d, 4096);
	block_is(&d, "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
		 "custom-key: custom-header\n", 55);
	hpack_free(&d);
	hpack_init(&d, 4096);
	block_is(&d, "040c 2f73 616d 706c 652f 7061 7468", ":path: /sample/path\n", 0);
	block_is(&d, "1008 7061 7373 776f 7264 0673 6563 7265 74", "password: secret\n", 0);
	block_is(&d, "82", ":method: GET\n", 0);
	hpack_free(&d);
}

static const char *req1 = ":method: GET\n:scheme: http\n:path: /\n:authority: www.example.com\n";
static const char *req2 = ":method: GET\n:scheme: http\n:path: /\n:authority: www.example.com\n"
			  "cache-control: no-cache\n";
static const char *req3 = ":method: GET\n:scheme: https\n:path: /index.html\n"
			  ":authority: www.example.com\ncustom-key: custom-value\n";

TEST(hpack_c3_requests)
{
	struct hpack_dec d;
	hpack_init(&d, 4096);
	block_is(&d, "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d", req1, 57);
	block_is(&d, "8286 84be 5808 6e6f 2d63 6163 6865", req2, 110);
	block_is(&d, "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
		 req3, 164);
	hpack_free(&d);
}

TEST(hpack_c4_requests_huffman)
{
	struct hpack_dec d;
	hpack_init(&d, 4096);
	block_is(&d, "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff", req1, 57);
	block_is(&d, "8286 84be 5886 a8eb 1064 9cbf", req2, 110);
	block_is(&d, "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf", req3, 164);
	hpack_free(&d);
}

/* Huffman literals without indexing, again and again (as nginx sends
 * server, date, etag): the memo of the decoded strings serves the repeats,
 * each one exactly, also when strings alternate in the memo's slots. */
TEST(hpack_huffman_memo)
{
	struct hpack_dec d;
	hpack_init(&d, 4096);
	/* :path (static 4) = "www.example.com", then "custom-key" and "custom-value" */
	const char *a = "8286 048c f1e3 c2e5 f23a 6ba0 ab90 f4ff";
	const char *b = "8286 0488 25a8 49e9 5ba9 7d7f";
	const char *c = "8286 0489 25a8 49e9 5bb8 e8b4 bf";
	const char *ea = ":method: GET\n:scheme: http\n:path: www.example.com\n";
	const char *eb = ":method: GET\n:scheme: http\n:path: custom-key\n";
	const char *ec = ":method: GET\n:scheme: http\n:path: custom-value\n";
	CHECK(block_is(&d, a, ea, 0));
	CHECK_EQ(d.memo_hits, 0);
	CHECK(block_is(&d, a, ea, 0));
	CHECK_EQ(d.memo_hits, 1);
	/* hits or not (slots may collide), every decode is exact */
	for (int i = 0; i < 3; i++) {
		CHECK(block_is(&d, a, ea, 0));
		CHECK(block_is(&d, b, eb, 0));
		CHECK(block_is(&d, c, ec, 0));
	}
	CHECK(d.memo_hits > 1);
	hpack_free(&d);
}

static const char *resp1 = ":status: 302\ncache-control: private\n"
			   "date: Mon, 21 Oct 2013 20:13:21 GMT\nlocation: https://www.example.com\n";
static const char *resp2 = ":status: 307\ncache-control: private\n"
			   "date: Mon, 21 Oct 2013 20:13:21 GMT\nlocation: https://www.example.com\n";
static const char *resp3 = ":status: 200\ncache-control: private\n"
			   "date: Mon, 21 Oct 2013 20:13:22 GMT\nlocation: https://www.example.com\n"
			   "content-encoding: gzip\n"
			   "set-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1\n";

TEST(hpack_c5_responses)
{
	struct hpack_dec d;
	hpack_init(&d, 256);
	block_is(&d, "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 "
		 "3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 "
		 "7861 6d70 6c65 2e63 6f6d", resp1, 222);
	block_is(&d, "4803 3330 37c1 c0bf", resp2, 222);
	block_is(&d, "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 "
		 "474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 "
		 "454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 "
		 "6572 7369 6f6e 3d31", resp3, 215);
	hpack_free(&d);
}

TEST(hpack_c6_responses_huffman)
{
	struct hpack_dec d;
	hpack_init(&d, 256);
	block_is(&d, "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 "
		 "82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3", resp1, 222);
	block_is(&d, "4883 640e ffc1 c0bf", resp2, 222);
	block_is(&d, "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b "
		 "d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 "
		 "0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07", resp3, 215);
	hpack_free(&d);
}

/* Encodes syms with the Appendix B table (padding with ones). */
static size_t huff_encode(const uint16_t *syms, size_t n, uint8_t *out)
{
	uint64_t acc = 0;
	unsigned bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		acc = (acc << hpack_huff_len[syms[i]]) | hpack_huff_code[syms[i]];
		bits += hpack_huff_len[syms[i]];
		while (bits >= 8) {
			out[o++] = (uint8_t)(acc >> (bits - 8));
			bits -= 8;
		}
	}
	if (bits)
		out[o++] = (uint8_t)((acc << (8 - bits)) | (0xffu >> bits));
	return o;
}

TEST(hpack_huffman_table)
{
	/* the code is the one of RFC 7541 Appendix B: spot checks, then its
	 * shape (lengths 5-30, a complete prefix code: sum 2^-len == 1) */
	CHECK_EQ(hpack_huff_code['a'], 0x3);
	CHECK_EQ(hpack_huff_len['a'], 5);
	CHECK_EQ(hpack_huff_code[' '], 0x14);
	CHECK_EQ(hpack_huff_code[0], 0x1ff8);
	CHECK_EQ(hpack_huff_len[0], 13);
	CHECK_EQ(hpack_huff_code[255], 0x3ffffee);
	CHECK_EQ(hpack_huff_len[255], 26);
	CHECK_EQ(hpack_huff_code[256], 0x3fffffff);
	CHECK_EQ(hpack_huff_len[256], 30);
	uint64_t kraft = 0;
	for (int s = 0; s < 257; s++) {
		CHECK(hpack_huff_len[s] >= 5 && hpack_huff_len[s] <= 30);
		CHECK(hpack_huff_code[s] < (1u << hpack_huff_len[s]));
		kraft += 1ull << (30 - hpack_huff_len[s]);
	}
	CHECK_EQ(kraft, 1ull << 30);
	/* every symbol alone, then all of them in one string, decode back */
	uint8_t enc[1024], dec[2048];
	uint16_t all[256];
	for (int s = 0; s < 256; s++) {
		uint16_t sym = (uint16_t)s;
		size_t n = huff_encode(&sym, 1, enc);
		long r = hpack_huff_decode(enc, n, dec);
		if (!CHECK_EQ(r, 1) || !CHECK_EQ(dec[0], s))
			fprintf(stderr, "symbol %d\n", s);
		all[s] = (uint16_t)(255 - s);
	}
	size_t n = huff_encode(all, 256, enc);
	CHECK_EQ(hpack_huff_decode(enc, n, dec), 256);
	for (int s = 0; s < 256; s++)
		CHECK_EQ(dec[s], 255 - s);
	/* EOS inside a string, padding of 8 bits or more, padding of zeros */
	uint16_t eos = 256;
	n = huff_encode(&eos, 1, enc);
	CHECK_EQ(hpack_huff_decode(enc, n, dec), -EPROTO);
	uint8_t pad8[] = { 0x1f, 0xff };   /* 'a' (00011) + 11 bits of ones */
	CHECK_EQ(hpack_huff_decode(pad8, 2, dec), -EPROTO);
	uint8_t pad0[] = { 0x18 };         /* 'a' + 000 */
	CHECK_EQ(hpack_huff_decode(pad0, 1, dec), -EPROTO);
	uint8_t ok[] = { 0x1f };           /* 'a' + 111 */
	CHECK_EQ(hpack_huff_decode(ok, 1, dec), 1);
	CHECK_EQ(hpack_huff_decode(ok, 0, dec), 0);
}

/* Appends a literal without indexing (6.2.2), name static table idx >= 15,
 * value v Huffman-coded. */
static size_t put_unindexed(uint8_t *out, unsigned idx, const char *v)
{
	uint16_t syms[64];
	size_t n = strlen(v), o = 0;
	for (size_t i = 0; i < n; i++)
		syms[i] = (uint8_t)v[i];
	uint8_t enc[128];
	size_t e = huff_encode(syms, n, enc);
	out[o++] = 0x0f;
	out[o++] = (uint8_t)(idx - 15);
	out[o++] = (uint8_t)(0x80 | e);
	memcpy(out + o, enc, e);
	return o + e;
}

/* nginx's response heads: server, content-type, last-modified and etag the
 * same on every response, date once a second. last-modified and a date
 * have one length and share their ends, and so may etag and another
 * string: the memo must keep them all, so after the first response only a
 * new date is decoded again, and every decode is exact. */
TEST(hpack_huffman_memo_nginx)
{
	struct hpack_dec d;
	hpack_init(&d, 4096);
	char date[64];
	uint64_t strings = 0, dates = 0;
	for (int round = 0; round < 60; round++) {
		uint8_t in[1024];
		size_t n = 0;
		snprintf(date, sizeof(date), "Thu, 03 Dec 2026 09:%02d:%02d GMT", 36 + round / 10 % 20,
			 round / 10 % 60);
		n += put_unindexed(in + n, 54, "nginx/1.22.1");
		n += put_unindexed(in + n, 33, date);
		n += put_unindexed(in + n, 31, "text/plain");
		n += put_unindexed(in + n, 44, "Thu, 03 Dec 2026 09:36:46 GMT");
		n += put_unindexed(in + n, 34, "\"6b11382e-10000\"");
		n += put_unindexed(in + n, 34, "\"6b11382e-10001\"");
		strings += 6;
		dates += round % 10 == 0;
		struct h2_hdrs h = { 0 };
		h2_hdrs_reset(&h);
		CHECK_EQ(hpack_decode(&d, in, n, &h), 0);
		size_t pos = 0, k = 0;
		struct h2_field f;
		const char *want[] = { "nginx/1.22.1", date, "text/plain", "Thu, 03 Dec 2026 09:36:46 GMT",
				       "\"6b11382e-10000\"", "\"6b11382e-10001\"" };
		while (h2_hdrs_next(&h, &pos, &f) && k < 6) {
			CHECK_EQ(f.vlen, strlen(want[k]));
			CHECK(!memcmp(f.value, want[k], f.vlen));
			k++;
		}
		CHECK_EQ(k, 6);
		h2_buf_free(&h.buf);
	}
	/* decoded: the five constant strings once, each new date once */
	CHECK_EQ(strings - d.memo_hits, 5 + dates);
	hpack_free(&d);
}

static int bad(struct hpack_dec *d, const uint8_t *in, size_t n)
{
	struct h2_hdrs h = { 0 };
	h2_hdrs_reset(&h);
	int err = hpack_decode(d, in, n, &h);
	h2_buf_free(&h.buf);
	return err;
}

TEST(hpack_malformed)
{
	struct hpack_dec d;
	hpack_init(&d, 4096);
	static const struct { const char *hex; int err; } cases[] = {
		{ "80", -EPROTO },                     /* index 0 */
		{ "be", -EPROTO },                     /* past the (empty) dynamic table */
		{ "ff ff ff ff ff ff 0f", -EPROTO },   /* integer overflow */
		{ "ff 80", -EPROTO },                  /* integer cut short */
		{ "40 0a 61", -EPROTO },               /* string past the block */
		{ "40", -EPROTO },                     /* name missing */
		{ "40 01 61", -EPROTO },               /* value missing */
		{ "40 81 00 00", -EPROTO },            /* Huffman: zero padding */
		{ "3f e2 1f", -EPROTO },               /* size update over the limit (4097) */
		{ "82 20", -EPROTO },                  /* size update after a field */
		{ "0f", -EPROTO },                     /* literal index cut short */
	};
	uint8_t in[64];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = unhex(cases[i].hex, in);
		hpack_free(&d);
		hpack_init(&d, 4096);
		if (!CHECK_EQ(bad(&d, in, n), cases[i].err))
			fprintf(stderr, "case %s\n", cases[i].hex);
	}
	CHECK(d.errors > 0);
	/* size updates: at the start, down to 0 empties the table, up to the limit */
	hpack_free(&d);
	hpack_init(&d, 4096);
	block_is(&d, "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
		 "custom-key: custom-header\n", 55);
	block_is(&d, "20 3f e1 1f 82", ":method: GET\n", 0);
	CHECK_EQ(d.max, 4096);
	CHECK_EQ(hpack_set_limit(&d, 100), 0);
	CHECK_EQ(d.max, 100);
	CHECK_EQ(hpack_set_limit(&d, HPACK_MAX_TABLE + 1), -EPROTO);
	/* an entry larger than the table empties it (not an error) */
	CHECK_EQ(hpack_set_limit(&d, 40), 0);
	block_is(&d, "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
		 "custom-key: custom-header\n", 0);
	hpack_free(&d);
}

TEST(hpack_caps)
{
	struct hpack_dec d;
	hpack_init(&d, 4096);
	/* more fields than HPACK_MAX_FIELDS */
	size_t n = HPACK_MAX_FIELDS + 1;
	uint8_t *in = malloc(n);
	memset(in, 0x82, n);
	CHECK_EQ(bad(&d, in, n), -E2BIG);
	free(in);
	/* a list over H2_MAX_HEADER_LIST: 5 values of 64 KiB (raw literals) */
	size_t vl = 64 * 1024, one = 1 + 1 + 1 + 4 + vl;
	in = malloc(5 * one);
	for (size_t i = 0; i < 5; i++) {
		uint8_t *p = in + i * one;
		p[0] = 0x00; p[1] = 0x01; p[2] = 'x';
		/* value length 65536 with a 7-bit prefix: 127 + 65409 */
		p[3] = 0x7f; p[4] = 0x81; p[5] = 0xff; p[6] = 0x03;
		memset(p + 7, 'v', vl);
	}
	CHECK_EQ(bad(&d, in, 3 * one), 0);
	CHECK_EQ(bad(&d, in, 4 * one), -E2BIG);
	free(in);
	hpack_free(&d);
}
