/* Where synthesized packets go: one ops table per kind, several sinks at once. */
#ifndef TLSMIRROR_SINK_H
#define TLSMIRROR_SINK_H

#include <stddef.h>
#include <stdint.h>

#include "common/text.h"
#include "pipeline/conn.h"

/*
 * A packet handed to sinks: a complete Ethernet frame split in two parts so
 * the payload need not be copied before the sink copies it. The frame on the
 * wire is hdr[0..hdr_len), payload[0..payload_len), then more[0..more_len):
 * a segment whose bytes span two pieces of the stream (an HTTP/2 stream's
 * DATA bodies, say) is handed on as its two parts instead of gathered into
 * a copy (more_len is 0 otherwise). The parts are valid only during the
 * sink's write call. conn is the connection the
 * packet belongs to (conn.h; NULL for frames without one, such as frames a
 * collector replays): valid during the write call; keep it longer only with
 * conn_tag_ref.
 */
struct pkt {
	uint64_t ts_ns;          /* CLOCK_REALTIME nanoseconds */
	const uint8_t *hdr;
	uint32_t hdr_len;
	uint32_t payload_len;
	const uint8_t *payload;
	const uint8_t *more;
	uint32_t more_len;
	const struct conn_tag *conn;
};

/* The frame's length on the wire: headers and both parts of the payload. */
static inline uint64_t pkt_frame_len(const struct pkt *k)
{
	return (uint64_t)k->hdr_len + k->payload_len + k->more_len;
}

/* Copies the first n bytes of the payload (both parts) to dst. */
static inline void pkt_copy_payload(uint8_t *dst, const struct pkt *k, size_t n)
{
	size_t a = n < k->payload_len ? n : k->payload_len;
	if (a)
		__builtin_memcpy(dst, k->payload, a);
	if (n > a)
		__builtin_memcpy(dst + a, k->more, n - a);
}

struct sink;

struct sink_opts {
	/* files (pcap) */
	uint64_t rotate_bytes;   /* 0: never rotate by size */
	uint64_t rotate_seconds; /* 0: never rotate by time */
	uint32_t rotate_count;   /* 0: keep every file; N: reuse N files in turn */
	uint32_t snaplen;        /* pcap header snaplen */
	/* the clock that decides time rotation and '%' names (NULL: CLOCK_REALTIME):
	 * the agent's own, never a producer's record timestamps (issue 15) */
	uint64_t (*clock_ns)(void);
	/* every sink */
	uint64_t queue_bytes;    /* --queue-size: bound of a sink's queue (0: default) */
	/* interfaces and encapsulation */
	const char *src_iface;   /* -I IFACE: the host's interface (NULL: none) */
	uint8_t dst_mac[6];      /* --dst-mac */
	uint8_t has_dst_mac;
	uint32_t vni;            /* --vni: VXLAN network identifier (0: default) */
	/* tunnel (agent side) and collector */
	const char *cert;        /* --cert: our certificate (PEM) */
	const char *key;         /* --key: its private key (PEM) */
	const char *ca;          /* --ca: the CA that signs the peers (PEM) */
	uint8_t insecure_plaintext; /* --insecure-plaintext-tunnel */
	uint8_t keys_only;       /* --send-keys-only: the tunnel carries the secrets, no connections */
	const char *compress;    /* --compress zstd|lz4|none (NULL: none) */
	/* Kafka (--kafka) */
	const char *kafka_topic; /* --kafka-topic */
	const char *const *kafka_conf; /* --kafka-conf KEY=VALUE, n_kafka_conf of them */
	size_t n_kafka_conf;
	/* HTTP POST (--http-post) */
	const char *post_ca;     /* --http-post-ca: CAs that sign the collector (NULL: the system's) */
	uint8_t post_akto;       /* --http-format akto: {"batchData": [...]} */
};

/* sink_ops.flags */
#define SINK_F_OWN_QUEUE 0x1 /* the sink buffers in its own thread (tunnel, servers):
			      * never wrap it in the generic per-sink queue */

/*
 * A sink that takes connection events instead of packets (the tunnel, -t):
 * the flow engine hands it, for every connection it shows (after dedup and
 * every stage, docs/pipeline.md "Event sinks"), the open with the stream
 * offsets it starts at, the clear text and gaps at their stream offsets,
 * and the end. Called in the agent's thread, never through the sink queue:
 * such a sink buffers in its own thread and must never block. The tag
 * stays valid from open until close returns (conn_tag_ref to keep it).
 */
struct sink_event_ops {
	void (*open)(struct sink *s, const struct conn_tag *t, uint64_t ts_ns,
		     const uint64_t off[2], int synthetic);
	void (*data)(struct sink *s, const struct conn_tag *t, int dir, uint64_t ts_ns,
		     uint64_t off, const uint8_t *p, size_t n);
	/* n bytes at off that cannot be shown (exactly n). */
	void (*gap)(struct sink *s, const struct conn_tag *t, int dir, uint64_t ts_ns,
		    uint64_t off, uint64_t n);
	/* how: SINK_EV_CLOSE_* */
	void (*close)(struct sink *s, const struct conn_tag *t, uint64_t ts_ns, unsigned how);
	/* Optional: a TLS secret (label: enum ring_key_label) for --send-keys. */
	void (*key)(struct sink *s, uint64_t ts_ns, unsigned label, const uint8_t cr[32],
		    const uint8_t *secret, size_t len);
};

#define SINK_EV_CLOSE_END 0      /* the connection ended */
#define SINK_EV_CLOSE_MOVED 1    /* a synthetic flow moved to another port: a new open follows */

struct sink_ops {
	const char *name;
	unsigned flags;          /* SINK_F_* */
	/* Set: the sink takes connection events, not packets (write and
	 * conn_begin/conn_end are not called). */
	const struct sink_event_ops *events;
	/* Opens the sink for target (file path, "-" for stdout, ...).
	 * Returns 0 or a negative errno; on error *err_msg says why (static or
	 * owned by the sink until close). */
	int (*open)(struct sink *s, const char *target, const struct sink_opts *o,
		    const char **err_msg);
	/* Writes n packets. Returns 0 or a negative errno (packets counted lost). */
	int (*write)(struct sink *s, const struct pkt *pkts, size_t n);
	/* Pushes buffered packets out (called when the agent goes idle). */
	int (*flush)(struct sink *s);
	/* Flushes and releases everything; the sink memory is freed by the caller. */
	void (*close)(struct sink *s);
	/* Optional. A connection begins: called before the first packet whose
	 * conn is t, in the same thread as write (the queue's worker when the
	 * sink is queued). ts_ns: the time of its first packet. */
	void (*conn_begin)(struct sink *s, const struct conn_tag *t, uint64_t ts_ns);
	/* Optional. After the last packet of t (its FIN exchange, or the agent's
	 * exit). t stays valid until it returns. */
	void (*conn_end)(struct sink *s, const struct conn_tag *t, uint64_t ts_ns);
	/* Optional. The sink's counters as rows (common/text.h struct kv), at
	 * most max of them at out; returns how many. Its stats line ("sink
	 * name=.. target=.." then " key=value" per row), its samples in
	 * `tlsmirror stats --json` and /metrics (tlsmirror_sink_KEY_total
	 * {name=..,target=..}) are all made from these rows: a new counter is
	 * one row. NULL: sink_common_counters. Called from the agent's thread
	 * while the sink runs in its own: read counters atomically. */
	size_t (*counters)(const struct sink *s, struct kv *out, size_t max);
};

struct sink_counters {
	uint64_t broken;         /* 1: the output is gone for good (a pipe with no reader) */
	uint64_t packets;
	uint64_t bytes;          /* frame bytes written */
	uint64_t lost_packets;   /* write errors */
	uint64_t lost_bytes;     /* frame bytes of those packets */
	uint64_t files;          /* files opened (rotation) */
	uint64_t queue_drops;    /* packets dropped because the sink's queue was full */
	uint64_t queue_drop_bytes; /* frame bytes of those packets */
	uint64_t failing;        /* 1 while writes fail (an episode of losses is on) */
	uint64_t loss_episodes;  /* episodes of failing writes (each logged at start and end) */
	uint64_t peers_dropped;  /* clients given up (a PCAP-over-IP reader too slow) */
};

/* Counters are written by the thread that runs the sink (its queue's worker
 * when there are several outputs) and read by the stats: relaxed atomic
 * loads and stores, one writer, so no lock prefix on the hot path. */
static inline void sink_ctr_add(uint64_t *c, uint64_t n)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

struct sink {
	const struct sink_ops *ops;
	void *priv;
	char *target;
	struct sink_counters ctr;
	uint32_t mtu;            /* set by open: largest IP packet the sink carries (0: any) */
	struct sink_queue *queue; /* the generic per-sink queue (sink_queue.c), or NULL */
	uint8_t blocks;          /* set by open: a write may wait for a reader (a pipe,
				  * stdout): the sink always gets a queue, never blocks the agent */
	uint8_t lazy;            /* its queue's worker is not woken for each push, only
				  * when the queue is an eighth full (or every 50 ms,
				  * or kicked): HTTP records, where latency of a few tens
				  * of ms costs nothing and a wake-up per record a lot */
	int cancel;              /* set (atomic) when the agent gives up waiting for the
				  * sink at exit: a blocked write stops, the rest is lost */
};

extern const struct sink_ops sink_pcap_ops;
extern const struct sink_ops sink_pcapng_ops;   /* --pcapng, -w FILE.pcapng */
extern const struct sink_ops sink_afpacket_ops;  /* -o IFACE */
extern const struct sink_ops sink_vxlan_ops;     /* --vxlan HOST[:PORT] */
extern const struct sink_ops sink_poip_ops;      /* --pcap-over-ip [ADDR:]PORT */
/* record sinks (--http-log, --kafka, --http-post): a record is a pkt whose hdr is the line */
extern const struct sink_ops sink_jsonl_ops;
extern const struct sink_ops sink_kafka_ops;
extern const struct sink_ops sink_httppost_ops;

/* A fan-out of sinks: packets to the packet sinks, events to the event sinks. */
struct sink_set {
	struct sink **v;
	size_t n;
	size_t n_packet;         /* sinks that take packets */
	size_t n_event;          /* sinks that take connection events (ops->events) */
};

/* Opens a sink of the given ops for target and appends it to set.
 * Returns 0 or negative errno; on error prints nothing, *err_msg says why. */
int sink_set_add(struct sink_set *set, const struct sink_ops *ops,
		 const char *target, const struct sink_opts *o,
		 const char **err_msg);
/* Hands packets to every sink. */
void sink_set_write(struct sink_set *set, const struct pkt *pkts, size_t n);
/* A connection begins / ends: every sink's conn_begin / conn_end, in order
 * with the packets (through its queue when it has one). */
void sink_set_conn_begin(struct sink_set *set, const struct conn_tag *t, uint64_t ts_ns);
void sink_set_conn_end(struct sink_set *set, const struct conn_tag *t, uint64_t ts_ns);
void sink_set_flush(struct sink_set *set);
/* Connection events to every event sink (struct sink_event_ops). */
void sink_set_ev_open(struct sink_set *set, const struct conn_tag *t, uint64_t ts_ns,
		      const uint64_t off[2], int synthetic);
void sink_set_ev_data(struct sink_set *set, const struct conn_tag *t, int dir, uint64_t ts_ns,
		      uint64_t off, const uint8_t *p, size_t n);
void sink_set_ev_gap(struct sink_set *set, const struct conn_tag *t, int dir, uint64_t ts_ns,
		     uint64_t off, uint64_t n);
void sink_set_ev_close(struct sink_set *set, const struct conn_tag *t, uint64_t ts_ns,
		       unsigned how);
/* Closes and frees every sink. */
void sink_set_close(struct sink_set *set);
/* Puts every sink without SINK_F_OWN_QUEUE behind its own bounded queue and
 * worker thread (done when more than one sink is open, or one blocks).
 * Returns 0 or -errno. */
int sink_set_start_queues(struct sink_set *set, const struct sink_opts *o);
/* Does a sink's write wait for a reader (sink->blocks: a pipe)? Such a sink
 * is queued even alone, so the agent never waits for it. */
int sink_set_blocks(const struct sink_set *set);
/* Like sink_set_flush, but waits until every queue is written out (exit). A
 * queue that makes no progress for SINK_DRAIN_STALL_MS (a reader that
 * stopped) is cancelled: what it holds is counted lost. */
#define SINK_DRAIN_STALL_MS 1000
void sink_set_drain(struct sink_set *set);
/* The smallest mtu the sinks report (0: none limits the packet size). */
uint32_t sink_set_mtu(const struct sink_set *set);
#define SINK_MAX_COUNTERS 32      /* rows of one sink's counters */
/* The sink's rows: ops->counters, or sink_common_counters. */
size_t sink_counters(const struct sink *s, struct kv *out, size_t max);
/* The counters every sink keeps (struct sink_counters): packets, bytes,
 * queue_drops, queue_drop_bytes, errors, lost_bytes, failing, loss_episodes,
 * peers_dropped, queued_bytes (gauge), broken (gauge): the default rows, and
 * the start of a sink's own. */
size_t sink_common_counters(const struct sink *s, struct kv *out, size_t max);
/* The same for a sink of HTTP records: "records" where packets are counted. */
size_t sink_record_counters(const struct sink *s, struct kv *out, size_t max);
/* The target as its stats line and its metrics' target label show it: one
 * token (blanks and '=' as '_'), "stdout" for "-". */
void sink_shown_target(const struct sink *s, char *out, size_t len);
/* Appends one line per sink ("sink name=.. target=.." and its rows) to
 * buf[at..len); returns the new end (as text_add). */
size_t sink_set_format(const struct sink_set *set, char *buf, size_t len, size_t at);

#endif
