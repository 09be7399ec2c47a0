/* Shared-memory ring between the capture library (producers) and the agent (consumer). */
#ifndef TLSMIRROR_RING_H
#define TLSMIRROR_RING_H

/*
 * Everything in this header crosses a process boundary. Both ends run on the
 * same host, so integers are in host byte order; the header's magic doubles
 * as a byte-order mark. Fixed widths, no pointers. See docs/ring.md.
 *
 * Memory layout of the shared object (a sealed memfd):
 *   [0, RING_HDR_SIZE)                 struct ring_hdr
 *   [RING_HDR_SIZE, +data_size)        records, each RING_ALIGN aligned
 *
 * Positions are 64-bit byte counters that only grow; a position's place in
 * the data area is pos & (data_size - 1). Producers reserve space by CAS on
 * head; a record is visible to the consumer once its commit word equals
 * ring_commit_word(pos), stored last with release order. A record never
 * wraps: a producer that would cross the end first fills the rest with a PAD
 * record. The agent validates every field: the memory belongs to another
 * process and may hold anything.
 */

#include <stddef.h>
#include <stdint.h>

#define RING_MAGIC 0x474e49524d534c54ULL /* "TLSMRING" little-endian */
#define RING_VERSION 1
#define RING_HDR_SIZE 4096u
#define RING_ALIGN 64u
#define RING_MIN_DATA (64u * 1024)
#define RING_MAX_DATA (1024u * 1024 * 1024)
#define RING_DEFAULT_DATA (16u * 1024 * 1024)
/* Space at the end of a full ring that only control records (OPEN, CLOSE)
 * may use: when data is being dropped, announcements and final offsets
 * still get through, so the agent can show the loss exactly. */
#define RING_CTRL_RESERVE 4096u
/* Largest payload in one DATA record; bigger writes become several records. */
#define RING_MAX_CHUNK (64u * 1024)
#define RING_COMMIT_SALT 0x9e3779b97f4a7c15ULL
/* CAS attempts on head before ring_reserve gives up with -EBUSY. */
#define RING_RESERVE_TRIES 64

/* Why the capture library dropped bytes (index into ring_hdr counters). */
enum ring_drop_reason {
	RING_DROP_FULL = 0,     /* ring full: the agent is slow or absent */
	RING_DROP_NO_RING = 1,  /* no ring could be created (memfd/mmap failed) */
	RING_DROP_BUSY = 2,     /* contention gave up after bounded retries */
	RING_DROP_NREASONS = 3
};

#define RING_INLINE_WHY 128     /* ring_hdr.inline_why */

struct ring_hdr {
	uint64_t magic;         /* RING_MAGIC */
	uint32_t version;       /* RING_VERSION */
	uint32_t hdr_size;      /* RING_HDR_SIZE */
	uint64_t data_size;     /* power of two, RING_MIN_DATA..RING_MAX_DATA */
	uint32_t pid;           /* producer's pid as it believes (agent trusts SO_PEERCRED) */
	uint32_t tls_backends;  /* RING_TLS_*: back-ends of the library that announced a connection */
	uint8_t _pad1[64 - 32];

	/* Producer cache line. */
	uint64_t head;          /* reserved up to here (CAS by producers) */
	uint8_t _pad2[56];

	/* Consumer cache line. */
	uint64_t tail;          /* consumed up to here (agent) */
	uint32_t consumer_sleeping; /* agent sets before it sleeps; producers ring the doorbell */
	uint32_t consumer_flags; /* agent -> producers (RING_CONSUMER_*): what it asks for; an
				  * older agent leaves it 0 */
	uint8_t _pad4[48];

	/* Counters, written by producers with atomic adds. */
	uint64_t drop_bytes[RING_DROP_NREASONS];
	uint64_t drop_records[RING_DROP_NREASONS];
	uint64_t doorbells;     /* wake-ups the producers sent */
	/* Added at the end (docs/ring.md): TLS connections whose libssl moved
	 * bytes outside the library's hooks (their mirror has holes), and
	 * loaded objects whose GOT could not be pointed at the hooks. */
	uint64_t bypassed_conns;
	uint64_t unpatched_objs;
	/* Added at the end: OpenSSL linked into the executable (inline.c):
	 * functions hooked in place, functions found but left alone, and why
	 * (NUL-terminated text, set before the ring is shared, never changed). */
	uint64_t inline_hooks;
	uint64_t inline_refused;
	char inline_why[RING_INLINE_WHY];
};

enum ring_rec_type {
	RING_REC_PAD = 0,       /* filler up to the end of the data area */
	RING_REC_OPEN = 1,      /* a TLS connection seen: struct ring_open follows */
	RING_REC_DATA = 2,      /* clear text of one direction */
	RING_REC_CLOSE = 3,     /* the TLS connection ended: optional final offsets (2 x u64) */
	RING_REC_GAP = 4,       /* bytes sent that the mirror cannot show (SSL_sendfile): 8-byte length payload */
	RING_REC_FORK = 5,      /* the process is about to fork: connections announced so far may go on in the child; conn_id 0, no payload */
	RING_REC_KEY = 6,       /* a TLS secret (struct ring_key), only when the agent asks (RING_CONSUMER_KEYS) */
	RING_REC_TUPLE = 7,     /* a handshake's addresses, randoms and suite (struct ring_tuple), only when the agent asks (RING_CONSUMER_TUPLES) */
	RING_REC_NTYPES = 8
};

/* Record flags. */
#define RING_F_DIR_S2C 0x0001   /* DATA/GAP: server to client (else client to server) */
/* CLOSE: this process let go of its copy of a connection that was open when
 * it forked (close() or SSL_free without SSL_shutdown): a child may hold the
 * same connection and go on using it, so this is no end of the TCP stream. */
#define RING_F_CLOSE_HANDOVER 0x0002

/* 48 bytes; payload at data_off (>= sizeof, multiple of 16) for data_len bytes. */
struct ring_rec {
	uint64_t commit;        /* ring_commit_word(pos): written last, release */
	uint32_t len;           /* whole record incl. padding, multiple of RING_ALIGN */
	uint16_t type;          /* enum ring_rec_type */
	uint16_t flags;         /* RING_F_* */
	uint64_t conn_id;       /* per-process connection id, never 0 */
	uint64_t ts_ns;         /* CLOCK_REALTIME of the TLS call */
	uint64_t stream_off;    /* DATA/GAP: offset of the first byte in its direction */
	uint32_t data_off;      /* payload offset from the record start */
	uint32_t data_len;      /* payload length */
};

/* How the capture library found the TCP connection a TLS connection rides on. */
enum ring_map_method {
	RING_MAP_FD = 1,        /* SSL_get_fd() was a socket */
	RING_MAP_IO = 2,        /* the socket the TLS library used during a call */
	RING_MAP_RANDOM = 3,    /* the socket whose ClientHello had the same client random */
	RING_MAP_SYNTHETIC = 4  /* none found: documented synthetic addresses */
};

#define RING_SIDE_CLIENT 0
#define RING_SIDE_SERVER 1

/* Payload of RING_REC_OPEN. Strings are NUL-terminated within their arrays. */
struct ring_open {
	uint8_t family;         /* 4 or 6 */
	uint8_t side;           /* RING_SIDE_*: which end this process is */
	uint8_t map_method;     /* enum ring_map_method */
	uint8_t midstream;      /* 1: data flowed before this OPEN (attach, re-attach) */
	uint16_t client_port;   /* host order */
	uint16_t server_port;   /* host order */
	uint8_t client_addr[16];/* IPv4 in the first 4 bytes */
	uint8_t server_addr[16];
	uint64_t off[2];        /* where the stream starts for the agent: [0] c2s, [1] s2c */
	uint16_t tls_version;   /* SSL_version(): 0x0303, 0x0304, ... */
	uint16_t flags;         /* RING_OPEN_F_* */
	uint32_t tid;           /* thread that saw it */
	char sni[256];
	char alpn[64];
	char cipher[60];
	uint32_t parent_pid;    /* RING_OPEN_F_INHERITED: pid (as the producer sees it) that announced it before */
};

/*
 * The layout is shared by processes built at different times: pin the size
 * and every offset, so a change that moves a field fails to compile instead
 * of silently breaking the format (then bump RING_VERSION).
 */
#define RING_LAYOUT(t, f, o) \
	_Static_assert(offsetof(struct t, f) == (o), #t "." #f " moved: cross-process layout")
RING_LAYOUT(ring_hdr, magic, 0);
RING_LAYOUT(ring_hdr, version, 8);
RING_LAYOUT(ring_hdr, hdr_size, 12);
RING_LAYOUT(ring_hdr, data_size, 16);
RING_LAYOUT(ring_hdr, pid, 24);
RING_LAYOUT(ring_hdr, tls_backends, 28);
RING_LAYOUT(ring_hdr, _pad1, 32);
RING_LAYOUT(ring_hdr, head, 64);
RING_LAYOUT(ring_hdr, _pad2, 72);
RING_LAYOUT(ring_hdr, tail, 128);
RING_LAYOUT(ring_hdr, consumer_sleeping, 136);
RING_LAYOUT(ring_hdr, consumer_flags, 140);
RING_LAYOUT(ring_hdr, _pad4, 144);
RING_LAYOUT(ring_hdr, drop_bytes, 192);
RING_LAYOUT(ring_hdr, drop_records, 216);
RING_LAYOUT(ring_hdr, doorbells, 240);
RING_LAYOUT(ring_hdr, bypassed_conns, 248);
RING_LAYOUT(ring_hdr, unpatched_objs, 256);
RING_LAYOUT(ring_hdr, inline_hooks, 264);
RING_LAYOUT(ring_hdr, inline_refused, 272);
RING_LAYOUT(ring_hdr, inline_why, 280);
_Static_assert(sizeof(struct ring_hdr) == 280 + RING_INLINE_WHY, "struct ring_hdr size: cross-process layout");
_Static_assert(sizeof(struct ring_hdr) <= RING_HDR_SIZE, "struct ring_hdr exceeds RING_HDR_SIZE");
RING_LAYOUT(ring_rec, commit, 0);
RING_LAYOUT(ring_rec, len, 8);
RING_LAYOUT(ring_rec, type, 12);
RING_LAYOUT(ring_rec, flags, 14);
RING_LAYOUT(ring_rec, conn_id, 16);
RING_LAYOUT(ring_rec, ts_ns, 24);
RING_LAYOUT(ring_rec, stream_off, 32);
RING_LAYOUT(ring_rec, data_off, 40);
RING_LAYOUT(ring_rec, data_len, 44);
_Static_assert(sizeof(struct ring_rec) == 48, "struct ring_rec size: cross-process layout");
RING_LAYOUT(ring_open, family, 0);
RING_LAYOUT(ring_open, side, 1);
RING_LAYOUT(ring_open, map_method, 2);
RING_LAYOUT(ring_open, midstream, 3);
RING_LAYOUT(ring_open, client_port, 4);
RING_LAYOUT(ring_open, server_port, 6);
RING_LAYOUT(ring_open, client_addr, 8);
RING_LAYOUT(ring_open, server_addr, 24);
RING_LAYOUT(ring_open, off, 40);
RING_LAYOUT(ring_open, tls_version, 56);
RING_LAYOUT(ring_open, flags, 58);
RING_LAYOUT(ring_open, tid, 60);
RING_LAYOUT(ring_open, sni, 64);
RING_LAYOUT(ring_open, alpn, 320);
RING_LAYOUT(ring_open, cipher, 384);
RING_LAYOUT(ring_open, parent_pid, 444);
_Static_assert(sizeof(struct ring_open) == 448, "struct ring_open size: cross-process layout");
/* ring_hdr.tls_backends: which TLS libraries' hooks mirrored a connection (set
 * by the producer before the connection's OPEN, never cleared) */
#define RING_TLS_OPENSSL 0x1u   /* libssl (ssl_hooks.c, bio_hooks.c) */
#define RING_TLS_GNUTLS 0x2u    /* libgnutls (gtls.c) */
#define RING_TLS_OPENSSL_STATIC 0x4u /* OpenSSL linked into the executable (inline.c) */

/* ring_hdr.consumer_flags */
#define RING_CONSUMER_KEYS 0x1u /* send the TLS secrets (RING_REC_KEY): tlsmirror --keylog */
#define RING_CONSUMER_TUPLES 0x2u /* with KEYS: each handshake's RING_REC_TUPLE before its secrets */
#define RING_CONSUMER_SEEN 0x80000000u /* the agent has mapped the ring: the flags are its word */

/* Payload of RING_REC_KEY: one line of an NSS key log, in binary. conn_id:
 * the connection it belongs to, 0 if it was not known yet. */
enum ring_key_label {
	RING_KEY_CLIENT_RANDOM = 0,          /* TLS 1.2 and older: the master secret (48 bytes) */
	RING_KEY_CLIENT_EARLY_TRAFFIC_SECRET,
	RING_KEY_CLIENT_HANDSHAKE_TRAFFIC_SECRET,
	RING_KEY_SERVER_HANDSHAKE_TRAFFIC_SECRET,
	RING_KEY_CLIENT_TRAFFIC_SECRET_0,
	RING_KEY_SERVER_TRAFFIC_SECRET_0,
	RING_KEY_EARLY_EXPORTER_SECRET,
	RING_KEY_EXPORTER_SECRET,
	RING_KEY_NLABELS
};
#define RING_KEY_MAX_SECRET 64
struct ring_key {
	uint8_t label;          /* enum ring_key_label */
	uint8_t secret_len;     /* 1..RING_KEY_MAX_SECRET (32 or 48 in practice) */
	uint8_t _pad[6];
	uint8_t client_random[32];
	uint8_t secret[RING_KEY_MAX_SECRET];
};

/* The key-log label of l (NSS key log format), NULL if none. */
static inline const char *ring_key_label_name(unsigned l)
{
	static const char *const n[RING_KEY_NLABELS] = {
		"CLIENT_RANDOM", "CLIENT_EARLY_TRAFFIC_SECRET", "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
		"SERVER_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0",
		"SERVER_TRAFFIC_SECRET_0", "EARLY_EXPORTER_SECRET", "EXPORTER_SECRET" };
	return l < RING_KEY_NLABELS ? n[l] : NULL;
}
RING_LAYOUT(ring_key, label, 0);
RING_LAYOUT(ring_key, secret_len, 1);
RING_LAYOUT(ring_key, client_random, 8);
RING_LAYOUT(ring_key, secret, 40);
_Static_assert(sizeof(struct ring_key) == 104, "struct ring_key size: cross-process layout");

/* Payload of RING_REC_TUPLE: what places a connection first seen mid-stream
 * (the key log's "# TUPLE" line, docs/decrypt.md): sent once per handshake,
 * before its first secret after the ServerHello. family 0: the addresses
 * were not known (no socket); version, suite 0: not known. */
struct ring_tuple {
	uint8_t family;         /* 4, 6, or 0 */
	uint8_t side;           /* RING_SIDE_*: which end this process is */
	uint16_t version;       /* 0x0303, 0x0304 */
	uint16_t suite;         /* the IANA cipher suite */
	uint16_t client_port;   /* host order */
	uint16_t server_port;
	uint8_t _pad[6];
	uint8_t client_addr[16];/* IPv4 in the first 4 bytes */
	uint8_t server_addr[16];
	uint8_t client_random[32];
	uint8_t server_random[32];
};
RING_LAYOUT(ring_tuple, family, 0);
RING_LAYOUT(ring_tuple, version, 2);
RING_LAYOUT(ring_tuple, suite, 4);
RING_LAYOUT(ring_tuple, client_port, 6);
RING_LAYOUT(ring_tuple, server_port, 8);
RING_LAYOUT(ring_tuple, client_addr, 16);
RING_LAYOUT(ring_tuple, server_addr, 32);
RING_LAYOUT(ring_tuple, client_random, 48);
RING_LAYOUT(ring_tuple, server_random, 80);
_Static_assert(sizeof(struct ring_tuple) == 112, "struct ring_tuple size: cross-process layout");

/* ring_open.flags */
#define RING_OPEN_F_INHERITED 0x0001 /* inherited over fork(): announced by parent_pid first, same conn id */

static inline uint64_t ring_commit_word(uint64_t pos)
{
	return pos ^ RING_COMMIT_SALT;
}

static inline uint32_t ring_rec_size(uint32_t data_off, uint32_t data_len)
{
	return (data_off + data_len + RING_ALIGN - 1) & ~(RING_ALIGN - 1);
}

/* ---- producer side (capture library) ---- */

struct ring_reservation {
	struct ring_rec *rec;   /* header to fill */
	uint8_t *data;          /* where the payload goes */
	uint64_t pos;
};

/*
 * Reserves a record with room for data_len payload bytes. src, if given, is
 * the address the payload will be copied from: the payload is placed so the
 * copy avoids 4 KiB aliasing. Returns 0, or (nothing reserved in each case)
 * -EAGAIN when the ring is full, -EMSGSIZE when data_len exceeds
 * RING_MAX_CHUNK, -EBUSY when other producers won the CAS on head
 * RING_RESERVE_TRIES (64) times in a row: heavy contention, counted by
 * the caller as RING_DROP_BUSY (the bytes are dropped, never waited for).
 */
int ring_reserve(struct ring_hdr *ring, uint32_t data_len, const void *src,
		 struct ring_reservation *res);
/* The same for a control record (OPEN, CLOSE): may also use the last
 * RING_CTRL_RESERVE bytes, which data records leave free. Same returns
 * (-EAGAIN, -EMSGSIZE, -EBUSY). */
int ring_reserve_ctrl(struct ring_hdr *ring, uint32_t data_len,
		      struct ring_reservation *res);

/* Copies a payload of n bytes into res->data (n <= the reserved length).
 * From RING_NT_MIN bytes on, with non-temporal stores: the ring's pages are
 * cold in the application's cache, and a plain copy first reads each line
 * in (a second memory pass on the application's core). Ends with a store
 * fence, so ring_commit's release store orders after the payload. */
#define RING_NT_MIN 4096u
void ring_copy(struct ring_reservation *res, const void *src, uint32_t n);

/* Fills type/flags/ids and publishes the record (release store of commit). */
void ring_commit(struct ring_reservation *res, uint16_t type, uint16_t flags,
		 uint64_t conn_id, uint64_t ts_ns, uint64_t stream_off,
		 uint32_t data_len);

/* Adds a drop to the ring's counters (atomic). */
void ring_count_drop(struct ring_hdr *ring, enum ring_drop_reason why,
		     uint64_t bytes);

/* Initialises a zeroed mapping of RING_HDR_SIZE + data_size bytes. */
void ring_init(struct ring_hdr *ring, uint64_t data_size, uint32_t pid);

/* Bytes reserved but not consumed yet (racy snapshot). */
uint64_t ring_used(const struct ring_hdr *ring);

/* ---- consumer side (agent) ---- */

/*
 * The consumer's state is private memory: nothing in it is ever re-read from
 * the shared header (a producer may change any field at any time).
 */
struct ring_consumer {
	struct ring_hdr *ring;
	uint8_t *base;          /* data area */
	uint64_t size;          /* data_size: read once, validated, then only this copy */
	uint64_t tail;          /* agent's own copy; the shared one is only written */
	uint32_t pending;       /* length of the record the last ring_peek returned */
	uint64_t published;     /* tail value last stored in the shared header */
};

/* A record as the agent sees it, all fields validated. */
struct ring_view {
	uint16_t type;
	uint16_t flags;
	uint64_t conn_id;
	uint64_t ts_ns;
	uint64_t stream_off;
	const uint8_t *data;
	uint32_t data_len;
};

/*
 * Sets up the consumer of a mapping of map_len bytes the agent received. The
 * header's magic, version, hdr_size and data_size are each read ONCE into a
 * private copy, the copy is validated (magic, version, sizes, data_size a
 * power of two in range that fits map_len) and only the copy is used from then
 * on; head and tail are read once to find where to resume. Returns 0, or
 * -EINVAL when the header is invalid (c is then zeroed and unusable).
 */
int ring_consumer_init(struct ring_consumer *c, struct ring_hdr *ring, size_t map_len);

/*
 * Looks at the next record. Returns 0 with *v filled (the payload stays valid
 * until ring_release), -EAGAIN if no record is committed yet, -EBADMSG if the
 * record is malformed (the ring cannot be trusted any further). PAD records
 * are skipped internally.
 */
int ring_peek(struct ring_consumer *c, struct ring_view *v);

/*
 * Looks at a record further on without consuming anything: pos is where a
 * record starts (c->tail + the length of the one ring_peek returned, then
 * each *next in turn), at most one ring ahead of the tail. Same checks and
 * returns as ring_peek, -EINVAL for a pos outside that window; *next is
 * where the following record starts. The payload stays valid while the
 * record is not released.
 */
int ring_peek_at(const struct ring_consumer *c, uint64_t pos, struct ring_view *v,
		 uint64_t *next);

/* Consumes the record returned by the last ring_peek. The shared tail (the
 * space producers see as free) is published in batches: */
void ring_release(struct ring_consumer *c);
/* Publishes the consumer's tail now (call when pausing or stopping). */
void ring_publish(struct ring_consumer *c);

#endif
