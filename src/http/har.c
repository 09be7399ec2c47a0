/* tlsmirror har: a finished file of HTTP records (JSON Lines, our format) as one HAR 1.2 document. */
#include "http/har.h"
#include "http/json.h"
#include "http/records.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/*
 * Each line is parsed by a strict JSON parser of its own (RFC 8259: no
 * trailing commas, no comments, no bare control bytes in strings, \u
 * escapes with surrogate pairs checked; nesting at most HAR_MAX_DEPTH,
 * a line at most REC_MAX_LINE) and mapped field by field (docs/http.md).
 * A line that is not a record of ours (a truncated last line of an agent
 * that was killed, another tool's text) is named on stderr with its file,
 * line and why, and left out; the document stays valid, and the exit
 * status says so (2). Numbers keep their text: times in ns exceed what a
 * double holds exactly.
 */

#define HAR_MAX_DEPTH 32

enum jt { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jv {
	enum jt t;
	int b;
	char *s;          /* J_STR: the decoded bytes (NUL added); J_NUM: its text */
	size_t n;         /* J_STR: length; J_ARR, J_OBJ: members */
	struct jv *v;     /* members (J_OBJ: the values) */
	struct jv *k;     /* J_OBJ: the keys (J_STR each) */
};

struct jp {
	const char *p, *e, *start;
	const char *why;
	size_t at;
};

static void jv_free(struct jv *v)
{
	if (!v)
		return;
	free(v->s);
	for (size_t i = 0; (v->t == J_ARR || v->t == J_OBJ) && i < v->n; i++) {
		jv_free(&v->v[i]);
		if (v->t == J_OBJ)
			jv_free(&v->k[i]);
	}
	free(v->v);
	free(v->k);
	memset(v, 0, sizeof(*v));
}

static int fail(struct jp *j, const char *why)
{
	if (!j->why) {
		j->why = why;
		j->at = (size_t)(j->p - j->start);
	}
	return -1;
}

static void ws(struct jp *j)
{
	while (j->p < j->e && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static int hex4(struct jp *j, unsigned *out)
{
	unsigned v = 0;
	if (j->e - j->p < 4)
		return fail(j, "a \\u escape cut short");
	for (int i = 0; i < 4; i++) {
		char c = *j->p++;
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			v |= (unsigned)((c | 0x20) - 'a' + 10);
		else
			return fail(j, "a \\u escape with a non-hex digit");
	}
	*out = v;
	return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* A string at j->p (its opening quote). The decoded text is never longer
 * than the escaped one. */
static int jstring(struct jp *j, struct jv *v)
{
	j->p++;
	const char *s = j->p;
	const char *q = s;
	while (q < j->e && *q != '"') {
		if (*q == '\\')
			q++;
		q++;
	}
	if (q >= j->e)
		return fail(j, "a string without its closing quote");
	char *o = malloc((size_t)(q - s) + 1);
	if (!o)
		return fail(j, "out of memory");
	size_t n = 0;
	while (*j->p != '"') {
		unsigned char c = (unsigned char)*j->p++;
		if (c < 0x20) {
			free(o);
			return fail(j, "a control byte in a string");
		}
		if (c != '\\') {
			o[n++] = (char)c;
			continue;
		}
		char e = *j->p++;
		unsigned cp;
		switch (e) {
		case '"': case '\\': case '/':
			o[n++] = e;
			break;
		case 'b': o[n++] = '\b'; break;
		case 'f': o[n++] = '\f'; break;
		case 'n': o[n++] = '\n'; break;
		case 'r': o[n++] = '\r'; break;
		case 't': o[n++] = '\t'; break;
		case 'u':
			if (hex4(j, &cp))
				goto bad;
			if (cp >= 0xdc00 && cp <= 0xdfff) {
				fail(j, "a lone low surrogate");
				goto bad;
			}
			if (cp >= 0xd800 && cp <= 0xdbff) {
				unsigned lo;
				if (j->e - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u') {
					fail(j, "a high surrogate without its low one");
					goto bad;
				}
				j->p += 2;
				if (hex4(j, &lo))
					goto bad;
				if (lo < 0xdc00 || lo > 0xdfff) {
					fail(j, "a high surrogate without its low one");
					goto bad;
				}
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			}
			n += put_utf8(o + n, cp);
			break;
		default:
			fail(j, "an unknown escape in a string");
			goto bad;
		}
	}
	j->p++;
	o[n] = 0;
	v->t = J_STR;
	v->s = o;
	v->n = n;
	return 0;
bad:
	free(o);
	return -1;
}

static int jnumber(struct jp *j, struct jv *v)
{
	const char *s = j->p;
	if (j->p < j->e && *j->p == '-')
		j->p++;
	if (j->p >= j->e || *j->p < '0' || *j->p > '9')
		return fail(j, "not a value");
	if (*j->p == '0')
		j->p++;
	else
		while (j->p < j->e && *j->p >= '0' && *j->p <= '9')
			j->p++;
	if (j->p < j->e && *j->p == '.') {
		j->p++;
		if (j->p >= j->e || *j->p < '0' || *j->p > '9')
			return fail(j, "a number without digits after its point");
		while (j->p < j->e && *j->p >= '0' && *j->p <= '9')
			j->p++;
	}
	if (j->p < j->e && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->e && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (j->p >= j->e || *j->p < '0' || *j->p > '9')
			return fail(j, "a number without digits in its exponent");
		while (j->p < j->e && *j->p >= '0' && *j->p <= '9')
			j->p++;
	}
	size_t n = (size_t)(j->p - s);
	if (n > 64)
		return fail(j, "a number of more than 64 characters");
	v->s = strndup(s, n);
	if (!v->s)
		return fail(j, "out of memory");
	v->t = J_NUM;
	return 0;
}

static int jvalue(struct jp *j, struct jv *v, int depth);

/* Members of an array or object, grown as they come. */
static int jgrow(struct jp *j, struct jv *v, size_t *cap, int obj)
{
	if (v->n < *cap)
		return 0;
	size_t c = *cap ? *cap * 2 : 8;
	struct jv *nv = realloc(v->v, c * sizeof(*nv));
	if (!nv)
		return fail(j, "out of memory");
	v->v = nv;
	if (obj) {
		struct jv *nk = realloc(v->k, c * sizeof(*nk));
		if (!nk)
			return fail(j, "out of memory");
		v->k = nk;
	}
	*cap = c;
	return 0;
}

static int jcontainer(struct jp *j, struct jv *v, int depth, int obj)
{
	size_t cap = 0;
	char close = obj ? '}' : ']';
	v->t = obj ? J_OBJ : J_ARR;
	j->p++;
	ws(j);
	if (j->p < j->e && *j->p == close) {
		j->p++;
		return 0;
	}
	for (;;) {
		if (jgrow(j, v, &cap, obj))
			return -1;
		struct jv *m = &v->v[v->n];
		memset(m, 0, sizeof(*m));
		if (obj) {
			struct jv *k = &v->k[v->n];
			memset(k, 0, sizeof(*k));
			ws(j);
			if (j->p >= j->e || *j->p != '"')
				return fail(j, "an object key that is not a string");
			v->n++; /* freed with the rest on error */
			if (jstring(j, k))
				return -1;
			ws(j);
			if (j->p >= j->e || *j->p != ':')
				return fail(j, "no ':' after an object key");
			j->p++;
		} else {
			v->n++;
		}
		if (jvalue(j, m, depth + 1))
			return -1;
		ws(j);
		if (j->p < j->e && *j->p == ',') {
			j->p++;
			continue;
		}
		if (j->p < j->e && *j->p == close) {
			j->p++;
			return 0;
		}
		return fail(j, obj ? "no ',' or '}' after a member" : "no ',' or ']' after an element");
	}
}

/* true, false, null */
static int literal(struct jp *j, struct jv *v, const char *word, enum jt t, int b)
{
	size_t n = strlen(word);
	if ((size_t)(j->e - j->p) < n || memcmp(j->p, word, n))
		return fail(j, "not a value");
	j->p += n;
	v->t = t;
	v->b = b;
	return 0;
}

static int jvalue(struct jp *j, struct jv *v, int depth)
{
	if (depth > HAR_MAX_DEPTH)
		return fail(j, "nested too deep");
	ws(j);
	if (j->p >= j->e)
		return fail(j, "a value missing");
	switch (*j->p) {
	case '{':
		return jcontainer(j, v, depth, 1);
	case '[':
		return jcontainer(j, v, depth, 0);
	case '"':
		return jstring(j, v);
	case 't':
		return literal(j, v, "true", J_BOOL, 1);
	case 'f':
		return literal(j, v, "false", J_BOOL, 0);
	case 'n':
		return literal(j, v, "null", J_NULL, 0);
	default:
		return jnumber(j, v);
	}
	return fail(j, "not a value");
}

int har_parse(const char *text, size_t n, struct jv **out, const char **why, size_t *at)
{
	struct jp j = { .p = text, .e = text + n, .start = text };
	struct jv *v = calloc(1, sizeof(*v));
	if (!v) {
		*why = "out of memory";
		*at = 0;
		return -ENOMEM;
	}
	int err = jvalue(&j, v, 0);
	ws(&j);
	if (!err && j.p != j.e)
		err = fail(&j, "more after the value");
	if (err) {
		*why = j.why;
		*at = j.at;
		jv_free(v);
		free(v);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

void har_value_free(struct jv *v)
{
	jv_free(v);
	free(v);
}

/* ---- the record's fields ---- */

static const struct jv *get(const struct jv *o, const char *key)
{
	if (!o || o->t != J_OBJ)
		return NULL;
	size_t kn = strlen(key);
	for (size_t i = 0; i < o->n; i++)
		if (o->k[i].n == kn && !memcmp(o->k[i].s, key, kn))
			return &o->v[i];
	return NULL;
}

static const char *str_of(const struct jv *v, size_t *n)
{
	if (!v || v->t != J_STR) {
		*n = 0;
		return NULL;
	}
	*n = v->n;
	return v->s;
}

/* A non-negative integer field; -1 if absent, null or not one. */
static long long u64_of(const struct jv *v)
{
	if (!v || v->t != J_NUM || v->s[0] == '-' || strpbrk(v->s, ".eE"))
		return -1;
	errno = 0;
	unsigned long long x = strtoull(v->s, NULL, 10);
	return errno || x > (unsigned long long)INT64_MAX ? -1 : (long long)x;
}

/* A header list: [[name, value], ...] of strings. */
static int is_fields(const struct jv *h)
{
	if (!h || h->t != J_ARR)
		return 0;
	for (size_t i = 0; i < h->n; i++) {
		const struct jv *f = &h->v[i];
		if (f->t != J_ARR || f->n != 2 || f->v[0].t != J_STR || f->v[1].t != J_STR)
			return 0;
	}
	return 1;
}

/* The first field named name (case-insensitive), or NULL. */
static const struct jv *field(const struct jv *h, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; h && i < h->n; i++)
		if (h->v[i].v[0].n == n && !strncasecmp(h->v[i].v[0].s, name, n))
			return &h->v[i].v[1];
	return NULL;
}

/* What makes a line a record of ours: the fields the document needs, with their types. */
static const char *check_record(const struct jv *r)
{
	if (!r || r->t != J_OBJ)
		return "not a JSON object";
	if (u64_of(get(r, "time_request_ns")) < 0)
		return "no time_request_ns";
	size_t n;
	if (!str_of(get(r, "method"), &n) || !str_of(get(r, "path"), &n) ||
	    !str_of(get(r, "http_version"), &n))
		return "no method, path or http_version";
	const struct jv *rq = get(r, "request"), *rs = get(r, "response");
	if (!rq || rq->t != J_OBJ || !is_fields(get(rq, "headers")))
		return "no request headers";
	if (!rs || (rs->t != J_NULL && (rs->t != J_OBJ || !is_fields(get(rs, "headers")) ||
					u64_of(get(rs, "status")) < 0)))
		return "a response without status or headers";
	return NULL;
}

/* ---- the document ---- */

struct har_out {
	FILE *f;
	struct h2_buf b;
	size_t entries;
	int err;
};

#define PUT(e) do { if ((err = (e))) return err; } while (0)

static int put_ms(struct h2_buf *b, long long ns)
{
	char t[32];
	snprintf(t, sizeof(t), "%.3f", ns < 0 ? -1.0 : (double)ns / 1e6);
	return json_raw(b, t);
}

static int put_fields_har(struct h2_buf *b, const struct jv *h)
{
	int err;
	PUT(json_raw(b, "["));
	for (size_t i = 0; h && i < h->n; i++) {
		PUT(json_raw(b, i ? ",{\"name\":" : "{\"name\":"));
		PUT(json_str(b, h->v[i].v[0].s, h->v[i].v[0].n));
		PUT(json_raw(b, ",\"value\":"));
		PUT(json_str(b, h->v[i].v[1].s, h->v[i].v[1].n));
		PUT(json_raw(b, "}"));
	}
	return json_raw(b, "]");
}

/* query "a=1&b" as HAR's name/value list (as it came: no percent-decoding) */
static int put_query(struct h2_buf *b, const char *q, size_t n)
{
	int err, first = 1;
	PUT(json_raw(b, "["));
	for (size_t i = 0; q && i < n;) {
		size_t e = i;
		while (e < n && q[e] != '&')
			e++;
		if (e > i) {
			const char *eq = memchr(q + i, '=', e - i);
			size_t kn = eq ? (size_t)(eq - (q + i)) : e - i;
			PUT(json_raw(b, first ? "{\"name\":" : ",{\"name\":"));
			PUT(json_str(b, q + i, kn));
			PUT(json_raw(b, ",\"value\":"));
			PUT(eq ? json_str(b, eq + 1, (size_t)(q + e - eq - 1)) : json_raw(b, "\"\""));
			PUT(json_raw(b, "}"));
			first = 0;
		}
		i = e + 1;
	}
	return json_raw(b, "]");
}

static const char *version_of(const char *v)
{
	return !strcmp(v, "HTTP/2") ? "HTTP/2.0" : v; /* HAR's spelling */
}

/* A body: HAR's text, and base64 flagged as its encoding. */
static int put_body_har(struct h2_buf *b, const struct jv *side, int response)
{
	int err;
	size_t n;
	const char *text = str_of(get(side, "body"), &n);
	const char *enc = str_of(get(side, "body_encoding"), &(size_t){ 0 });
	const struct jv *ct = field(get(side, "headers"), "content-type");
	long long seen = u64_of(get(side, "body_bytes"));
	if (response) {
		long long total = u64_of(get(side, "body_length"));
		PUT(json_raw(b, ",\"content\":{\"size\":"));
		PUT(json_u64(b, (uint64_t)(total >= 0 ? total : seen >= 0 ? seen : 0)));
		PUT(json_raw(b, ",\"mimeType\":"));
		PUT(ct ? json_str(b, ct->s, ct->n) : json_raw(b, "\"x-unknown\""));
		if (text) {
			PUT(json_raw(b, ",\"text\":"));
			PUT(json_str(b, text, n));
			if (enc && !strcmp(enc, "base64"))
				PUT(json_raw(b, ",\"encoding\":\"base64\""));
		}
		PUT(json_raw(b, "}"));
	} else if (text && n) {
		PUT(json_raw(b, ",\"postData\":{\"mimeType\":"));
		PUT(ct ? json_str(b, ct->s, ct->n) : json_raw(b, "\"\""));
		PUT(json_raw(b, ",\"params\":[],\"text\":"));
		PUT(json_str(b, text, n));
		if (enc && !strcmp(enc, "base64"))
			PUT(json_raw(b, ",\"_encoding\":\"base64\""));
		PUT(json_raw(b, "}"));
	}
	PUT(json_raw(b, ",\"headersSize\":-1,\"bodySize\":"));
	return json_i64(b, seen >= 0 ? seen : -1);
}

static int put_entry(struct h2_buf *b, const struct jv *r)
{
	int err;
	size_t n, sn, an, pn, qn;
	long long t0 = u64_of(get(r, "time_request_ns"));
	long long t1 = u64_of(get(r, "time_response_ns"));
	long long dur = u64_of(get(r, "duration_ns"));
	const struct jv *rq = get(r, "request"), *rs = get(r, "response");
	const char *ver = version_of(str_of(get(r, "http_version"), &n));
	time_t secs = (time_t)(t0 / 1000000000);
	struct tm tm;
	char when[64];
	gmtime_r(&secs, &tm);
	size_t w = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + w, sizeof(when) - w, ".%03lldZ", (t0 / 1000000) % 1000);
	PUT(json_raw(b, "{\"startedDateTime\":"));
	PUT(json_str(b, when, strlen(when)));
	PUT(json_raw(b, ",\"time\":"));
	PUT(put_ms(b, dur >= 0 ? dur : 0));
	/* request */
	const char *scheme = str_of(get(r, "scheme"), &sn);
	const char *auth = str_of(get(r, "authority"), &an);
	const char *path = str_of(get(r, "path"), &pn);
	const char *query = str_of(get(r, "query"), &qn);
	struct h2_buf url = { .cap = REC_MAX_LINE };
	err = h2_buf_put(&url, scheme ? scheme : "https", scheme ? sn : 5);
	if (!err)
		err = h2_buf_put(&url, "://", 3);
	if (!err && auth)
		err = h2_buf_put(&url, auth, an);
	if (!err)
		err = h2_buf_put(&url, path, pn);
	if (!err && query)
		err = h2_buf_put(&url, "?", 1);
	if (!err && query)
		err = h2_buf_put(&url, query, qn);
	const char *method = str_of(get(r, "method"), &n);
	if (!err)
		err = json_raw(b, ",\"request\":{\"method\":");
	if (!err)
		err = json_str(b, method, n);
	if (!err)
		err = json_raw(b, ",\"url\":");
	if (!err)
		err = json_str(b, url.p ? url.p : (const uint8_t *)"", url.len);
	h2_buf_free(&url);
	if (err)
		return err;
	PUT(json_raw(b, ",\"httpVersion\":"));
	PUT(json_str(b, ver, strlen(ver)));
	PUT(json_raw(b, ",\"cookies\":[],\"headers\":"));
	PUT(put_fields_har(b, get(rq, "headers")));
	PUT(json_raw(b, ",\"queryString\":"));
	PUT(put_query(b, query, qn));
	PUT(put_body_har(b, rq, 0));
	PUT(json_raw(b, "},\"response\":{\"status\":"));
	if (rs && rs->t == J_OBJ) {
		long long st = u64_of(get(rs, "status"));
		const struct jv *loc = field(get(rs, "headers"), "location");
		PUT(json_u64(b, (uint64_t)st));
		PUT(json_raw(b, ",\"statusText\":"));
		const char *reason = http_reason((unsigned)st);
		PUT(json_str(b, reason, strlen(reason)));
		PUT(json_raw(b, ",\"httpVersion\":"));
		PUT(json_str(b, ver, strlen(ver)));
		PUT(json_raw(b, ",\"cookies\":[],\"headers\":"));
		PUT(put_fields_har(b, get(rs, "headers")));
		PUT(put_body_har(b, rs, 1));
		PUT(json_raw(b, ",\"redirectURL\":"));
		PUT(loc ? json_str(b, loc->s, loc->n) : json_raw(b, "\"\""));
	} else {
		/* no response seen: as browsers write a request that got none */
		PUT(json_raw(b, "0,\"statusText\":\"\",\"httpVersion\":"));
		PUT(json_str(b, ver, strlen(ver)));
		PUT(json_raw(b, ",\"cookies\":[],\"headers\":[],\"content\":{\"size\":0,"
			       "\"mimeType\":\"x-unknown\"},\"redirectURL\":\"\",\"headersSize\":-1,"
			       "\"bodySize\":-1"));
	}
	PUT(json_raw(b, "},\"cache\":{},\"timings\":{\"send\":0,\"wait\":"));
	long long wait = t1 >= t0 && t1 >= 0 ? t1 - t0 : -1;
	PUT(put_ms(b, wait >= 0 ? wait : dur >= 0 ? dur : 0));
	PUT(json_raw(b, ",\"receive\":"));
	PUT(put_ms(b, wait >= 0 && dur >= wait ? dur - wait : 0));
	PUT(json_raw(b, "}"));
	const struct jv *srv = get(r, "server"), *conn = get(r, "conn");
	const char *ip = str_of(get(srv, "addr"), &n);
	if (ip) {
		PUT(json_raw(b, ",\"serverIPAddress\":"));
		PUT(json_str(b, ip, n));
	}
	const char *cid = str_of(get(conn, "id"), &n);
	if (cid) {
		PUT(json_raw(b, ",\"connection\":"));
		PUT(json_str(b, cid, n));
	}
	const char *end = str_of(get(r, "end"), &n);
	if (end) {
		PUT(json_raw(b, ",\"_end\":"));
		PUT(json_str(b, end, n));
	}
	return json_raw(b, "}");
}

int har_entry(const char *line, size_t n, struct h2_buf *out, int comma, const char **why,
	      size_t *at)
{
	struct jv *r = NULL;
	*at = 0;
	while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	if (har_parse(line, n, &r, why, at))
		return -EINVAL;
	const char *bad = check_record(r);
	int err = 0;
	if (bad) {
		*why = bad;
		err = -EINVAL;
	} else {
		out->len = 0;
		out->cap = 4 * (size_t)REC_MAX_LINE;
		if (comma)
			err = json_raw(out, ",\n");
		if (!err)
			err = put_entry(out, r);
		if (err)
			*why = "the entry does not fit in memory";
	}
	har_value_free(r);
	return err;
}

static int har_add_line(struct har_out *o, const char *line, size_t n, const char **why, size_t *at)
{
	int err = har_entry(line, n, &o->b, o->entries > 0, why, at);
	if (err)
		return err;
	if (fwrite(o->b.p, 1, o->b.len, o->f) != o->b.len)
		o->err = -EIO;
	o->entries++;
	return 0;
}

/* usage: tlsmirror har [FILE...] (none or "-": standard input) */
int har_main(int argc, char **argv)
{
	struct har_out o = { .f = stdout };
	int bad = 0;
	for (int i = 0; i < argc; i++)
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			printf("usage: tlsmirror har [FILE...]\n"
			       "HTTP records (--http-log, our format) as one HAR 1.2 document on stdout;\n"
			       "no FILE or '-': standard input. A line that is not a record is named on\n"
			       "stderr and left out (exit status 2).\n");
			return 0;
		}
	fputs("{\"log\":{\"version\":\"1.2\",\"creator\":{\"name\":\"tlsmirror\",\"version\":\"1\"},"
	      "\"entries\":[\n", o.f);
	char *line = NULL;
	size_t cap = 0;
	for (int i = 0; i < (argc ? argc : 1); i++) {
		const char *name = argc ? argv[i] : "-";
		FILE *f = strcmp(name, "-") ? fopen(name, "r") : stdin;
		if (!f) {
			fprintf(stderr, "tlsmirror har: %s: %s\n", name, strerror(errno));
			bad = 1;
			continue;
		}
		ssize_t k;
		for (size_t ln = 1; (k = getline(&line, &cap, f)) >= 0; ln++) {
			const char *why = NULL;
			size_t at = 0;
			if ((size_t)k > REC_MAX_LINE) {
				fprintf(stderr, "tlsmirror har: %s:%zu: a line longer than a record can be: "
					"left out\n", name, ln);
				bad = 1;
				continue;
			}
			if (k == 0 || (k == 1 && line[0] == '\n'))
				continue;
			if (har_add_line(&o, line, (size_t)k, &why, &at)) {
				fprintf(stderr, "tlsmirror har: %s:%zu:%zu: not a record (%s): left out\n",
					name, ln, at + 1, why ? why : "?");
				bad = 1;
			}
		}
		if (ferror(f)) {
			fprintf(stderr, "tlsmirror har: %s: %s\n", name, strerror(errno));
			bad = 1;
		}
		if (f != stdin)
			fclose(f);
	}
	free(line);
	fputs("\n]}}\n", o.f);
	h2_buf_free(&o.b);
	if (fflush(o.f) || o.err) {
		fprintf(stderr, "tlsmirror har: cannot write the document: %s\n", strerror(errno));
		return 1;
	}
	return bad ? 2 : 0;
}
