/* HTTP/2 converter internals shared by h2.c (connections, streams, output) and h2_frames.c (frame reader). */
#ifndef TLSMIRROR_H2_INT_H
#define TLSMIRROR_H2_INT_H

#include <stddef.h>
#include <stdint.h>

#include "http/h1.h"
#include "http/msg.h"
#include "transforms/h2.h"
#include "transforms/h2_h1.h"
#include "transforms/hpack.h"

enum h2_conn_state {
	H2_DETECT = 0, /* no ALPN: waiting for the client preface */
	H2_CONVERT,    /* HTTP/2: decoded (converted when the stage owns it) */
	H2_HTTP1,      /* tapped: HTTP/1.x, parsed for records (c->h1) */
	H2_OFF         /* tapped: not followed any more (error, upgrade, gap) */
};

enum h2_parse_state {
	H2_PS_PREFACE = 0, H2_PS_HDR, H2_PS_PAYLOAD, H2_PS_PADLEN, H2_PS_DATA, H2_PS_PAD
};

struct h2_stream {
	struct h2_stream *next;
	struct http_txn x;      /* what the message consumers know of it */
	struct h2_conn *conn;
	uint32_t id;
	uint64_t conn_id;       /* writer: its connection (the stage's origin, conn_id); 0 none yet */
	uint64_t off[2];        /* writer: bytes written to it per direction */
	uint8_t head_done[2];   /* final head seen (request, response) */
	uint8_t chunked[2];     /* writer: its HTTP/1.1 body is chunked */
	uint8_t last_chunk[2];  /* writer: the last chunk is written (trailers) */
	uint8_t ended[2];
	uint8_t head_req;       /* the request was HEAD */
	uint8_t sized[2];       /* the body's length is known (content-length, or none allowed) */
	uint64_t left[2];       /* sized: body bytes still to come */
};

/* One direction of a connection: frame reader and HPACK decoder. */
struct h2_dir {
	uint64_t off;           /* stream offset of the next byte */
	enum h2_parse_state ps;
	struct h2_buf raw;      /* bytes of the frame being read (never DATA payload) */
	uint32_t flen, fsid, left, pad;
	uint8_t ftype, fflags;
	struct hpack_dec hp;    /* HPACK decoder */
	struct h2_buf blk;      /* a block's fragments so far (CONTINUATION) */
	size_t table_max;       /* header table size the decoder allows */
	size_t table_want;      /* announced by the peer's SETTINGS: applied before the next block */
	struct h2_hdrs hdrs;    /* fields of the block in progress */
	uint32_t blk_sid, blk_promised;
	uint8_t blk_type, blk_end_stream, in_block;
};

/* A piece of the output for (out_st, out_dir): bytes of the record being
 * read (p), or bytes the converter wrote into c->out (p NULL, at c->out.p + at). */
#define H2_OUT_PIECES 64
struct h2_piece {
	const uint8_t *p;
	size_t at, n;
};

struct h2_conn {
	struct h2_conn *next;
	struct conn_open info;      /* the original connection (holds a reference to its meta) */
	struct conn_meta *smeta;    /* its streams' metadata (kind synthetic), NULL until one */
	enum h2_conn_state state;
	uint8_t owned;              /* the stage owns it (converts it); 0: taps it for records */
	uint8_t h2_tap;             /* tapped and decoded as HTTP/2: counted in ntaps_h2 */
	int werr;                   /* the writer failed: the connection falls back */
	struct http_conn_info ci;   /* for the consumers: info */
	struct http_consumer cons[HTTP_MAX_CONSUMERS]; /* the writer (owned), the records */
	size_t ncons;
	struct h1_conn *h1;         /* H2_HTTP1 */
	struct h2_dir d[2];
	struct h2_stream *streams;
	size_t nstreams;
	uint64_t ts;                /* timestamp of the record being handled */
	struct h2_buf out;          /* bytes written for (out_st, out_dir): heads, chunk lines */
	struct h2_piece piece[H2_OUT_PIECES]; /* the output pending for (out_st, out_dir) */
	size_t npieces;
	struct h2_stream *out_st;
	int out_dir;
};

/* h2.c, for the frame reader */
struct h2_stream *h2_stream_find(struct h2_conn *c, uint32_t id);
/* A new stream (within the caps), known to the consumers as st->x. */
int h2_stream_new(struct h2_table *t, struct h2_conn *c, uint32_t id, struct h2_stream **out);
/* The stream is over: its consumers hear txn_end (why), then it is freed. */
void h2_stream_close(struct h2_table *t, struct h2_conn *c, struct h2_stream *st,
		     enum http_end why);
/* Writer: opens the stream's synthetic connection (0 or -errno), closes it. */
int h2_stream_open(struct h2_table *t, struct h2_conn *c, struct h2_stream *st);
void h2_stream_closed(struct h2_table *t, struct h2_conn *c, struct h2_stream *st);
/* h2_write.c: the HTTP/2 -> HTTP/1.1 writer, a message consumer whose arg is the table. */
extern const struct http_consumer_ops h2_writer_ops;
/* Makes (st, dir) the target of the pending output (handing on what is
 * pending for another target first), with room for one more piece. */
void h2_out_select(struct h2_table *t, struct h2_conn *c, struct h2_stream *st, int dir);
/* Bytes written for (st, dir): copied into c->out. Returns 0, -E2BIG or -ENOMEM. */
int h2_out_put(struct h2_table *t, struct h2_conn *c, struct h2_stream *st, int dir,
	       const void *data, size_t n);
/* Bytes of the record being read for (st, dir), not copied: valid until the
 * flush at the end of the record at the latest. */
void h2_out_ref(struct h2_table *t, struct h2_conn *c, struct h2_stream *st, int dir,
		const uint8_t *data, size_t n);
/* What was written into c->out from mark on (after h2_out_select: a head)
 * is output. */
void h2_out_wrote(struct h2_conn *c, size_t mark);
/* Hands the pending output to the flow engine, as one write. */
void h2_out_flush(struct h2_table *t, struct h2_conn *c);
/* The client preface was seen: the connection is HTTP/2. */
void h2_conn_is_h2(struct h2_table *t, struct h2_conn *c);

/* h2_frames.c: reads n bytes of direction dir; *used gets how many were
 * consumed. Returns 0 or a negative errno (malformed: fall back). */
int h2_dir_feed(struct h2_table *t, struct h2_conn *c, int dir, const uint8_t *p,
		size_t n, size_t *used);

#endif
