/* HTTP/2 -> HTTP/1.1 (--h2-to-h1): each HTTP/2 stream becomes one HTTP/1.1 exchange on a synthetic TCP connection. */
#ifndef TLSMIRROR_H2_H
#define TLSMIRROR_H2_H

#include <stddef.h>
#include <stdint.h>

#include "flows/flow.h"

/*
 * A stage of the chain (docs/pipeline.md, docs/h2.md), enabled by
 * --h2-to-h1 (h2_stage_init, one row in stage_table). A connection it takes
 * over (ALPN "h2", or no ALPN until the client's first bytes show whether
 * they are the HTTP/2 preface) reaches the stages after it only as its
 * streams: each stream is an invented connection between the same hosts,
 * same server port, client port from H2_PORT_MIN..H2_PORT_MAX, id (the
 * stage's own origin, n). Malformed HTTP/2 (or a gap in the clear text)
 * makes the connection fall back: it is handed on midstream and the raw
 * bytes are mirrored from that point on. A message whose fields break RFC
 * 9113 §8 (h2_check_request()) is malformed: nothing of it is written.
 * Stream connections are synthetic (conn_open.synthetic): a real connection
 * on their 4-tuple moves them to another port (docs/flows.md).
 */
#define H2_PORT_MIN FLOW_SYNTH_PORT_MIN
#define H2_PORT_MAX FLOW_SYNTH_PORT_MAX
#define H2_PORT_TRIES 64               /* ports tried for one stream (in use or just closed) */
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
	uint64_t flow_errors; /* events emitted downstream that failed (a stream not shown whole) */
};

#define H2_DEFAULT_MAX_CONNS 128       /* converted at once (--max-h2-conns) */
#define H2_DEFAULT_MAX_STREAMS 16384   /* open streams in total (--max-h2-streams) */
#define H2_DEFAULT_MAX_TAPS 10000      /* followed for records at once (--max-http-conns) */

const struct h2_counters *h2_counters(const struct h2_table *t);

#endif
