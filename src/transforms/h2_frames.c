/* HTTP/2 frame reader of one direction: frames, padding, priority, header blocks, HTTP/1.1 output per stream. */
#include "transforms/h2_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/bytes.h"

enum {
	F_DATA = 0, F_HEADERS = 1, F_PRIORITY = 2, F_RST_STREAM = 3, F_SETTINGS = 4,
	F_PUSH_PROMISE = 5, F_PING = 6, F_GOAWAY = 7, F_WINDOW_UPDATE = 8, F_CONTINUATION = 9
};
#define FL_END_STREAM 0x01
#define FL_ACK 0x01
#define FL_END_HEADERS 0x04
#define FL_PADDED 0x08
#define FL_PRIORITY 0x20
#define SETTINGS_HEADER_TABLE_SIZE 1

static const uint8_t preface[24] = {
	'P', 'R', 'I', ' ', '*', ' ', 'H', 'T', 'T', 'P', '/', '2', '.', '0', '\r', '\n',
	'\r', '\n', 'S', 'M', '\r', '\n', '\r', '\n'
};

/* The request's :method is HEAD (its response has no body). */
static uint8_t head_method(const struct h2_hdrs *h)
{
	size_t pos = 0;
	struct h2_field f;
	while (h2_hdrs_next(h, &pos, &f) && f.nlen && f.name[0] == ':')
		if (f.nlen == 7 && !memcmp(f.name, ":method", 7))
			return f.vlen == 4 && !memcmp(f.value, "HEAD", 4);
	return 0;
}

/* :status of a response block h2_check_response accepted (3 digits). */
static unsigned h2_status(const struct h2_hdrs *h)
{
	size_t pos = 0;
	struct h2_field f;
	while (h2_hdrs_next(h, &pos, &f) && f.nlen && f.name[0] == ':')
		if (f.nlen == 7 && !memcmp(f.name, ":status", 7) && f.vlen == 3)
			return (unsigned)(f.value[0] - '0') * 100 + (unsigned)(f.value[1] - '0') * 10 +
			       (unsigned)(f.value[2] - '0');
	return 0;
}

/* ---- message events to the connection's consumers (http/msg.h) ---- */

/* Each returns c->werr: the writer could not write it (the connection falls back). */
static int ev_head(struct h2_conn *c, struct h2_stream *st, int dir, const struct h2_hdrs *h,
		   int es, int end, int64_t clen, unsigned status)
{
	struct http_head hd = { .version = 20, .request = dir == 0, .end = (uint8_t)end,
				.end_stream = (uint8_t)es,
				.informational = dir == 1 && status < 200,
				.status = (uint16_t)status, .content_length = clen, .fields = { .hdrs = h } };
	if (dir == 0) {
		size_t pos = 0;
		struct h2_field f;
		while (h2_hdrs_next(h, &pos, &f) && f.nlen && f.name[0] == ':') {
			struct http_str v = { f.value, f.vlen };
			if (f.nlen == 7 && !memcmp(f.name, ":method", 7))
				hd.method = v;
			else if (f.nlen == 5 && !memcmp(f.name, ":path", 5))
				hd.target = v;
			else if (f.nlen == 7 && !memcmp(f.name, ":scheme", 7))
				hd.scheme = v;
			else if (f.nlen == 10 && !memcmp(f.name, ":authority", 10))
				hd.authority = v;
		}
		if (!hd.target.p)
			hd.target = hd.authority; /* CONNECT */
	}
	HTTP_EACH(c->cons, c->ncons, head, &st->x, dir, c->ts, &hd);
	return c->werr;
}

/* The message of one direction of a stream is complete. */
static int msg_end(struct h2_table *t, struct h2_conn *c, struct h2_stream *st, int dir)
{
	if (st->ended[dir])
		return 0;
	st->ended[dir] = 1;
	HTTP_EACH(c->cons, c->ncons, msg_end, &st->x, dir, c->ts);
	if (st->ended[0] && st->ended[1])
		h2_stream_close(t, c, st, HTTP_END_DONE);
	return c->werr;
}

static int body(struct h2_table *t, struct h2_conn *c, int dir, const uint8_t *p, size_t n)
{
	struct h2_stream *st = h2_stream_find(c, c->d[dir].fsid);
	(void)t;
	if (!n || !st || !st->head_done[dir] || st->ended[dir])
		return 0;
	if (st->sized[dir]) {
		/* more than the head announced would read as another message */
		if (n > st->left[dir])
			return -EBADMSG;
		st->left[dir] -= n;
	}
	HTTP_EACH(c->cons, c->ncons, body, &st->x, dir, c->ts, p, n);
	return c->werr;
}

/* A PUSH_PROMISE's request: a stream of its own, request without body. */
static int pushed_request(struct h2_table *t, struct h2_conn *c, struct h2_dir *d)
{
	struct h2_stream *st;
	int64_t clen;
	if (h2_stream_find(c, d->blk_promised))
		return -EPROTO;
	int err = h2_check_request(&d->hdrs, &clen);
	if (!err)
		err = h2_stream_new(t, c, d->blk_promised, &st);
	if (err)
		return err;
	st->head_done[0] = 1;
	st->head_req = head_method(&d->hdrs);
	if ((err = ev_head(c, st, 0, &d->hdrs, 1, 1, clen, 0)))
		return err;
	return msg_end(t, c, st, 0);
}

/* The message of (st, dir) ends: a body shorter than its content-length is
 * malformed (RFC 9113 §8.1.1). */
static int sized_end(const struct h2_stream *st, int dir)
{
	return st->sized[dir] && st->left[dir] ? -EBADMSG : 0;
}

/* Trailers: checked, handed on, the message ends. */
static int trailers(struct h2_table *t, struct h2_conn *c, struct h2_stream *st, int dir,
		    struct h2_dir *d)
{
	if (!d->blk_end_stream)
		return -EPROTO; /* trailers must end the stream */
	int err = h2_check_trailers(&d->hdrs);
	if (!err)
		err = sized_end(st, dir);
	if (err)
		return err;
	HTTP_EACH(c->cons, c->ncons, trailers, &st->x, dir, c->ts, &d->hdrs);
	if (c->werr)
		return c->werr;
	return msg_end(t, c, st, dir);
}

/* A complete header block of a HEADERS frame: request, response, 1xx or trailers. */
static int headers_done(struct h2_table *t, struct h2_conn *c, int dir, struct h2_dir *d)
{
	struct h2_stream *st = h2_stream_find(c, d->blk_sid);
	int err = 0, es = d->blk_end_stream;
	int64_t clen = -1;
	if (st ? st->ended[dir] : dir != 0)
		return 0; /* a stream we do not follow: decoded for the table only */
	if (st && st->head_done[dir])
		return trailers(t, c, st, dir, d);
	err = dir == 0 ? h2_check_request(&d->hdrs, &clen) : h2_check_response(&d->hdrs, &clen);
	if (!err && dir == 0 && es && clen > 0)
		err = -EBADMSG; /* ends before the body it announces (§8.1.1) */
	unsigned status = dir == 1 ? h2_status(&d->hdrs) : 0;
	int info = dir == 1 && status < 200;
	int bodyless = dir == 1 && (info || status == 204 || status == 304 || st->head_req);
	if (!err && dir == 1 && es && !bodyless && clen > 0)
		err = -EBADMSG; /* a response without the body it announces */
	if (!err && !st)
		err = h2_stream_new(t, c, d->blk_sid, &st);
	if (err)
		return err;
	if (dir == 0)
		st->head_req = head_method(&d->hdrs);
	if ((err = ev_head(c, st, dir, &d->hdrs, es, es || bodyless, clen, status)))
		return err;
	if (info)
		return 0; /* the final response follows */
	st->head_done[dir] = 1;
	st->sized[dir] = clen >= 0 || bodyless;
	st->left[dir] = bodyless || clen < 0 ? 0 : (uint64_t)clen;
	return es ? msg_end(t, c, st, dir) : 0;
}

static int block_frag(struct h2_table *t, struct h2_conn *c, int dir, const uint8_t *p,
		      size_t n, int final)
{
	struct h2_dir *d = &c->d[dir];
	int err;
	if (!final || d->blk.len) {
		/* fragments are kept until the block is whole (then decoded at once) */
		if ((err = h2_buf_put(&d->blk, p, n)))
			return err;
		if (!final)
			return 0;
		p = d->blk.p;
		n = d->blk.len;
	}
	err = hpack_decode(&d->hp, p, n, &d->hdrs);
	d->blk.len = 0;
	if (err)
		return err;
	d->in_block = 0;
	if (d->blk_type == F_PUSH_PROMISE)
		return pushed_request(t, c, d);
	return headers_done(t, c, dir, d);
}

static int block_start(struct h2_table *t, struct h2_conn *c, int dir, struct reader *r,
		       uint8_t pad, uint8_t type, uint32_t promised)
{
	struct h2_dir *d = &c->d[dir];
	if (pad > r->left)
		return -EPROTO;
	if (d->table_want != d->table_max) {
		if (hpack_set_limit(&d->hp, d->table_want))
			return -EPROTO;
		d->table_max = d->table_want;
	}
	h2_hdrs_reset(&d->hdrs);
	d->blk_sid = d->fsid;
	d->blk_type = type;
	d->blk_promised = promised;
	d->blk_end_stream = (d->fflags & FL_END_STREAM) && type == F_HEADERS;
	d->in_block = 1;
	return block_frag(t, c, dir, r->p, r->left - pad, d->fflags & FL_END_HEADERS);
}

static int on_headers(struct h2_table *t, struct h2_conn *c, int dir, struct reader *r)
{
	struct h2_dir *d = &c->d[dir];
	uint8_t pad = 0;
	uint32_t promised = 0;
	if (!d->fsid)
		return -EPROTO;
	if ((d->fflags & FL_PADDED) && rd_u8(r, &pad))
		return -EPROTO;
	if (d->ftype == F_HEADERS) {
		if ((d->fflags & FL_PRIORITY) && rd_skip(r, 5))
			return -EPROTO;
		return block_start(t, c, dir, r, pad, F_HEADERS, 0);
	}
	if (dir != 1 || r->left < 4)
		return -EPROTO; /* PUSH_PROMISE only comes from the server */
	promised = get_be32(r->p) & 0x7fffffff;
	rd_skip(r, 4);
	if (!promised)
		return -EPROTO;
	return block_start(t, c, dir, r, pad, F_PUSH_PROMISE, promised);
}

static int on_settings(struct h2_conn *c, int dir, struct reader *r)
{
	struct h2_dir *d = &c->d[dir];
	if (d->fsid || ((d->fflags & FL_ACK) && r->left) || r->left % 6)
		return -EPROTO;
	while (r->left) {
		uint16_t id = get_be16(r->p);
		uint32_t v = get_be32(r->p + 2);
		rd_skip(r, 6);
		/* the peer's encoder may use up to this (never lowered: still decodes) */
		struct h2_dir *o = &c->d[!dir];
		if (id == SETTINGS_HEADER_TABLE_SIZE) {
			size_t want = v > H2_MAX_TABLE ? H2_MAX_TABLE : v;
			if (want > o->table_want)
				o->table_want = want;
		}
	}
	return 0;
}

/* GOAWAY: streams above the last one the sender processed, opened by the
 * receiver, end. */
static int on_goaway(struct h2_table *t, struct h2_conn *c, int dir, struct reader *r)
{
	if (c->d[dir].fsid || r->left < 8)
		return -EPROTO;
	uint32_t last = get_be32(r->p) & 0x7fffffff;
	struct h2_stream *st = c->streams, *next;
	for (; st; st = next) {
		next = st->next;
		if (st->id > last && (int)(st->id & 1) == dir)
			h2_stream_close(t, c, st, HTTP_END_RESET);
	}
	return 0;
}

/* A whole non-DATA frame is in d->raw. */
static int frame_done(struct h2_table *t, struct h2_conn *c, int dir)
{
	struct h2_dir *d = &c->d[dir];
	struct reader r = { d->raw.p + 9, d->flen };
	struct h2_stream *st;
	switch (d->ftype) {
	case F_HEADERS:
	case F_PUSH_PROMISE:
		return on_headers(t, c, dir, &r);
	case F_CONTINUATION:
		return block_frag(t, c, dir, r.p, r.left, d->fflags & FL_END_HEADERS);
	case F_PRIORITY:
		return d->fsid && d->flen == 5 ? 0 : -EPROTO;
	case F_RST_STREAM:
		if (!d->fsid || d->flen != 4)
			return -EPROTO;
		st = h2_stream_find(c, d->fsid);
		if (st)
			h2_stream_close(t, c, st, HTTP_END_RESET);
		return 0;
	case F_SETTINGS:
		return on_settings(c, dir, &r);
	case F_PING:
		return !d->fsid && d->flen == 8 ? 0 : -EPROTO;
	case F_GOAWAY:
		return on_goaway(t, c, dir, &r);
	case F_WINDOW_UPDATE:
		return d->flen == 4 ? 0 : -EPROTO;
	default:
		return 0; /* unknown frame types are ignored */
	}
}

/*
 * A DATA frame's payload starts; its header (and pad length) are still in
 * d->raw, so a fallback shows the frame whole from its header. A body
 * longer than its content-length would read as another message.
 */
static int data_start(struct h2_conn *c, int dir)
{
	struct h2_dir *d = &c->d[dir];
	struct h2_stream *st = h2_stream_find(c, d->fsid);
	if (st && st->head_done[dir] && !st->ended[dir] && st->sized[dir] &&
	    d->left > st->left[dir])
		return -EBADMSG;
	return 0;
}

static int data_end(struct h2_table *t, struct h2_conn *c, int dir)
{
	struct h2_dir *d = &c->d[dir];
	d->raw.len = 0;
	d->ps = d->pad ? H2_PS_PAD : H2_PS_HDR;
	if (d->fflags & FL_END_STREAM) {
		struct h2_stream *st = h2_stream_find(c, d->fsid);
		if (st && st->head_done[dir] && !st->ended[dir]) {
			int err = sized_end(st, dir);
			if (err)
				return err;
			return msg_end(t, c, st, dir);
		}
	}
	return 0;
}

/* The 9-byte frame header is in d->raw. */
static int hdr_parse(struct h2_table *t, struct h2_conn *c, int dir)
{
	struct h2_dir *d = &c->d[dir];
	struct reader r = { d->raw.p, 9 };
	uint32_t sid;
	rd_be24(&r, &d->flen);
	rd_u8(&r, &d->ftype);
	rd_u8(&r, &d->fflags);
	sid = get_be32(r.p);
	d->fsid = sid & 0x7fffffff;
	if (d->in_block != (d->ftype == F_CONTINUATION) ||
	    (d->in_block && d->fsid != d->blk_sid))
		return -EPROTO; /* a header block is interrupted, or a stray CONTINUATION */
	if (d->ftype != F_DATA) {
		if (d->flen > H2_MAX_FRAME_BUF)
			return -E2BIG;
		d->ps = H2_PS_PAYLOAD;
		return d->flen ? 0 : frame_done(t, c, dir);
	}
	if (!d->fsid || ((d->fflags & FL_PADDED) && !d->flen))
		return -EPROTO;
	d->left = d->flen;
	d->pad = 0;
	d->ps = (d->fflags & FL_PADDED) ? H2_PS_PADLEN : H2_PS_DATA;
	if (!d->left)
		return data_end(t, c, dir);
	return d->ps == H2_PS_DATA ? data_start(c, dir) : 0;
}

/* The pad length of a PADDED DATA frame. */
static int data_padlen(struct h2_table *t, struct h2_conn *c, int dir, uint8_t b)
{
	struct h2_dir *d = &c->d[dir];
	int err = h2_buf_put(&d->raw, &b, 1);
	if (err)
		return err;
	d->pad = b;
	d->off++;
	d->left--;
	if (d->pad > d->left)
		return -EPROTO;
	d->left -= d->pad;
	d->ps = H2_PS_DATA;
	return d->left ? data_start(c, dir) : data_end(t, c, dir);
}

static size_t min_sz(size_t a, size_t b)
{
	return a < b ? a : b;
}

/* Collects bytes of a preface, frame header or frame into d->raw; handles
 * what became complete. */
static int collect(struct h2_table *t, struct h2_conn *c, int dir, const uint8_t *p,
		   size_t n, size_t *k)
{
	struct h2_dir *d = &c->d[dir];
	size_t want = d->ps == H2_PS_PREFACE ? sizeof(preface) :
		      d->ps == H2_PS_HDR ? 9 : 9 + (size_t)d->flen;
	*k = min_sz(want - d->raw.len, n);
	if (d->ps == H2_PS_PREFACE && memcmp(p, preface + d->raw.len, *k)) {
		*k = 0;
		return -EPROTO;
	}
	int err = h2_buf_put(&d->raw, p, *k);
	if (err) {
		*k = 0;
		return err;
	}
	d->off += *k;
	if (d->raw.len < want)
		return 0;
	if (d->ps == H2_PS_PREFACE) {
		d->raw.len = 0;
		d->ps = H2_PS_HDR;
		if (c->state == H2_DETECT)
			h2_conn_is_h2(t, c);
		return 0;
	}
	if (d->ps == H2_PS_HDR)
		return hdr_parse(t, c, dir);
	err = frame_done(t, c, dir);
	if (!err) {
		d->raw.len = 0;
		d->ps = H2_PS_HDR;
	}
	return err;
}

int h2_dir_feed(struct h2_table *t, struct h2_conn *c, int dir, const uint8_t *p,
		size_t n, size_t *used)
{
	struct h2_dir *d = &c->d[dir];
	size_t i = 0, k = 0;
	int err = 0;
	while (i < n && !err) {
		switch (d->ps) {
		case H2_PS_PREFACE:
		case H2_PS_HDR:
		case H2_PS_PAYLOAD:
			err = collect(t, c, dir, p + i, n - i, &k);
			break;
		case H2_PS_PADLEN:
			k = 1;
			err = data_padlen(t, c, dir, p[i]);
			break;
		case H2_PS_DATA:
			k = min_sz(d->left, n - i);
			err = body(t, c, dir, p + i, k);
			if (err) {
				k = 0; /* a fallback shows these bytes raw */
				break;
			}
			d->raw.len = 0; /* the frame's header is behind */
			d->off += k;
			d->left -= (uint32_t)k;
			if (!err && !d->left)
				err = data_end(t, c, dir);
			break;
		case H2_PS_PAD:
			k = min_sz(d->pad, n - i);
			d->off += k;
			d->pad -= (uint32_t)k;
			if (!d->pad)
				d->ps = H2_PS_HDR;
			break;
		}
		i += k;
	}
	*used = i;
	return err;
}
