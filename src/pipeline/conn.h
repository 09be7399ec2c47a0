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

#endif
