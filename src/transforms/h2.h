/* HTTP/2 -> HTTP/1.1 (--h2-to-h1): each HTTP/2 stream becomes one HTTP/1.1 exchange on a synthetic TCP connection. */
#ifndef TLSMIRROR_H2_H
#define TLSMIRROR_H2_H

#include <stddef.h>
#include <stdint.h>

#include "flows/flow.h"

/*
 * The converter sits between the ring records of a process and the flow
 * engine (see docs/h2.md). A connection it takes over produces no flow of its
 * own: each stream gets a synthetic connection between the same hosts, same
 * server port, client port from H2_PORT_MIN..H2_PORT_MAX, flow ids
 * (proc_key, H2_CONN_ID_BIT | n). Malformed HTTP/2 (or a gap in the clear
 * text) makes the connection fall back: a normal flow is opened for it
 * midstream and the raw bytes are mirrored from that point on; the
 * connection is then no longer the converter's. A message whose fields
 * break RFC 9113 §8 (h2_check_request()) is malformed: nothing of it is
 * written. Stream flows are synthetic (flow_open_info.synthetic): a real
 * connection on their 4-tuple moves them to another port (docs/flows.md).
 */
#define H2_PORT_MIN FLOW_SYNTH_PORT_MIN
#define H2_PORT_MAX FLOW_SYNTH_PORT_MAX
#define H2_CONN_ID_BIT (1ull << 63)
#define H2_MAX_STREAMS 256            /* open streams per connection */
#define H2_MAX_FRAME_BUF (256u * 1024) /* largest non-DATA frame buffered */
#define H2_MAX_TABLE (64u * 1024)      /* largest HPACK dynamic table accepted */

struct h2_table;

struct h2_counters {
	uint64_t conns;      /* connections converted */
	uint64_t streams;    /* streams mirrored as HTTP/1.1 exchanges (pushes included) */
	uint64_t errors;     /* malformed HTTP/2: bad frame, HPACK error, a limit exceeded */
	uint64_t fallbacks;  /* connections mirrored unconverted from some point on */
	uint64_t conns_refused;   /* HTTP/2 connections mirrored raw: max_conns converted */
	uint64_t streams_refused; /* streams over a cap: the connection fell back */
	uint64_t malformed;  /* of errors: a message breaking RFC 9113 §8 (fields, lengths) */
	uint64_t flow_errors; /* calls into the flow engine that failed (a stream not shown whole) */
};

#define H2_DEFAULT_MAX_CONNS 128       /* converted at once (--max-h2-conns) */
#define H2_DEFAULT_MAX_STREAMS 16384   /* open streams in total (--max-h2-streams) */

/* A converter feeding flows (which must outlive it). NULL on ENOMEM. */
struct h2_table *h2_table_new(struct flow_table *flows);
/* Caps (0: the default): connections converted at once (over it a new one is
 * mirrored raw), open streams in total (over it, or over H2_MAX_STREAMS in
 * one connection, the connection falls back to raw HTTP/2). */
void h2_set_limits(struct h2_table *t, size_t max_conns, size_t max_streams);
/* Frees the converter's memory; emits nothing (close the flows first). */
void h2_table_free(struct h2_table *t);

/*
 * A connection appeared. alpn "h2": taken over. Empty ALPN: taken over until
 * its first client bytes show whether they are the HTTP/2 preface. Returns 1
 * when the converter took it (the caller opens no flow), 0 when the caller
 * mirrors it as usual, -ENOMEM.
 */
int h2_open(struct h2_table *t, const struct flow_open_info *info, const char *alpn);

/*
 * Clear text of a connection (as flow_data). Returns 0 when handled (*gap
 * gets a sequence gap shown by a fallback), -ENOENT when the connection is
 * not the converter's (the caller gives it to the flow engine), -ERANGE when
 * off is wholly behind what was already consumed.
 */
int h2_data(struct h2_table *t, uint64_t proc_key, uint64_t conn_id, int dir,
	    uint64_t ts_ns, uint64_t off, const uint8_t *data, size_t len, uint64_t *gap);

/* Bytes that cannot be shown: the connection falls back, then flow_gap.
 * Returns 0 when handled, -ENOENT when not the converter's. */
int h2_gap(struct h2_table *t, uint64_t proc_key, uint64_t conn_id, int dir,
	   uint64_t ts_ns, uint64_t len);

/* The connection ended: every stream's connection gets its FIN. Returns 0,
 * or -ENOENT when not the converter's (the caller closes its flow). */
int h2_close(struct h2_table *t, uint64_t proc_key, uint64_t conn_id, uint64_t ts_ns);

/* The process went away: ends all its connections (call before flow_close_proc). */
void h2_close_proc(struct h2_table *t, uint64_t proc_key, uint64_t ts_ns);

const struct h2_counters *h2_counters(const struct h2_table *t);

#endif
