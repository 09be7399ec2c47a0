/* Flow engine: TLS connection events become TCP segments with synthetic sequence numbers. */
#ifndef TLSMIRROR_FLOW_H
#define TLSMIRROR_FLOW_H

#include <stddef.h>
#include <stdint.h>

#include "sinks/sink.h"

struct flow_table;

struct flow_config {
	uint16_t mss;            /* IPv4 MSS, default 1460; IPv6 uses mss - 20 */
	struct sink_set *sinks;  /* where packets go */
	/* MAC policy (-I IFACE, --dst-mac); without them each end gets a MAC
	 * derived from its address (synth_conn_init) */
	uint8_t host_mac[6];     /* source MAC of the mirrored host's end */
	uint8_t has_host_mac;
	uint8_t dst_mac[6];      /* destination MAC of every frame */
	uint8_t has_dst_mac;
	/* caps on open flows (every flow counts: duplicates, HTTP/2 streams);
	 * 0: the defaults below */
	size_t max_flows;            /* in total (--max-conns) */
	size_t max_flows_per_origin; /* per proc_key (--max-conns-per-proc) */
};

#define FLOW_DEFAULT_MAX_FLOWS 100000
#define FLOW_DEFAULT_MAX_PER_ORIGIN 10000

/* A connection appears: struct conn_open (pipeline/conn.h). The engine's
 * proc_key is the connection's origin (id.origin), conn_id is id.conn; caps
 * are counted against charge_origin (or id.origin). */
#include "pipeline/conn.h"

/* Counters the engine keeps (totals across flows). */
struct flow_counters {
	uint64_t flows_opened;
	uint64_t flows_closed;
	uint64_t flows_duplicate;   /* same connection mirrored from its other end: ignored */
	uint64_t bytes[2];          /* clear text emitted, [0] c2s, [1] s2c */
	uint64_t gap_bytes[2];      /* sequence gaps emitted */
	uint64_t packets;
	uint64_t orphan_records;    /* data/close for a connection never opened */
	uint64_t bad_offsets;       /* data behind what was already emitted */
	uint64_t flows_open;        /* open now (duplicates included) */
	uint64_t flows_refused;     /* opens refused over a cap (-ENFILE, -EMFILE) */
	uint64_t orphan_bytes;      /* clear text of DATA for no flow (refused or never opened) */
	uint64_t flows_handed_over; /* inherited over fork(): a child continued the flow */
	uint64_t synthetic_moved;   /* synthetic flows moved off a 4-tuple a real connection took */
	uint64_t tag_failures;      /* tags not made (no memory): packets without a connection */
};

/* Counters of one origin (one proc_key). */
struct flow_origin_stats {
	uint64_t open;              /* flows open now */
	uint64_t refused;           /* opens refused over a cap */
	uint64_t orphan_bytes;      /* clear text for no flow */
	uint64_t unused;            /* open flows that carried nothing yet (announcements) */
};

/* Open flows of one origin that have carried nothing yet (announced, never
 * used): past this, its new opens are refused (a producer pre-announcing
 * 4-tuples it does not have; docs/pipeline.md "Pre-announced 4-tuples"). */
#define FLOW_MAX_UNUSED_PER_ORIGIN 1024

/* Client ports synthetic flows use (and move to): below Linux's ephemeral range. */
#define FLOW_SYNTH_PORT_MIN 10000
#define FLOW_SYNTH_PORT_MAX 32767

struct flow_table *flow_table_new(const struct flow_config *cfg);
void flow_table_free(struct flow_table *t);

/*
 * A connection appeared: emits SYN, SYN/ACK, ACK. If a flow with the same
 * (proc_key, conn_id) exists it is closed first, unless it has the same
 * addresses, ports and side: then it is the same connection announced again,
 * nothing is emitted and -EEXIST is returned. If the same 4-tuple is open
 * from another process's point of view (both ends mirrored on this host),
 * the new one is marked duplicate and its events ignored, unless it says it
 * was inherited from that process's flow of the same conn_id and side
 * (parent_key): then it continues that flow, no SYN, data placed by stream
 * offset, whichever process sends it.
 *
 * A real connection always gets its 4-tuple: a synthetic flow on it is
 * moved (FIN exchange there, then SYN on the next free client port of
 * FLOW_SYNTH_PORT_MIN..MAX; its events go on under the same ids and
 * offsets). A synthetic open (info->synthetic) on a 4-tuple that is open or
 * was closed within the last seconds is refused with -EADDRINUSE: the
 * caller picks another port. Returns 0, -EEXIST, -EADDRINUSE or -ENOMEM.
 */
int flow_open(struct flow_table *t, const struct conn_open *info);

/*
 * Clear text of one direction (dir 0 c2s, 1 s2c) starting at stream offset
 * off. If off is beyond what was emitted, the difference becomes a sequence
 * gap of exactly that size (*gap gets it, may be NULL). Data is segmented to
 * the MSS and each segment is acknowledged by the other end.
 * Returns 0, -ENOENT for an unknown connection, -ERANGE if off is behind.
 */
int flow_data(struct flow_table *t, uint64_t proc_key, uint64_t conn_id,
	      int dir, uint64_t ts_ns, uint64_t off, const uint8_t *data,
	      size_t len, uint64_t *gap);

/* The same for the concatenation of v[0..nv) (a stage's output in pieces):
 * full segments across the pieces, a segment spanning two is copied. */
int flow_datav(struct flow_table *t, uint64_t proc_key, uint64_t conn_id, int dir,
	       uint64_t ts_ns, uint64_t off, const struct piece *v, size_t nv, uint64_t *gap);

/* Bytes the mirror could not show (sendfile): advances like a gap. */
int flow_gap(struct flow_table *t, uint64_t proc_key, uint64_t conn_id,
	     int dir, uint64_t ts_ns, uint64_t len);

/* The TLS connection ended: FIN exchange, flow forgotten. -ENOENT if unknown.
 * A flow continued by another process (fork handover) ends when its last
 * holder closes it. */
int flow_close(struct flow_table *t, uint64_t proc_key, uint64_t conn_id,
	       uint64_t ts_ns);

/*
 * The process let go of its copy of a connection that was open when it forked
 * (RING_F_CLOSE_HANDOVER). Another holder continues the flow; without one the
 * flow lingers up to FLOW_LINGER_NS for a child to announce it as inherited
 * (flow_open with parent_key), then ends as flow_close would. -ENOENT if unknown.
 */
int flow_release(struct flow_table *t, uint64_t proc_key, uint64_t conn_id,
		 uint64_t ts_ns);
#define FLOW_LINGER_NS (5ull * 1000000000ull)

/* The process is about to fork: its flows open now may be inherited, so its
 * exit (flow_close_proc) releases them as flow_release does. */
void flow_proc_forked(struct flow_table *t, uint64_t proc_key);

/* Ends lingering flows released more than FLOW_LINGER_NS before now_ns. */
void flow_expire(struct flow_table *t, uint64_t now_ns);

/* The process went away: closes all its flows. */
void flow_close_proc(struct flow_table *t, uint64_t proc_key, uint64_t ts_ns);

/* Closes every flow (agent exit). */
void flow_close_all(struct flow_table *t, uint64_t ts_ns);

const struct flow_counters *flow_counters(const struct flow_table *t);

/*
 * Origins (proc_key) are remembered from their first open (or label) until
 * flow_origin_forget, so their counters outlive their flows. label names the
 * origin in the log line of a refusal ("pid 12 (nginx)"). Returns 0 or -ENOMEM.
 */
int flow_origin_label(struct flow_table *t, uint64_t proc_key, const char *label);
/* Counters of an origin (zeros if unknown). */
struct flow_origin_stats flow_origin_stats(const struct flow_table *t, uint64_t proc_key);
/* Forgets an origin with no open flow (-EBUSY if it has some). */
int flow_origin_forget(struct flow_table *t, uint64_t proc_key);

/* Has the connection (proc_key, conn_id) carried clear text (or a gap, or
 * is it a duplicate)? 1 yes, 0 not yet (an announcement never used), -1 no
 * such flow. */
int flow_used(const struct flow_table *t, uint64_t proc_key, uint64_t conn_id);

/*
 * 1 if a flow that emits packets has this 4-tuple (in either orientation),
 * or one had it within the last seconds (a synthetic open there would be
 * refused), else 0. For transforms that invent connections (HTTP/2 ->
 * HTTP/1.1). Addresses are 16 bytes (IPv4 in the first 4).
 */
int flow_tuple_busy(const struct flow_table *t, uint8_t family,
		    const uint8_t client_addr[16], uint16_t client_port,
		    const uint8_t server_addr[16], uint16_t server_port);

#endif
