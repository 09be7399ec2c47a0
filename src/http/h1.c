/* HTTP/1.x parser: heads, Content-Length and chunked bodies, pipelining, upgrades, strict on the wire (contract in h1.h). */
#include "http/h1.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/*
 * Each direction is a state machine fed in stream order. A head is
 * collected whole (up to H1_MAX_HEAD) and parsed at once; a body is passed
 * on as it comes, never copied here. Requests queue (pipelining) until
 * their responses: the n-th final response answers the n-th request.
 * Anything the RFC 9112 grammar does not allow ends the parsing of the
 * connection (HTTP_END_ERROR for what is open): a byte we could read one
 * way and a server another never becomes an exchange that did not happen.
 */

enum h1_state {
	S_HEAD = 0,     /* collecting a head */
	S_LEN,          /* a body of known length */
	S_CHUNK_LINE,   /* a chunk-size line */
	S_CHUNK_DATA,
	S_CHUNK_CRLF,   /* the CRLF after chunk data */
	S_TRAILER,      /* the trailer section (collected like a head) */
	S_CLOSE,        /* a response body read until the connection ends */
	S_WAIT,         /* client: an Upgrade or CONNECT request waits for its answer */
	S_STOP
};

struct h1_txn {
	struct h1_txn *next;
	struct http_txn x;
	uint8_t head[2];        /* a final head was seen */
	uint8_t ended[2];       /* its message is complete */
	uint8_t head_method, connect, upgrade;
};

struct h1_dir {
	enum h1_state st;
	struct h2_buf buf;      /* head, chunk line or trailers being collected */
	size_t scanned;         /* of buf: searched for the end already */
	uint64_t left;          /* body or chunk bytes to come */
	uint64_t ts_first;      /* time of the first byte of the head being collected */
	unsigned skipped;       /* empty-line bytes before a request line */
};

struct h1_conn {
	struct http_conn_info ci;
	struct http_consumer cons[HTTP_MAX_CONSUMERS];
	size_t ncons;
	struct h1_counters *ctr;
	struct h1_dir d[2];
	struct h1_txn *q, **qtail;  /* exchanges in order; q: the oldest */
	size_t nq;
	uint32_t next_stream;
	struct h2_hdrs fields;      /* trailers being handed on */
	struct h2_buf wait;         /* client bytes held in S_WAIT */
	struct h1_txn *spare;       /* an ended exchange's memory, for the next */
	uint64_t wait_ts;
	int stopped;
};

/* ---- buffers, within the budget every connection shares ---- */

/* Appends to one of c's buffers: -E2BIG past its cap or when the
 * connections together would hold more than H1_MAX_BUFFERED. */
static int buf_put(struct h1_conn *c, struct h2_buf *b, const void *p, size_t n)
{
	size_t before = b->size;
	if (b->len + n > b->size && c->ctr->buffered + 2 * (b->len + n) > H1_MAX_BUFFERED)
		return -E2BIG;
	int err = h2_buf_put(b, p, n);
	c->ctr->buffered += b->size - before;
	return err;
}

static void buf_free(struct h1_conn *c, struct h2_buf *b)
{
	c->ctr->buffered -= b->size;
	h2_buf_free(b);
}

/* ---- events ---- */

static void ev_head(struct h1_conn *c, struct h1_txn *t, int dir, uint64_t ts,
		    const struct http_head *h)
{
	HTTP_EACH(c->cons, c->ncons, head, &t->x, dir, ts, h);
}

static void ev_body(struct h1_conn *c, struct h1_txn *t, int dir, uint64_t ts,
		    const uint8_t *p, size_t n)
{
	if (n)
		HTTP_EACH(c->cons, c->ncons, body, &t->x, dir, ts, p, n);
}

static void txn_free(struct h1_conn *c, struct h1_txn *t, uint64_t ts, enum http_end why)
{
	HTTP_EACH(c->cons, c->ncons, txn_end, &t->x, ts, why);
	if (!c->spare) {
		c->spare = t; /* the next request's: keep-alive without a malloc each */
		return;
	}
	free(t);
}

static struct h1_txn *txn_new(struct h1_conn *c)
{
	struct h1_txn *t = c->spare;
	if (!t)
		return calloc(1, sizeof(*t));
	c->spare = NULL;
	memset(t, 0, sizeof(*t));
	return t;
}

/* The oldest exchange is over: unlinked and ended. */
static void pop(struct h1_conn *c, uint64_t ts, enum http_end why)
{
	struct h1_txn *t = c->q;
	c->q = t->next;
	if (!c->q)
		c->qtail = &c->q;
	c->nq--;
	txn_free(c, t, ts, why);
}

/* Nothing more is followed: what is open ends with why. */
static int stop(struct h1_conn *c, uint64_t ts, enum http_end why)
{
	while (c->q)
		pop(c, ts, why);
	c->d[0].st = c->d[1].st = S_STOP;
	if (!c->stopped) {
		if (why == HTTP_END_ERROR)
			c->ctr->errors++;
		else if (why == HTTP_END_LIMIT)
			c->ctr->limits++;
		else if (why == HTTP_END_UPGRADE)
			c->ctr->upgrades++;
	}
	c->stopped = 1;
	buf_free(c, &c->d[0].buf);
	buf_free(c, &c->d[1].buf);
	buf_free(c, &c->wait);
	buf_free(c, &c->fields.buf);
	return -EPROTO;
}

/* The exchange whose dir message is being read: requests, the newest;
 * responses, the oldest not answered. */
static struct h1_txn *cur(struct h1_conn *c, int dir)
{
	struct h1_txn *t = c->q;
	if (dir == 0) {
		while (t && t->next)
			t = t->next;
		return t && !t->ended[0] ? t : NULL;
	}
	while (t && t->ended[1])
		t = t->next;
	return t;
}

static int feed(struct h1_conn *c, int dir, uint64_t ts, const uint8_t *p, size_t n);

/* The message of dir of t is complete. */
static int msg_end(struct h1_conn *c, struct h1_txn *t, int dir, uint64_t ts)
{
	t->ended[dir] = 1;
	HTTP_EACH(c->cons, c->ncons, msg_end, &t->x, dir, ts);
	c->d[dir].st = S_HEAD;
	if (dir == 0 && (t->connect || t->upgrade) && !t->ended[1]) {
		c->d[0].st = S_WAIT; /* what follows depends on the answer */
		c->wait_ts = ts;
	}
	while (c->q && c->q->ended[0] && c->q->ended[1])
		pop(c, ts, HTTP_END_DONE);
	if (dir == 1 && c->d[0].st == S_WAIT && !cur(c, 1)) {
		/* the Upgrade or CONNECT was refused: the client goes on in HTTP */
		struct h2_buf w = c->wait;
		memset(&c->wait, 0, sizeof(c->wait));
		c->d[0].st = S_HEAD;
		int err = w.len ? feed(c, 0, c->wait_ts, w.p, w.len) : 0;
		buf_free(c, &w);
		return err ? -ECONNRESET : 0;
	}
	return 0;
}

/* ---- the grammar (RFC 9110 5.6.2, RFC 9112) ---- */

/* tchar (RFC 9110 5.6.2) by table */
static uint8_t tchar_tab[256];

__attribute__((constructor)) static void tchar_init(void)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";
	for (unsigned b = 0; b < 256; b++)
		tchar_tab[b] = (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') ||
			       (b >= 'A' && b <= 'Z') || (b && memchr(extra, (int)b, sizeof(extra) - 1));
}

static int tchar(uint8_t b)
{
	return tchar_tab[b];
}

/* field-vchar, SP and HTAB: no CTL (NUL, CR, LF, DEL...) */
static int vchar_ws(uint8_t b)
{
	return b == '\t' || (b >= 0x20 && b != 0x7f);
}

static int ieq(const uint8_t *a, size_t n, const char *lit)
{
	size_t k = strlen(lit);
	if (n != k)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((a[i] | 0x20) != (uint8_t)(lit[i] | 0x20))
			return 0;
	return 1;
}

/* Does the comma-separated list v contain tok (case-insensitive)? last: only as its last element. */
static int list_has(const uint8_t *v, size_t n, const char *tok, int last)
{
	size_t i = 0, found = 0;
	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < n && v[i] != ',')
			i++;
		size_t e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e > s)
			found = ieq(v + s, e - s, tok) ? 2 : 1;
		if (found == 2 && !last)
			return 1;
	}
	return found == 2;
}

static int parse_u64(const uint8_t *p, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	if (!n || n > 18)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	*out = v;
	return 0;
}

/* What the fields say about framing. */
struct framing {
	int64_t clen;        /* -1: none */
	int te, te_chunked;  /* Transfer-Encoding present; its last coding is chunked */
	int upgrade, hosts;
	struct http_str host;
};

/* The fields of the head being parsed, pointing into its bytes: one array
 * for every connection (a head is parsed and handed on in one call). */
static __thread struct http_field h1_fv[H1_MAX_FIELDS];

/* JSON string text as it is: printable ASCII but '"' and '\\' */
static int json_plain(uint8_t b)
{
	return b >= 0x20 && b < 0x7f && b != '"' && b != '\\';
}

/* The first byte at or after i of p[0..n) that may not be in a field value
 * (a CTL but HTAB: CR ends a valid one); n if none. *esc: whether a byte
 * before it needs escaping in JSON (HTAB, '"', '\\', obs-text). */
static size_t value_end(const uint8_t *p, size_t i, size_t n, int *esc)
{
	int e = 0;
#ifdef __SSE2__
	const __m128i lim = _mm_set1_epi8(0x1f), tab = _mm_set1_epi8('\t');
	const __m128i del = _mm_set1_epi8(0x7f), q = _mm_set1_epi8('"');
	const __m128i bs = _mm_set1_epi8('\\');
	for (; i + 16 <= n; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(p + i));
		__m128i t = _mm_cmpeq_epi8(v, tab);
		__m128i c = _mm_cmpeq_epi8(_mm_min_epu8(v, lim), v); /* <= 0x1f */
		c = _mm_or_si128(_mm_andnot_si128(t, c), _mm_cmpeq_epi8(v, del));
		__m128i j = _mm_or_si128(_mm_or_si128(t, v), /* v: its top bit, obs-text */
					 _mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, bs)));
		unsigned m = (unsigned)_mm_movemask_epi8(c);
		unsigned jm = (unsigned)_mm_movemask_epi8(j);
		if (m) {
			*esc = e || (jm & ((1u << __builtin_ctz(m)) - 1));
			return i + (size_t)__builtin_ctz(m);
		}
		e |= jm != 0;
	}
#endif
	while (i < n && vchar_ws(p[i])) {
		e |= !json_plain(p[i]);
		i++;
	}
	*esc = e;
	return i;
}

/* The end of the token at p + i (of n): a loop of its own keeps i in a register. */
static inline size_t token_end(const uint8_t *p, size_t i, size_t n)
{
	const uint8_t *q = p + i, *e = p + n;
	while (q < e && tchar_tab[*q])
		q++;
	return (size_t)(q - p);
}

/* Parses the field lines in p[0..n) (each ending CRLF, the empty line not
 * included) into h1_fv (*nf of them). Returns 0, -EBADMSG, -E2BIG. */
static int parse_fields(const uint8_t *p, size_t n, struct framing *f, size_t *nf)
{
	size_t i = 0, count = 0;
	memset(f, 0, sizeof(*f));
	f->clen = -1;
	*nf = 0;
	while (i < n) {
		size_t s = i;
		i = token_end(p, i, n);
		if (i == s || i >= n || p[i] != ':')
			return -EBADMSG; /* no name, white space before ':', obs-fold */
		size_t nlen = i - s;
		i++;
		while (i < n && (p[i] == ' ' || p[i] == '\t'))
			i++;
		size_t vs = i;
		int esc;
		i = value_end(p, i, n, &esc);
		if (i + 1 >= n || p[i] != '\r' || p[i + 1] != '\n')
			return -EBADMSG; /* a control, a bare CR, or a line without CRLF */
		size_t ve = i;
		while (ve > vs && (p[ve - 1] == ' ' || p[ve - 1] == '\t'))
			ve--;
		i += 2;
		if (count >= H1_MAX_FIELDS)
			return -E2BIG;
		const uint8_t *name = p + s, *val = p + vs;
		size_t vlen = ve - vs;
		switch (nlen) {
		case 4:
			if (ieq(name, nlen, "host")) {
				f->hosts++;
				f->host.p = val;
				f->host.n = vlen;
			}
			break;
		case 7:
			if (ieq(name, nlen, "upgrade"))
				f->upgrade = vlen > 0;
			break;
		case 14:
			if (ieq(name, nlen, "content-length")) {
				uint64_t v;
				if (parse_u64(val, vlen, &v) || (f->clen >= 0 && (uint64_t)f->clen != v))
					return -EBADMSG;
				f->clen = (int64_t)v;
			}
			break;
		case 17:
			if (ieq(name, nlen, "transfer-encoding")) {
				f->te = 1;
				f->te_chunked = list_has(val, vlen, "chunked", 1);
			}
			break;
		}
		h1_fv[count].name.p = name;
		h1_fv[count].name.n = nlen;
		h1_fv[count].value.p = val;
		h1_fv[count].value.n = vlen;
		h1_fv[count].json_plain = !esc; /* tokens never need escaping */
		count++;
	}
	*nf = count;
	return 0;
}

/* Trailers are handed on as a field list of their own (rare: copied). */
static int trailer_fields(struct h1_conn *c, size_t nf)
{
	h2_hdrs_reset(&c->fields);
	c->fields.buf.cap = 2 * H1_MAX_HEAD;
	for (size_t k = 0; k < nf; k++) {
		size_t before = c->fields.buf.size;
		int err = h2_hdrs_add(&c->fields, h1_fv[k].name.p, h1_fv[k].name.n,
				      h1_fv[k].value.p, h1_fv[k].value.n);
		c->ctr->buffered += c->fields.buf.size - before;
		if (err || c->ctr->buffered > H1_MAX_BUFFERED)
			return err == -ENOMEM ? err : -E2BIG;
	}
	return 0;
}

/* "HTTP/1.0" or "HTTP/1.1" at p: 10, 11; 0 otherwise. */
static int version_at(const uint8_t *p, size_t n)
{
	if (n < 8 || memcmp(p, "HTTP/1.", 7) || (p[7] != '0' && p[7] != '1'))
		return 0;
	return p[7] == '1' ? 11 : 10;
}

/* A request head p[0..n) (the final CRLF CRLF included). */
static int request_head(struct h1_conn *c, const uint8_t *p, size_t n, uint64_t ts)
{
	size_t i = 0, ms, tl;
	while (i < n && tchar(p[i]))
		i++;
	if (!i || i >= n || p[i] != ' ')
		return -EBADMSG;
	ms = i++;
	size_t ts_ = i;
	while (i < n && p[i] > 0x20 && p[i] < 0x7f)
		i++;
	tl = i - ts_;
	if (!tl || i >= n || p[i] != ' ')
		return -EBADMSG; /* a space or a control in the target */
	i++;
	int ver = version_at(p + i, n - i);
	if (!ver || n - i < 10 || p[i + 8] != '\r' || p[i + 9] != '\n')
		return -EBADMSG;
	i += 10;
	struct framing f;
	size_t nf;
	int err = parse_fields(p + i, n - i - 2, &f, &nf);
	if (err)
		return err;
	if ((f.te && (!f.te_chunked || f.clen >= 0 || ver == 10)) || f.hosts > 1 ||
	    (ver == 11 && !f.hosts))
		return -EBADMSG; /* RFC 9112 6.1, 6.3; 3.2 */
	if (c->nq >= H1_MAX_PIPELINE)
		return -E2BIG;
	struct h1_txn *t = txn_new(c);
	if (!t)
		return -ENOMEM;
	t->x.stream = ++c->next_stream;
	t->x.version = (uint8_t)ver;
	t->x.conn = &c->ci;
	t->head[0] = 1;
	t->head_method = ms == 4 && !memcmp(p, "HEAD", 4);
	t->connect = ms == 7 && !memcmp(p, "CONNECT", 7);
	t->upgrade = f.upgrade;
	*c->qtail = t;
	c->qtail = &t->next;
	c->nq++;
	c->ctr->requests++;
	struct http_head h = {
		.version = (uint8_t)ver, .request = 1,
		.method = { p, ms }, .target = { p + ms + 1, tl },
		.authority = f.host, .content_length = f.clen, .fields = { .v = h1_fv, .n = nf },
	};
	h.end = !f.te && f.clen <= 0;
	ev_head(c, t, 0, ts, &h);
	struct h1_dir *d = &c->d[0];
	if (f.te) {
		d->st = S_CHUNK_LINE;
	} else if (f.clen > 0) {
		d->st = S_LEN;
		d->left = (uint64_t)f.clen;
	} else {
		return msg_end(c, t, 0, ts);
	}
	return 0;
}

/* A response head p[0..n). */
static int response_head(struct h1_conn *c, const uint8_t *p, size_t n, uint64_t ts)
{
	struct h1_txn *t = cur(c, 1);
	int ver = version_at(p, n);
	if (!t || !ver || n < 12 || p[8] != ' ')
		return -EBADMSG; /* no request to answer, or not a status line */
	unsigned status = 0;
	for (int k = 9; k < 12; k++) {
		if (p[k] < '0' || p[k] > '9')
			return -EBADMSG;
		status = status * 10 + (unsigned)(p[k] - '0');
	}
	if (status < 100)
		return -EBADMSG;
	size_t i = 12;
	if (p[i] == ' ') {
		while (i < n && p[i] != '\r') {
			if (!vchar_ws(p[i]))
				return -EBADMSG;
			i++;
		}
	}
	if (i + 1 >= n || p[i] != '\r' || p[i + 1] != '\n')
		return -EBADMSG;
	i += 2;
	struct framing f;
	size_t nf;
	int err = parse_fields(p + i, n - i - 2, &f, &nf);
	if (err)
		return err;
	int info = status < 200;
	int tunnel = (status == 101 && t->upgrade) || (t->connect && status / 100 == 2);
	if (status == 101 && !t->upgrade)
		return -EBADMSG;
	int bodyless = info || status == 204 || status == 304 || t->head_method || tunnel;
	struct http_head h = {
		.version = (uint8_t)ver, .status = (uint16_t)status,
		.informational = info && status != 101, .content_length = f.clen,
		.fields = { .v = h1_fv, .n = nf },
	};
	h.end = bodyless || (!f.te && f.clen == 0);
	if (!bodyless && f.te && f.clen >= 0)
		return -EBADMSG; /* both: which one the client used is unknown */
	if (!h.informational)
		c->ctr->responses++;
	ev_head(c, t, 1, ts, &h);
	if (h.informational)
		return 0; /* the final response follows */
	t->head[1] = 1;
	struct h1_dir *d = &c->d[1];
	if (tunnel) {
		t->ended[1] = 1;
		HTTP_EACH(c->cons, c->ncons, msg_end, &t->x, 1, ts);
		return stop(c, ts, HTTP_END_UPGRADE) ? -ECONNRESET : 0;
	}
	if (bodyless || (!f.te && f.clen == 0))
		goto done;
	if (f.te && f.te_chunked) {
		d->st = S_CHUNK_LINE;
	} else if (f.te || f.clen < 0) {
		d->st = S_CLOSE;
	} else {
		d->st = S_LEN;
		d->left = (uint64_t)f.clen;
	}
	return 0;
done:
	return msg_end(c, t, 1, ts);
}

/* The chunk-size line in p[0..n) (CRLF excluded): size, then extensions. */
static int chunk_line(const uint8_t *p, size_t n, uint64_t *size)
{
	size_t i = 0;
	uint64_t v = 0;
	while (i < n && ((p[i] >= '0' && p[i] <= '9') || ((p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'f'))) {
		if (v >> 56)
			return -EBADMSG;
		uint8_t b = p[i] <= '9' ? p[i] - '0' : (uint8_t)((p[i] | 0x20) - 'a' + 10);
		v = v << 4 | b;
		i++;
	}
	if (!i)
		return -EBADMSG;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	if (i < n && p[i] != ';')
		return -EBADMSG;
	for (; i < n; i++)
		if (!vchar_ws(p[i]))
			return -EBADMSG; /* extensions: ignored, but no controls */
	*size = v;
	return 0;
}

/* The length of p up to and with the first CRLF CRLF (0: none in p[0..n)):
 * 16 bytes at a time for the LFs, each checked with the three bytes before. */
static size_t head_end(const uint8_t *p, size_t n)
{
	size_t i = 0;
#ifdef __SSE2__
	const __m128i lf = _mm_set1_epi8('\n');
	for (; i + 16 <= n; i += 16) {
		unsigned m = (unsigned)_mm_movemask_epi8(
			_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i)), lf));
		while (m) {
			size_t k = i + (size_t)__builtin_ctz(m);
			m &= m - 1;
			if (k >= 3 && p[k - 1] == '\r' && p[k - 2] == '\n' && p[k - 3] == '\r')
				return k + 1;
		}
	}
#endif
	for (; i < n; i++)
		if (p[i] == '\n' && i >= 3 && p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r')
			return i + 1;
	return 0;
}

/*
 * Collects bytes until the terminator: CRLF CRLF (heads, trailers; an empty
 * trailer section is a lone CRLF), or CRLF (a chunk line). Returns how many
 * bytes of p were taken; *done set when complete, with *whole, *wlen the
 * complete text: in p itself when nothing was kept from before (no copy),
 * else in d->buf.
 */
static size_t collect(struct h1_conn *c, struct h1_dir *d, const uint8_t *p, size_t n, int line,
		      int *done, int *err, const uint8_t **whole, size_t *wlen)
{
	size_t want = line ? 2 : 4, cap = line ? 4096 : H1_MAX_HEAD, take = n;
	const uint8_t *nl = p;
	*done = 0;
	*err = 0;
	if (!line && !d->buf.len && d->st == S_HEAD) {
		/* a head that came whole (the usual): its end found where it is */
		size_t e = head_end(p, n < cap ? n : cap);
		if (e) {
			*done = 1;
			*whole = p;
			*wlen = e;
			return e;
		}
	}
	while ((nl = memchr(nl, '\n', (size_t)(p + n - nl))) != NULL) {
		size_t i = (size_t)(nl - p);
		nl++;
		size_t have = d->buf.len + i + 1, need = want;
		if (!line && d->st == S_TRAILER && have == 2)
			need = 2;
		if (have < need)
			continue;
		int ok = 1;
		for (size_t k = 0; k < need && ok; k++) {
			size_t pos = have - need + k; /* in buf, then p */
			uint8_t b = pos < d->buf.len ? d->buf.p[pos] : p[pos - d->buf.len];
			ok = b == (k & 1 ? '\n' : '\r');
		}
		if (ok) {
			take = i + 1;
			*done = 1;
			break;
		}
	}
	if (d->buf.len + take > cap) {
		*err = -E2BIG;
		return 0;
	}
	if (*done && !d->buf.len) {
		*whole = p;
		*wlen = take;
		return take;
	}
	int e = buf_put(c, &d->buf, p, take);
	if (e) {
		*err = e;
		return 0;
	}
	*whole = d->buf.p;
	*wlen = d->buf.len;
	return take;
}

static int feed(struct h1_conn *c, int dir, uint64_t ts, const uint8_t *p, size_t n)
{
	struct h1_dir *d = &c->d[dir];
	size_t i = 0;
	int err = 0, done;
	while (i < n && !err) {
		size_t k = 0, wn = 0;
		const uint8_t *w = NULL;
		struct h1_txn *t;
		switch (d->st) {
		case S_STOP:
			return -EPROTO;
		case S_WAIT:
			if (c->wait.len + (n - i) > H1_MAX_WAIT)
				return stop(c, ts, HTTP_END_LIMIT);
			c->wait.cap = H1_MAX_WAIT;
			if (buf_put(c, &c->wait, p + i, n - i))
				return stop(c, ts, HTTP_END_LIMIT);
			return 0;
		case S_HEAD:
			if (!d->buf.len) {
				/* empty lines before a request line are skipped (RFC 9112 2.2) */
				if (dir == 0 && (p[i] == '\r' || p[i] == '\n')) {
					if (++d->skipped > 8)
						return stop(c, ts, HTTP_END_ERROR);
					i++;
					continue;
				}
				d->skipped = 0;
				d->ts_first = ts;
			}
			k = collect(c, d, p + i, n - i, 0, &done, &err, &w, &wn);
			if (err || !done)
				break;
			err = dir == 0 ? request_head(c, w, wn, d->ts_first) :
					 response_head(c, w, wn, d->ts_first);
			if (d->st != S_STOP)
				d->buf.len = 0;
			break;
		case S_LEN:
		case S_CHUNK_DATA:
			t = cur(c, dir);
			if (!t) {
				err = -EBADMSG;
				break;
			}
			k = d->left < n - i ? (size_t)d->left : n - i;
			ev_body(c, t, dir, ts, p + i, k);
			d->left -= k;
			if (!d->left) {
				if (d->st == S_CHUNK_DATA) {
					d->st = S_CHUNK_CRLF;
				} else {
					i += k;
					k = 0;
					err = msg_end(c, t, dir, ts);
				}
			}
			break;
		case S_CHUNK_CRLF:
			k = collect(c, d, p + i, n - i, 1, &done, &err, &w, &wn);
			if (err || !done)
				break;
			if (wn != 2) {
				err = -EBADMSG; /* chunk data longer than its size */
				break;
			}
			d->buf.len = 0;
			d->st = S_CHUNK_LINE;
			break;
		case S_CHUNK_LINE: {
			uint64_t size;
			k = collect(c, d, p + i, n - i, 1, &done, &err, &w, &wn);
			if (err || !done)
				break;
			err = chunk_line(w, wn - 2, &size);
			d->buf.len = 0;
			if (err)
				break;
			d->left = size;
			d->st = size ? S_CHUNK_DATA : S_TRAILER;
			break;
		}
		case S_TRAILER: {
			k = collect(c, d, p + i, n - i, 0, &done, &err, &w, &wn);
			if (err || !done)
				break;
			t = cur(c, dir);
			if (!t) {
				err = -EBADMSG;
				break;
			}
			if (wn > 2) {
				struct framing f;
				size_t nf;
				err = parse_fields(w, wn - 2, &f, &nf);
				if (!err)
					err = trailer_fields(c, nf);
				if (err)
					break;
				HTTP_EACH(c->cons, c->ncons, trailers, &t->x, dir, ts, &c->fields);
			}
			d->buf.len = 0;
			i += k;
			k = 0;
			err = msg_end(c, t, dir, ts);
			break;
		}
		case S_CLOSE:
			k = n - i;
			if ((t = cur(c, 1)))
				ev_body(c, t, dir, ts, p + i, k);
			break;
		}
		i += k;
	}
	if (err == -ECONNRESET || d->st == S_STOP)
		return -EPROTO; /* stopped already */
	if (err)
		return stop(c, ts, err == -E2BIG ? HTTP_END_LIMIT : HTTP_END_ERROR);
	return 0;
}

/* ---- the interface ---- */

struct h1_conn *h1_new(const struct http_conn_info *ci, const struct http_consumer *cons,
		       size_t ncons, struct h1_counters *ctr)
{
	struct h1_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->ci = *ci;
	memset(&c->ci.cache, 0, sizeof(c->ci.cache)); /* its own */
	if (ncons > HTTP_MAX_CONSUMERS)
		ncons = HTTP_MAX_CONSUMERS;
	memcpy(c->cons, cons, ncons * sizeof(*cons));
	c->ncons = ncons;
	c->ctr = ctr;
	c->qtail = &c->q;
	for (int d = 0; d < 2; d++)
		c->d[d].buf.cap = H1_MAX_HEAD;
	return c;
}

int h1_feed(struct h1_conn *c, int dir, uint64_t ts_ns, const uint8_t *p, size_t n)
{
	if (c->stopped || (dir != 0 && dir != 1))
		return -EPROTO;
	if (!n)
		return 0;
	if (dir == 1 && !c->q && c->d[1].st == S_HEAD)
		return stop(c, ts_ns, HTTP_END_ERROR); /* the server spoke first */
	return feed(c, dir, ts_ns, p, n);
}

void h1_gap(struct h1_conn *c, int dir, uint64_t ts_ns)
{
	(void)dir;
	if (!c->stopped)
		stop(c, ts_ns, HTTP_END_GAP);
}

void h1_close(struct h1_conn *c, uint64_t ts_ns)
{
	if (c->stopped)
		return;
	struct h1_txn *t = cur(c, 1);
	if (c->d[1].st == S_CLOSE && t)
		msg_end(c, t, 1, ts_ns); /* its body ends with the connection */
	stop(c, ts_ns, HTTP_END_CLOSED);
}

int h1_stopped(const struct h1_conn *c)
{
	return c->stopped;
}

void h1_free(struct h1_conn *c, uint64_t ts_ns)
{
	if (!c)
		return;
	if (!c->stopped)
		stop(c, ts_ns, HTTP_END_CLOSED);
	h2_buf_free(&c->ci.cache);
	free(c->spare);
	free(c);
}
