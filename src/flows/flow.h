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
};

/* Everything the engine needs to know when a TLS connection appears. */
struct flow_open_info {
	uint64_t proc_key;       /* which attached process (agent-assigned, unique) */
	uint64_t conn_id;        /* per-process connection id */
	uint64_t ts_ns;
	uint8_t family;          /* 4 or 6 */
	uint8_t side;            /* which end the mirrored process is (0 client, 1 server) */
	uint8_t midstream;       /* data flowed before: stream offsets below are > 0 */
	uint8_t synthetic;       /* invented by a transform (an HTTP/2 stream): gives way to real ones */
	uint16_t client_port, server_port;
	uint8_t client_addr[16], server_addr[16];
	uint64_t off[2];         /* stream offsets at open: [0] c2s, [1] s2c */
};

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
	uint64_t synthetic_moved;   /* synthetic flows moved off a 4-tuple a real connection took */
};

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
 * the new one is marked duplicate and its events ignored.
 *
 * A real connection always gets its 4-tuple: a synthetic flow on it is
 * moved (FIN exchange there, then SYN on the next free client port of
 * FLOW_SYNTH_PORT_MIN..MAX; its events go on under the same ids and
 * offsets). A synthetic open (info->synthetic) on a 4-tuple that is open or
 * was closed within the last seconds is refused with -EADDRINUSE: the
 * caller picks another port. Returns 0, -EEXIST, -EADDRINUSE or -ENOMEM.
 */
int flow_open(struct flow_table *t, const struct flow_open_info *info);

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

/* Bytes the mirror could not show (sendfile): advances like a gap. */
int flow_gap(struct flow_table *t, uint64_t proc_key, uint64_t conn_id,
	     int dir, uint64_t ts_ns, uint64_t len);

/* The TLS connection ended: FIN exchange, flow forgotten. -ENOENT if unknown. */
int flow_close(struct flow_table *t, uint64_t proc_key, uint64_t conn_id,
	       uint64_t ts_ns);

/* The process went away: closes all its flows. */
void flow_close_proc(struct flow_table *t, uint64_t proc_key, uint64_t ts_ns);

/* Closes every flow (agent exit). */
void flow_close_all(struct flow_table *t, uint64_t ts_ns);

const struct flow_counters *flow_counters(const struct flow_table *t);

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
