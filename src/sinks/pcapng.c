/* pcapng block encoder: Section Header, Interface Description, Enhanced Packet blocks and their options. */
#include "sinks/pcapng.h"
#include "common/text.h"
#include "pipeline/conn.h"
#include "transport/ring.h"

#include <string.h>

#define BT_SHB 0x0A0D0D0Au
#define BT_IDB 0x00000001u
#define BT_EPB 0x00000006u
#define BYTE_ORDER_MAGIC 0x1A2B3C4Du

#define OPT_ENDOFOPT 0
#define OPT_COMMENT 1
#define SHB_HARDWARE 2
#define SHB_OS 3
#define SHB_USERAPPL 4
#define IF_NAME 2
#define IF_DESCRIPTION 3
#define IF_TSRESOL 9

#define SHB_FIXED 28 /* type, length, magic, version, section length, trailing length */
#define IDB_FIXED 20
#define EPB_FIXED 32

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, sizeof(v));
}

static void put16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, sizeof(v));
}

static size_t pad4(size_t n)
{
	return (n + 3) & ~(size_t)3;
}

static size_t str_len(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	return n > PCAPNG_MAX_OPT ? PCAPNG_MAX_OPT : n;
}

/* Bytes of one option with a value of n bytes (0 if n is 0: left out). */
static size_t opt_len(size_t n)
{
	return n ? 4 + pad4(n) : 0;
}

/* Writes one option (code, length, value, zero padding); returns its length. */
static size_t put_opt(uint8_t *p, uint16_t code, const void *v, size_t n)
{
	if (!n)
		return 0;
	put16(p, code);
	put16(p + 2, (uint16_t)n);
	memcpy(p + 4, v, n);
	memset(p + 4 + n, 0, pad4(n) - n);
	return 4 + pad4(n);
}

static size_t put_str_opt(uint8_t *p, uint16_t code, const char *s)
{
	return put_opt(p, code, s, str_len(s));
}

/* Closes a block of len bytes starting at b: opt_endofopt if opts, trailing length. */
static void finish(uint8_t *b, size_t len, uint32_t type, int opts)
{
	put32(b, type);
	put32(b + 4, (uint32_t)len);
	if (opts) {
		put16(b + len - 8, OPT_ENDOFOPT);
		put16(b + len - 6, 0);
	}
	put32(b + len - 4, (uint32_t)len);
}

size_t pcapng_put_shb(uint8_t *dst, size_t room, const char *hardware, const char *os,
		      const char *userappl, const char *comment)
{
	size_t o = opt_len(str_len(hardware)) + opt_len(str_len(os)) +
		   opt_len(str_len(userappl)) + opt_len(str_len(comment));
	size_t len = SHB_FIXED + (o ? o + 4 : 0);
	if (len > room)
		return 0;
	put32(dst + 8, BYTE_ORDER_MAGIC);
	put16(dst + 12, 1); /* major */
	put16(dst + 14, 0); /* minor */
	memset(dst + 16, 0xff, 8); /* section length: not specified */
	uint8_t *p = dst + 24;
	p += put_str_opt(p, OPT_COMMENT, comment);
	p += put_str_opt(p, SHB_HARDWARE, hardware);
	p += put_str_opt(p, SHB_OS, os);
	p += put_str_opt(p, SHB_USERAPPL, userappl);
	finish(dst, len, BT_SHB, o != 0);
	return len;
}

size_t pcapng_idb_len(const char *name, const char *description)
{
	return IDB_FIXED + opt_len(str_len(name)) + opt_len(str_len(description)) + opt_len(1) + 4;
}

size_t pcapng_put_idb(uint8_t *dst, size_t room, uint16_t linktype, uint32_t snaplen,
		      const char *name, const char *description)
{
	static const uint8_t tsresol = 9; /* 10^-9 s */
	size_t len = pcapng_idb_len(name, description);
	if (len > room)
		return 0;
	put16(dst + 8, linktype);
	put16(dst + 10, 0);
	put32(dst + 12, snaplen);
	uint8_t *p = dst + 16;
	p += put_str_opt(p, IF_NAME, name);
	p += put_str_opt(p, IF_DESCRIPTION, description);
	put_opt(p, IF_TSRESOL, &tsresol, 1);
	finish(dst, len, BT_IDB, 1);
	return len;
}

size_t pcapng_epb_len(uint32_t caplen, size_t comment_len)
{
	if (comment_len > PCAPNG_MAX_OPT)
		comment_len = PCAPNG_MAX_OPT;
	return EPB_FIXED + pad4(caplen) + (comment_len ? opt_len(comment_len) + 4 : 0);
}

size_t pcapng_put_epb(uint8_t *dst, size_t room, uint32_t ifidx, uint64_t ts_ns,
		      const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen,
		      const uint8_t *c, uint32_t clen, uint32_t orig_len, const char *comment,
		      size_t comment_len)
{
	if ((uint64_t)alen + blen + clen > UINT32_MAX - 3)
		return 0;
	uint32_t caplen = alen + blen + clen;
	if (comment_len > PCAPNG_MAX_OPT)
		comment_len = PCAPNG_MAX_OPT;
	size_t len = pcapng_epb_len(caplen, comment_len);
	if (len > room)
		return 0;
	put32(dst + 8, ifidx);
	put32(dst + 12, (uint32_t)(ts_ns >> 32));
	put32(dst + 16, (uint32_t)ts_ns);
	put32(dst + 20, caplen);
	put32(dst + 24, orig_len);
	uint8_t *p = dst + 28;
	if (alen)
		memcpy(p, a, alen);
	if (blen)
		memcpy(p + alen, b, blen);
	if (clen)
		memcpy(p + alen + blen, c, clen);
	memset(p + caplen, 0, pad4(caplen) - caplen);
	p += pad4(caplen);
	put_opt(p, OPT_COMMENT, comment, comment_len);
	finish(dst, len, BT_EPB, comment_len != 0);
	return len;
}

/* Appends " key=value" with value escaped (see pcapng.h); an empty value is left out. */
static size_t add_str(char *out, size_t cap, size_t at, const char *key, const char *v,
		      size_t max)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = strnlen(v, max);
	if (!n)
		return at;
	at = text_add(out, cap, at, " %s=", key);
	for (size_t i = 0; i < n && at + 5 <= cap; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c > ' ' && c <= '~' && c != '\\') {
			out[at++] = (char)c;
			continue;
		}
		out[at++] = '\\';
		out[at++] = 'x';
		out[at++] = hex[c >> 4];
		out[at++] = hex[c & 15];
	}
	if (at < cap)
		out[at] = 0;
	return at;
}

static const char *name_of(unsigned v, const char *const *names, size_t n)
{
	return v < n && names[v] ? names[v] : "unknown";
}

static size_t add_tls(char *out, size_t cap, size_t at, uint16_t v)
{
	if (!v)
		return at;
	if (conn_tls_name(v))
		return text_add(out, cap, at, " tls=%s", conn_tls_name(v));
	return text_add(out, cap, at, " tls=0x%04x", v);
}

size_t pcapng_format_meta(char *out, size_t cap, const struct conn_meta *m)
{
	static const char *const maps[] = {
		[RING_MAP_FD] = "fd", [RING_MAP_IO] = "io", [RING_MAP_RANDOM] = "random",
		[RING_MAP_SYNTHETIC] = "synthetic" };
	size_t at = text_add(out, cap, 0, "tlsmirror:");
	at = add_str(out, cap, at, "process", m->comm, sizeof(m->comm));
	if (m->pid)
		at = text_add(out, cap, at, " pid=%u uid=%u", m->pid, m->uid);
	if (m->kind != CONN_KIND_DECRYPT) /* an observer on the wire is neither end */
		at = text_add(out, cap, at, " side=%s", m->side ? "server" : "client");
	at = add_str(out, cap, at, "host", m->host, sizeof(m->host));
	at = add_str(out, cap, at, "sni", m->sni, sizeof(m->sni));
	at = add_str(out, cap, at, "alpn", m->alpn, sizeof(m->alpn));
	at = add_tls(out, cap, at, m->tls_version);
	at = add_str(out, cap, at, "cipher", m->cipher, sizeof(m->cipher));
	if (m->real_server_port)
		at = text_add(out, cap, at, " server_port=%u", m->real_server_port);
	if (m->map_method)
		at = text_add(out, cap, at, " map=%s",
			      name_of(m->map_method, maps, sizeof(maps) / sizeof(maps[0])));
	at = text_add(out, cap, at, " source=%s", conn_kind_name(m->kind));
	if (m->flags & CONN_META_MIDSTREAM)
		at = text_add(out, cap, at, " start=midstream");
	if (m->kind == CONN_KIND_SYNTHETIC || m->parent.origin || m->parent.conn)
		at = text_add(out, cap, at, " parent=%llu/%llu",
			      (unsigned long long)m->parent.origin,
			      (unsigned long long)m->parent.conn);
	return at;
}
