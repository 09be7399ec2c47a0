/* Connection identity and metadata: what every source, stage and sink knows about a connection. */
#ifndef TLSMIRROR_CONN_H
#define TLSMIRROR_CONN_H

#include <stddef.h>
#include <stdint.h>

/*
 * A connection is (origin, id). An origin is one producer of connections: an
 * attached process, a collector peer (one agent), a pcap reader, a proxy, or
 * a stage that invents connections (the HTTP/2 converter's streams). The
 * chain hands out origins (pipeline.c); no two producers share one, so an
 * invented connection can never be mistaken for a real one.
 */
struct conn_id {
	uint64_t origin;
	uint64_t conn;
};

/* Who saw the connection. */
enum conn_kind {
	CONN_KIND_CAPTURE = 1,   /* the capture library in a local process */
	CONN_KIND_TUNNEL = 2,    /* an agent, through the tunnel (at a collector) */
	CONN_KIND_DECRYPT = 3,   /* passive decryption of ciphertext with keys */
	CONN_KIND_PROXY = 4,     /* the terminating broker */
	CONN_KIND_SYNTHETIC = 5  /* invented by a stage (parent names the original) */
};

/*
 * Immutable once the connection is open; shared by reference (conn_meta_ref /
 * conn_meta_unref) by every stage and sink that keeps it past the call that
 * handed it over. Strings are NUL-terminated, validated by the source (no
 * control characters: a sink may print them as they are).
 */
/* conn_meta.flags: the capture began mid-connection (tlsmirror attach to a
 * running process, an agent or collector restarted): its first bytes are not
 * the connection's first, the handshake before them is synthesized. */
#define CONN_META_MIDSTREAM 0x01

struct conn_meta {
	uint32_t refs;
	uint8_t kind;            /* enum conn_kind */
	uint8_t side;            /* 0: the producer is the client, 1: the server */
	uint8_t map_method;      /* enum ring_map_method: how the 4-tuple was found */
	uint8_t flags;           /* CONN_META_* */
	uint16_t vlan;           /* 802.1Q id its packets carry (collector --tag-agents vlan), 0: none */
	uint16_t tls_version;    /* 0x0303, 0x0304, ...; 0 unknown */
	uint16_t real_server_port; /* the server port as seen (a port map may show another) */
	uint32_t pid, uid;       /* the producing process (capture), 0 unknown */
	char comm[16];
	char host[64];           /* the agent's identity at a collector ("" locally) */
	char sni[256];
	char alpn[64];
	char cipher[64];
	struct conn_id parent;   /* CONN_KIND_SYNTHETIC: the connection it came from */
};

/*
 * A connection appears: the open event a source hands to the chain and a
 * stage passes on (it may rewrite the 4-tuple for the stages after it, as
 * the port map does) or emits for a connection it invents. Only valid
 * during the call; meta is a reference the receiver takes (conn_meta_ref)
 * if it keeps it.
 */
struct conn_open {
	struct conn_id id;
	uint64_t ts_ns;
	uint8_t family;          /* 4 or 6 */
	uint8_t side;            /* which end the producer is (0 client, 1 server) */
	uint8_t midstream;       /* data flowed before: the offsets below are > 0 */
	uint8_t synthetic;       /* invented by a stage: gives way to real connections */
	uint16_t client_port, server_port;
	uint8_t client_addr[16], server_addr[16];
	uint64_t off[2];         /* stream offsets at open: [0] c2s, [1] s2c */
	/* inherited over fork(): the origin (a process) whose connection of the
	 * same id.conn, 4-tuple and side this one continues; 0: not inherited.
	 * parent_ok, if set, is asked (lazily, only when there is such a
	 * connection to continue) whether the claim is plausible. */
	uint64_t parent_origin;
	int (*parent_ok)(const struct conn_open *o, void *arg);
	void *parent_arg;
	/* the origin whose caps this connection counts against (0: id.origin):
	 * a stage's invented connections count against the real one's producer */
	uint64_t charge_origin;
	/* seeds the synthesized ISNs instead of id.conn (0: id.conn): a
	 * collector's connection shows the sequence numbers the agent's would */
	uint64_t isn_seed;
	const struct conn_meta *meta; /* never NULL from a source; may be NULL in tests */
};

/* A run of bytes: one of the pieces of a vectored write (stage_emit_datav,
 * flow_datav), which stands for their concatenation. */
struct piece {
	const uint8_t *p;
	size_t n;
};

/*
 * What a sink sees of a connection: its 4-tuple as the packets show it and
 * its metadata. Made by the flow engine once per emitted flow (a synthetic
 * flow moved to another port gets a new tag), handed to sinks in
 * conn_begin, in every struct pkt of the connection (one pointer) and in
 * conn_end. Reference counted (atomic): valid from conn_begin until
 * conn_end returns; a sink (or the sink queue) that keeps it longer takes a
 * reference with conn_tag_ref and drops it with conn_tag_unref from any
 * thread. Immutable after conn_tag_new.
 */
struct conn_tag {
	uint32_t refs;
	uint8_t family;          /* 4 or 6 */
	uint8_t _pad;
	uint16_t client_port, server_port; /* as the packets show them (host order) */
	uint8_t client_addr[16], server_addr[16]; /* IPv4 in the first 4 bytes */
	struct conn_id id;       /* the connection as the flow engine knows it */
	uint64_t serial;         /* unique among the process's tags, never 0 (the tunnel's id) */
	const struct conn_meta *meta; /* a reference held by the tag; never NULL */
};

/* conn.c. Names shown in metadata: "capture", "tunnel", ... ("unknown");
 * "TLSv1.2", ... (NULL for 0 or a version without a name). */
const char *conn_kind_name(unsigned kind);
const char *conn_tls_name(unsigned version);
/* A new metadata block, zeroed, refs 1 (NULL on ENOMEM). */
struct conn_meta *conn_meta_new(void);
const struct conn_meta *conn_meta_ref(const struct conn_meta *m);
/* 1 if the caller holds the only reference (nobody kept it: it may be reused). */
int conn_meta_sole(const struct conn_meta *m);
void conn_meta_unref(const struct conn_meta *m); /* NULL: nothing */
/* A tag (refs 1) holding a reference to meta (NULL: an empty block is used). */
struct conn_tag *conn_tag_new(const struct conn_id *id, uint8_t family,
			      const uint8_t client_addr[16], uint16_t client_port,
			      const uint8_t server_addr[16], uint16_t server_port,
			      const struct conn_meta *meta);
const struct conn_tag *conn_tag_ref(const struct conn_tag *t);
void conn_tag_unref(const struct conn_tag *t); /* NULL: nothing */

#endif
