/* HTTP/1.x parser of one connection: both directions to message events (msg.h; rules in docs/http.md). */
#ifndef TLSMIRROR_HTTP_H1_H
#define TLSMIRROR_HTTP_H1_H

#include <stddef.h>
#include <stdint.h>

#include "http/msg.h"

#define H1_MAX_HEAD (64u * 1024)     /* a request or response head, or a trailer section */
#define H1_MAX_FIELDS 256            /* fields of one head */
#define H1_MAX_PIPELINE 64           /* requests waiting for their responses */
#define H1_MAX_WAIT (64u * 1024)     /* client bytes held while an Upgrade/CONNECT is answered */
#define H1_MAX_BUFFERED (64u << 20)  /* of heads, chunk lines and held bytes, every connection
				      * of one h1_counters together */

/* Counted by the caller's table (one struct for every connection). */
struct h1_counters {
	uint64_t requests;      /* request heads */
	uint64_t responses;     /* final response heads */
	uint64_t errors;        /* connections whose wire broke HTTP/1.x */
	uint64_t limits;        /* connections over a cap (head size, fields, pipeline) */
	uint64_t upgrades;      /* connections that left HTTP (101, CONNECT) */
	uint64_t buffered;      /* bytes the connections' buffers hold now (H1_MAX_BUFFERED) */
};

struct h1_conn;

/* A parser for a connection whose client speaks first (the caller checked
 * nothing more); cons[0..ncons) get its events in order. NULL: no memory. */
struct h1_conn *h1_new(const struct http_conn_info *ci, const struct http_consumer *cons,
		       size_t ncons, struct h1_counters *ctr);
/* Bytes of dir (0 client, 1 server), in stream order (the caller trims
 * what it fed already). Returns 0; -EPROTO once the connection is not
 * followed any more (error, cap, upgrade, gap): later calls do nothing. */
int h1_feed(struct h1_conn *c, int dir, uint64_t ts_ns, const uint8_t *p, size_t n);
/* Bytes of dir are missing: the exchanges open end (HTTP_END_GAP). */
void h1_gap(struct h1_conn *c, int dir, uint64_t ts_ns);
/* The connection ended: a response read until the close is complete; the
 * rest end HTTP_END_CLOSED. */
void h1_close(struct h1_conn *c, uint64_t ts_ns);
/* 1 once nothing more is followed. */
int h1_stopped(const struct h1_conn *c);
/* Frees (after h1_close, or ending what is open as HTTP_END_CLOSED). */
void h1_free(struct h1_conn *c, uint64_t ts_ns);

#endif
