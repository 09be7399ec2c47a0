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
struct conn_meta {
	uint32_t refs;
	uint8_t kind;            /* enum conn_kind */
	uint8_t side;            /* 0: the producer is the client, 1: the server */
	uint8_t map_method;      /* enum ring_map_method: how the 4-tuple was found */
	uint8_t _pad;
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
	const struct conn_meta *meta; /* a reference held by the tag; never NULL */
};

/* conn.c. A new metadata block, zeroed, refs 1 (NULL on ENOMEM). */
struct conn_meta *conn_meta_new(void);
const struct conn_meta *conn_meta_ref(const struct conn_meta *m);
void conn_meta_unref(const struct conn_meta *m); /* NULL: nothing */
/* A tag (refs 1) holding a reference to meta (NULL: an empty block is used). */
struct conn_tag *conn_tag_new(const struct conn_id *id, uint8_t family,
			      const uint8_t client_addr[16], uint16_t client_port,
			      const uint8_t server_addr[16], uint16_t server_port,
			      const struct conn_meta *meta);
const struct conn_tag *conn_tag_ref(const struct conn_tag *t);
void conn_tag_unref(const struct conn_tag *t); /* NULL: nothing */

#endif
