/* Unit tests: the HTTP/1.x parser (src/http/h1.c) as a transcript of its message events, fed whole and a byte at a time; JSON text (src/http/json.c). */
#include "unit.h"

#include "http/h1.h"
#include "http/json.h"
#include "pipeline/conn.h"
#include "pipeline/pipeline.h"
#include "http/records.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The events as text: "H0 GET /a 11 host=h|" "B0 3|" "E0|" "H1 200|" "X done|" */
struct tr {
	char s[8192];
	size_t n;
	int last_body;   /* the last event was a body of direction last_body - 1 */
};

static void add(struct tr *t, const char *fmt, const void *p, size_t n)
{
	(void)p;
	(void)n;
	t->n += (size_t)snprintf(t->s + t->n, sizeof(t->s) - t->n, "%s", fmt);
	t->last_body = 0;
}

static void t_head(void *arg, struct http_txn *x, int dir, uint64_t ts, const struct http_head *h)
{
	struct tr *t = arg;
	char b[512];
	(void)ts;
	(void)x;
	if (dir == 0)
		snprintf(b, sizeof(b), "H0 %.*s %.*s %u%s|", (int)h->method.n, h->method.p,
			 (int)h->target.n, h->target.p, h->version, h->end ? " end" : "");
	else
		snprintf(b, sizeof(b), "H1 %u%s%s|", h->status, h->informational ? " info" : "",
			 h->end ? " end" : "");
	add(t, b, NULL, 0);
}

static void t_body(void *arg, struct http_txn *x, int dir, uint64_t ts, const uint8_t *p, size_t n)
{
	struct tr *t = arg;
	(void)x;
	(void)ts;
	if (t->n + n + 8 >= sizeof(t->s))
		return;
	/* consecutive body events of one direction are merged: feeding in pieces
	 * must give the same transcript */
	if (t->last_body == dir + 1)
		t->n--; /* its '|' */
	else
		t->n += (size_t)snprintf(t->s + t->n, sizeof(t->s) - t->n, "B%d ", dir);
	memcpy(t->s + t->n, p, n);
	t->n += n;
	t->s[t->n++] = '|';
	t->s[t->n] = 0;
	t->last_body = dir + 1;
}

static void t_trailers(void *arg, struct http_txn *x, int dir, uint64_t ts, const struct h2_hdrs *h)
{
	struct tr *t = arg;
	size_t pos = 0, k = 0;
	struct h2_field f;
	(void)x;
	(void)ts;
	while (h2_hdrs_next(h, &pos, &f))
		k++;
	char b[32];
	snprintf(b, sizeof(b), "T%d %zu|", dir, k);
	add(t, b, NULL, 0);
}

static void t_end(void *arg, struct http_txn *x, int dir, uint64_t ts)
{
	char b[8];
	(void)x;
	(void)ts;
	snprintf(b, sizeof(b), "E%d|", dir);
	add(arg, b, NULL, 0);
}

static void t_txn(void *arg, struct http_txn *x, uint64_t ts, enum http_end why)
{
	char b[48];
	(void)ts;
	snprintf(b, sizeof(b), "X%u %s|", x->stream, http_end_name(why));
	add(arg, b, NULL, 0);
}

static const struct http_consumer_ops tr_ops = { t_head, t_body, t_trailers, t_end, t_txn };

struct run {
	struct tr t;
	struct h1_counters ctr;
	struct h1_conn *c;
	struct conn_open o;
	struct http_conn_info ci;
};

static void run_init(struct run *r)
{
	memset(r, 0, sizeof(*r));
	r->ci.open = &r->o;
	struct http_consumer c = { &tr_ops, &r->t, 0 };
	r->c = h1_new(&r->ci, &c, 1, &r->ctr);
}

/* Feeds steps "0:bytes" / "1:bytes" in order, each whole (step 0) or a byte
 * at a time (step 1); then closes. Returns the transcript. */
static const char *play(struct run *r, const char *const *steps, size_t n, int bytewise,
			int close_at_end)
{
	run_init(r);
	for (size_t i = 0; i < n; i++) {
		int dir = steps[i][0] - '0';
		const char *p = steps[i] + 2;
		size_t len = strlen(p);
		if (!strcmp(p, "<gap>")) {
			h1_gap(r->c, dir, 1);
			continue;
		}
		if (bytewise)
			for (size_t k = 0; k < len; k++)
				h1_feed(r->c, dir, 1, (const uint8_t *)p + k, 1);
		else
			h1_feed(r->c, dir, 1, (const uint8_t *)p, len);
	}
	if (close_at_end)
		h1_close(r->c, 2);
	h1_free(r->c, 3);
	CHECK_EQ(r->ctr.buffered, 0); /* every buffer given back to the budget */
	return r->t.s;
}

/* Both ways of feeding give want. */
static int same(const char *const *steps, size_t n, const char *want, int close_at_end)
{
	static struct run a, b;
	const char *x = play(&a, steps, n, 0, close_at_end);
	int ok = CHECK(!strcmp(x, want));
	if (!ok)
		fprintf(stderr, "  whole: %s\n  want:  %s\n", x, want);
	const char *y = play(&b, steps, n, 1, close_at_end);
	int ok2 = CHECK(!strcmp(y, want));
	if (!ok2)
		fprintf(stderr, "  bytes: %s\n  want:  %s\n", y, want);
	return ok && ok2;
}

#define N(a) (sizeof(a) / sizeof(a[0]))

TEST(h1_get_keepalive_and_length)
{
	const char *s[] = {
		"0:GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n",
		"1:HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
		"0:POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nwxyz",
		"1:HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
	};
	same(s, N(s), "H0 GET /a?x=1 11 end|E0|H1 200|B1 abc|E1|X1 done|"
		      "H0 POST /p 11|B0 wxyz|E0|H1 201 end|E1|X2 done|", 1);
}

TEST(h1_pipelined_requests_answered_in_order)
{
	const char *s[] = {
		"0:GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
		"HEAD /3 HTTP/1.1\r\nHost: h\r\n\r\n",
		"1:HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
		"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nbb"
		"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", /* HEAD: no body */
	};
	same(s, N(s), "H0 GET /1 11 end|E0|H0 GET /2 11 end|E0|H0 HEAD /3 11 end|E0|"
		      "H1 200|B1 a|E1|X1 done|H1 404|B1 bb|E1|X2 done|H1 200 end|E1|X3 done|", 1);
}

TEST(h1_chunked_with_extensions_and_trailers)
{
	const char *s[] = {
		"0:PUT /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
		"3;name=\"v a\"\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\nX-B: 1\r\n\r\n",
		"1:HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n",
	};
	same(s, N(s), "H0 PUT /u 11|B0 abcde|T0 2|E0|H1 200|B1 z|E1|X1 done|", 1);
}

TEST(h1_bodyless_statuses_and_continue)
{
	const char *s[] = {
		"0:POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
		"1:HTTP/1.1 100 Continue\r\n\r\n",
		"0:ok",
		"1:HTTP/1.1 204 No Content\r\n\r\n",
		"0:GET /c HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"x\"\r\n\r\n",
		"1:HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
	};
	same(s, N(s), "H0 POST /e 11|H1 100 info end|B0 ok|E0|H1 204 end|E1|X1 done|"
		      "H0 GET /c 11 end|E0|H1 304 end|E1|X2 done|", 1);
}

TEST(h1_response_until_close)
{
	const char *s[] = {
		"0:GET / HTTP/1.0\r\n\r\n",
		"1:HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ",
		"1:it",
	};
	same(s, N(s), "H0 GET / 10 end|E0|H1 200|B1 all of it|E1|X1 done|", 1);
	/* without the close: it is not known to be complete */
	static struct run r;
	CHECK(strstr(play(&r, s, N(s), 0, 0), "X1 closed|") != NULL);
}

TEST(h1_upgrade_ends_http_parsing)
{
	/* the WebSocket frames carry a request line: never an exchange */
	const char *s[] = {
		"0:GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"1:HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
		"0:GET /admin HTTP/1.1\r\nHost: h\r\n\r\n",
		"1:HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	};
	same(s, N(s), "H0 GET /ws 11 end|E0|H1 101 end|E1|X1 upgrade|", 1);
	/* CONNECT and its 2xx */
	const char *c[] = {
		"0:CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
		"1:HTTP/1.1 200 Connection established\r\n\r\n",
		"0:\x16\x03\x01 not http",
	};
	same(c, N(c), "H0 CONNECT h:443 11 end|E0|H1 200 end|E1|X1 upgrade|", 1);
}

TEST(h1_refused_upgrade_goes_on_in_http)
{
	/* the next request was sent before the answer: held, then parsed */
	const char *s[] = {
		"0:GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n"
		"GET /next HTTP/1.1\r\nHost: h\r\n\r\n",
		"1:HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nno!",
		"1:HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ny",
	};
	same(s, N(s), "H0 GET /ws 11 end|E0|H1 400|B1 no!|E1|X1 done|"
		      "H0 GET /next 11 end|E0|H1 200|B1 y|E1|X2 done|", 1);
}

/* A hostile request after a good one: the good one is recorded, then the
 * parsing stops with an error and nothing after it becomes an exchange. */
static void hostile_n(const char *bad, size_t n, const char *then)
{
	static struct run r[2];
	char want[512];
	snprintf(want, sizeof(want), "H0 GET /ok 11 end|E0|H1 200 end|E1|X1 done|%s", then);
	for (int bytewise = 0; bytewise < 2; bytewise++) {
		struct run *x = &r[bytewise];
		run_init(x);
		const char *ok = "GET /ok HTTP/1.1\r\nHost: h\r\n\r\n";
		const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
		const char *after = "GET /after HTTP/1.1\r\nHost: h\r\n\r\n";
		h1_feed(x->c, 0, 1, (const uint8_t *)ok, strlen(ok));
		h1_feed(x->c, 1, 1, (const uint8_t *)resp, strlen(resp));
		for (size_t k = 0; k < n; k += bytewise ? 1 : n)
			h1_feed(x->c, 0, 1, (const uint8_t *)bad + k, bytewise ? 1 : n);
		h1_feed(x->c, 0, 1, (const uint8_t *)after, strlen(after));
		h1_feed(x->c, 1, 1, (const uint8_t *)resp, strlen(resp));
		h1_close(x->c, 2);
		h1_free(x->c, 3);
		CHECK_EQ(x->ctr.buffered, 0);
		if (!CHECK(!strcmp(x->t.s, want)))
			fprintf(stderr, "  got:  %s\n  want: %s\n  for %.*s\n", x->t.s, want, (int)n, bad);
		CHECK_EQ(x->ctr.errors, 1);
	}
}

#define hostile(lit) hostile_n(lit, sizeof(lit) - 1, "")

TEST(h1_hostile_requests_stop_parsing)
{
	hostile("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n");                 /* space in the target */
	hostile("GET /a HTTP/1.1\r\nHost: h\r\nX: 1\nGET /admin HTTP/1.1\r\n\r\n"); /* bare LF */
	hostile("GET /a HTTP/1.1\r\nHost: h\r\nX: 1\rY: 2\r\n\r\n");     /* bare CR */
	hostile("GET /a HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n");        /* NUL */
	hostile("GET /a HTTP/1.1\r\nHost: h\r\nX: 1\r\n folded\r\n\r\n"); /* obs-fold */
	hostile("GET /a HTTP/1.1\r\nHost: h\r\nX : 1\r\n\r\n");          /* space before ':' */
	hostile("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
	hostile("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
	hostile("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n");
	hostile("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
	/* a good head and a broken chunk: that exchange is written, with its error */
	static const char bad_chunk[] = "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
	hostile_n(bad_chunk, sizeof(bad_chunk) - 1, "H0 POST /a 11|X2 error|");
	hostile("GET /a HTTP/1.1\r\nUser-Agent: x\r\n\r\n");              /* 1.1 without Host */
	hostile("GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");         /* two Hosts */
	hostile("GET /a HTTP/2.0\r\nHost: h\r\n\r\n");
	hostile("G\x01T /a HTTP/1.1\r\nHost: h\r\n\r\n");
	hostile("GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n");
}

TEST(h1_hostile_responses_stop_parsing)
{
	const char *s[] = {
		"0:GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
		"1:HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX: y\nHTTP/1.1 200 OK\r\n\r\na",
	};
	same(s, N(s), "H0 GET /a 11 end|E0|H0 GET /b 11 end|E0|X1 error|X2 error|", 1);
	/* a response nobody asked for */
	const char *t[] = { "1:HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" };
	same(t, N(t), "", 1);
	/* 101 without an Upgrade request */
	const char *u[] = { "0:GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
			    "1:HTTP/1.1 101 Switching Protocols\r\n\r\n" };
	same(u, N(u), "H0 GET /a 11 end|E0|X1 error|", 1);
}

TEST(h1_limits_gaps_and_close)
{
	static struct run r;
	/* a head over the cap */
	run_init(&r);
	char *big = malloc(H1_MAX_HEAD + 100);
	memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
	memset(big + 19, 'a', H1_MAX_HEAD);
	h1_feed(r.c, 0, 1, (const uint8_t *)big, H1_MAX_HEAD + 19);
	CHECK(h1_stopped(r.c));
	CHECK_EQ(r.ctr.limits, 1);
	h1_free(r.c, 2);
	CHECK_EQ(r.ctr.buffered, 0);
	free(big);
	/* the budget every connection shares: connections holding partial heads
	 * stop (limit) once together they would hold more than it */
	{
		static struct h1_counters shared;
		static struct conn_open o;
		struct http_conn_info ci = { .open = &o };
		struct tr t = { .n = 0 };
		struct http_consumer cons = { &tr_ops, &t, 0 };
		struct h1_conn *cs[1100];
		char *part = malloc(60000);
		memcpy(part, "GET / HTTP/1.1\r\nX: ", 19);
		memset(part + 19, 'a', 60000 - 19);
		size_t stopped = 0;
		for (int k = 0; k < 1100; k++) {
			cs[k] = h1_new(&ci, &cons, 1, &shared);
			h1_feed(cs[k], 0, 1, (const uint8_t *)part, 60000);
			stopped += h1_stopped(cs[k]);
			t.n = 0;
		}
		CHECK(stopped > 0 && stopped < 1100);
		CHECK(shared.buffered <= H1_MAX_BUFFERED);
		for (int k = 0; k < 1100; k++)
			h1_free(cs[k], 2);
		CHECK_EQ(shared.buffered, 0);
		free(part);
	}
	/* more requests waiting than the cap */
	run_init(&r);
	const char *req = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
	for (int i = 0; i <= H1_MAX_PIPELINE; i++)
		h1_feed(r.c, 0, 1, (const uint8_t *)req, strlen(req));
	CHECK(h1_stopped(r.c));
	CHECK_EQ(r.ctr.limits, 1);
	CHECK_EQ(r.ctr.requests, H1_MAX_PIPELINE);
	h1_free(r.c, 2);
	/* a gap in a body, the close in the middle of one */
	const char *g[] = { "0:GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
			    "1:HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab", "1:<gap>",
			    "1:cdefghij" };
	same(g, N(g), "H0 GET /a 11 end|E0|H1 200|B1 ab|X1 gap|", 1);
	const char *c[] = { "0:GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
			    "1:HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab" };
	same(c, N(c), "H0 GET /a 11 end|E0|H1 200|B1 ab|X1 closed|", 1);
}

TEST(json_strings_utf8_and_base64)
{
	struct h2_buf b = { .cap = 4096 };
	json_str(&b, "a\"b\\c\n\x01\xc3\xa9\xff", 10);
	/* é stays UTF-8; the lone 0xff becomes U+00FF */
	const char want[] = "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\xc3\xbf\"";
	CHECK_EQ(b.len, sizeof(want) - 1);
	CHECK_MEM(b.p, want, sizeof(want) - 1);
	b.len = 0;
	json_base64(&b, "any carnal pleas", 16);
	CHECK_MEM(b.p, "\"YW55IGNhcm5hbCBwbGVhcw==\"", 26);
	b.len = 0;
	json_base64(&b, "ab", 2);
	CHECK_MEM(b.p, "\"YWI=\"", 6);
	CHECK(json_is_utf8((const uint8_t *)"caf\xc3\xa9", 5));
	CHECK(!json_is_utf8((const uint8_t *)"\xc0\xaf", 2));      /* overlong */
	CHECK(!json_is_utf8((const uint8_t *)"\xed\xa0\x80", 3));  /* surrogate */
	CHECK(!json_is_utf8((const uint8_t *)"a\0b", 3));
	CHECK(!json_is_utf8((const uint8_t *)"\xe2\x82", 2));      /* cut */
	h2_buf_free(&b);
}

TEST(json_base64_vector_equals_scalar)
{
	/* every length to 200 and some long ones, random bytes: the SSSE3 and
	 * AVX-512 code's output is the scalar code's (levels the CPU lacks fall
	 * back to the next one down: then the same code is compared) */
	uint8_t in[4200];
	uint32_t x = 12345;
	for (size_t i = 0; i < sizeof(in); i++) {
		x = x * 1103515245u + 12345u;
		in[i] = (uint8_t)(x >> 16);
	}
	struct h2_buf a = { .cap = 1 << 20 }, b = { .cap = 1 << 20 };
	int bad = 0;
	for (int level = 1; level <= 2; level++)
		for (size_t n = 0; n <= 4200 && !bad; n += n < 200 ? 1 : 997) {
			a.len = b.len = 0;
			json_simd = level;
			json_base64(&a, in, n);
			json_simd = 0;
			json_base64(&b, in, n);
			json_simd = 2;
			bad = a.len != b.len || memcmp(a.p, b.p, a.len);
			if (bad)
				fprintf(stderr, "  base64 (level %d) differs at length %zu\n", level, n);
		}
	CHECK(!bad);
	/* and text: escapes found 16 bytes at a time as one by one */
	char t[100];
	memset(t, 'a', sizeof(t));
	t[37] = '"';
	t[70] = '\x01';
	t[90] = (char)0xe9;
	a.len = 0;
	json_str(&a, t, sizeof(t));
	CHECK_EQ(a.len, 2 + 100 + 1 + 5 + 1);
	CHECK(json_is_utf8((const uint8_t *)"0123456789abcdef0123456789abcdef\xc3\xa9", 34));
	CHECK(!json_is_utf8((const uint8_t *)"0123456789abcdef0123456789abcde\xe9", 32));
	h2_buf_free(&a);
	h2_buf_free(&b);
}

TEST(json_numbers_as_printf_writes_them)
{
	static const uint64_t v[] = { 0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 12345, 99999999,
				      100000000, 1764000000123456789ull, 9999999999999999999ull,
				      10000000000000000000ull, UINT64_MAX };
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		uint8_t o[24];
		char want[24];
		int n = snprintf(want, sizeof(want), "%llu", (unsigned long long)v[i]);
		uint8_t *e = json_w_u64(o, v[i]);
		CHECK_EQ((int)(e - o), n);
		CHECK(e - o == n && !memcmp(o, want, (size_t)n));
	}
	for (uint64_t x = 1; x < 100000; x = x * 3 + 1) {
		uint8_t o[24];
		char want[24];
		int n = snprintf(want, sizeof(want), "%llu", (unsigned long long)x);
		uint8_t *e = json_w_u64(o, x);
		if (!CHECK(e - o == n && !memcmp(o, want, (size_t)n)))
			break;
	}
}

/* The JSON text of p[0..n) one byte at a time, as RFC 8259 wants it (the reference). */
static size_t ref_str(const uint8_t *p, size_t n, uint8_t *o)
{
	size_t k = 0;
	o[k++] = '"';
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];
		if (c == '"' || c == '\\') {
			o[k++] = '\\';
			o[k++] = c;
		} else if (c == '\n' || c == '\r' || c == '\t') {
			o[k++] = '\\';
			o[k++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
		} else if (c < 0x20) {
			k += (size_t)sprintf((char *)o + k, "\\u%04x", c);
		} else if (c < 0x80) {
			o[k++] = c;
		} else if (c == 0xc3 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] < 0xc0) {
			o[k++] = c; /* the only multi-byte sequences the generator makes: U+00C0.. */
			o[k++] = p[++i];
		} else {
			o[k++] = (uint8_t)(0xc0 | c >> 6);
			o[k++] = (uint8_t)(0x80 | (c & 0x3f));
		}
	}
	o[k++] = '"';
	return k;
}

TEST(json_str_blocks_equal_one_by_one)
{
	static const uint8_t alpha[] = "abcXYZ019 {}:,\"\\\n\t\x01\x1f\x7f\xc3\xa9\xff";
	/* odd rounds: printable ASCII only, so whole vector blocks take the escapes */
	static const uint8_t quotes[] = "ab{}:, \"\\";
	uint8_t in[300], want[2000];
	struct h2_buf b = { .cap = 1 << 20 };
	uint32_t x = 99;
	int bad = 0;
	for (int round = 0; round < 9000 && !bad; round++) {
		size_t n = (size_t)(round % 300);
		json_simd = round / 3000; /* scalar, SSSE3, AVX-512 (where the CPU has them) */
		for (size_t i = 0; i < n; i++) {
			x = x * 1103515245u + 12345u;
			/* mostly plain text, sometimes one of the others */
			in[i] = (x >> 24) % 4 ? (uint8_t)('a' + (x >> 16) % 26) :
				round % 2 ? quotes[(x >> 16) % (sizeof(quotes) - 1)] :
					    alpha[(x >> 16) % (sizeof(alpha) - 1)];
		}
		b.len = 0;
		json_str(&b, in, n);
		size_t k = ref_str(in, n, want);
		bad = b.len != k || memcmp(b.p, want, k);
		if (bad)
			fprintf(stderr, "  json_str differs from the reference at round %d (length %zu)\n", round, n);
		/* bodies: text where it is UTF-8 without NUL, refused (nothing written) otherwise */
		size_t before = b.len;
		int r = json_text(&b, in, n);
		if (!bad && r != (json_is_utf8(in, n) ? 0 : -EILSEQ)) {
			bad = 1;
			fprintf(stderr, "  json_text says %d at round %d\n", r, round);
		}
		if (!bad && !r && (b.len - before != k || memcmp(b.p + before, want, k))) {
			bad = 1;
			fprintf(stderr, "  json_text differs from json_str at round %d\n", round);
		}
		if (!bad && r && b.len != before)
			bad = 1;
	}
	json_simd = 2;
	CHECK(!bad);
	h2_buf_free(&b);
}

/* A stage counter of the chain's http stage. */
static uint64_t http_ctr(struct pipeline *pl, const char *key)
{
	for (size_t i = 0; i < pipeline_n_stages(pl); i++) {
		if (strcmp(pipeline_stage_name(pl, i), "http"))
			continue;
		struct kv kv[STAGE_MAX_COUNTERS];
		size_t n = pipeline_stage_counters(pl, i, kv, STAGE_MAX_COUNTERS);
		for (size_t k = 0; k < n; k++)
			if (!strcmp(kv[k].key, key))
				return kv[k].v;
	}
	return UINT64_MAX;
}

static void count_line(void *arg, const uint8_t *line, size_t n, uint64_t ts)
{
	(void)line;
	(void)n;
	(void)ts;
	(*(int *)arg)++;
}

TEST(http_stage_taps_within_caps)
{
	/* records only (no --h2-to-h1): connections are tapped, not owned; HTTP/2
	 * ones within --max-h2-conns (1 here), HTTP/1.1 ones within --max-http-conns (2) */
	int lines = 0;
	struct rec_config rc = { .body_max = 64, .emit = count_line, .emit_arg = &lines };
	struct rec_builder *rec = rec_new(&rc);
	struct sink_set none = { 0 };
	struct pipeline_opts po = { .flow = { .mss = 1460, .sinks = &none }, .records = rec,
				    .max_h2_conns = 1, .max_http_conns = 2 };
	const char *why;
	struct pipeline *pl = pipeline_new(&po, &why);
	if (!CHECK(pl && rec))
		return;
	uint64_t origin = pipeline_origin_new(pl);
	const char *alpn[] = { "h2", "h2", "http/1.1", "http/1.1" };
	for (int i = 0; i < 4; i++) {
		struct conn_meta *m = conn_meta_new();
		snprintf(m->alpn, sizeof(m->alpn), "%s", alpn[i]);
		struct conn_open o = { .id = { origin, (uint64_t)i + 1 }, .ts_ns = 1, .family = 4,
				       .side = 1, .client_port = (uint16_t)(40000 + i), .server_port = 443,
				       .meta = m };
		memcpy(o.client_addr, "\x0a\x00\x00\x01", 4);
		memcpy(o.server_addr, "\x0a\x00\x00\x02", 4);
		CHECK_EQ(pipeline_open(pl, &o), 0);
		conn_meta_unref(m);
		/* owned by the flow engine whatever the http stage does */
		CHECK(!strcmp(pipeline_owner(pl, &o.id), "flows"));
	}
	CHECK_EQ(http_ctr(pl, "followed"), 2);        /* one h2, one http/1.1 */
	CHECK_EQ(http_ctr(pl, "refused_followed"), 2); /* the second h2 (h2 cap), the last (conn cap) */
	/* the followed HTTP/1.1 connection makes a record; a refused one none */
	const char *req = "GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
	const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	for (uint64_t c = 3; c <= 4; c++) {
		struct conn_id id = { origin, c };
		pipeline_data(pl, &id, 0, 2, 0, (const uint8_t *)req, strlen(req), NULL);
		pipeline_data(pl, &id, 1, 3, 0, (const uint8_t *)resp, strlen(resp), NULL);
	}
	CHECK_EQ(lines, 1);
	CHECK_EQ(http_ctr(pl, "records"), 1);
	pipeline_close_all(pl, 9);
	pipeline_free(pl);
	rec_free(rec);
}
