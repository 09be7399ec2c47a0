/* The HTTP/2 -> HTTP/1.1 writer: a consumer of the decoder's message events that writes each stream as an HTTP/1.1 exchange (docs/h2.md). */
#include "transforms/h2_int.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>

/*
 * Heads are written into c->out (h2_h1.c builds them from the checked
 * fields), bodies are referenced where they are in the record (no copy),
 * chunk lines around them when the head had no content-length. A stream's
 * synthetic connection is opened at its first head and closed when the
 * exchange ends. A failure sets c->werr: the decoder then falls back.
 */

static struct h2_stream *stream_of(struct http_txn *x)
{
	return (struct h2_stream *)((char *)x - offsetof(struct h2_stream, x));
}

static void w_head(void *arg, struct http_txn *x, int dir, uint64_t ts,
		   const struct http_head *h)
{
	struct h2_table *t = arg;
	struct h2_stream *st = stream_of(x);
	struct h2_conn *c = st->conn;
	struct h2_head_info hi;
	(void)ts;
	if (c->werr)
		return;
	if (!st->conn_id && (c->werr = h2_stream_open(t, c, st)))
		return;
	h2_out_select(t, c, st, dir);
	size_t mark = c->out.len;
	int err = dir == 0 ? h2_h1_request(h->fields.hdrs, h->end_stream, &c->out, &hi) :
			     h2_h1_response(h->fields.hdrs, h->end_stream, st->head_req, &c->out, &hi);
	if (err) {
		c->out.len = mark;
		c->werr = err;
		return;
	}
	h2_out_wrote(c, mark);
	if (!hi.informational)
		st->chunked[dir] = (uint8_t)hi.chunked;
}

static void w_body(void *arg, struct http_txn *x, int dir, uint64_t ts, const uint8_t *p,
		   size_t n)
{
	struct h2_table *t = arg;
	struct h2_stream *st = stream_of(x);
	struct h2_conn *c = st->conn;
	(void)ts;
	if (c->werr || !st->conn_id)
		return;
	if (!st->chunked[dir]) {
		h2_out_ref(t, c, st, dir, p, n); /* no copy */
		return;
	}
	char line[24];
	int k = snprintf(line, sizeof(line), "%zx\r\n", n);
	int err = h2_out_put(t, c, st, dir, line, (size_t)k);
	if (!err)
		h2_out_ref(t, c, st, dir, p, n);
	if (!err)
		err = h2_out_put(t, c, st, dir, "\r\n", 2);
	c->werr = err;
}

/* After a chunked body: the trailer section. After a body with
 * content-length HTTP/1.1 has no place for them: dropped. */
static void w_trailers(void *arg, struct http_txn *x, int dir, uint64_t ts,
		       const struct h2_hdrs *tr)
{
	struct h2_table *t = arg;
	struct h2_stream *st = stream_of(x);
	struct h2_conn *c = st->conn;
	(void)ts;
	if (c->werr || !st->conn_id || !st->chunked[dir])
		return;
	h2_out_select(t, c, st, dir);
	size_t mark = c->out.len;
	int err = h2_h1_trailers(tr, &c->out);
	if (err) {
		c->out.len = mark;
		c->werr = err;
		return;
	}
	h2_out_wrote(c, mark);
	st->last_chunk[dir] = 1;
}

static void w_msg_end(void *arg, struct http_txn *x, int dir, uint64_t ts)
{
	struct h2_table *t = arg;
	struct h2_stream *st = stream_of(x);
	struct h2_conn *c = st->conn;
	(void)ts;
	if (c->werr || !st->conn_id || !st->chunked[dir] || st->last_chunk[dir])
		return;
	c->werr = h2_out_put(t, c, st, dir, "0\r\n\r\n", 5);
	st->last_chunk[dir] = 1;
}

static void w_txn_end(void *arg, struct http_txn *x, uint64_t ts, enum http_end why)
{
	struct h2_table *t = arg;
	struct h2_stream *st = stream_of(x);
	struct h2_conn *c = st->conn;
	(void)ts;
	(void)why;
	if (!st->conn_id)
		return;
	if (c->out_st == st) {
		h2_out_flush(t, c);
		c->out_st = NULL;
	}
	h2_stream_closed(t, c, st);
}

const struct http_consumer_ops h2_writer_ops = {
	.head = w_head,
	.body = w_body,
	.trailers = w_trailers,
	.msg_end = w_msg_end,
	.txn_end = w_txn_end,
};
