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
	struct h2_hdrs hdrs;       /* Akto: regular fields (pseudo-headers apart) */
	struct h2_buf hjson;       /* ours: those fields as the record's JSON list, made
				    * at the head (no copy of the fields kept) */
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
#define REC_KEEP_HJSON (16u << 10) /* with a header list's buffer at most this large */

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

/* Keeps the regular fields of h (no pseudo-headers): Akto's format copies
 * them, ours writes their JSON at once. The content type decides whether
 * the body is kept. */
static void copy_fields(struct rec_builder *b, struct rec_dir *d, const struct http_fields *h)
{
	size_t pos = 0, n = 0;
	struct h2_field f;
	int akto = b->cfg.format == REC_FORMAT_AKTO;
	h2_hdrs_reset(&d->hdrs);
	d->hjson.len = 0;
	d->hjson.cap = REC_MAX_LINE;
	if (!akto && JSON_LIT(&d->hjson, "["))
		return;
	int plain; /* HTTP/1.x: the parser knows which need no escaping */
	while (http_fields_next(h, &pos, &f, &plain)) {
		if (f.nlen && f.name[0] == ':')
			continue;
		if (f.nlen == 12 && ieq_prefix(f.name, 12, "content-type"))
			for (size_t i = 0; i < b->cfg.n_headers_only; i++)
				if (ieq_prefix(f.value, f.vlen, b->cfg.headers_only[i]))
					d->skip = 1;
		if (akto ? h2_hdrs_add(&d->hdrs, f.name, f.nlen, f.value, f.vlen) :
		    plain ? json_pair_plain(&d->hjson, n++ > 0, f.name, f.nlen, f.value, f.vlen) :
			   json_pair(&d->hjson, n++ > 0, f.name, f.nlen, f.value, f.vlen))
			break; /* cannot be: h was within the same cap */
	}
	if (!akto && JSON_LIT(&d->hjson, "]"))
		d->hjson.len = 0;
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
	copy_fields(b, d, &h->fields);
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
	for (int first = 1; h2_hdrs_next(h, &pos, &f); first = 0)
		PUT(json_pair(o, !first, f.name, f.nlen, f.value, f.vlen));
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

/* ---- our format, written straight: room for the whole record is made
 * once, then every part is stored at a pointer (no check, no call per part) */

#define W_LIT(o, lit) (memcpy((o), (lit), sizeof(lit) - 1), (o) += sizeof(lit) - 1)
#define W_RAW(o, s, n) (memcpy((o), (s), (n)), (o) += (n))
#define REC_FIXED_ROOM 1024 /* every literal and number of a record, with room to spare */

static uint8_t *w_time(uint8_t *o, uint64_t ts)
{
	if (!ts) {
		W_LIT(o, "null");
		return o;
	}
	return json_w_u64(o, ts);
}

/* Room for a body (text, or base64: never more). */
static size_t body_room(const struct rec_dir *d)
{
	return d->skip ? 8 : JSON_STR_ROOM(d->body.len);
}

static uint8_t *w_body(uint8_t *o, const struct rec_dir *d)
{
	const char *enc = "\"omitted\"";
	W_LIT(o, ",\"body\":");
	if (d->skip) {
		W_LIT(o, "null");
	} else {
		uint8_t *e = json_w_text(o, d->body.p, d->body.len);
		enc = "\"text\"";
		if (!e) {
			e = json_w_base64(o, d->body.p, d->body.len);
			enc = "\"base64\"";
		}
		o = e;
	}
	W_LIT(o, ",\"body_encoding\":");
	W_RAW(o, enc, strlen(enc));
	W_LIT(o, ",\"body_bytes\":");
	o = json_w_u64(o, d->seen);
	W_LIT(o, ",\"body_length\":");
	/* what the message says it carries: content-length, or all of it once complete */
	if (d->clen >= 0)
		o = json_w_u64(o, (uint64_t)d->clen);
	else if (d->ended)
		o = json_w_u64(o, d->seen);
	else
		W_LIT(o, "null");
	if (d->truncated || (d->skip && d->seen))
		W_LIT(o, ",\"body_truncated\":true");
	else
		W_LIT(o, ",\"body_truncated\":false");
	if (d->ended)
		W_LIT(o, ",\"complete\":true");
	else
		W_LIT(o, ",\"complete\":false");
	return o;
}

static uint8_t *w_headers(uint8_t *o, const struct rec_dir *d)
{
	if (!d->hjson.len)
		W_LIT(o, "[]");
	else
		W_RAW(o, d->hjson.p, d->hjson.len);
	return o;
}

static int write_tlsmirror(struct rec_builder *b, struct h2_buf *out, const struct http_txn *x,
			   const struct rec_txn *t, enum http_end why)
{
	int err;
	const struct rec_dir *rq = &t->d[0], *rs = &t->d[1];
	struct http_str path, query;
	split_target(&t->target, &path, &query);
	/* the rare parts first, with the growing writers: the connection's JSON
	 * (made once per connection), trailers (into b->tmp: request's, then response's) */
	const struct h2_buf *conn = &x->conn->cache;
	if (!conn->len) {
		struct h2_buf *c = &x->conn->cache;
		c->cap = 64u * 1024;
		if ((err = put_conn_json(c, x))) {
			c->len = 0;
			return err;
		}
	}
	size_t tr_rq = 0, tr_rs = 0;
	b->tmp.len = 0;
	b->tmp.cap = REC_MAX_LINE;
	if (rq->trailers.buf.len) {
		PUT(put_fields(&b->tmp, &rq->trailers));
		tr_rq = b->tmp.len;
	}
	if (rs->head && rs->trailers.buf.len) {
		PUT(put_fields(&b->tmp, &rs->trailers));
		tr_rs = b->tmp.len - tr_rq;
	}
	size_t room = REC_FIXED_ROOM + conn->len + rq->hjson.len + rs->hjson.len + b->tmp.len +
		      JSON_STR_ROOM(t->method.len) + JSON_STR_ROOM(t->scheme.len) +
		      JSON_STR_ROOM(t->authority.len) + JSON_STR_ROOM(path.n) +
		      JSON_STR_ROOM(query.n) + body_room(rq) + body_room(rs);
	if ((err = h2_buf_grow(out, room)))
		return err;
	uint8_t *o = out->p + out->len;
	W_LIT(o, "{\"time_request_ns\":");
	o = w_time(o, rq->ts_head);
	W_LIT(o, ",\"time_response_ns\":");
	o = w_time(o, rs->ts_head);
	W_LIT(o, ",\"duration_ns\":");
	uint64_t last = rs->ts_end ? rs->ts_end : rs->ts_head;
	if (rq->ts_head && last >= rq->ts_head)
		o = json_w_u64(o, last - rq->ts_head);
	else
		W_LIT(o, "null");
	W_RAW(o, conn->p, conn->len);
	if (x->version == 20) {
		W_LIT(o, ",\"stream_id\":");
		o = json_w_u64(o, x->stream);
	}
	if (t->version == 20)
		W_LIT(o, ",\"http_version\":\"HTTP/2\"");
	else if (t->version == 10)
		W_LIT(o, ",\"http_version\":\"HTTP/1.0\"");
	else
		W_LIT(o, ",\"http_version\":\"HTTP/1.1\"");
	W_LIT(o, ",\"method\":");
	o = json_w_str(o, t->method.p, t->method.len);
	W_LIT(o, ",\"scheme\":");
	if (t->scheme.len)
		o = json_w_str(o, t->scheme.p, t->scheme.len);
	else
		W_LIT(o, "\"https\""); /* clear text of TLS */
	W_LIT(o, ",\"authority\":");
	if (t->authority.len)
		o = json_w_str(o, t->authority.p, t->authority.len);
	else
		W_LIT(o, "null");
	W_LIT(o, ",\"path\":");
	o = json_w_str(o, path.p, path.n);
	W_LIT(o, ",\"query\":");
	if (query.p)
		o = json_w_str(o, query.p, query.n);
	else
		W_LIT(o, "null");
	W_LIT(o, ",\"request\":{\"headers\":");
	o = w_headers(o, rq);
	if (tr_rq) {
		W_LIT(o, ",\"trailers\":");
		W_RAW(o, b->tmp.p, tr_rq);
	}
	o = w_body(o, rq);
	W_LIT(o, "},\"response\":");
	if (rs->head) {
		W_LIT(o, "{\"status\":");
		o = json_w_u64(o, t->status);
		W_LIT(o, ",\"headers\":");
		o = w_headers(o, rs);
		if (tr_rs) {
			W_LIT(o, ",\"trailers\":");
			W_RAW(o, b->tmp.p + tr_rq, tr_rs);
		}
		o = w_body(o, rs);
		W_LIT(o, "}");
	} else {
		W_LIT(o, "null");
	}
	if (t->ninfo) {
		W_LIT(o, ",\"informational\":[");
		for (unsigned i = 0; i < t->ninfo; i++) {
			if (i)
				W_LIT(o, ",");
			o = json_w_u64(o, t->info[i]);
		}
		W_LIT(o, "]");
	}
	W_LIT(o, ",\"end\":\"");
	const char *end = http_end_name(why);
	W_RAW(o, end, strlen(end));
	W_LIT(o, "\"}\n");
	out->len = (size_t)(o - out->p);
	return 0;
}

static void txn_free(struct rec_txn *t)
{
	for (int i = 0; i < 2; i++) {
		h2_buf_free(&t->d[i].body);
		h2_buf_free(&t->d[i].hdrs.buf);
		h2_buf_free(&t->d[i].hjson);
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
		t->d[i].hjson = keep.d[i].hjson;
		t->d[i].hjson.len = 0;
		if (t->d[i].hjson.size > REC_KEEP_HJSON)
			h2_buf_free(&t->d[i].hjson); /* a huge head does not keep its buffer */
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
