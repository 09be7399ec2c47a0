/* JSON text for records (contract in json.h). */
#include "http/json.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#if defined(__x86_64__) && defined(__SSE2__)
#include <immintrin.h>
#define JSON_X86 1
#endif

#ifdef JSON_X86
/* ASCII without NUL, 16 bytes at a time: how many from the start. */
static size_t ascii_run(const uint8_t *p, size_t n)
{
	size_t i = 0;
	const __m128i z = _mm_setzero_si128();
	for (; i + 16 <= n; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(p + i));
		int m = _mm_movemask_epi8(_mm_or_si128(v, _mm_cmpeq_epi8(v, z)));
		if (m)
			return i + (size_t)__builtin_ctz((unsigned)m);
	}
	return i;
}
#else
static size_t ascii_run(const uint8_t *p, size_t n)
{
	(void)p;
	(void)n;
	return 0;
}
#endif

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
		i += ascii_run(p + i, n - i);
		if (i >= n)
			break;
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

static int plain(uint8_t c)
{
	return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

#ifdef JSON_X86
static int have_ssse3(void)
{
	static int v = -1;
	if (v < 0)
		v = __builtin_cpu_supports("ssse3") ? 1 : 0;
	return v;
}

/* For 8 bytes whose '"' and '\\' are the bits of m (the rest printable
 * ASCII): which source byte each output byte is (8: a backslash), and how
 * many output bytes there are. */
static uint8_t esc_shuf[256][16] __attribute__((aligned(16)));
static uint8_t esc_len[256];

__attribute__((constructor)) static void esc_init(void)
{
	for (unsigned m = 0; m < 256; m++) {
		unsigned k = 0;
		memset(esc_shuf[m], 0x80, 16);
		for (unsigned j = 0; j < 8; j++) {
			if ((m >> j) & 1)
				esc_shuf[m][k++] = 8;
			esc_shuf[m][k++] = (uint8_t)j;
		}
		esc_len[m] = (uint8_t)k;
	}
}

/* 16 bytes of v, a backslash before each one in m, at o (16 bytes may be
 * written past the end: the caller made room). */
__attribute__((target("ssse3"))) static uint8_t *esc16(__m128i v, unsigned m, uint8_t *o)
{
	const __m128i bsl = _mm_set1_epi8('\\');
	__m128i lo = _mm_unpacklo_epi64(v, bsl), hi = _mm_unpackhi_epi64(v, bsl);
	_mm_storeu_si128((__m128i *)o, _mm_shuffle_epi8(lo, _mm_load_si128((const __m128i *)esc_shuf[m & 255])));
	o += esc_len[m & 255];
	_mm_storeu_si128((__m128i *)o, _mm_shuffle_epi8(hi, _mm_load_si128((const __m128i *)esc_shuf[m >> 8])));
	return o + esc_len[m >> 8];
}
#endif

/* The character at p[0] (of n) as JSON text at o; returns the bytes of p it took. */
static size_t one_char(const uint8_t *p, size_t n, uint8_t **out)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t *o = *out, c = p[0];
	size_t used = 1;
	if (plain(c)) {
		*o++ = c;
	} else if (c == '"' || c == '\\') {
		*o++ = '\\';
		*o++ = c;
	} else if (c < 0x20) {
		*o++ = '\\';
		if (c == '\n' || c == '\r' || c == '\t') {
			*o++ = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
		} else {
			memcpy(o, "u00", 3);
			o[3] = (uint8_t)hex[c >> 4];
			o[4] = (uint8_t)hex[c & 15];
			o += 5;
		}
	} else if ((used = utf8_len(p, n)) != 0) {
		memcpy(o, p, used);
		o += used;
	} else {
		/* not UTF-8: the Latin-1 code point of the byte, in UTF-8 */
		*o++ = (uint8_t)(0xc0 | c >> 6);
		*o++ = (uint8_t)(0x80 | (c & 0x3f));
		used = 1;
	}
	*out = o;
	return used;
}

int json_str(struct h2_buf *b, const void *data, size_t n)
{
	const uint8_t *p = data;
	/* room for the worst case (every byte a \u00XX) at once: no check per byte */
	if (n > (SIZE_MAX - 2) / 6)
		return -E2BIG;
	int err = h2_buf_grow(b, 6 * n + 2);
	if (err)
		return err;
	uint8_t *o = b->p + b->len;
	*o++ = '"';
	size_t i = 0;
	while (i < n) {
#ifdef JSON_X86
		/* 16 bytes at a time: printable ASCII is stored as it is; where the
		 * only others are '"' and '\\' (JSON text in a body: one every few
		 * bytes), each byte is written with a backslash before it or not,
		 * without a branch; a control or non-ASCII byte goes one by one */
		if (i + 16 <= n) {
			const __m128i sp = _mm_set1_epi8(0x20), q = _mm_set1_epi8('"');
			const __m128i bs = _mm_set1_epi8('\\');
			__m128i v = _mm_loadu_si128((const __m128i *)(p + i));
			int ctl = _mm_movemask_epi8(_mm_cmplt_epi8(v, sp));
			int esc = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, bs)));
			if (!ctl && !esc) {
				_mm_storeu_si128((__m128i *)o, v);
				o += 16;
				i += 16;
				continue;
			}
			if (!ctl && have_ssse3()) {
				o = esc16(v, (unsigned)esc, o);
				i += 16;
				continue;
			}
			if (!ctl)
				ctl = 1 << 15 << 1; /* no SSSE3: one by one */
			size_t stop = i + (ctl & 0xffff ? (size_t)__builtin_ctz((unsigned)ctl) : 16);
			while (i < stop)
				i += one_char(p + i, n - i, &o);
		}
#endif
		while (i < n && plain(p[i]))
			*o++ = p[i++];
		if (i < n)
			i += one_char(p + i, n - i, &o);
	}
	*o++ = '"';
	b->len = (size_t)(o - b->p);
	return 0;
}

int json_cstr(struct h2_buf *b, const char *s)
{
	return json_str(b, s, strlen(s));
}

int json_raw(struct h2_buf *b, const char *s)
{
	return h2_buf_put(b, s, strlen(s));
}

/* v in decimal at the end of t[0..24): returns where it starts */
static char *dec(char t[24], uint64_t v)
{
	char *p = t + 24;
	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return p;
}

int json_u64(struct h2_buf *b, uint64_t v)
{
	char t[24], *p = dec(t, v);
	return h2_buf_put(b, p, (size_t)(t + 24 - p));
}

int json_i64(struct h2_buf *b, int64_t v)
{
	char t[24], *p = dec(t, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);
	if (v < 0)
		*--p = '-';
	return h2_buf_put(b, p, (size_t)(t + 24 - p));
}

/* base64 of 12 bits at once: two output characters per entry */
static uint16_t b64_pairs[4096];

__attribute__((constructor)) static void b64_init(void)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	for (unsigned i = 0; i < 4096; i++) {
		uint8_t two[2] = { (uint8_t)tab[i >> 6], (uint8_t)tab[i & 63] };
		memcpy(&b64_pairs[i], two, 2);
	}
}

#ifdef JSON_X86
/*
 * 12 bytes to 16 characters per step with SSSE3: the bytes are spread so
 * that each 32-bit lane holds one 3-byte group, two multiplies move the four
 * 6-bit indices into the four bytes, and a 16-entry pshufb table gives the
 * offset that turns an index into its character (a range per entry: A-Z,
 * a-z, 0-9, '+', '/'). Reads 16 bytes per step: stops 4 short of the end;
 * returns the input bytes done. Checked against the scalar code in the unit
 * tests (every length, random bytes).
 */
__attribute__((target("ssse3"))) static size_t b64_ssse3(const uint8_t *in, size_t n, uint8_t *out)
{
	const __m128i spread = _mm_set_epi8(10, 11, 9, 10, 7, 8, 6, 7, 4, 5, 3, 4, 1, 2, 0, 1);
	const __m128i shift_lut = _mm_setr_epi8('a' - 26, '0' - 52, '0' - 52, '0' - 52, '0' - 52,
						'0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52,
						'0' - 52, '+' - 62, '/' - 63, 'A', 0, 0);
	size_t i = 0;
	for (; i + 16 <= n; i += 12, out += 16) {
		__m128i v = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(in + i)), spread);
		__m128i hi = _mm_mulhi_epu16(_mm_and_si128(v, _mm_set1_epi32(0x0fc0fc00)),
					     _mm_set1_epi32(0x04000040));
		__m128i lo = _mm_mullo_epi16(_mm_and_si128(v, _mm_set1_epi32(0x003f03f0)),
					     _mm_set1_epi32(0x01000010));
		__m128i idx = _mm_or_si128(hi, lo);
		/* 0..51 -> 0, 52..61 -> 1..10, 62 -> 11, 63 -> 12; then 0..25 -> 13 */
		__m128i r = _mm_subs_epu8(idx, _mm_set1_epi8(51));
		__m128i upper = _mm_cmpgt_epi8(_mm_set1_epi8(26), idx);
		r = _mm_or_si128(r, _mm_and_si128(upper, _mm_set1_epi8(13)));
		r = _mm_add_epi8(_mm_shuffle_epi8(shift_lut, r), idx);
		_mm_storeu_si128((__m128i *)out, r);
	}
	return i;
}

#endif

int json_base64_scalar; /* tests: 1 forces the scalar code */

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
#ifdef JSON_X86
	if (!json_base64_scalar && have_ssse3()) {
		i = b64_ssse3(p, n, o);
		o += i / 3 * 4;
	}
#endif
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		memcpy(o, &b64_pairs[v >> 12], 2);
		memcpy(o + 2, &b64_pairs[v & 4095], 2);
		o += 4;
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
