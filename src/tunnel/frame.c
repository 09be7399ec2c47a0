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

static int bad(const char **why, const char *msg)
{
	*why = msg;
	return -EPROTO;
}

const char *frame_type_name(unsigned type)
{
	switch (type) {
	case FRAME_HELLO: return "HELLO";
	case FRAME_PACKETS_V1: return "PACKETS (version 1)";
	case FRAME_EVENTS: return "EVENTS";
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
	if (p[4] == 1)
		return bad(why, "tunnel protocol version 1 (an older agent that sends finished "
			   "packets): this collector speaks version 2 only; upgrade the agent");
	if (p[4] != FRAME_VERSION)
		return bad(why, "unsupported frame version");
	h->type = p[5];
	h->flags = p[6];
	h->len = get_be32(p + 8);
	h->raw_len = get_be32(p + 12);
	if (h->type < FRAME_HELLO || h->type > FRAME_EVENTS || h->type == FRAME_PACKETS_V1)
		return bad(why, "unknown frame type");
	if (p[7] != 0 || (h->flags & ~FRAME_F_KNOWN))
		return bad(why, "unknown flags");
	if (h->flags == (FRAME_F_ZSTD | FRAME_F_LZ4))
		return bad(why, "two compressions at once");
	if (h->flags && h->type != FRAME_EVENTS)
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
	put_be64(buf, hb->dropped_events);
	put_be64(buf + 8, hb->dropped_bytes);
}

int frame_heartbeat_parse(const uint8_t *p, size_t n, struct frame_heartbeat *hb,
			  const char **why)
{
	if (n != FRAME_HEARTBEAT_LEN)
		return bad(why, "HEARTBEAT of the wrong length");
	hb->dropped_events = get_be64(p);
	hb->dropped_bytes = get_be64(p + 8);
	return 0;
}

/* ---- events ---- */

static void put_be64p(uint8_t **p, uint64_t v)
{
	put_be64(*p, v);
	*p += 8;
}

static uint8_t *ev_hdr(uint8_t *p, unsigned type, uint64_t conn, uint64_t ts_ns)
{
	p[0] = (uint8_t)type;
	put_be64(p + 1, conn);
	put_be64(p + 9, ts_ns);
	return p + FRAME_EV_HDR;
}

/* A string's wire length: cut at cap. */
static size_t str_len(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap + 1);
	return n > cap ? cap : n;
}

static uint8_t *put_str(uint8_t *p, const char *s, size_t cap)
{
	size_t n = str_len(s, cap);
	*p++ = (uint8_t)n;
	for (size_t i = 0; i < n; i++)
		*p++ = (s[i] < 0x20 || s[i] > 0x7e) ? '?' : (uint8_t)s[i];
	return p;
}

#define CAP_COMM 15u
#define CAP_SNI 255u
#define CAP_ALPN 63u
#define CAP_CIPHER 63u

size_t frame_ev_open_len(const struct frame_open *o)
{
	return FRAME_EV_OPEN_FIXED + str_len(o->comm, CAP_COMM) + str_len(o->sni, CAP_SNI) +
	       str_len(o->alpn, CAP_ALPN) + str_len(o->cipher, CAP_CIPHER);
}

size_t frame_ev_open_put(uint8_t *p, uint64_t conn, uint64_t ts_ns, const struct frame_open *o)
{
	uint8_t *q = ev_hdr(p, FRAME_EV_OPEN, conn, ts_ns);
	*q++ = o->flags;
	*q++ = o->family;
	put_be16(q, o->client_port);
	put_be16(q + 2, o->server_port);
	q += 4;
	memcpy(q, o->client_addr, 16);
	memcpy(q + 16, o->server_addr, 16);
	q += 32;
	put_be64p(&q, o->off[0]);
	put_be64p(&q, o->off[1]);
	put_be64p(&q, o->seed);
	*q++ = o->kind;
	*q++ = o->map_method;
	put_be16(q, o->tls_version);
	put_be16(q + 2, o->real_server_port);
	put_be32(q + 4, o->pid);
	put_be32(q + 8, o->uid);
	q += 12;
	q = put_str(q, o->comm, CAP_COMM);
	q = put_str(q, o->sni, CAP_SNI);
	q = put_str(q, o->alpn, CAP_ALPN);
	q = put_str(q, o->cipher, CAP_CIPHER);
	return (size_t)(q - p);
}

size_t frame_ev_data_put(uint8_t *p, uint64_t conn, uint64_t ts_ns, int dir, uint64_t off,
			 const uint8_t *data, uint32_t n)
{
	uint8_t *q = ev_hdr(p, FRAME_EV_DATA, conn, ts_ns);
	q[0] = (uint8_t)dir;
	put_be64(q + 1, off);
	put_be32(q + 9, n);
	memcpy(q + 13, data, n);
	return FRAME_EV_DATA_HDR + n;
}

size_t frame_ev_gap_put(uint8_t *p, uint64_t conn, uint64_t ts_ns, int dir, uint64_t off,
			uint64_t n, int exact)
{
	uint8_t *q = ev_hdr(p, FRAME_EV_GAP, conn, ts_ns);
	q[0] = (uint8_t)dir;
	q[1] = exact ? FRAME_GAP_EXACT : 0;
	put_be64(q + 2, off);
	put_be64(q + 10, n);
	return FRAME_EV_GAP_LEN;
}

size_t frame_ev_close_put(uint8_t *p, uint64_t conn, uint64_t ts_ns, unsigned how)
{
	uint8_t *q = ev_hdr(p, FRAME_EV_CLOSE, conn, ts_ns);
	q[0] = (uint8_t)how;
	return FRAME_EV_CLOSE_LEN;
}

size_t frame_ev_key_put(uint8_t *p, uint64_t ts_ns, unsigned label, const uint8_t cr[32],
			const uint8_t *secret, size_t len)
{
	uint8_t *q = ev_hdr(p, FRAME_EV_KEY, 1, ts_ns);
	q[0] = (uint8_t)label;
	q[1] = (uint8_t)len;
	memcpy(q + 2, cr, 32);
	memcpy(q + 34, secret, len);
	return FRAME_EV_HDR + 34 + len;
}

static int rd_be32(struct reader *r, uint32_t *v)
{
	if (r->left < 4)
		return -1;
	*v = get_be32(r->p);
	return rd_skip(r, 4);
}

static int rd_be64(struct reader *r, uint64_t *v)
{
	if (r->left < 8)
		return -1;
	*v = get_be64(r->p);
	return rd_skip(r, 8);
}

/* A u8-length string of printable ASCII (spaces allowed), at most cap bytes,
 * into out (cap + 1 bytes) if out is set. */
static int rd_text(struct reader *r, char *out, size_t cap)
{
	uint8_t l;
	if (rd_u8(r, &l) < 0 || l > cap || r->left < l)
		return -1;
	for (size_t i = 0; i < l; i++)
		if (r->p[i] < 0x20 || r->p[i] > 0x7e)
			return -1;
	if (out) {
		memcpy(out, r->p, l);
		out[l] = 0;
	}
	return rd_skip(r, l);
}

static int rd_open(struct reader *r, struct frame_open *o, const char **why)
{
	struct frame_open tmp;
	int keep = o != NULL;
	if (!o)
		o = &tmp;
	if (rd_u8(r, &o->flags) < 0 || rd_u8(r, &o->family) < 0 ||
	    rd_be16(r, &o->client_port) < 0 || rd_be16(r, &o->server_port) < 0 ||
	    r->left < 32)
		return bad(why, "OPEN truncated");
	memcpy(o->client_addr, r->p, 16);
	memcpy(o->server_addr, r->p + 16, 16);
	rd_skip(r, 32);
	if (rd_be64(r, &o->off[0]) < 0 || rd_be64(r, &o->off[1]) < 0 || rd_be64(r, &o->seed) < 0 ||
	    rd_u8(r, &o->kind) < 0 || rd_u8(r, &o->map_method) < 0 ||
	    rd_be16(r, &o->tls_version) < 0 || rd_be16(r, &o->real_server_port) < 0 ||
	    rd_be32(r, &o->pid) < 0 || rd_be32(r, &o->uid) < 0)
		return bad(why, "OPEN truncated");
	if (o->flags & ~FRAME_OPEN_KNOWN)
		return bad(why, "OPEN with unknown flags");
	if (o->family != 4 && o->family != 6)
		return bad(why, "OPEN of an address family other than 4 or 6");
	if (!o->client_port || !o->server_port)
		return bad(why, "OPEN with port 0");
	if (!(o->flags & FRAME_OPEN_MIDSTREAM) && (o->off[0] || o->off[1]))
		return bad(why, "OPEN with offsets but not mid-stream");
	if ((o->off[0] | o->off[1]) >> 62)
		return bad(why, "OPEN offset out of range");
	if (!o->kind || o->kind > 5 || o->map_method > 16)
		return bad(why, "OPEN with an unknown source kind or 4-tuple method");
	if (rd_text(r, keep ? o->comm : NULL, CAP_COMM) < 0 ||
	    rd_text(r, keep ? o->sni : NULL, CAP_SNI) < 0 ||
	    rd_text(r, keep ? o->alpn : NULL, CAP_ALPN) < 0 ||
	    rd_text(r, keep ? o->cipher : NULL, CAP_CIPHER) < 0)
		return bad(why, "OPEN with a string too long, truncated or not printable");
	return 0;
}

int frame_event_next(const uint8_t *p, size_t n, size_t *off, struct frame_event *ev,
		     const char **why)
{
	if (*off >= n)
		return 0;
	struct reader r = { .p = p + *off, .left = n - *off };
	struct frame_open *o = ev->open;
	memset(ev, 0, sizeof(*ev));
	ev->open = o;
	if (rd_u8(&r, &ev->type) < 0 || rd_be64(&r, &ev->conn) < 0 || rd_be64(&r, &ev->ts_ns) < 0)
		return bad(why, "event truncated");
	if (!ev->conn)
		return bad(why, "event of connection 0");
	switch (ev->type) {
	case FRAME_EV_OPEN:
		if (rd_open(&r, o, why) < 0)
			return -EPROTO;
		break;
	case FRAME_EV_DATA: {
		uint32_t len;
		if (rd_u8(&r, &ev->dir) < 0 || rd_be64(&r, &ev->off) < 0 || rd_be32(&r, &len) < 0)
			return bad(why, "DATA truncated");
		if (!len || len > FRAME_MAX_DATA)
			return bad(why, "DATA length out of range");
		if (r.left < len)
			return bad(why, "DATA truncated in its bytes");
		ev->len = len;
		ev->data = r.p;
		rd_skip(&r, len);
		break;
	}
	case FRAME_EV_GAP:
		if (rd_u8(&r, &ev->dir) < 0 || rd_u8(&r, &ev->flags) < 0 || rd_be64(&r, &ev->off) < 0 ||
		    rd_be64(&r, &ev->len) < 0)
			return bad(why, "GAP truncated");
		if (ev->flags & ~FRAME_GAP_EXACT)
			return bad(why, "GAP with unknown flags");
		if (!ev->len || ev->len >> 62)
			return bad(why, "GAP length out of range");
		break;
	case FRAME_EV_CLOSE:
		if (rd_u8(&r, &ev->how) < 0)
			return bad(why, "CLOSE truncated");
		if (ev->how > FRAME_CLOSE_MAX)
			return bad(why, "CLOSE of an unknown kind");
		break;
	case FRAME_EV_KEY: {
		uint8_t len;
		if (rd_u8(&r, &ev->flags) < 0 || rd_u8(&r, &len) < 0)
			return bad(why, "KEY truncated");
		if (ev->flags >= 8 || !len || len > 64 || (ev->flags == 0 && len != 48))
			return bad(why, "KEY with an unknown label or a secret of the wrong length");
		if (r.left < 32u + len)
			return bad(why, "KEY truncated in its bytes");
		ev->len = len;
		ev->data = r.p;
		rd_skip(&r, 32u + len);
		break;
	}
	default:
		return bad(why, "unknown event type");
	}
	if (ev->dir > 1)
		return bad(why, "event with a direction other than 0 or 1");
	if ((ev->type == FRAME_EV_DATA || ev->type == FRAME_EV_GAP) &&
	    (ev->off >> 62 || ev->off + ev->len < ev->off))
		return bad(why, "event offset out of range");
	*off = n - r.left;
	return 1;
}

int frame_events_check(const uint8_t *p, size_t n, const char **why)
{
	if (n < 4)
		return bad(why, "truncated EVENTS");
	uint32_t count = get_be32(p);
	if (!count || count > FRAME_MAX_EVENTS)
		return bad(why, "EVENTS count out of range");
	size_t off = 4;
	struct frame_event ev = { .open = NULL };
	for (uint32_t i = 0; i < count; i++) {
		int r = frame_event_next(p, n, &off, &ev, why);
		if (r < 0)
			return r;
		if (r == 0)
			return bad(why, "EVENTS with fewer events than its count");
	}
	if (off != n)
		return bad(why, "EVENTS with trailing bytes");
	return (int)count;
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
