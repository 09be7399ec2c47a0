/* JSON text for records (contract in json.h). */
#include "http/json.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* The length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, at most U+10FFFF), 0 if there is none. */
static size_t utf8_len(const uint8_t *p, size_t n)
{
	uint8_t b = p[0];
	size_t k;
	uint32_t min, cp;
	if (b < 0x80)
		return 1;
	if ((b & 0xe0) == 0xc0) {
		k = 2; min = 0x80; cp = b & 0x1f;
	} else if ((b & 0xf0) == 0xe0) {
		k = 3; min = 0x800; cp = b & 0x0f;
	} else if ((b & 0xf8) == 0xf0) {
		k = 4; min = 0x10000; cp = b & 0x07;
	} else {
		return 0;
	}
	if (n < k)
		return 0;
	for (size_t i = 1; i < k; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return k;
}

int json_is_utf8(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n;) {
		if (!p[i])
			return 0;
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		size_t k = utf8_len(p + i, n - i);
		if (!k)
			return 0;
		i += k;
	}
	return 1;
}

int json_str(struct h2_buf *b, const void *data, size_t n)
{
	const uint8_t *p = data;
	int err = h2_buf_grow(b, n + 2);
	if (err)
		return err;
	b->p[b->len++] = '"';
	for (size_t i = 0; i < n;) {
		size_t run = i;
		/* plain ASCII runs are copied at once */
		while (run < n && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' && p[run] != '\\')
			run++;
		if (run > i) {
			if ((err = h2_buf_put(b, p + i, run - i)))
				return err;
			i = run;
			continue;
		}
		uint8_t c = p[i];
		char esc[8];
		size_t k = 0;
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			k = 2;
		} else if (c < 0x20) {
			k = (size_t)snprintf(esc, sizeof(esc), c == '\n' ? "\\n" : c == '\r' ? "\\r" :
					     c == '\t' ? "\\t" : "\\u%04x", c);
		} else {
			size_t u = utf8_len(p + i, n - i);
			if (u) {
				if ((err = h2_buf_put(b, p + i, u)))
					return err;
				i += u;
				continue;
			}
			/* not UTF-8: the Latin-1 code point of the byte, in UTF-8 */
			esc[0] = (char)(0xc0 | c >> 6);
			esc[1] = (char)(0x80 | (c & 0x3f));
			k = 2;
		}
		if ((err = h2_buf_put(b, esc, k)))
			return err;
		i++;
	}
	return h2_buf_put(b, "\"", 1);
}

int json_cstr(struct h2_buf *b, const char *s)
{
	return json_str(b, s, strlen(s));
}

int json_raw(struct h2_buf *b, const char *s)
{
	return h2_buf_put(b, s, strlen(s));
}

int json_u64(struct h2_buf *b, uint64_t v)
{
	char t[24];
	int k = snprintf(t, sizeof(t), "%llu", (unsigned long long)v);
	return h2_buf_put(b, t, (size_t)k);
}

int json_i64(struct h2_buf *b, int64_t v)
{
	char t[24];
	int k = snprintf(t, sizeof(t), "%lld", (long long)v);
	return h2_buf_put(b, t, (size_t)k);
}

int json_base64(struct h2_buf *b, const void *data, size_t n)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const uint8_t *p = data;
	size_t out = (n + 2) / 3 * 4;
	int err = h2_buf_grow(b, out + 2);
	if (err)
		return err;
	uint8_t *o = b->p + b->len;
	*o++ = '"';
	size_t i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		*o++ = (uint8_t)tab[v >> 18];
		*o++ = (uint8_t)tab[(v >> 12) & 63];
		*o++ = (uint8_t)tab[(v >> 6) & 63];
		*o++ = (uint8_t)tab[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
		*o++ = (uint8_t)tab[v >> 18];
		*o++ = (uint8_t)tab[(v >> 12) & 63];
		*o++ = i + 1 < n ? (uint8_t)tab[(v >> 6) & 63] : '=';
		*o++ = '=';
	}
	*o++ = '"';
	b->len = (size_t)(o - b->p);
	return 0;
}
