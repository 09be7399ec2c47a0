/* HPACK (RFC 7541) decoder: integers, strings (Huffman), the static and dynamic tables. */
#include "transforms/hpack.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"

struct hpack_static {
	const char *name, *value;
	uint8_t nlen, vlen;
};

#define S(n, v) { n, v, sizeof(n) - 1, sizeof(v) - 1 }
/* RFC 7541 Appendix A, index 1-61 */
static const struct hpack_static st_tab[61] = {
	S(":authority", ""), S(":method", "GET"), S(":method", "POST"), S(":path", "/"),
	S(":path", "/index.html"), S(":scheme", "http"), S(":scheme", "https"),
	S(":status", "200"), S(":status", "204"), S(":status", "206"), S(":status", "304"),
	S(":status", "400"), S(":status", "404"), S(":status", "500"), S("accept-charset", ""),
	S("accept-encoding", "gzip, deflate"), S("accept-language", ""), S("accept-ranges", ""),
	S("accept", ""), S("access-control-allow-origin", ""), S("age", ""), S("allow", ""),
	S("authorization", ""), S("cache-control", ""), S("content-disposition", ""),
	S("content-encoding", ""), S("content-language", ""), S("content-length", ""),
	S("content-location", ""), S("content-range", ""), S("content-type", ""),
	S("cookie", ""), S("date", ""), S("etag", ""), S("expect", ""), S("expires", ""),
	S("from", ""), S("host", ""), S("if-match", ""), S("if-modified-since", ""),
	S("if-none-match", ""), S("if-range", ""), S("if-unmodified-since", ""),
	S("last-modified", ""), S("link", ""), S("location", ""), S("max-forwards", ""),
	S("proxy-authenticate", ""), S("proxy-authorization", ""), S("range", ""),
	S("referer", ""), S("refresh", ""), S("retry-after", ""), S("server", ""),
	S("set-cookie", ""), S("strict-transport-security", ""), S("transfer-encoding", ""),
	S("user-agent", ""), S("vary", ""), S("via", ""), S("www-authenticate", ""),
};
#undef S

void hpack_init(struct hpack_dec *d, size_t limit)
{
	memset(d, 0, sizeof(*d));
	d->limit = d->max = limit;
}

void hpack_free(struct hpack_dec *d)
{
	free(d->bytes);
	free(d->ent);
	d->bytes = NULL;
	d->ent = NULL;
	d->n = d->size = d->bytes_lo = d->bytes_hi = d->bytes_cap = d->ent_cap = 0;
}

static void evict_to(struct hpack_dec *d, size_t max)
{
	while (d->n && d->size > max) {
		const struct hpack_ent *e = &d->ent[d->first];
		d->size -= (size_t)e->nlen + e->vlen + 32;
		d->bytes_lo = e->off + (size_t)e->nlen + e->vlen;
		d->first = (d->first + 1) % d->ent_cap;
		d->n--;
	}
	if (!d->n)
		d->bytes_lo = d->bytes_hi = 0;
}

int hpack_set_limit(struct hpack_dec *d, size_t limit)
{
	if (limit > HPACK_MAX_TABLE)
		return -EPROTO;
	d->limit = limit;
	if (d->max > limit) {
		d->max = limit;
		evict_to(d, limit);
	}
	return 0;
}

/* Adds (name, value) as the newest entry (RFC 7541 4.4). */
static int dyn_add(struct hpack_dec *d, const uint8_t *name, size_t nlen,
		   const uint8_t *value, size_t vlen)
{
	size_t sz = nlen + vlen + 32;
	if (sz > d->max) {
		evict_to(d, 0); /* not an error: the table ends up empty */
		return 0;
	}
	evict_to(d, d->max - sz);
	size_t need = nlen + vlen;
	if (!d->bytes || d->bytes_cap - d->bytes_hi < need) {
		/* live bytes <= max: compact, or grow to twice the max */
		if (d->bytes_cap < 2 * d->max) {
			size_t cap = 2 * d->max;
			uint8_t *p = malloc(cap);
			if (!p)
				return -ENOMEM;
			if (d->bytes_hi > d->bytes_lo)
				memcpy(p, d->bytes + d->bytes_lo, d->bytes_hi - d->bytes_lo);
			free(d->bytes);
			d->bytes = p;
			d->bytes_cap = cap;
		} else if (d->bytes_hi > d->bytes_lo) {
			memmove(d->bytes, d->bytes + d->bytes_lo, d->bytes_hi - d->bytes_lo);
		}
		for (size_t i = 0; i < d->n; i++)
			d->ent[(d->first + i) % d->ent_cap].off -= (uint32_t)d->bytes_lo;
		d->bytes_hi -= d->bytes_lo;
		d->bytes_lo = 0;
	}
	if (d->n == d->ent_cap) {
		size_t cap = d->ent_cap ? 2 * d->ent_cap : 16;
		struct hpack_ent *e = malloc(cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		for (size_t i = 0; i < d->n; i++)
			e[i] = d->ent[(d->first + i) % d->ent_cap];
		free(d->ent);
		d->ent = e;
		d->ent_cap = cap;
		d->first = 0;
	}
	struct hpack_ent *e = &d->ent[(d->first + d->n) % d->ent_cap];
	e->off = (uint32_t)d->bytes_hi;
	e->nlen = (uint32_t)nlen;
	e->vlen = (uint32_t)vlen;
	if (nlen)
		memcpy(d->bytes + d->bytes_hi, name, nlen);
	if (vlen)
		memcpy(d->bytes + d->bytes_hi + nlen, value, vlen);
	d->bytes_hi += need;
	d->n++;
	d->size += sz;
	return 0;
}

/* Index idx (1-based, static then dynamic). Returns 0 or -EPROTO. */
static int lookup(const struct hpack_dec *d, uint64_t idx, const uint8_t **name,
		  size_t *nlen, const uint8_t **value, size_t *vlen)
{
	if (idx == 0)
		return -EPROTO;
	if (idx <= 61) {
		const struct hpack_static *s = &st_tab[idx - 1];
		*name = (const uint8_t *)s->name;
		*nlen = s->nlen;
		*value = (const uint8_t *)s->value;
		*vlen = s->vlen;
		return 0;
	}
	idx -= 62;
	if (idx >= d->n)
		return -EPROTO;
	const struct hpack_ent *e = &d->ent[(d->first + d->n - 1 - idx) % d->ent_cap];
	*name = d->bytes + e->off;
	*nlen = e->nlen;
	*value = *name + e->nlen;
	*vlen = e->vlen;
	return 0;
}

/* RFC 7541 5.1, prefix of n bits. Values past 2^32 are errors. */
static int rd_int(const uint8_t **p, const uint8_t *end, unsigned n, uint64_t *v)
{
	if (*p >= end)
		return -EPROTO;
	unsigned mask = (1u << n) - 1;
	uint64_t x = **p & mask;
	(*p)++;
	if (x < mask) {
		*v = x;
		return 0;
	}
	for (unsigned shift = 0;; shift += 7) {
		if (*p >= end || shift > 28)
			return -EPROTO;
		uint8_t b = *(*p)++;
		x += (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			break;
	}
	if (x > 0xffffffffu)
		return -EPROTO;
	*v = x;
	return 0;
}

long hpack_huff_decode(const uint8_t *in, size_t n, uint8_t *out)
{
	uint8_t *o = out;
	unsigned st = 0, flags = HPACK_HUFF_ACCEPT;
	for (size_t i = 0; i < n; i++) {
		const struct hpack_huff_ent *e = &hpack_huff_dec[st][in[i] >> 4];
		if (e->flags & HPACK_HUFF_FAIL)
			return -EPROTO;
		if (e->flags & HPACK_HUFF_SYM)
			*o++ = e->sym;
		e = &hpack_huff_dec[e->next][in[i] & 15];
		if (e->flags & HPACK_HUFF_FAIL)
			return -EPROTO;
		if (e->flags & HPACK_HUFF_SYM)
			*o++ = e->sym;
		st = e->next;
		flags = e->flags;
	}
	/* the padding: at most 7 bits, the most significant bits of EOS */
	if (!(flags & HPACK_HUFF_ACCEPT))
		return -EPROTO;
	return (long)(o - out);
}

/* The set of p[0..len) (1 <= len <= HPACK_MEMO_ENC): a hash of every byte,
 * so strings of one length and alike at both ends (nginx's last-modified and
 * etag, a date and the next) do not share a set by their ends alone. */
static struct hpack_memo *memo_set(struct hpack_dec *d, const uint8_t *p, size_t len)
{
	uint64_t h = len * 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < len; i += 8) {
		uint64_t w = 0;
		memcpy(&w, p + i, len - i < 8 ? len - i : 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
	}
	h ^= h >> 29;
	return &d->memo[((h >> 32) % (HPACK_MEMO_N / 2)) * 2];
}

/* Huffman-decodes p[0..len) into out, through the memo (hpack.h): two ways
 * per set, a miss replaces the one used least recently. */
static long huff_memo(struct hpack_dec *d, const uint8_t *p, size_t len, uint8_t *out)
{
	if (!len || len > HPACK_MEMO_ENC)
		return hpack_huff_decode(p, len, out);
	struct hpack_memo *set = memo_set(d, p, len);
	d->memo_clock++;
	for (int w = 0; w < 2; w++) {
		struct hpack_memo *m = &set[w];
		if (m->elen == len && !memcmp(m->enc, p, len)) {
			memcpy(out, m->dec, m->dlen);
			m->used = d->memo_clock;
			d->memo_hits++;
			return m->dlen;
		}
	}
	long r = hpack_huff_decode(p, len, out);
	if (r >= 0 && r <= HPACK_MEMO_DEC) {
		/* the older way (clock differences survive wrap-around) */
		struct hpack_memo *m = d->memo_clock - set[0].used >= d->memo_clock - set[1].used
			? &set[0] : &set[1];
		m->elen = (uint8_t)len;
		m->dlen = (uint8_t)r;
		m->used = d->memo_clock;
		memcpy(m->enc, p, len);
		memcpy(m->dec, out, (size_t)r);
	}
	return r;
}

/* A string literal (RFC 7541 5.2) appended to h->buf (its room checked
 * against the cap). *n gets its decoded length. */
static int rd_str(struct hpack_dec *d, const uint8_t **p, const uint8_t *end, struct h2_hdrs *h,
		  size_t *n)
{
	if (*p >= end)
		return -EPROTO;
	int huff = **p & 0x80;
	uint64_t len;
	int err = rd_int(p, end, 7, &len);
	if (err)
		return err;
	if (len > (uint64_t)(end - *p))
		return -EPROTO;
	size_t room = huff ? (size_t)len * 8 / 5 + 1 : (size_t)len;
	if (room > H2_MAX_HEADER_LIST)
		return -E2BIG;
	if (room > h->buf.size - h->buf.len && (err = h2_buf_grow(&h->buf, room)))
		return err;
	if (huff) {
		long r = huff_memo(d, *p, (size_t)len, h->buf.p + h->buf.len);
		if (r < 0)
			return (int)r;
		*n = (size_t)r;
	} else {
		if (len)
			memcpy(h->buf.p + h->buf.len, *p, (size_t)len);
		*n = (size_t)len;
	}
	h->buf.len += *n;
	*p += len;
	return 0;
}

static int decode(struct hpack_dec *d, const uint8_t *p, const uint8_t *end, struct h2_hdrs *h)
{
	size_t fields = 0;
	int updates_ok = 1;
	while (p < end) {
		uint8_t b = *p;
		int err;
		uint64_t idx;
		if ((b & 0xe0) == 0x20) { /* dynamic table size update (6.3) */
			if (!updates_ok || (err = rd_int(&p, end, 5, &idx)))
				return -EPROTO;
			if (idx > d->limit)
				return -EPROTO;
			d->max = (size_t)idx;
			evict_to(d, d->max);
			continue;
		}
		updates_ok = 0;
		if (++fields > HPACK_MAX_FIELDS)
			return -E2BIG;
		const uint8_t *name, *value;
		size_t nlen, vlen;
		if (b & 0x80) { /* indexed field (6.1) */
			if ((err = rd_int(&p, end, 7, &idx)) ||
			    (err = lookup(d, idx, &name, &nlen, &value, &vlen)))
				return err;
			size_t add = nlen + vlen + 32;
			if (add > H2_MAX_HEADER_LIST || h->list_size > H2_MAX_HEADER_LIST - add)
				return -E2BIG;
			size_t need = 8 + nlen + vlen;
			if (need > h->buf.size - h->buf.len && (err = h2_buf_grow(&h->buf, need)))
				return err;
			uint8_t *o = h->buf.p + h->buf.len;
			put_be32(o, (uint32_t)nlen);
			put_be32(o + 4, (uint32_t)vlen);
			memcpy(o + 8, name, nlen);
			if (vlen)
				memcpy(o + 8 + nlen, value, vlen);
			h->buf.len += need;
			h->list_size += add;
			continue;
		}
		/* literal: with incremental indexing (6.2.1, prefix 6), without
		 * (6.2.2, 4) or never indexed (6.2.3, 4) */
		int incr = (b & 0xc0) == 0x40;
		if ((err = rd_int(&p, end, incr ? 6 : 4, &idx)))
			return err;
		size_t start = h->buf.len;
		if (8 > h->buf.size - h->buf.len && (err = h2_buf_grow(&h->buf, 8)))
			return err;
		h->buf.len += 8;
		if (idx) {
			if ((err = lookup(d, idx, &name, &nlen, &value, &vlen)))
				return err;
			if (nlen > h->buf.size - h->buf.len && (err = h2_buf_grow(&h->buf, nlen)))
				return err;
			memcpy(h->buf.p + h->buf.len, name, nlen);
			h->buf.len += nlen;
		} else if ((err = rd_str(d, &p, end, h, &nlen))) {
			return err;
		}
		if ((err = rd_str(d, &p, end, h, &vlen)))
			return err;
		size_t add = nlen + vlen + 32;
		if (add > H2_MAX_HEADER_LIST || h->list_size > H2_MAX_HEADER_LIST - add)
			return -E2BIG;
		h->list_size += add;
		uint8_t *o = h->buf.p + start;
		put_be32(o, (uint32_t)nlen);
		put_be32(o + 4, (uint32_t)vlen);
		if (incr && (err = dyn_add(d, o + 8, nlen, o + 8 + nlen, vlen)))
			return err;
	}
	return 0;
}

int hpack_decode(struct hpack_dec *d, const uint8_t *in, size_t len, struct h2_hdrs *h)
{
	int err = decode(d, in, in + len, h);
	if (err)
		d->errors++;
	return err;
}
