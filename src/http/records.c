/* HTTP transaction records: heads, capped bodies and the connection's metadata, one JSON line per exchange (contract in records.h). */
#include "http/records.h"
#include "http/json.h"
#include "pipeline/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Body bytes kept by all open exchanges together: past this an exchange's
 * body is cut (flagged) however far below --http-body-max it is. */
#define REC_MAX_BUFFERED (256u << 20)

struct rec_dir {
	uint64_t ts_head, ts_end;
	struct h2_hdrs hdrs;       /* regular fields (pseudo-headers apart) */
	struct h2_hdrs trailers;
	struct h2_buf body;        /* the first body_max bytes */
	uint64_t seen;             /* body bytes seen */
	int64_t clen;              /* content-length, -1 none */
	uint8_t head, ended, truncated, skip;
};

struct rec_txn {
	struct rec_dir d[2];
	struct h2_buf method, target, scheme, authority;
	uint16_t status;
	uint16_t info[4];          /* informational statuses, in order */
	uint8_t ninfo, version;
	struct rec_txn *next_spare;
};

#define REC_SPARES 32              /* exchanges' states kept for reuse */

struct rec_builder {
	struct rec_config cfg;
	struct rec_counters ctr;
	size_t buffered;           /* body bytes kept by open exchanges */
	struct h2_buf line;        /* the record being written */
	struct h2_buf tmp;         /* a part of it (Akto's header objects) */
	struct rec_txn *spare;     /* states kept for reuse */
	size_t nspare;
	unsigned slot;
};

int rec_parse_format(const char *name, enum rec_format *out)
{
	if (!strcmp(name, "tlsmirror"))
		*out = REC_FORMAT_TLSMIRROR;
	else if (!strcmp(name, "akto"))
		*out = REC_FORMAT_AKTO;
	else
		return -EINVAL;
	return 0;
}

const char *http_end_name(enum http_end e)
{
	static const char *const n[] = {
		[HTTP_END_DONE] = "done", [HTTP_END_RESET] = "reset", [HTTP_END_CLOSED] = "closed",
		[HTTP_END_GAP] = "gap", [HTTP_END_ERROR] = "error", [HTTP_END_UPGRADE] = "upgrade",
		[HTTP_END_LIMIT] = "limit" };
	return (unsigned)e < sizeof(n) / sizeof(n[0]) && n[e] ? n[e] : "unknown";
}

static void str_set(struct h2_buf *b, const struct http_str *s)
{
	b->len = 0;
	b->cap = 64u * 1024;
	if (s->p && s->n)
		h2_buf_put(b, s->p, s->n); /* over the cap: left empty */
}

static int ieq_prefix(const uint8_t *v, size_t n, const char *pre)
{
	size_t k = strlen(pre);
	if (n < k)
		return 0;
	for (size_t i = 0; i < k; i++)
		if ((v[i] | 0x20) != (uint8_t)(pre[i] | 0x20))
			return 0;
	return 1;
}

/* Copies the regular fields of h (no pseudo-headers); the content type
 * decides whether the body is kept. */
static void copy_fields(struct rec_builder *b, struct rec_dir *d, const struct h2_hdrs *h)
{
	size_t pos = 0;
	struct h2_field f;
	h2_hdrs_reset(&d->hdrs);
	while (h && h2_hdrs_next(h, &pos, &f)) {
		if (f.nlen && f.name[0] == ':')
			continue;
		if (f.nlen == 12 && ieq_prefix(f.name, 12, "content-type"))
			for (size_t i = 0; i < b->cfg.n_headers_only; i++)
				if (ieq_prefix(f.value, f.vlen, b->cfg.headers_only[i]))
					d->skip = 1;
		if (h2_hdrs_add(&d->hdrs, f.name, f.nlen, f.value, f.vlen))
			break; /* cannot be: h was within the same cap */
	}
}

/* An exchange's state: a spare one (its buffers kept) or a new one. */
static struct rec_txn *txn_of(struct rec_builder *b, struct http_txn *x, int make)
{
	struct rec_txn *t = x->priv[b->slot];
	if (!t && make) {
		if (b->spare) {
			t = b->spare;
			b->spare = t->next_spare;
			b->nspare--;
		} else if (!(t = calloc(1, sizeof(*t)))) {
			b->ctr.nomem++;
			return NULL;
		}
		for (int i = 0; i < 2; i++) {
			t->d[i].clen = -1;
			t->d[i].body.cap = b->cfg.body_max;
		}
		x->priv[b->slot] = t;
	}
	return t;
}

static void on_head(void *arg, struct http_txn *x, int dir, uint64_t ts,
		    const struct http_head *h)
{
	struct rec_builder *b = arg;
	struct rec_txn *t = txn_of(b, x, 1);
	if (!t)
		return;
	struct rec_dir *d = &t->d[dir];
	if (dir == 1 && h->informational) {
		if (t->ninfo < 4)
			t->info[t->ninfo++] = h->status;
		if (!d->ts_head)
			d->ts_head = ts;
		return;
	}
	if (!d->ts_head)
		d->ts_head = ts;
	d->head = 1;
	d->clen = h->content_length;
	copy_fields(b, d, h->fields);
	if (dir == 0) {
		t->version = h->version;
		str_set(&t->method, &h->method);
		str_set(&t->target, &h->target);
		str_set(&t->scheme, &h->scheme);
		str_set(&t->authority, &h->authority);
	} else {
		t->status = h->status;
	}
}

static void on_body(void *arg, struct http_txn *x, int dir, uint64_t ts, const uint8_t *p,
		    size_t n)
{
	struct rec_builder *b = arg;
	struct rec_txn *t = txn_of(b, x, 0);
	(void)ts;
	if (!t)
		return;
	struct rec_dir *d = &t->d[dir];
	d->seen += n;
	if (d->skip)
		return;
	size_t room = d->body.cap - d->body.len;
	if (REC_MAX_BUFFERED - b->buffered < room)
		room = REC_MAX_BUFFERED - b->buffered;
	size_t k = n < room ? n : room;
	if (k < n)
		d->truncated = 1;
	if (k && !h2_buf_put(&d->body, p, k))
		b->buffered += k;
	else if (k)
		d->truncated = 1;
}

static void on_trailers(void *arg, struct http_txn *x, int dir, uint64_t ts,
			const struct h2_hdrs *tr)
{
	struct rec_builder *b = arg;
	struct rec_txn *t = txn_of(b, x, 0);
	(void)ts;
	if (!t)
		return;
	size_t pos = 0;
	struct h2_field f;
	h2_hdrs_reset(&t->d[dir].trailers);
	while (h2_hdrs_next(tr, &pos, &f))
		if (h2_hdrs_add(&t->d[dir].trailers, f.name, f.nlen, f.value, f.vlen))
			break;
}

static void on_msg_end(void *arg, struct http_txn *x, int dir, uint64_t ts)
{
	struct rec_builder *b = arg;
	struct rec_txn *t = txn_of(b, x, 0);
	if (t) {
		t->d[dir].ended = 1;
		t->d[dir].ts_end = ts;
	}
}

/* ---- the record ---- */

#define PUT(e) do { if ((err = (e))) return err; } while (0)

static int put_fields(struct h2_buf *o, const struct h2_hdrs *h)
{
	int err;
	size_t pos = 0;
	struct h2_field f;
	PUT(JSON_LIT(o, "["));
	for (int first = 1; h2_hdrs_next(h, &pos, &f); first = 0) {
		PUT(json_raw(o, first ? "[" : ",["));
		PUT(json_str(o, f.name, f.nlen));
		PUT(JSON_LIT(o, ","));
		PUT(json_str(o, f.value, f.vlen));
		PUT(JSON_LIT(o, "]"));
	}
	return JSON_LIT(o, "]");
}

static int put_addr(struct h2_buf *o, const char *key, int family, const uint8_t *a,
		    unsigned port)
{
	char s[INET6_ADDRSTRLEN] = "";
	int err;
	inet_ntop(family == 6 ? AF_INET6 : AF_INET, a, s, sizeof(s));
	PUT(json_raw(o, key));
	PUT(JSON_LIT(o, "{\"addr\":"));
	PUT(json_cstr(o, s));
	PUT(JSON_LIT(o, ",\"port\":"));
	PUT(json_u64(o, port));
	return JSON_LIT(o, "}");
}

static int put_body(struct h2_buf *o, const struct rec_dir *d)
{
	int err;
	int text = json_is_utf8(d->body.p ? d->body.p : (const uint8_t *)"", d->body.len);
	PUT(JSON_LIT(o, ",\"body\":"));
	if (d->skip)
		PUT(JSON_LIT(o, "null"));
	else if (text)
		PUT(json_str(o, d->body.p, d->body.len));
	else
		PUT(json_base64(o, d->body.p, d->body.len));
	PUT(JSON_LIT(o, ",\"body_encoding\":"));
	PUT(json_raw(o, d->skip ? "\"omitted\"" : text ? "\"text\"" : "\"base64\""));
	PUT(JSON_LIT(o, ",\"body_bytes\":"));
	PUT(json_u64(o, d->seen));
	PUT(JSON_LIT(o, ",\"body_length\":"));
	/* what the message says it carries: content-length, or all of it once complete */
	if (d->clen >= 0)
		PUT(json_i64(o, d->clen));
	else if (d->ended)
		PUT(json_u64(o, d->seen));
	else
		PUT(JSON_LIT(o, "null"));
	PUT(JSON_LIT(o, ",\"body_truncated\":"));
	PUT(json_raw(o, d->truncated || (d->skip && d->seen) ? "true" : "false"));
	PUT(JSON_LIT(o, ",\"complete\":"));
	return json_raw(o, d->ended ? "true" : "false");
}

/* path and query of a request target (origin or absolute form) */
static void split_target(const struct h2_buf *t, struct http_str *path, struct http_str *query)
{
	const uint8_t *p = t->p;
	size_t n = t->len;
	query->p = NULL;
	query->n = 0;
	if (n > 7 && (ieq_prefix(p, n, "http://") || ieq_prefix(p, n, "https://"))) {
		const uint8_t *s = memchr(p + 7, '/', n - 7);
		size_t cut = s ? (size_t)(s - p) : n;
		p += cut;
		n -= cut;
	}
	const uint8_t *q = n ? memchr(p, '?', n) : NULL;
	path->p = p;
	path->n = q ? (size_t)(q - p) : n;
	if (q) {
		query->p = q + 1;
		query->n = n - path->n - 1;
	}
}

static int put_opt_str(struct h2_buf *o, const char *key, const char *s)
{
	int err;
	if (!s || !*s)
		return 0;
	PUT(json_raw(o, key));
	return json_cstr(o, s);
}

static int put_conn_json(struct h2_buf *o, const struct http_txn *x)
{
	const struct conn_open *c = x->conn->open;
	const struct conn_meta *m = c->meta;
	int err;
	char id[48];
	snprintf(id, sizeof(id), "%llu/%llu", (unsigned long long)c->id.origin,
		 (unsigned long long)c->id.conn);
	unsigned sport = m && m->real_server_port ? m->real_server_port : c->server_port;
	PUT(put_addr(o, ",\"client\":", c->family, c->client_addr, c->client_port));
	PUT(put_addr(o, ",\"server\":", c->family, c->server_addr, sport));
	PUT(JSON_LIT(o, ",\"conn\":{\"id\":"));
	PUT(json_cstr(o, id));
	if (m) {
		PUT(JSON_LIT(o, ",\"source\":"));
		PUT(json_cstr(o, conn_kind_name(m->kind)));
		PUT(JSON_LIT(o, ",\"side\":"));
		PUT(json_raw(o, m->side ? "\"server\"" : "\"client\""));
		PUT(put_opt_str(o, ",\"process\":", m->comm));
		if (m->pid) {
			PUT(JSON_LIT(o, ",\"pid\":"));
			PUT(json_u64(o, m->pid));
			PUT(JSON_LIT(o, ",\"uid\":"));
			PUT(json_u64(o, m->uid));
		}
		PUT(put_opt_str(o, ",\"agent_host\":", m->host));
		PUT(put_opt_str(o, ",\"sni\":", m->sni));
		PUT(put_opt_str(o, ",\"alpn\":", m->alpn));
		PUT(put_opt_str(o, ",\"tls_version\":", conn_tls_name(m->tls_version)));
		PUT(put_opt_str(o, ",\"cipher\":", m->cipher));
		if (m->flags & CONN_META_MIDSTREAM)
			PUT(JSON_LIT(o, ",\"midstream\":true"));
	}
	return JSON_LIT(o, "}");
}

/* The connection's part of the record: made at its first record, then copied. */
static int put_conn(struct h2_buf *o, const struct http_txn *x)
{
	struct h2_buf *c = &x->conn->cache;
	if (!c->len) {
		c->cap = 64u * 1024;
		int err = put_conn_json(c, x);
		if (err) {
			c->len = 0;
			return err;
		}
	}
	return h2_buf_put(o, c->p, c->len);
}

static int put_time(struct h2_buf *o, const char *key, uint64_t ts)
{
	int err;
	PUT(json_raw(o, key));
	return ts ? json_u64(o, ts) : JSON_LIT(o, "null");
}

static int write_tlsmirror(struct rec_builder *b, struct h2_buf *o, const struct http_txn *x,
			   const struct rec_txn *t, enum http_end why)
{
	int err;
	const struct rec_dir *rq = &t->d[0], *rs = &t->d[1];
	struct http_str path, query;
	split_target(&t->target, &path, &query);
	(void)b;
	PUT(put_time(o, "{\"time_request_ns\":", rq->ts_head));
	PUT(put_time(o, ",\"time_response_ns\":", rs->ts_head));
	PUT(JSON_LIT(o, ",\"duration_ns\":"));
	uint64_t last = rs->ts_end ? rs->ts_end : rs->ts_head;
	if (rq->ts_head && last >= rq->ts_head)
		PUT(json_u64(o, last - rq->ts_head));
	else
		PUT(JSON_LIT(o, "null"));
	PUT(put_conn(o, x));
	if (x->version == 20) {
		PUT(JSON_LIT(o, ",\"stream_id\":"));
		PUT(json_u64(o, x->stream));
	}
	PUT(JSON_LIT(o, ",\"http_version\":"));
	PUT(json_raw(o, t->version == 20 ? "\"HTTP/2\"" : t->version == 10 ? "\"HTTP/1.0\"" :
			"\"HTTP/1.1\""));
	PUT(JSON_LIT(o, ",\"method\":"));
	PUT(json_str(o, t->method.p, t->method.len));
	PUT(JSON_LIT(o, ",\"scheme\":"));
	if (t->scheme.len)
		PUT(json_str(o, t->scheme.p, t->scheme.len));
	else
		PUT(JSON_LIT(o, "\"https\"")); /* clear text of TLS */
	PUT(JSON_LIT(o, ",\"authority\":"));
	if (t->authority.len)
		PUT(json_str(o, t->authority.p, t->authority.len));
	else
		PUT(JSON_LIT(o, "null"));
	PUT(JSON_LIT(o, ",\"path\":"));
	PUT(json_str(o, path.p, path.n));
	PUT(JSON_LIT(o, ",\"query\":"));
	if (query.p)
		PUT(json_str(o, query.p, query.n));
	else
		PUT(JSON_LIT(o, "null"));
	PUT(JSON_LIT(o, ",\"request\":{\"headers\":"));
	PUT(put_fields(o, &rq->hdrs));
	if (rq->trailers.buf.len) {
		PUT(JSON_LIT(o, ",\"trailers\":"));
		PUT(put_fields(o, &rq->trailers));
	}
	PUT(put_body(o, rq));
	PUT(JSON_LIT(o, "},\"response\":"));
	if (rs->head) {
		PUT(JSON_LIT(o, "{\"status\":"));
		PUT(json_u64(o, t->status));
		PUT(JSON_LIT(o, ",\"headers\":"));
		PUT(put_fields(o, &rs->hdrs));
		if (rs->trailers.buf.len) {
			PUT(JSON_LIT(o, ",\"trailers\":"));
			PUT(put_fields(o, &rs->trailers));
		}
		PUT(put_body(o, rs));
		PUT(JSON_LIT(o, "}"));
	} else {
		PUT(JSON_LIT(o, "null"));
	}
	if (t->ninfo) {
		PUT(JSON_LIT(o, ",\"informational\":["));
		for (unsigned i = 0; i < t->ninfo; i++) {
			PUT(json_raw(o, i ? "," : ""));
			PUT(json_u64(o, t->info[i]));
		}
		PUT(JSON_LIT(o, "]"));
	}
	PUT(JSON_LIT(o, ",\"end\":"));
	PUT(json_cstr(o, http_end_name(why)));
	return JSON_LIT(o, "}\n");
}

static void txn_free(struct rec_txn *t)
{
	for (int i = 0; i < 2; i++) {
		h2_buf_free(&t->d[i].body);
		h2_buf_free(&t->d[i].hdrs.buf);
		h2_buf_free(&t->d[i].trailers.buf);
	}
	h2_buf_free(&t->method);
	h2_buf_free(&t->target);
	h2_buf_free(&t->scheme);
	h2_buf_free(&t->authority);
	free(t);
}

/* The exchange is written: its state is kept for the next one (at most
 * REC_SPARES, buffers emptied but allocated), or freed. */
static void txn_release(struct rec_builder *b, struct http_txn *x, struct rec_txn *t)
{
	x->priv[b->slot] = NULL;
	b->buffered -= t->d[0].body.len + t->d[1].body.len;
	if (b->nspare >= REC_SPARES) {
		txn_free(t);
		return;
	}
	struct rec_txn keep = *t;
	memset(t, 0, sizeof(*t));
	for (int i = 0; i < 2; i++) {
		t->d[i].body = keep.d[i].body;
		t->d[i].body.len = 0;
		t->d[i].hdrs.buf = keep.d[i].hdrs.buf;
		t->d[i].trailers.buf = keep.d[i].trailers.buf;
		h2_hdrs_reset(&t->d[i].hdrs);
		h2_hdrs_reset(&t->d[i].trailers);
	}
	t->method = keep.method;
	t->target = keep.target;
	t->scheme = keep.scheme;
	t->authority = keep.authority;
	t->method.len = t->target.len = t->scheme.len = t->authority.len = 0;
	t->next_spare = b->spare;
	b->spare = t;
	b->nspare++;
}

/* Headers as Akto reads them: a JSON object in a string, names in lower
 * case, repeated fields joined with ", ". */
#define AKTO_MAX_FIELDS 256
static int akto_headers(struct h2_buf *o, struct h2_buf *tmp, const struct h2_hdrs *h,
			const struct h2_buf *authority)
{
	int err;
	size_t pos = 0, n = 0;
	struct h2_field f;
	tmp->len = 0;
	tmp->cap = REC_MAX_LINE;
	PUT(JSON_LIT(tmp, "{"));
	if (authority && authority->len) {
		/* HTTP/2 has no host field: Akto finds the host there */
		int has_host = 0;
		while (h2_hdrs_next(h, &pos, &f))
			has_host |= f.nlen == 4 && ieq_prefix(f.name, 4, "host");
		pos = 0;
		if (!has_host) {
			PUT(JSON_LIT(tmp, "\"host\":"));
			PUT(json_str(tmp, authority->p, authority->len));
			n++;
		}
	}
	/* the first AKTO_MAX_FIELDS fields (names merged pairwise: bounded work) */
	for (size_t seen = 0; seen < AKTO_MAX_FIELDS && h2_hdrs_next(h, &pos, &f); seen++) {
		/* each name once: later fields of the same name are joined to the first */
		size_t p2 = 0;
		struct h2_field g;
		int dup = 0;
		while (p2 < pos - 8 - f.nlen - f.vlen && h2_hdrs_next(h, &p2, &g))
			if (g.nlen == f.nlen && !strncasecmp((const char *)g.name, (const char *)f.name, f.nlen))
				dup = 1;
		if (dup)
			continue;
		char lname[256];
		size_t ln = f.nlen < sizeof(lname) ? f.nlen : sizeof(lname);
		for (size_t i = 0; i < ln; i++)
			lname[i] = (char)(f.name[i] >= 'A' && f.name[i] <= 'Z' ? f.name[i] | 0x20 : f.name[i]);
		PUT(json_raw(tmp, n++ ? "," : ""));
		PUT(json_str(tmp, lname, ln));
		PUT(JSON_LIT(tmp, ":"));
		/* the value: this field's and every later one's of the name */
		struct h2_buf v = { .cap = REC_MAX_LINE };
		size_t p3 = pos - 8 - f.nlen - f.vlen;
		int first = 1;
		err = 0;
		for (size_t k = seen; !err && k < AKTO_MAX_FIELDS && h2_hdrs_next(h, &p3, &g); k++)
			if (g.nlen == f.nlen && !strncasecmp((const char *)g.name, (const char *)f.name, f.nlen)) {
				if (!first)
					err = h2_buf_put(&v, ", ", 2);
				if (!err)
					err = h2_buf_put(&v, g.value, g.vlen);
				first = 0;
			}
		if (!err)
			err = json_str(tmp, v.p, v.len);
		h2_buf_free(&v);
		if (err)
			return err;
	}
	PUT(JSON_LIT(tmp, "}"));
	return json_str(o, tmp->p, tmp->len);
}

/* A body as Akto reads it: the text (bytes that are not UTF-8 as Latin-1). */
static int akto_body(struct h2_buf *o, const struct rec_dir *d)
{
	return json_str(o, d->skip ? NULL : d->body.p, d->skip ? 0 : d->body.len);
}

static int akto_u64(struct h2_buf *o, const char *key, uint64_t v)
{
	int err;
	char t[24];
	snprintf(t, sizeof(t), "%llu", (unsigned long long)v);
	PUT(json_raw(o, key));
	return json_cstr(o, t);
}

/* The fields of Akto's traffic pipeline (its topic akto.api.logs): every
 * value a string. */
static int write_akto(struct rec_builder *b, struct h2_buf *o, const struct http_txn *x,
		      const struct rec_txn *t, enum http_end why)
{
	int err;
	const struct conn_open *c = x->conn->open;
	char ip[INET6_ADDRSTRLEN] = "", st[64];
	inet_ntop(c->family == 6 ? AF_INET6 : AF_INET, c->client_addr, ip, sizeof(ip));
	PUT(JSON_LIT(o, "{\"path\":"));
	PUT(json_str(o, t->target.p, t->target.len));
	PUT(JSON_LIT(o, ",\"requestHeaders\":"));
	PUT(akto_headers(o, &b->tmp, &t->d[0].hdrs, t->version == 20 ? &t->authority : NULL));
	PUT(JSON_LIT(o, ",\"responseHeaders\":"));
	PUT(akto_headers(o, &b->tmp, &t->d[1].hdrs, NULL));
	PUT(JSON_LIT(o, ",\"method\":"));
	PUT(json_str(o, t->method.p, t->method.len));
	PUT(JSON_LIT(o, ",\"requestPayload\":"));
	PUT(akto_body(o, &t->d[0]));
	PUT(JSON_LIT(o, ",\"responsePayload\":"));
	PUT(akto_body(o, &t->d[1]));
	PUT(JSON_LIT(o, ",\"ip\":"));
	PUT(json_cstr(o, ip));
	PUT(akto_u64(o, ",\"time\":", t->d[0].ts_head / 1000000000u));
	PUT(akto_u64(o, ",\"statusCode\":", t->status));
	PUT(JSON_LIT(o, ",\"type\":"));
	PUT(json_raw(o, t->version == 20 ? "\"HTTP/2\"" : t->version == 10 ? "\"HTTP/1.0\"" :
			"\"HTTP/1.1\""));
	snprintf(st, sizeof(st), "%u %s", t->status, t->d[1].head ? http_reason(t->status) : "");
	PUT(JSON_LIT(o, ",\"status\":"));
	PUT(json_cstr(o, t->d[1].head ? st : ""));
	PUT(akto_u64(o, ",\"akto_account_id\":", b->cfg.akto_account));
	PUT(akto_u64(o, ",\"akto_vxlan_id\":", b->cfg.akto_vxlan));
	PUT(JSON_LIT(o, ",\"is_pending\":"));
	PUT(json_raw(o, why == HTTP_END_DONE || why == HTTP_END_UPGRADE ? "\"false\"" : "\"true\""));
	PUT(JSON_LIT(o, ",\"source\":\"MIRRORING\"}\n"));
	return 0;
}

static void on_txn_end(void *arg, struct http_txn *x, uint64_t ts, enum http_end why)
{
	struct rec_builder *b = arg;
	struct rec_txn *t = txn_of(b, x, 0);
	(void)ts;
	if (!t)
		return;
	if (!t->d[0].head) {
		txn_release(b, x, t); /* a response without its request is never a record */
		return;
	}
	struct h2_buf *o = &b->line;
	o->len = 0;
	o->cap = REC_MAX_LINE;
	int err;
	if (b->cfg.format == REC_FORMAT_AKTO)
		err = write_akto(b, o, x, t, why);
	else
		err = write_tlsmirror(b, o, x, t, why);
	if (!err) {
		b->ctr.records++;
		if (why == HTTP_END_DONE || why == HTTP_END_UPGRADE)
			b->ctr.complete++;
		else
			b->ctr.incomplete++;
		if (t->d[0].truncated || t->d[1].truncated)
			b->ctr.truncated++;
		if (b->cfg.emit)
			b->cfg.emit(b->cfg.emit_arg, o->p, o->len, t->d[0].ts_head);
	} else {
		b->ctr.nomem++;
	}
	if (b->tmp.size > (1u << 20))
		h2_buf_free(&b->tmp);
	if (o->size > (1u << 20))
		h2_buf_free(o); /* a huge record does not keep its buffer */
	txn_release(b, x, t);
}

static const struct http_consumer_ops rec_ops = {
	.head = on_head,
	.body = on_body,
	.trailers = on_trailers,
	.msg_end = on_msg_end,
	.txn_end = on_txn_end,
};

struct rec_builder *rec_new(const struct rec_config *cfg)
{
	struct rec_builder *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->cfg = *cfg;
	if (b->cfg.body_max > REC_MAX_BODY_MAX)
		b->cfg.body_max = REC_MAX_BODY_MAX;
	return b;
}

void rec_free(struct rec_builder *b)
{
	if (!b)
		return;
	h2_buf_free(&b->line);
	h2_buf_free(&b->tmp);
	while (b->spare) {
		struct rec_txn *t = b->spare;
		b->spare = t->next_spare;
		txn_free(t);
	}
	free(b);
}

struct http_consumer rec_consumer(struct rec_builder *b, unsigned slot)
{
	b->slot = slot;
	return (struct http_consumer){ &rec_ops, b, slot };
}

const struct rec_counters *rec_counters(const struct rec_builder *b)
{
	return &b->ctr;
}
