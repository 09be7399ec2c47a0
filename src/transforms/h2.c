/* HTTP/2 -> HTTP/1.1 converter: connections, streams as synthetic TCP connections, output, fallback (contract in h2.h). */
#include "transforms/h2_int.h"
#include "common/log.h"
#include "common/text.h"
#include "http/records.h"
#include "pipeline/pipeline.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * A stage of the chain (docs/pipeline.md): it takes over HTTP/2
 * connections and emits, downstream, one invented connection per stream
 * under its own origin (t->origin, from the chain), so a stream can never
 * be mistaken for a real connection; a fallback hands the real connection
 * on to the next stage (stage_emit_open of its own id).
 *
 * Connections the converter owns are in a hash by (origin, conn). Each
 * direction has its own frame reader and HPACK inflater (h2_frames.c). Output
 * for one (stream, direction) is collected as pieces: body bytes where they
 * are in the record (no copy), heads and chunk lines written into c->out.
 * The pieces are handed to the flow engine as one write (stage_emit_datav)
 * when another target is written, when H2_OUT_PIECES are pending, and at the
 * end of every ring record, so the DATA frames of a record become full
 * segments (as plain mirroring makes of the record) and nothing waits for
 * the next record. A connection that leaves the converter
 * (fallback, or not HTTP/2 after all) is freed; the stage after it owns it.
 */

#define H2_BUCKETS 1024
/* c->out: the heads and chunk lines of H2_OUT_PIECES pieces at most */
#define H2_OUT_CAP (64u * 1024 + 4 * H2_MAX_HEADER_LIST)

struct h2_table {
	struct stage *st;                 /* ours in the chain */
	uint64_t origin;                  /* of the streams' connections (from the chain at the first) */
	struct h2_conn *b[H2_BUCKETS];
	uint64_t next_id;
	uint32_t next_port;
	size_t nconns, nstreams;          /* converter's connections, open streams */
	size_t max_conns, max_streams;
	int convert;                      /* --h2-to-h1 */
	struct rec_builder *rec;          /* --http-log: the records (NULL: none) */
	size_t ntaps, max_taps;           /* connections tapped for records */
	size_t ntaps_h2;                  /* of them HTTP/2 (count against max_conns with nconns) */
	struct h2_counters ctr;
	struct h1_counters h1;
	uint64_t taps, taps_refused, taps_midstream;
};

static size_t bucket(uint64_t proc_key, uint64_t conn_id)
{
	uint64_t x = proc_key * 0x9e3779b97f4a7c15ull ^ conn_id;
	x ^= x >> 29;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 32;
	return (size_t)(x & (H2_BUCKETS - 1));
}

static struct h2_conn **find_link(struct h2_table *t, uint64_t proc_key, uint64_t conn_id)
{
	struct h2_conn **pp = &t->b[bucket(proc_key, conn_id)];
	while (*pp && ((*pp)->info.id.origin != proc_key || (*pp)->info.id.conn != conn_id))
		pp = &(*pp)->next;
	return pp;
}

static void h2_set_limits(struct h2_table *t, size_t max_conns, size_t max_streams)
{
	t->max_conns = max_conns ? max_conns : H2_DEFAULT_MAX_CONNS;
	t->max_streams = max_streams ? max_streams : H2_DEFAULT_MAX_STREAMS;
}

static struct h2_table *h2_table_new(struct stage *st)
{
	struct h2_table *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->st = st;
	t->next_port = H2_PORT_MIN;
	h2_set_limits(t, 0, 0);
	return t;
}


/* A cap was reached: counted, logged (rate-limited). */
static void over_cap(uint64_t *ctr, const char *what, size_t cap)
{
	static struct log_limit lim;
	(*ctr)++;
	log_limited(&lim, 10, "HTTP/2 converter: %s (%zu): the connection is mirrored as raw "
		    "HTTP/2", what, cap);
}

static void conn_free(struct h2_conn *c)
{
	h1_free(c->h1, c->ts);
	while (c->streams) {
		struct h2_stream *st = c->streams;
		c->streams = st->next;
		free(st);
	}
	for (int d = 0; d < 2; d++) {
		h2_buf_free(&c->d[d].raw);
		h2_buf_free(&c->d[d].hdrs.buf);
		h2_buf_free(&c->d[d].blk);
		hpack_free(&c->d[d].hp);
	}
	h2_buf_free(&c->out);
	h2_buf_free(&c->ci.cache);
	conn_meta_unref(c->info.meta);
	conn_meta_unref(c->smeta);
	free(c);
}

static void h2_table_free(struct h2_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < H2_BUCKETS; i++) {
		while (t->b[i]) {
			struct h2_conn *c = t->b[i];
			t->b[i] = c->next;
			conn_free(c);
		}
	}
	free(t);
}

const struct h2_counters *h2_counters(const struct h2_table *t)
{
	return &t->ctr;
}

/* ---- output and streams ---- */

/* Every event emitted downstream is checked: one that fails means a stream
 * or a fallback is not shown whole, which must not go unnoticed. */
static int flow_ret(struct h2_table *t, int err)
{
	if (err)
		t->ctr.flow_errors++;
	return err;
}

void h2_out_flush(struct h2_table *t, struct h2_conn *c)
{
	struct h2_stream *st = c->out_st;
	struct piece v[H2_OUT_PIECES];
	size_t len = 0, n = c->npieces;
	if (!st || !n)
		return;
	for (size_t i = 0; i < n; i++) {
		const struct h2_piece *q = &c->piece[i];
		v[i].p = q->p ? q->p : c->out.p + q->at;
		v[i].n = q->n;
		len += q->n;
	}
	int d = c->out_dir;
	struct conn_id id = { t->origin, st->conn_id };
	flow_ret(t, stage_emit_datav(t->st, &id, d, c->ts, st->off[d], v, n, NULL));
	st->off[d] += len;
	c->npieces = 0;
	c->out.len = 0;
}

void h2_out_select(struct h2_table *t, struct h2_conn *c, struct h2_stream *st, int dir)
{
	if (c->out_st != st || c->out_dir != dir || c->npieces == H2_OUT_PIECES)
		h2_out_flush(t, c);
	c->out_st = st;
	c->out_dir = dir;
}

void h2_out_wrote(struct h2_conn *c, size_t mark)
{
	size_t n = c->out.len - mark;
	struct h2_piece *last = c->npieces ? &c->piece[c->npieces - 1] : NULL;
	if (!n)
		return;
	if (last && !last->p && last->at + last->n == mark)
		last->n += n;
	else
		c->piece[c->npieces++] = (struct h2_piece){ NULL, mark, n };
}

int h2_out_put(struct h2_table *t, struct h2_conn *c, struct h2_stream *st, int dir,
	       const void *data, size_t n)
{
	h2_out_select(t, c, st, dir);
	size_t mark = c->out.len;
	int err = h2_buf_put(&c->out, data, n);
	if (!err)
		h2_out_wrote(c, mark);
	return err;
}

void h2_out_ref(struct h2_table *t, struct h2_conn *c, struct h2_stream *st, int dir,
		const uint8_t *data, size_t n)
{
	h2_out_select(t, c, st, dir);
	struct h2_piece *last = c->npieces ? &c->piece[c->npieces - 1] : NULL;
	if (!n)
		return;
	if (last && last->p && last->p + last->n == data)
		last->n += n;
	else
		c->piece[c->npieces++] = (struct h2_piece){ data, 0, n };
}

struct h2_stream *h2_stream_find(struct h2_conn *c, uint32_t id)
{
	struct h2_stream *st = c->streams;
	while (st && st->id != id)
		st = st->next;
	return st;
}

/* The next client port of H2_PORT_MIN..H2_PORT_MAX, in turn. */
static uint16_t next_port(struct h2_table *t)
{
	uint16_t p = (uint16_t)t->next_port;
	t->next_port = p == H2_PORT_MAX ? H2_PORT_MIN : p + 1u;
	return p;
}

/* The metadata of c's streams: the connection's, kind synthetic, parent it.
 * One block per connection, shared by its streams. NULL without memory. */
static const struct conn_meta *stream_meta(struct h2_conn *c)
{
	if (c->smeta)
		return c->smeta;
	struct conn_meta *m = conn_meta_new();
	if (!m)
		return NULL;
	if (c->info.meta)
		*m = *c->info.meta;
	m->refs = 1;
	m->kind = CONN_KIND_SYNTHETIC;
	m->parent = c->info.id;
	c->smeta = m;
	return m;
}

int h2_stream_new(struct h2_table *t, struct h2_conn *c, uint32_t id, struct h2_stream **out)
{
	if (c->nstreams >= H2_MAX_STREAMS || t->nstreams >= t->max_streams) {
		if (c->nstreams >= H2_MAX_STREAMS)
			over_cap(&t->ctr.streams_refused, "streams open in one connection at the cap",
				 H2_MAX_STREAMS);
		else
			over_cap(&t->ctr.streams_refused, "streams open in total at --max-h2-streams",
				 t->max_streams);
		return -ENOSPC;
	}
	struct h2_stream *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->id = id;
	st->conn = c;
	st->x.stream = id;
	st->x.version = 20;
	st->x.conn = &c->ci;
	st->next = c->streams;
	c->streams = st;
	c->nstreams++;
	t->nstreams++;
	*out = st;
	return 0;
}

int h2_stream_open(struct h2_table *t, struct h2_conn *c, struct h2_stream *st)
{
	if (!t->origin && !(t->origin = stage_origin(t->st)))
		return -ENOSPC; /* the chain's stage origins are used up: cannot happen */
	struct conn_open fi = c->info;
	uint64_t conn_id = ++t->next_id;
	fi.id.origin = t->origin;
	fi.id.conn = conn_id;
	fi.charge_origin = c->info.id.origin; /* counts against the real producer's caps */
	fi.ts_ns = c->ts;
	fi.midstream = 0;
	fi.off[0] = fi.off[1] = 0;
	fi.synthetic = 1;
	fi.meta = stream_meta(c);
	/* the flow engine refuses a synthetic open on a 4-tuple in use (or
	 * just closed): try the next port */
	int err = -EADDRINUSE;
	for (int tries = 0; tries < H2_PORT_TRIES && err == -EADDRINUSE; tries++) {
		fi.client_port = next_port(t);
		err = stage_emit_open(t->st, &fi);
	}
	if (err == -ENFILE || err == -EMFILE) /* over --max-conns(-per-proc) */
		t->ctr.streams_refused++;
	if (flow_ret(t, err))
		return err;
	st->conn_id = conn_id;
	t->ctr.streams++;
	return 0;
}

void h2_stream_closed(struct h2_table *t, struct h2_conn *c, struct h2_stream *st)
{
	struct conn_id sid = { t->origin, st->conn_id };
	flow_ret(t, stage_emit_close(t->st, &sid, c->ts, 0));
	st->conn_id = 0;
}

void h2_stream_close(struct h2_table *t, struct h2_conn *c, struct h2_stream *st,
		     enum http_end why)
{
	HTTP_EACH(c->cons, c->ncons, txn_end, &st->x, c->ts, why);
	if (c->out_st == st) {
		h2_out_flush(t, c);
		c->out_st = NULL;
	}
	struct h2_stream **pp = &c->streams;
	while (*pp && *pp != st)
		pp = &(*pp)->next;
	if (*pp)
		*pp = st->next;
	c->nstreams--;
	t->nstreams--;
	free(st);
}

static void close_streams(struct h2_table *t, struct h2_conn *c, enum http_end why)
{
	h2_out_flush(t, c);
	while (c->streams)
		h2_stream_close(t, c, c->streams, why);
}

/* ---- connections ---- */

/* (Both ends of one connection mirrored: the dedup stage before this one
 * lets only one end through, so a connection is never converted twice.) */
void h2_conn_is_h2(struct h2_table *t, struct h2_conn *c)
{
	c->state = H2_CONVERT;
	if (c->owned) {
		t->ctr.conns++;
	} else if (!c->h2_tap) {
		c->h2_tap = 1;
		t->ntaps_h2++;
	}
}

/* A tapped connection may be decoded as HTTP/2: within --max-h2-conns,
 * converted and tapped together (each may take up to 3 MiB). */
static int h2_tap_room(struct h2_table *t)
{
	if (t->nconns + t->ntaps_h2 < t->max_conns)
		return 1;
	over_cap(&t->taps_refused, "HTTP/2 connections decoded at --max-h2-conns", t->max_conns);
	return 0;
}

static int dir_init(struct h2_dir *d, uint64_t off, enum h2_parse_state ps)
{
	d->off = off;
	d->ps = ps;
	d->raw.cap = 9 + H2_MAX_FRAME_BUF;
	d->table_max = d->table_want = 4096;
	d->blk.cap = H2_MAX_HEADER_LIST;
	h2_hdrs_reset(&d->hdrs);
	hpack_init(&d->hp, 4096);
	return 0;
}

/* The consumers of c's messages: the writer when the stage converts it,
 * then the records. */
static void set_consumers(struct h2_table *t, struct h2_conn *c)
{
	c->ncons = 0;
	c->ci.open = &c->info;
	if (c->owned)
		c->cons[c->ncons++] = (struct http_consumer){ &h2_writer_ops, t, 0 };
	if (t->rec)
		c->cons[c->ncons++] = rec_consumer(t->rec, 1);
}

static struct h2_conn *conn_new(struct h2_table *t, const struct conn_open *info, int owned)
{
	struct h2_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->info = *info;
	c->info.parent_ok = NULL;
	c->info.parent_arg = NULL;
	conn_meta_ref(c->info.meta);
	c->ts = info->ts_ns;
	c->out.cap = H2_OUT_CAP;
	c->owned = (uint8_t)owned;
	set_consumers(t, c);
	dir_init(&c->d[0], info->off[0], H2_PS_PREFACE);
	dir_init(&c->d[1], info->off[1], H2_PS_HDR);
	c->state = H2_DETECT;
	return c;
}

/* A tapped connection that turned out to be HTTP/1.x. */
static int to_http1(struct h2_table *t, struct h2_conn *c)
{
	c->state = H2_HTTP1;
	for (int d = 0; d < 2; d++) {
		hpack_free(&c->d[d].hp);
		h2_buf_free(&c->d[d].blk);
		h2_buf_free(&c->d[d].hdrs.buf);
	}
	c->h1 = h1_new(&c->ci, c->cons, c->ncons, &t->h1);
	if (!c->h1) {
		c->state = H2_OFF;
		return -ENOMEM;
	}
	return 0;
}

/* Records only (the stage passes it on): STAGE_TAP, or 0 when it is not
 * followed (midstream, not HTTP, over the cap). */
static int tap_open(struct h2_table *t, const struct conn_open *info, const char *alpn)
{
	if (!t->rec || info->parent_origin)
		return 0;
	if (info->synthetic)
		alpn = "http/1.1"; /* a stream an agent converted: HTTP/1.1 whatever its ALPN */
	if (alpn[0] && strcmp(alpn, "h2") && strcmp(alpn, "http/1.1") && strcmp(alpn, "http/1.0"))
		return 0;
	if (info->midstream) {
		t->taps_midstream++; /* where its messages begin is unknown */
		return 0;
	}
	if (t->ntaps >= t->max_taps) {
		over_cap(&t->taps_refused, "connections followed for records at --max-http-conns",
			 t->max_taps);
		return 0;
	}
	struct h2_conn **pp = find_link(t, info->id.origin, info->id.conn);
	if (*pp)
		return -EEXIST;
	struct h2_conn *c = conn_new(t, info, 0);
	if (!c)
		return 0;
	if (!strcmp(alpn, "h2") && !h2_tap_room(t)) {
		conn_free(c);
		return 0;
	}
	*pp = c;
	t->ntaps++;
	t->taps++;
	if (!strcmp(alpn, "h2"))
		h2_conn_is_h2(t, c);
	else if (alpn[0] && to_http1(t, c) < 0)
		c->state = H2_OFF;
	return STAGE_TAP;
}

/* 1: taken over, STAGE_TAP: tapped for records, 0: passed on (not HTTP/2,
 * midstream, inherited, over the cap), -EEXIST: announced again, -ENOMEM. */
static int h2_open(struct h2_table *t, const struct conn_open *info)
{
	const char *alpn = info->meta ? info->meta->alpn : "";
	int is_h2 = !strcmp(alpn, "h2");
	if (!t->convert || (alpn[0] && !is_h2) || info->parent_origin || info->synthetic)
		return tap_open(t, info, alpn); /* an inherited connection continues its
			   * parent's flow as it is; a synthetic one (a stream an agent
			   * converted already) is HTTP/1.1 */
	if (info->midstream || info->off[0] || info->off[1]) {
		/* the HPACK tables' state is unknown: mirrored as it is */
		if (is_h2)
			t->ctr.fallbacks++;
		return tap_open(t, info, alpn);
	}
	struct h2_conn **pp = find_link(t, info->id.origin, info->id.conn);
	if (*pp)
		return -EEXIST; /* the chain closes a replaced id first: never here */
	if (t->nconns >= t->max_conns) {
		over_cap(&t->ctr.conns_refused, "connections converted at --max-h2-conns",
			 t->max_conns);
		return tap_open(t, info, alpn);
	}
	struct h2_conn *c = conn_new(t, info, 1);
	if (!c)
		return -ENOMEM;
	c->d[0].off = c->d[1].off = 0;
	if (is_h2)
		h2_conn_is_h2(t, c);
	*pp = c;
	t->nconns++;
	return 1;
}

static void unlink_conn(struct h2_table *t, struct h2_conn *c)
{
	struct h2_conn **pp = find_link(t, c->info.id.origin, c->info.id.conn);
	if (*pp == c) {
		*pp = c->next;
		if (c->owned)
			t->nconns--;
		else
			t->ntaps--;
		if (c->h2_tap)
			t->ntaps_h2--;
		c->h2_tap = 0;
	}
}

/* Bytes left of the DATA frame being read once part of its payload was
 * converted: a fallback does not show them (a gap), so the raw bytes it
 * shows start at a frame header, never inside a body. */
static uint64_t data_rest(const struct h2_dir *d)
{
	if (d->raw.len)
		return 0;
	switch (d->ps) {
	case H2_PS_PADLEN:
		return d->left;
	case H2_PS_DATA:
		return (uint64_t)d->left + d->pad;
	case H2_PS_PAD:
		return d->pad;
	default:
		return 0;
	}
}

/* The bytes of the frame being read (raw) and the rest of the record at
 * off, in one piece where they touch, so the raw flow's first segment
 * starts with the frame's header. */
static void leave_feed(struct h2_table *t, const struct conn_open *fi, int dir,
		       const struct h2_buf *raw, uint64_t off, const uint8_t *rest, size_t n,
		       uint64_t *gap)
{
	uint8_t *one = NULL;
	if (raw->len && n && off == fi->off[dir] + raw->len && (one = malloc(raw->len + n))) {
		memcpy(one, raw->p, raw->len);
		memcpy(one + raw->len, rest, n);
		rest = one;
		off = fi->off[dir];
		n += raw->len;
	} else if (raw->len) {
		flow_ret(t, stage_emit_data(t->st, &fi->id, dir, fi->ts_ns, fi->off[dir], raw->p,
					    raw->len, NULL));
	}
	if (n)
		flow_ret(t, stage_emit_data(t->st, &fi->id, dir, fi->ts_ns, off, rest, n, gap));
	free(one);
}

static void tap_data(struct h2_table *t, struct h2_conn *c, int dir, uint64_t ts,
		     uint64_t off, const uint8_t *p, size_t n);

/*
 * The connection leaves the converter: its streams' connections end, it is
 * handed on to the next stage (opened there (midstream at the offsets of the unconverted
 * bytes, or as announced if it never was HTTP/2), the bytes of the frame
 * being read are fed raw, then the rest of the current record (at off).
 * Inside a DATA payload already partly converted, the rest of that frame is
 * a gap. One that never was HTTP/2 stays with the stage as a tap when there
 * are records: its HTTP/1.x is parsed from its first byte.
 */
static void leave(struct h2_table *t, struct h2_conn *c, int dir, uint64_t off,
		  const uint8_t *rest, size_t n, uint64_t *gap, enum http_end why)
{
	struct conn_open fi = c->info;
	uint64_t skip[2];
	int keep = c->state == H2_DETECT && t->rec;
	close_streams(t, c, why);
	unlink_conn(t, c);
	if (c->state == H2_CONVERT) {
		fi.midstream = 1;
		fi.ts_ns = c->ts;
	}
	for (int d = 0; d < 2; d++) {
		fi.off[d] = c->d[d].off - c->d[d].raw.len;
		skip[d] = data_rest(&c->d[d]);
	}
	int err = keep ? stage_hand_on_tapped(t->st, &fi) : stage_emit_open(t->st, &fi);
	if (flow_ret(t, err) == 0) {
		fi.ts_ns = c->ts;
		for (int d = 0; d < 2; d++) {
			if (skip[d])
				flow_ret(t, stage_emit_gap(t->st, &fi.id, d, c->ts, skip[d]));
			if (d != dir && c->d[d].raw.len)
				leave_feed(t, &fi, d, &c->d[d].raw, 0, NULL, 0, NULL);
		}
		uint64_t shown = fi.off[dir] + skip[dir];
		if (n && off + n <= shown)
			n = 0; /* wholly inside the frame not shown */
		leave_feed(t, &fi, dir, &c->d[dir].raw, off, rest, n, gap);
	}
	if (!keep || err) {
		conn_free(c);
		return;
	}
	/* a tap now: the client's bytes so far (held for the preface) first */
	struct h2_conn **pp = find_link(t, c->info.id.origin, c->info.id.conn);
	c->next = *pp;
	*pp = c;
	c->owned = 0;
	t->ntaps++;
	t->taps++;
	set_consumers(t, c);
	struct h2_buf held = c->d[0].raw;
	uint64_t held_off = c->d[0].off - held.len;
	memset(&c->d[0].raw, 0, sizeof(c->d[0].raw));
	if (to_http1(t, c) == 0) {
		c->d[0].off = c->d[1].off = 0;
		tap_data(t, c, 0, c->ts, held_off, held.p, held.len);
		tap_data(t, c, dir, c->ts, off, rest, n);
	}
	h2_buf_free(&held);
}

/* error: 0 (a gap), or why the HTTP/2 could not be converted (-EBADMSG:
 * a message breaking RFC 9113 §8, see h2_check_request()). */
static enum http_end fallback(struct h2_table *t, struct h2_conn *c, int error)
{
	if (c->state != H2_CONVERT)
		return HTTP_END_CLOSED;
	if (c->owned)
		t->ctr.fallbacks++;
	if (error)
		t->ctr.errors++;
	if (error == -EBADMSG)
		t->ctr.malformed++;
	return error == -ENOSPC || error == -E2BIG ? HTTP_END_LIMIT :
	       error ? HTTP_END_ERROR : HTTP_END_GAP;
}

static int h2_data(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		   uint64_t off, const uint8_t *data, size_t len, uint64_t *gap)
{
	struct h2_table *t = s->priv;
	if (gap)
		*gap = 0;
	struct h2_conn *c = *find_link(t, id->origin, id->conn);
	if (!c || !c->owned)
		return -ENOENT;
	if (dir != 0 && dir != 1)
		return -EINVAL;
	struct h2_dir *d = &c->d[dir];
	c->ts = ts_ns;
	if (off > d->off) {
		/* bytes we never get: HTTP/2 cannot be followed past them */
		leave(t, c, dir, off, data, len, gap, fallback(t, c, 0));
		return 0;
	}
	if (off < d->off) {
		uint64_t behind = d->off - off;
		if (behind >= len)
			return -ERANGE;
		data += behind;
		len -= (size_t)behind;
	}
	if (c->state == H2_DETECT && dir == 1 && len) {
		leave(t, c, dir, d->off, data, len, gap, HTTP_END_CLOSED); /* the server spoke first */
		return 0;
	}
	size_t used = 0;
	int err = h2_dir_feed(t, c, dir, data, len, &used);
	if (!err) {
		h2_out_flush(t, c);
		return 0;
	}
	enum http_end why = fallback(t, c, err);
	leave(t, c, dir, d->off, data + used, len - used, gap, why);
	return 0;
}

static int h2_gap(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		  uint64_t len)
{
	struct h2_table *t = s->priv;
	struct h2_conn *c = *find_link(t, id->origin, id->conn);
	if (!c || !c->owned)
		return -ENOENT;
	if (dir != 0 && dir != 1)
		return -EINVAL;
	c->ts = ts_ns;
	enum http_end why = fallback(t, c, 0);
	/* what falls in the rest of a DATA frame leave() hides is hidden already */
	uint64_t hidden = data_rest(&c->d[dir]);
	leave(t, c, dir, c->d[dir].off, NULL, 0, NULL, why);
	if (len > hidden)
		flow_ret(t, stage_emit_gap(t->st, id, dir, ts_ns, len - hidden));
	return 0;
}

/* ---- tapped connections: records only ---- */

/* Nothing more of c is followed: its exchanges end (why). */
static void tap_stop(struct h2_table *t, struct h2_conn *c, enum http_end why)
{
	close_streams(t, c, why);
	if (c->h2_tap)
		t->ntaps_h2--; /* its decoder's memory is given back below */
	c->h2_tap = 0;
	if (c->h1) {
		if (why == HTTP_END_GAP)
			h1_gap(c->h1, 0, c->ts);
		h1_free(c->h1, c->ts);
		c->h1 = NULL;
	}
	for (int d = 0; d < 2; d++) {
		hpack_free(&c->d[d].hp);
		h2_buf_free(&c->d[d].raw);
		h2_buf_free(&c->d[d].blk);
		h2_buf_free(&c->d[d].hdrs.buf);
	}
	c->state = H2_OFF;
}

static void tap_data(struct h2_table *t, struct h2_conn *c, int dir, uint64_t ts,
		     uint64_t off, const uint8_t *p, size_t n)
{
	struct h2_dir *d = &c->d[dir];
	c->ts = ts;
	if (c->state == H2_OFF || !n)
		return;
	if (off > d->off) {
		tap_stop(t, c, HTTP_END_GAP); /* bytes we never get */
		return;
	}
	if (off < d->off) {
		uint64_t behind = d->off - off;
		if (behind >= n)
			return;
		p += behind;
		n -= (size_t)behind;
	}
	if (c->state == H2_DETECT) {
		/* which HTTP: the client's first bytes say (the HTTP/2 preface, whose
		 * rest the decoder checks, or anything else: HTTP/1.x) */
		static const char pre[] = "PRI * HTTP/2.0";
		size_t k = n < sizeof(pre) - 1 ? n : sizeof(pre) - 1;
		if (dir == 0 && !memcmp(p, pre, k)) {
			if (!h2_tap_room(t)) {
				tap_stop(t, c, HTTP_END_LIMIT);
				return;
			}
			h2_conn_is_h2(t, c);
		} else if (to_http1(t, c) < 0) {
			return;
		}
	}
	if (c->state == H2_HTTP1) {
		d->off += n;
		if (h1_feed(c->h1, dir, ts, p, n) < 0)
			c->state = H2_OFF;
		return;
	}
	size_t used = 0;
	int err = h2_dir_feed(t, c, dir, p, n, &used);
	if (err) {
		enum http_end why = fallback(t, c, err);
		tap_stop(t, c, why == HTTP_END_GAP ? HTTP_END_ERROR : why);
	}
}

static void h2_tap_data(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
			uint64_t off, const uint8_t *p, size_t n)
{
	struct h2_table *t = s->priv;
	struct h2_conn *c = *find_link(t, id->origin, id->conn);
	if (c && !c->owned && (dir == 0 || dir == 1))
		tap_data(t, c, dir, ts_ns, off, p, n);
}

static void h2_tap_gap(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		       uint64_t n)
{
	struct h2_table *t = s->priv;
	struct h2_conn *c = *find_link(t, id->origin, id->conn);
	(void)dir;
	(void)n;
	if (c && !c->owned && c->state != H2_OFF) {
		c->ts = ts_ns;
		tap_stop(t, c, HTTP_END_GAP);
	}
}

/* A tapped connection ended: a response read until the close is complete. */
static void tap_end(struct h2_table *t, struct h2_conn *c, uint64_t ts_ns)
{
	c->ts = ts_ns;
	if (c->h1)
		h1_close(c->h1, ts_ns);
	close_streams(t, c, HTTP_END_CLOSED);
	unlink_conn(t, c);
	conn_free(c);
}

static void h2_ended(struct stage *s, const struct conn_open *o)
{
	struct h2_table *t = s->priv;
	struct h2_conn *c = *find_link(t, o->id.origin, o->id.conn);
	if (c && !c->owned)
		tap_end(t, c, o->ts_ns);
}

/* The connection ended: its streams get their FIN. One that never showed
 * the preface was an ordinary connection: handed on, then closed there. */
static int conn_close(struct h2_table *t, struct h2_conn *c, uint64_t ts_ns, unsigned flags)
{
	c->ts = ts_ns;
	if (!c->owned) {
		tap_end(t, c, ts_ns);
		return 0;
	}
	if (c->state == H2_DETECT) {
		struct conn_id id = c->info.id;
		leave(t, c, 0, c->d[0].off, NULL, 0, NULL, HTTP_END_CLOSED);
		return flow_ret(t, stage_emit_close(t->st, &id, ts_ns, flags));
	}
	close_streams(t, c, HTTP_END_CLOSED);
	unlink_conn(t, c);
	conn_free(c);
	return 0;
}

static int h2_close(struct stage *s, const struct conn_id *id, uint64_t ts_ns, unsigned flags)
{
	struct h2_table *t = s->priv;
	struct h2_conn *c = *find_link(t, id->origin, id->conn);
	return c && c->owned ? conn_close(t, c, ts_ns, flags) : -ENOENT;
}

/* Ends the connections of one origin (all: every one). */
static void close_matching(struct h2_table *t, int all, uint64_t origin, uint64_t ts_ns)
{
	for (size_t i = 0; i < H2_BUCKETS; i++) {
		struct h2_conn *c = t->b[i], *next;
		for (; c; c = next) {
			next = c->next;
			if (all || c->info.id.origin == origin)
				conn_close(t, c, ts_ns, 0);
		}
	}
}

static void h2_origin(struct stage *s, uint64_t origin, int ev, uint64_t ts_ns)
{
	if (ev == ORIGIN_CLOSED)
		close_matching(s->priv, 0, origin, ts_ns);
}

static void h2_close_all(struct stage *s, uint64_t ts_ns)
{
	close_matching(s->priv, 1, 0, ts_ns);
}

static int h2_stage_open(struct stage *s, struct conn_open *o)
{
	int r = h2_open(s->priv, o);
	return r == -ENOMEM ? 0 : r; /* without memory: mirrored as it is */
}

static size_t h2_stage_counters(const struct stage *s, struct kv *out, size_t max)
{
	const struct h2_table *t = s->priv;
	const struct h2_counters *c = h2_counters(t);
	size_t n = 0;
	n = kv_put(out, max, n, "conns", c->conns, 0);
	n = kv_put(out, max, n, "streams", c->streams, 0);
	n = kv_put(out, max, n, "decode_errors", c->errors, 0); /* "errors": the chain's */
	n = kv_put(out, max, n, "fallbacks", c->fallbacks, 0);
	n = kv_put(out, max, n, "refused_conns", c->conns_refused, 0);
	n = kv_put(out, max, n, "refused_streams", c->streams_refused, 0);
	n = kv_put(out, max, n, "malformed", c->malformed, 0);
	n = kv_put(out, max, n, "emit_errors", c->flow_errors, 0);
	if (!t->rec)
		return n;
	const struct rec_counters *r = rec_counters(t->rec);
	n = kv_put(out, max, n, "followed", t->taps, 0);
	n = kv_put(out, max, n, "followed_now", t->ntaps, 1);
	n = kv_put(out, max, n, "refused_followed", t->taps_refused, 0);
	n = kv_put(out, max, n, "midstream", t->taps_midstream, 0);
	n = kv_put(out, max, n, "h1_requests", t->h1.requests, 0);
	n = kv_put(out, max, n, "h1_responses", t->h1.responses, 0);
	n = kv_put(out, max, n, "h1_errors", t->h1.errors, 0);
	n = kv_put(out, max, n, "h1_limits", t->h1.limits, 0);
	n = kv_put(out, max, n, "h1_upgrades", t->h1.upgrades, 0);
	n = kv_put(out, max, n, "h1_buffered", t->h1.buffered, 1);
	n = kv_put(out, max, n, "records", r->records, 0);
	n = kv_put(out, max, n, "records_complete", r->complete, 0);
	n = kv_put(out, max, n, "records_incomplete", r->incomplete, 0);
	n = kv_put(out, max, n, "records_truncated", r->truncated, 0);
	return kv_put(out, max, n, "records_nomem", r->nomem, 0);
}

static void h2_stage_free(struct stage *s)
{
	h2_table_free(s->priv);
	s->priv = NULL;
}

static const struct stage_ops h2_stage_ops = {
	.name = "http",
	.open = h2_stage_open,
	.ended = h2_ended,
	.data = h2_data,
	.tap_data = h2_tap_data,
	.tap_gap = h2_tap_gap,
	.gap = h2_gap,
	.close = h2_close,
	.origin = h2_origin,
	.counters = h2_stage_counters,
	.close_all = h2_close_all,
	.free = h2_stage_free,
};

int h2_stage_wanted(const struct pipeline_opts *o)
{
	return o->records != NULL;
}

int h2_stage_init(struct stage *s, const char *arg, const struct pipeline_opts *o,
		  const char **why)
{
	struct h2_table *t = h2_table_new(s);
	if (!t) {
		*why = "out of memory";
		return -ENOMEM;
	}
	h2_set_limits(t, o->max_h2_conns, o->max_h2_streams);
	t->convert = arg != NULL;
	t->rec = o->records;
	t->max_taps = o->max_http_conns ? o->max_http_conns : H2_DEFAULT_MAX_TAPS;
	s->priv = t;
	s->ops = &h2_stage_ops;
	return 0;
}
