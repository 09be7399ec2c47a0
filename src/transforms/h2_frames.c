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

/* The message of one direction of a stream is complete. */
static void msg_end(struct h2_table *t, struct h2_conn *c, struct h2_stream *st, int dir,
		    int last_chunk_written)
{
	if (st->ended[dir])
		return;
	if (st->chunked[dir] && !last_chunk_written)
		h2_out_put(t, c, st, dir, "0\r\n\r\n", 5);
	st->ended[dir] = 1;
	if (st->ended[0] && st->ended[1])
		h2_stream_close(t, c, st);
}

static int body(struct h2_table *t, struct h2_conn *c, int dir, const uint8_t *p, size_t n)
{
	struct h2_stream *st = h2_stream_find(c, c->d[dir].fsid);
	if (!n || !st || !st->head_done[dir] || st->ended[dir])
		return 0;
	if (st->sized[dir]) {
		/* more than the head announced would read as another message */
		if (n > st->left[dir])
			return -EBADMSG;
		st->left[dir] -= n;
	}
	if (!st->chunked[dir]) {
		h2_out_ref(t, c, st, dir, p, n); /* no copy */
		return 0;
	}
	char line[24];
	int k = snprintf(line, sizeof(line), "%zx\r\n", n);
	int err = h2_out_put(t, c, st, dir, line, (size_t)k);
	if (!err)
		h2_out_ref(t, c, st, dir, p, n);
	if (!err)
		err = h2_out_put(t, c, st, dir, "\r\n", 2);
	return err;
}

/* A PUSH_PROMISE's request: a stream of its own, request without body. */
static int pushed_request(struct h2_table *t, struct h2_conn *c, struct h2_dir *d)
{
	struct h2_stream *st;
	struct h2_head_info hi;
	int64_t clen;
	if (h2_stream_find(c, d->blk_promised))
		return -EPROTO;
	int err = h2_check_request(&d->hdrs, &clen);
	if (!err)
		err = h2_stream_new(t, c, d->blk_promised, &st);
	if (err)
		return err;
	h2_out_select(t, c, st, 0);
	size_t mark = c->out.len;
	err = h2_h1_request(&d->hdrs, 1, &c->out, &hi);
	if (err) {
		c->out.len = mark;
		return err;
	}
	h2_out_wrote(c, mark);
	st->head_done[0] = 1;
	st->head_req = (uint8_t)hi.head_method;
	msg_end(t, c, st, 0, 0);
	return 0;
}

/* The message of (st, dir) ends: a body shorter than its content-length is
 * malformed (RFC 9113 §8.1.1). */
static int sized_end(const struct h2_stream *st, int dir)
{
	return st->sized[dir] && st->left[dir] ? -EBADMSG : 0;
}

/* Trailers: checked, written after a chunked body, the message ends. */
static int trailers(struct h2_table *t, struct h2_conn *c, struct h2_stream *st, int dir,
		    struct h2_dir *d)
{
	if (!d->blk_end_stream)
		return -EPROTO; /* trailers must end the stream */
	int err = h2_check_trailers(&d->hdrs);
	if (!err)
		err = sized_end(st, dir);
	size_t mark = c->out.len;
	if (!err && st->chunked[dir]) {
		err = h2_h1_trailers(&d->hdrs, &c->out);
		if (err)
			c->out.len = mark;
		else
			h2_out_wrote(c, mark);
	}
	if (!err)
		msg_end(t, c, st, dir, st->chunked[dir]);
	return err;
}

/* A complete header block of a HEADERS frame: request, response, 1xx or trailers. */
static int headers_done(struct h2_table *t, struct h2_conn *c, int dir, struct h2_dir *d)
{
	struct h2_head_info hi;
	struct h2_stream *st = h2_stream_find(c, d->blk_sid);
	int err = 0, es = d->blk_end_stream;
	int64_t clen = -1;
	if (st ? st->ended[dir] : dir != 0)
		return 0; /* a stream we do not follow: decoded for the table only */
	if (st && st->head_done[dir]) {
		h2_out_select(t, c, st, dir);
		return trailers(t, c, st, dir, d);
	}
	err = dir == 0 ? h2_check_request(&d->hdrs, &clen) : h2_check_response(&d->hdrs, &clen);
	if (!err && dir == 0 && es && clen > 0)
		err = -EBADMSG; /* ends before the body it announces (§8.1.1) */
	if (!err && !st)
		err = h2_stream_new(t, c, d->blk_sid, &st);
	if (err)
		return err;
	h2_out_select(t, c, st, dir);
	size_t mark = c->out.len;
	if (dir == 0)
		err = h2_h1_request(&d->hdrs, es, &c->out, &hi);
	else
		err = h2_h1_response(&d->hdrs, es, st->head_req, &c->out, &hi);
	if (err) {
		c->out.len = mark;
		return err;
	}
	if (hi.informational) {
		h2_out_wrote(c, mark);
		return 0; /* the final response follows */
	}
	st->head_done[dir] = 1;
	st->chunked[dir] = (uint8_t)hi.chunked;
	st->sized[dir] = clen >= 0 || hi.bodyless;
	st->left[dir] = hi.bodyless || clen < 0 ? 0 : (uint64_t)clen;
	if (dir == 0)
		st->head_req = (uint8_t)hi.head_method;
	if (es && (err = sized_end(st, dir)) != 0) {
		c->out.len = mark; /* a response without the body it announces */
		return err;
	}
	h2_out_wrote(c, mark);
	if (es)
		msg_end(t, c, st, dir, 0);
	return 0;
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
			h2_stream_close(t, c, st);
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
			h2_stream_close(t, c, st);
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
			msg_end(t, c, st, dir, 0);
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
