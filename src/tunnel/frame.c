/* Encodes and validates tunnel frames (see frame.h and docs/tunnel.md); every length is bounded. */
#include "tunnel/frame.h"
#include "common/bytes.h"

#include <errno.h>
#include <string.h>
#include <lz4.h>
#include <zstd.h>

static void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

static uint64_t get_be64(const uint8_t *p)
{
	return ((uint64_t)get_be32(p) << 32) | get_be32(p + 4);
}

static int bad(const char **why, const char *msg)
{
	*why = msg;
	return -EPROTO;
}

const char *frame_type_name(unsigned type)
{
	switch (type) {
	case FRAME_HELLO: return "HELLO";
	case FRAME_PACKETS: return "PACKETS";
	case FRAME_HEARTBEAT: return "HEARTBEAT";
	case FRAME_GOODBYE: return "GOODBYE";
	}
	return "unknown";
}

void frame_hdr_put(uint8_t *p, const struct frame_hdr *h)
{
	put_be32(p, FRAME_MAGIC);
	p[4] = FRAME_VERSION;
	p[5] = h->type;
	p[6] = h->flags;
	p[7] = 0;
	put_be32(p + 8, h->len);
	put_be32(p + 12, h->raw_len);
}

int frame_hdr_parse(const uint8_t *p, size_t n, struct frame_hdr *h, const char **why)
{
	if (n < FRAME_HDR_SIZE) {
		/* a prefix that cannot become a valid header is refused at once */
		uint8_t m[4];
		put_be32(m, FRAME_MAGIC);
		if (memcmp(p, m, n < 4 ? n : 4))
			return bad(why, "bad magic (not a tlsmirror tunnel, or TLS/plaintext mismatch)");
		return -EAGAIN;
	}
	if (get_be32(p) != FRAME_MAGIC)
		return bad(why, "bad magic (not a tlsmirror tunnel, or TLS/plaintext mismatch)");
	if (p[4] != FRAME_VERSION)
		return bad(why, "unsupported frame version");
	h->type = p[5];
	h->flags = p[6];
	h->len = get_be32(p + 8);
	h->raw_len = get_be32(p + 12);
	if (h->type < FRAME_HELLO || h->type > FRAME_GOODBYE)
		return bad(why, "unknown frame type");
	if (p[7] != 0 || (h->flags & ~FRAME_F_KNOWN))
		return bad(why, "unknown flags");
	if (h->flags == (FRAME_F_ZSTD | FRAME_F_LZ4))
		return bad(why, "two compressions at once");
	if (h->flags && h->type != FRAME_PACKETS)
		return bad(why, "compressed frame of a type that is never compressed");
	if (h->len > FRAME_MAX_PAYLOAD || h->raw_len > FRAME_MAX_PAYLOAD)
		return bad(why, "oversized frame");
	if (!h->flags && h->len != h->raw_len)
		return bad(why, "raw length differs from length in an uncompressed frame");
	if (h->type == FRAME_GOODBYE && h->raw_len)
		return bad(why, "GOODBYE with a payload");
	if (h->type == FRAME_HEARTBEAT && h->raw_len != FRAME_HEARTBEAT_LEN)
		return bad(why, "HEARTBEAT of the wrong length");
	if (h->type == FRAME_HELLO && h->raw_len > FRAME_HELLO_MAX)
		return bad(why, "oversized HELLO");
	return 0;
}

static int printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return 0;
	return 1;
}

int frame_hello_put(uint8_t *buf, const char *name, const char *host)
{
	size_t nl = strlen(name), hl = host ? strlen(host) : 0;
	if (!nl || nl > FRAME_MAX_NAME || hl > FRAME_MAX_NAME || !printable(name, nl) ||
	    (hl && !printable(host, hl)))
		return -EINVAL;
	put_be16(buf, FRAME_VERSION);
	buf[2] = (uint8_t)nl;
	memcpy(buf + 3, name, nl);
	buf[3 + nl] = (uint8_t)hl;
	if (hl)
		memcpy(buf + 4 + nl, host, hl);
	return (int)(4 + nl + hl);
}

/* Reads a u8-length string of printable ASCII into out (max FRAME_MAX_NAME). */
static int rd_str(struct reader *r, char *out, int allow_empty)
{
	uint8_t l;
	if (rd_u8(r, &l) < 0 || l > FRAME_MAX_NAME || (!l && !allow_empty) || r->left < l)
		return -1;
	if (!printable((const char *)r->p, l))
		return -1;
	memcpy(out, r->p, l);
	out[l] = 0;
	return rd_skip(r, l);
}

int frame_hello_parse(const uint8_t *p, size_t n, struct frame_hello *h, const char **why)
{
	struct reader r = { .p = p, .left = n };
	memset(h, 0, sizeof(*h));
	if (rd_be16(&r, &h->proto) < 0)
		return bad(why, "truncated HELLO");
	if (h->proto != FRAME_VERSION)
		return bad(why, "HELLO of an unsupported protocol version");
	if (rd_str(&r, h->name, 0) < 0)
		return bad(why, "HELLO with a bad agent name");
	if (rd_str(&r, h->host, 1) < 0)
		return bad(why, "HELLO with a bad host name");
	if (r.left)
		return bad(why, "HELLO with trailing bytes");
	return 0;
}

void frame_heartbeat_put(uint8_t *buf, const struct frame_heartbeat *hb)
{
	put_be64(buf, hb->dropped_packets);
	put_be64(buf + 8, hb->dropped_bytes);
}

int frame_heartbeat_parse(const uint8_t *p, size_t n, struct frame_heartbeat *hb,
			  const char **why)
{
	if (n != FRAME_HEARTBEAT_LEN)
		return bad(why, "HEARTBEAT of the wrong length");
	hb->dropped_packets = get_be64(p);
	hb->dropped_bytes = get_be64(p + 8);
	return 0;
}

void frame_pkt_put(uint8_t *p, uint64_t ts_ns, const uint8_t *a, uint32_t a_len,
		   const uint8_t *b, uint32_t b_len)
{
	put_be64(p, ts_ns);
	put_be32(p + 8, a_len + b_len);
	if (a_len)
		memcpy(p + FRAME_PKT_HDR, a, a_len);
	if (b_len)
		memcpy(p + FRAME_PKT_HDR + a_len, b, b_len);
}

int frame_packets_check(const uint8_t *p, size_t n, const char **why)
{
	if (n < 4)
		return bad(why, "truncated PACKETS");
	uint32_t count = get_be32(p);
	if (!count || count > FRAME_MAX_PACKETS)
		return bad(why, "PACKETS count out of range");
	size_t off = 4;
	for (uint32_t i = 0; i < count; i++) {
		if (n - off < FRAME_PKT_HDR)
			return bad(why, "PACKETS truncated in a packet header");
		uint32_t len = get_be32(p + off + 8);
		if (len < FRAME_MIN_PKT || len > FRAME_MAX_PKT)
			return bad(why, "packet length out of range");
		off += FRAME_PKT_HDR;
		if (n - off < len)
			return bad(why, "PACKETS truncated in a packet");
		off += len;
	}
	if (off != n)
		return bad(why, "PACKETS with trailing bytes");
	return (int)count;
}

int frame_packets_next(const uint8_t *p, size_t n, size_t *off, struct frame_pkt *pkt)
{
	if (*off + FRAME_PKT_HDR > n)
		return 0;
	pkt->ts_ns = get_be64(p + *off);
	pkt->len = get_be32(p + *off + 8);
	pkt->data = p + *off + FRAME_PKT_HDR;
	*off += FRAME_PKT_HDR + pkt->len;
	return 1;
}

/* One compression and one decompression context per thread, made on first use
 * (making them per frame costs more than compressing a small frame). */
static __thread ZSTD_CCtx *zc;
static __thread ZSTD_DCtx *zd;

void frame_zstd_release(void)
{
	ZSTD_freeCCtx(zc);
	ZSTD_freeDCtx(zd);
	zc = NULL;
	zd = NULL;
}

int frame_decompress(const struct frame_hdr *h, const uint8_t *src, uint8_t *dst,
		     const char **why)
{
	if (h->flags & FRAME_F_LZ4) {
		if (h->len > (uint32_t)LZ4_MAX_INPUT_SIZE)
			return bad(why, "lz4 payload too large");
		int r = LZ4_decompress_safe((const char *)src, (char *)dst, (int)h->len,
					    (int)h->raw_len);
		if (r < 0 || (uint32_t)r != h->raw_len)
			return bad(why, "lz4 payload does not decompress to the raw length");
		return 0;
	}
	if (!(h->flags & FRAME_F_ZSTD)) {
		memcpy(dst, src, h->len);
		return 0;
	}
	unsigned long long sz = ZSTD_getFrameContentSize(src, h->len);
	if (sz != h->raw_len)
		return bad(why, "zstd payload does not declare the frame's raw length");
	if (!zd && !(zd = ZSTD_createDCtx()))
		return bad(why, "out of memory for zstd");
	size_t r = ZSTD_decompressDCtx(zd, dst, h->raw_len, src, h->len);
	if (ZSTD_isError(r) || r != h->raw_len)
		return bad(why, "zstd payload does not decompress");
	return 0;
}

int frame_compress_zstd(const uint8_t *src, size_t n, uint8_t *dst, size_t dst_cap, int level)
{
	if (!zc && !(zc = ZSTD_createCCtx()))
		return -ENOMEM;
	size_t r = ZSTD_compressCCtx(zc, dst, dst_cap, src, n, level);
	if (ZSTD_isError(r) || r >= n)
		return -ENOSPC;
	return (int)r;
}

int frame_compress_lz4(const uint8_t *src, size_t n, uint8_t *dst, size_t dst_cap)
{
	if (n > (size_t)LZ4_MAX_INPUT_SIZE || dst_cap > (size_t)INT32_MAX)
		return -ENOSPC;
	int r = LZ4_compress_default((const char *)src, (char *)dst, (int)n, (int)dst_cap);
	if (r <= 0 || (size_t)r >= n)
		return -ENOSPC;
	return r;
}
