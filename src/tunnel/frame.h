/* The tunnel's versioned wire format between an agent (-t) and a collector (-C). */
#ifndef TLSMIRROR_FRAME_H
#define TLSMIRROR_FRAME_H

/*
 * Everything here crosses the network: fixed widths, big-endian, written and
 * read only with put_be32/get_be32 (src/common/bytes.h). See docs/tunnel.md.
 *
 * A frame is a 16-byte header followed by `len` payload bytes:
 *   0  magic    u32  FRAME_MAGIC ("TMTN")
 *   4  version  u8   FRAME_VERSION
 *   5  type     u8   enum frame_type
 *   6  flags    u8   FRAME_F_* (compression of the payload: zstd or lz4, not both)
 *   7  reserved u8   0
 *   8  len      u32  payload bytes on the wire, <= FRAME_MAX_PAYLOAD
 *   12 raw_len  u32  payload bytes once decompressed (== len if not compressed),
 *                    <= FRAME_MAX_PAYLOAD
 *
 * Payloads (after decompression):
 *   HELLO      proto u16 (FRAME_VERSION), name_len u8, name (1..FRAME_MAX_NAME
 *              printable ASCII), host_len u8, host (0..FRAME_MAX_NAME printable ASCII)
 *   PACKETS    count u32 (1..FRAME_MAX_PACKETS), then count times:
 *              ts_ns u64 (two u32, high first), length u32 (FRAME_MIN_PKT..
 *              FRAME_MAX_PKT), length bytes of Ethernet frame; nothing after
 *   HEARTBEAT  dropped_packets u64, dropped_bytes u64 (the agent's totals)
 *   GOODBYE    empty
 * Only PACKETS may be compressed.
 */

#include <stddef.h>
#include <stdint.h>

#define FRAME_MAGIC 0x544d544eu /* "TMTN" */
#define FRAME_VERSION 1
#define FRAME_HDR_SIZE 16u
#define FRAME_MAX_PAYLOAD (4u * 1024 * 1024)
#define FRAME_MAX_PACKETS 65536u
#define FRAME_MIN_PKT 14u
#define FRAME_MAX_PKT 262144u
#define FRAME_PKT_HDR 12u       /* ts_ns + length before each packet */
#define FRAME_MAX_NAME 64u
#define FRAME_HEARTBEAT_LEN 16u

enum frame_type {
	FRAME_HELLO = 1,
	FRAME_PACKETS = 2,
	FRAME_HEARTBEAT = 3,
	FRAME_GOODBYE = 4,
};

#define FRAME_F_ZSTD 0x01
#define FRAME_F_LZ4 0x02         /* one LZ4 block (no frame header) */
#define FRAME_F_KNOWN (FRAME_F_ZSTD | FRAME_F_LZ4)

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
	uint64_t dropped_packets;
	uint64_t dropped_bytes;
};

/* One packet inside a PACKETS payload (points into it). */
struct frame_pkt {
	uint64_t ts_ns;
	const uint8_t *data;
	uint32_t len;
};

void frame_hdr_put(uint8_t *p, const struct frame_hdr *h);
/* Parses and checks a header. Returns 0, -EAGAIN if n < FRAME_HDR_SIZE, or
 * -EPROTO with *why set (magic, version, type, flags, lengths). */
int frame_hdr_parse(const uint8_t *p, size_t n, struct frame_hdr *h, const char **why);

/* Writes a HELLO payload into buf (at least FRAME_HELLO_MAX bytes).
 * Returns its length or -EINVAL (name empty or too long, not printable). */
#define FRAME_HELLO_MAX (4u + 2 * FRAME_MAX_NAME)
int frame_hello_put(uint8_t *buf, const char *name, const char *host);
int frame_hello_parse(const uint8_t *p, size_t n, struct frame_hello *h, const char **why);

void frame_heartbeat_put(uint8_t *buf, const struct frame_heartbeat *hb);
int frame_heartbeat_parse(const uint8_t *p, size_t n, struct frame_heartbeat *hb,
			  const char **why);

/* Appends one packet record (ts, length, bytes from two parts) at p.
 * The caller checks room: FRAME_PKT_HDR + a_len + b_len. */
void frame_pkt_put(uint8_t *p, uint64_t ts_ns, const uint8_t *a, uint32_t a_len,
		   const uint8_t *b, uint32_t b_len);

/* Checks a whole PACKETS payload; returns the packet count or -EPROTO (*why). */
int frame_packets_check(const uint8_t *p, size_t n, const char **why);
/* Iterates a payload that frame_packets_check accepted: *off starts at 4.
 * Returns 1 with *pkt filled, 0 at the end. */
int frame_packets_next(const uint8_t *p, size_t n, size_t *off, struct frame_pkt *pkt);

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
