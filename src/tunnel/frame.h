/* The tunnel's versioned wire format between an agent (-t) and a collector (-C): connection events. */
#ifndef TLSMIRROR_FRAME_H
#define TLSMIRROR_FRAME_H

/*
 * Everything here crosses the network: fixed widths, big-endian, written and
 * read only with the put_be / reader accessors (src/common/bytes.h). See
 * docs/tunnel.md for the whole format.
 *
 * A frame is a 16-byte header followed by `len` payload bytes:
 *   0  magic    u32  FRAME_MAGIC ("TMTN")
 *   4  version  u8   FRAME_VERSION (2; version 1 carried finished packets)
 *   5  type     u8   enum frame_type
 *   6  flags    u8   FRAME_F_* (compression of the payload: zstd or lz4, not both)
 *   7  reserved u8   0
 *   8  len      u32  payload bytes on the wire, <= FRAME_MAX_PAYLOAD
 *   12 raw_len  u32  payload bytes once decompressed (== len if not compressed)
 *
 * Payloads (after decompression):
 *   HELLO      proto u16 (FRAME_VERSION), name_len u8, name, host_len u8, host
 *   EVENTS     count u32 (1..FRAME_MAX_EVENTS), then count events (below);
 *              nothing after the last
 *   HEARTBEAT  dropped_events u64, dropped_bytes u64 (the agent's totals)
 *   GOODBYE    empty
 * Only EVENTS may be compressed.
 *
 * Every event starts with type u8, conn u64 (the agent's id of the
 * connection on this tunnel, never 0), ts_ns u64, then per type:
 *   OPEN   flags u8 (FRAME_OPEN_*), family u8 (4|6), client_port u16,
 *          server_port u16, client_addr 16, server_addr 16, off_c2s u64,
 *          off_s2c u64, seed u64 (the agent's own id: seeds the ISNs),
 *          kind u8, map_method u8, tls_version u16, real_server_port u16,
 *          pid u32, uid u32, then four strings u8 length + printable ASCII:
 *          comm (<= 15), sni (<= 255), alpn (<= 63), cipher (<= 63)
 *   DATA   dir u8 (0 c2s, 1 s2c), off u64, len u32 (1..FRAME_MAX_DATA), bytes
 *   GAP    dir u8, flags u8 (FRAME_GAP_EXACT), off u64, len u64 (>= 1)
 *   CLOSE  how u8 (enum frame_close_how)
 *   KEY    label u8 (enum ring_key_label: the NSS key-log label), len u8
 *          (1..64), client_random 32, secret len bytes; conn is 1 (keys
 *          belong to no connection). Only from an agent run with --send-keys.
 */

#include <stddef.h>
#include <stdint.h>

#define FRAME_MAGIC 0x544d544eu /* "TMTN" */
#define FRAME_VERSION 2
#define FRAME_HDR_SIZE 16u
#define FRAME_MAX_PAYLOAD (4u * 1024 * 1024)
#define FRAME_MAX_EVENTS 65536u
#define FRAME_MAX_DATA 65536u   /* clear text of one DATA event (the agent splits) */
#define FRAME_MAX_NAME 64u
#define FRAME_HEARTBEAT_LEN 16u

enum frame_type {
	FRAME_HELLO = 1,
	FRAME_PACKETS_V1 = 2,   /* version 1 only: refused */
	FRAME_HEARTBEAT = 3,
	FRAME_GOODBYE = 4,
	FRAME_EVENTS = 5,
};

#define FRAME_F_ZSTD 0x01
#define FRAME_F_LZ4 0x02         /* one LZ4 block (no frame header) */
#define FRAME_F_KNOWN (FRAME_F_ZSTD | FRAME_F_LZ4)

enum frame_event_type {
	FRAME_EV_OPEN = 1,
	FRAME_EV_DATA = 2,
	FRAME_EV_GAP = 3,
	FRAME_EV_CLOSE = 4,
	FRAME_EV_KEY = 5,
};

#define FRAME_OPEN_SERVER 0x01     /* the producer is the server end */
#define FRAME_OPEN_MIDSTREAM 0x02  /* data flowed before: the offsets are where it goes on */
#define FRAME_OPEN_SYNTHETIC 0x04  /* invented by a stage at the agent (an HTTP/2 stream) */
#define FRAME_OPEN_KNOWN 0x07
#define FRAME_GAP_EXACT 0x01       /* len is the exact number of bytes missing */

enum frame_close_how {
	FRAME_CLOSE_END = 0,       /* the connection ended (or the agent stops: exit) */
	FRAME_CLOSE_MOVED = 1,     /* a synthetic flow moved to another port (a new OPEN follows) */
	FRAME_CLOSE_MAX = 1,
};

#define FRAME_EV_HDR 17u          /* type, conn, ts */
#define FRAME_EV_DATA_HDR (FRAME_EV_HDR + 13u)
#define FRAME_EV_GAP_LEN (FRAME_EV_HDR + 18u)
#define FRAME_EV_CLOSE_LEN (FRAME_EV_HDR + 1u)
#define FRAME_EV_KEY_MAX (FRAME_EV_HDR + 2u + 32u + 64u)
#define FRAME_EV_OPEN_FIXED (FRAME_EV_HDR + 76u + 4u) /* without the strings' bytes */
#define FRAME_EV_OPEN_MAX (FRAME_EV_OPEN_FIXED + 15u + 255u + 63u + 63u)

struct frame_hdr {
	uint8_t type;
	uint8_t flags;
	uint32_t len;
	uint32_t raw_len;
};

struct frame_hello {
	uint16_t proto;
	char name[FRAME_MAX_NAME + 1];
	char host[FRAME_MAX_NAME + 1];
};

struct frame_heartbeat {
	uint64_t dropped_events;
	uint64_t dropped_bytes;
};

/* An OPEN's fields (strings NUL-terminated, validated). */
struct frame_open {
	uint8_t flags, family;
	uint16_t client_port, server_port;
	uint8_t client_addr[16], server_addr[16];
	uint64_t off[2];
	uint64_t seed;
	uint8_t kind, map_method;
	uint16_t tls_version, real_server_port;
	uint32_t pid, uid;
	char comm[16];
	char sni[256];
	char alpn[64];
	char cipher[64];
};

/* One event of an EVENTS payload (data points into the payload). */
struct frame_event {
	uint8_t type;
	uint64_t conn;
	uint64_t ts_ns;
	uint8_t dir;
	uint8_t flags;           /* GAP: FRAME_GAP_*; KEY: the label */
	uint8_t how;             /* CLOSE */
	uint64_t off;            /* DATA, GAP */
	uint64_t len;            /* DATA, GAP */
	const uint8_t *data;     /* DATA; KEY: client random (32) then the secret (len) */
	struct frame_open *open; /* OPEN: filled if the caller set it, else skipped */
};

void frame_hdr_put(uint8_t *p, const struct frame_hdr *h);
/* Parses and checks a header. Returns 0, -EAGAIN if n < FRAME_HDR_SIZE, or
 * -EPROTO with *why set (magic, version — version 1 is named as an old agent —,
 * type, flags, lengths). */
int frame_hdr_parse(const uint8_t *p, size_t n, struct frame_hdr *h, const char **why);

/* Writes a HELLO payload into buf (at least FRAME_HELLO_MAX bytes).
 * Returns its length or -EINVAL (name empty or too long, not printable). */
#define FRAME_HELLO_MAX (4u + 2 * FRAME_MAX_NAME)
int frame_hello_put(uint8_t *buf, const char *name, const char *host);
int frame_hello_parse(const uint8_t *p, size_t n, struct frame_hello *h, const char **why);

void frame_heartbeat_put(uint8_t *buf, const struct frame_heartbeat *hb);
int frame_heartbeat_parse(const uint8_t *p, size_t n, struct frame_heartbeat *hb,
			  const char **why);

/* Encoders: each writes one event at p and returns its length; the caller
 * checks room first (the *_LEN/_HDR sizes above, frame_ev_open_len). Strings
 * of o are cut at their caps and non-printable bytes become '?'. */
size_t frame_ev_open_len(const struct frame_open *o);
size_t frame_ev_open_put(uint8_t *p, uint64_t conn, uint64_t ts_ns, const struct frame_open *o);
size_t frame_ev_data_put(uint8_t *p, uint64_t conn, uint64_t ts_ns, int dir, uint64_t off,
			 const uint8_t *data, uint32_t n);
size_t frame_ev_gap_put(uint8_t *p, uint64_t conn, uint64_t ts_ns, int dir, uint64_t off,
			uint64_t n, int exact);
size_t frame_ev_close_put(uint8_t *p, uint64_t conn, uint64_t ts_ns, unsigned how);
/* A KEY event (at most FRAME_EV_KEY_MAX bytes); len 1..64. */
size_t frame_ev_key_put(uint8_t *p, uint64_t ts_ns, unsigned label, const uint8_t cr[32],
			const uint8_t *secret, size_t len);

/* Checks a whole EVENTS payload, every field of every event; returns the
 * count or -EPROTO (*why). Nothing of a payload it refuses may be used. */
int frame_events_check(const uint8_t *p, size_t n, const char **why);
/* Reads the event at *off (start: 4) of a payload; returns 1 with *ev
 * filled (ev->open too if set), 0 at the end, -EPROTO (*why) if malformed. */
int frame_event_next(const uint8_t *p, size_t n, size_t *off, struct frame_event *ev,
		     const char **why);

/* Decompresses a payload per h->flags into dst (h->raw_len bytes).
 * Returns 0 or -EPROTO (*why) if it does not decompress to exactly raw_len. */
int frame_decompress(const struct frame_hdr *h, const uint8_t *src, uint8_t *dst,
		     const char **why);
/* Compresses src into dst (capacity dst_cap) with zstd. Returns the compressed
 * length or -ENOSPC when it would not be smaller. */
int frame_compress_zstd(const uint8_t *src, size_t n, uint8_t *dst, size_t dst_cap, int level);

/* Compresses src into dst with LZ4 (one block). Returns the compressed length
 * or -ENOSPC when it would not be smaller. */
int frame_compress_lz4(const uint8_t *src, size_t n, uint8_t *dst, size_t dst_cap);

/* Frees the calling thread's zstd contexts (made on first use). */
void frame_zstd_release(void);

const char *frame_type_name(unsigned type);

#endif
