/* The HTTP message layer: what the HTTP/1.x parser and the HTTP/2 decoder tell their consumers (docs/http.md). */
#ifndef TLSMIRROR_HTTP_MSG_H
#define TLSMIRROR_HTTP_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "transforms/h2_h1.h"

/*
 * Both decoders turn a connection's clear text into the same events, for
 * one exchange (struct http_txn: an HTTP/1.x request and its response, or
 * an HTTP/2 stream) at a time: a head per direction (informational
 * responses first, each a head of its own), body bytes as they come,
 * trailers, the end of each direction's message, and the end of the
 * exchange, complete or not (enum http_end). Every name and value handed
 * on was checked on the wire (no CR, LF or NUL; tokens where a token
 * belongs): a consumer may copy them as they are. The consumers of a
 * connection form an ordered list (struct http_consumer), at most
 * HTTP_MAX_CONSUMERS: the HTTP/2 -> HTTP/1.1 writer, the record builder.
 */

#define HTTP_MAX_CONSUMERS 2

/* Why an exchange ended. */
enum http_end {
	HTTP_END_DONE = 0,   /* request and response complete */
	HTTP_END_RESET,      /* HTTP/2 RST_STREAM, or a GOAWAY above its id */
	HTTP_END_CLOSED,     /* the connection ended before it completed */
	HTTP_END_GAP,        /* clear text missing (lost, sendfile): not followed */
	HTTP_END_ERROR,      /* the wire broke HTTP: not followed further */
	HTTP_END_UPGRADE,    /* 101 Switching Protocols or CONNECT: what follows is not HTTP */
	HTTP_END_LIMIT       /* a cap of the decoder was reached */
};
const char *http_end_name(enum http_end e);

/* A string of the head: not NUL-terminated; p NULL when absent. */
struct http_str {
	const uint8_t *p;
	size_t n;
};

/* A head's fields in either form: HTTP/2's decoded block (hdrs), or
 * HTTP/1.x's n fields pointing into the head's own bytes (v, no copy).
 * Valid during the head call. */
struct http_field {
	struct http_str name, value;
	uint8_t json_plain;       /* name and value are JSON string text as they are
				   * (no '"', '\\', control or non-ASCII byte) */
};
struct http_fields {
	const struct h2_hdrs *hdrs;
	const struct http_field *v;
	size_t n;
};

/* Iterates either form: *pos starts at 0. Returns 1 with *f filled (and
 * *json_plain: the parser found name and value need no JSON escaping; 0
 * when it did not look), 0 at the end. */
static inline int http_fields_next(const struct http_fields *fs, size_t *pos, struct h2_field *f,
				   int *json_plain)
{
	*json_plain = 0;
	if (fs->hdrs)
		return h2_hdrs_next(fs->hdrs, pos, f);
	if (*pos >= fs->n)
		return 0;
	const struct http_field *x = &fs->v[(*pos)++];
	f->name = x->name.p;
	f->nlen = x->name.n;
	f->value = x->value.p;
	f->vlen = x->value.n;
	*json_plain = x->json_plain;
	return 1;
}

/* One message head. fields: every field as it came (HTTP/2: pseudo-header
 * fields first, names starting with ':'; HTTP/1.x: none of those). */
struct http_head {
	uint8_t version;          /* 10, 11 or 20 */
	uint8_t request;          /* 1: request, 0: response */
	uint8_t end;              /* no body follows (END_STREAM, or none allowed) */
	uint8_t informational;    /* a 1xx response: the final one follows */
	uint8_t end_stream;       /* HTTP/2: the block carried END_STREAM */
	uint16_t status;          /* responses */
	struct http_str method, target, scheme, authority; /* requests: target is the
				   * path and query (or authority-form for CONNECT);
				   * authority from :authority or Host */
	int64_t content_length;   /* -1: none */
	struct http_fields fields;
};

struct http_txn;

/* A consumer of message events. Each call gets the exchange and the
 * direction (0 request, 1 response); x->priv[slot] is the consumer's. */
struct http_consumer_ops {
	void (*head)(void *arg, struct http_txn *x, int dir, uint64_t ts_ns,
		     const struct http_head *h);
	void (*body)(void *arg, struct http_txn *x, int dir, uint64_t ts_ns,
		     const uint8_t *p, size_t n);
	void (*trailers)(void *arg, struct http_txn *x, int dir, uint64_t ts_ns,
			 const struct h2_hdrs *t);
	/* The message of dir is complete. */
	void (*msg_end)(void *arg, struct http_txn *x, int dir, uint64_t ts_ns);
	/* The exchange is over (every exchange that got a head gets this once,
	 * last): the consumer frees what it keeps in x->priv[slot]. */
	void (*txn_end)(void *arg, struct http_txn *x, uint64_t ts_ns, enum http_end why);
};

struct http_consumer {
	const struct http_consumer_ops *ops;
	void *arg;
	unsigned slot;             /* its index in http_txn.priv */
};

/* Calls the consumers' call (when they have it) in list order: each gets
 * its own arg first, then the rest. */
#define HTTP_EACH(list, n, call, ...)                                             \
	for (size_t i_ = 0; i_ < (n); i_++)                                       \
		if ((list)[i_].ops->call)                                         \
			(list)[i_].ops->call((list)[i_].arg, __VA_ARGS__)

/* What the consumers know of an exchange. */
struct http_txn {
	uint32_t stream;           /* HTTP/2 stream id; HTTP/1.x: 1, 2, ... on the connection */
	uint8_t version;           /* of its request head (10, 11, 20) */
	struct http_conn_info *conn;
	void *priv[HTTP_MAX_CONSUMERS];
};

/* The connection an exchange belongs to: as the stage saw it opened. */
struct http_conn_info {
	const struct conn_open *open;  /* the 4-tuple (as given to the stage), id, meta */
	struct h2_buf cache;           /* the records' JSON of it (made once; its owner frees it) */
};

#endif
