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

/* plain() by table */
static uint8_t plain_tab[256];

__attribute__((constructor)) static void plain_init(void)
{
	for (unsigned c = 0; c < 256; c++)
		plain_tab[c] = (uint8_t)plain((uint8_t)c);
}

/* pshufb indices moving a vector down by 16 - k bytes: load at shift_down + 16 - k */
static const uint8_t shift_down[32] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
	0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80 };

int json_simd = 2; /* the best code the CPU has, up to this (tests lower it) */

#ifdef JSON_X86
/* 0 scalar, 1 SSSE3, 2 AVX-512 (BW, VL, VBMI, VBMI2: Ice Lake, Zen 4 and later) */
static int cpu_level(void)
{
	static int v = -1;
	if (v < 0) {
		v = 0;
		if (__builtin_cpu_supports("ssse3"))
			v = 1;
		if (v && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
		    __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vbmi2") &&
		    __builtin_cpu_supports("popcnt"))
			v = 2;
	}
	return v < json_simd ? v : json_simd;
}

static int have_ssse3(void)
{
	return cpu_level() >= 1;
}

static int have_avx512(void)
{
	return cpu_level() >= 2;
}

/* For 8 bytes whose '"' and '\\' are the bits of m (the rest printable
 * ASCII): which source byte each output byte is (8: a backslash), and how
 * many output bytes there are. */
static uint8_t esc_shuf[256][16] __attribute__((aligned(16)));
static uint8_t esc_len[256];
static uint16_t esc_chars[256];

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
		/* where the 8 bytes land among the k output bytes (the others: backslashes) */
		unsigned pos = 0, cm = 0;
		for (unsigned j = 0; j < 8; j++) {
			pos += (m >> j) & 1;
			cm |= 1u << pos++;
		}
		esc_chars[m] = (uint16_t)cm;
	}
}

/* 16 bytes of v, a backslash before each one in m, at o (16 bytes may be
 * written past the end: the caller made room). */
__attribute__((target("ssse3"))) static inline uint8_t *esc16(__m128i v, unsigned m, uint8_t *o)
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


/* one_char for a caller whose output pointer stays in a register (its
 * address is never taken) */
static inline size_t one_char_at(const uint8_t *p, size_t n, uint8_t **out)
{
	uint8_t *t = *out;
	size_t k = one_char(p, n, &t);
	*out = t;
	return k;
}

#ifdef JSON_X86
/*
 * p[0..n) as JSON string text at o (no quotes); returns the end, or NULL
 * when strict and the bytes are not UTF-8 without NUL. 16 bytes at a time:
 * printable ASCII is stored as it is; where the only others are '"' and
 * '\\' (JSON text in a body: one every few bytes), each byte is written with
 * a backslash before it or not, without a branch (esc16, inlined here); a
 * control or non-ASCII byte goes one by one. The last block is read from a
 * padded copy: never a byte past the end of p.
 */
__attribute__((target("ssse3"))) static uint8_t *str_ssse3(const uint8_t *p, size_t n, uint8_t *o,
							    int strict)
{
	const __m128i sp = _mm_set1_epi8(0x20), q = _mm_set1_epi8('"');
	const __m128i bs = _mm_set1_epi8('\\');
	size_t i = 0;
	while (i < n) {
		size_t k = n - i;
		__m128i v;
		if (k >= 16) {
			v = _mm_loadu_si128((const __m128i *)(p + i));
			k = 16;
		} else if (n >= 16) {
			/* the last 16 bytes, moved down past those done: no read past the end */
			v = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + n - 16)),
					     _mm_loadu_si128((const __m128i *)(shift_down + 16 - k)));
		} else {
			break; /* a short string: the scalar loop below */
		}
		unsigned live = k == 16 ? 0xffff : (1u << k) - 1;
		unsigned ctl = (unsigned)_mm_movemask_epi8(_mm_cmplt_epi8(v, sp)) & live;
		unsigned esc = (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, q),
									  _mm_cmpeq_epi8(v, bs)));
		size_t take = ctl ? (size_t)__builtin_ctz(ctl) : k;
		esc &= (1u << take) - 1;
		if (take == 16 && !esc) {
			_mm_storeu_si128((__m128i *)o, v);
			o += 16;
		} else if (take) {
			uint8_t *o0 = o;
			esc16(v, esc, o);
			o = o0 + take + esc_len[esc & 255] + esc_len[esc >> 8] - 16;
		}
		i += take;
		if (ctl) {
			if (strict && (!p[i] || (p[i] >= 0x80 && !utf8_len(p + i, n - i))))
				return NULL;
			i += one_char_at(p + i, n - i, &o);
		}
	}
	while (i < n) {
		uint8_t c = p[i];
		if (plain_tab[c]) {
			*o++ = c;
			i++;
			continue;
		}
		if (strict && (!c || (c >= 0x80 && !utf8_len(p + i, n - i))))
			return NULL;
		i += one_char_at(p + i, n - i, &o);
	}
	return o;
}
#endif

#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt,bmi2")))

#ifdef JSON_X86
/*
 * The same with AVX-512, 32 bytes at a time: where a block has '"' or '\\',
 * VBMI2's byte expand spreads its bytes over 32 + escapes output bytes and
 * a masked move puts the backslashes in the gaps: one 64-byte store per
 * block. Whole blocks of printable ASCII go without a branch on their bytes
 * (escapes or not: a mispredicted branch per block cost more than the
 * expand): the char positions come from the escape mask with BMI2 (each
 * input bit as two bits, "01" escaped and "1" not, compacted by pext). A
 * block with a control or non-ASCII byte, and the last one (a masked load:
 * no read past the end), go the careful way.
 */
AVX512_TARGET static uint8_t *str_avx512(const uint8_t *p, size_t n, uint8_t *o, int strict)
{
	const __m256i sp = _mm256_set1_epi8(0x20), q = _mm256_set1_epi8('"');
	const __m256i bs = _mm256_set1_epi8('\\');
	const __m512i bsl = _mm512_set1_epi8('\\');
	const uint64_t odd = 0xaaaaaaaaaaaaaaaaull, even = 0x5555555555555555ull;
	size_t i = 0;
	while (i < n) {
		while (i + 32 <= n) {
			__m256i v = _mm256_loadu_si256((const __m256i *)(p + i));
			if (__builtin_expect(_mm256_cmplt_epi8_mask(v, sp) != 0, 0))
				break;
			uint32_t esc = _mm256_cmpeq_epi8_mask(v, q) | _mm256_cmpeq_epi8_mask(v, bs);
			uint64_t e2 = _pdep_u64(esc, odd);
			uint64_t chars = _pext_u64(e2 | _pdep_u64(~esc, even), e2 | even);
			__m512i x = _mm512_maskz_expand_epi8(chars, _mm512_castsi256_si512(v));
			_mm512_storeu_si512((void *)o, _mm512_mask_mov_epi8(x, ~chars, bsl));
			o += 32 + (size_t)__builtin_popcount(esc);
			i += 32;
		}
		if (i >= n)
			break;
		size_t k = n - i;
		uint32_t live = 0xffffffffu;
		__m256i v;
		if (k >= 32) {
			v = _mm256_loadu_si256((const __m256i *)(p + i));
			k = 32;
		} else {
			live = (1u << k) - 1;
			v = _mm256_maskz_loadu_epi8(live, p + i);
		}
		uint32_t ctl = _mm256_cmplt_epi8_mask(v, sp) & live; /* signed: non-ASCII too */
		uint32_t esc = _mm256_cmpeq_epi8_mask(v, q) | _mm256_cmpeq_epi8_mask(v, bs);
		size_t take = ctl ? (size_t)__builtin_ctz(ctl) : k;
		esc &= take == 32 ? 0xffffffffu : (1u << take) - 1;
		if (!esc) {
			_mm256_storeu_si256((__m256i *)o, v);
			o += take;
		} else if (take) {
			uint64_t chars = 0;
			unsigned at = 0;
			for (unsigned g = 0; g < 4; g++) {
				unsigned m = (esc >> (8 * g)) & 255;
				chars |= (uint64_t)esc_chars[m] << at;
				at += esc_len[m];
			}
			__m512i x = _mm512_maskz_expand_epi8(chars, _mm512_castsi256_si512(v));
			x = _mm512_mask_mov_epi8(x, ~chars, bsl);
			_mm512_storeu_si512((void *)o, x);
			o += take + (size_t)__builtin_popcount(esc);
		}
		i += take;
		if (ctl) {
			if (strict && (!p[i] || (p[i] >= 0x80 && !utf8_len(p + i, n - i))))
				return NULL;
			i += one_char_at(p + i, n - i, &o);
		}
	}
	return o;
}
#endif

static uint8_t *str_scalar(const uint8_t *p, size_t n, uint8_t *o, int strict)
{
	size_t i = 0;
	while (i < n) {
		while (i < n && plain(p[i]))
			*o++ = p[i++];
		if (i < n) {
			if (strict && (!p[i] || (p[i] >= 0x80 && !utf8_len(p + i, n - i))))
				return NULL;
			i += one_char_at(p + i, n - i, &o);
		}
	}
	return o;
}

static uint8_t *str_best(const uint8_t *p, size_t n, uint8_t *o, int strict)
{
#ifdef JSON_X86
	if (have_avx512())
		return str_avx512(p, n, o, strict);
	if (have_ssse3())
		return str_ssse3(p, n, o, strict);
#endif
	return str_scalar(p, n, o, strict);
}

/* Room for need more bytes of b at *o: 0, or h2_buf_grow's error. */
static int room_at(struct h2_buf *b, size_t need, uint8_t **o)
{
	if (need > b->size - b->len) {
		int err = h2_buf_grow(b, need);
		if (err)
			return err;
	}
	*o = b->p + b->len;
	return 0;
}

/* The string with its quotes; -EILSEQ (nothing appended) if strict and not text. */
static int put_str(struct h2_buf *b, const void *data, size_t n, int strict)
{
	/* room for the worst case (every byte a \u00XX) at once: no check per byte */
	uint8_t *o, *e;
	if (n > (SIZE_MAX - 2 - JSON_SLACK) / 6)
		return -E2BIG;
	int err = room_at(b, JSON_STR_ROOM(n), &o);
	if (err)
		return err;
	e = strict ? json_w_text(o, data, n) : json_w_str(o, data, n);
	if (!e)
		return -EILSEQ;
	b->len = (size_t)(e - b->p);
	return 0;
}

int json_str(struct h2_buf *b, const void *data, size_t n)
{
	return put_str(b, data, n, 0);
}

static uint8_t *str_any(const uint8_t *p, size_t n, uint8_t *o)
{
	return str_best(p, n, o, 0);
}

int json_pair_plain(struct h2_buf *b, int comma, const void *name, size_t nlen,
		    const void *value, size_t vlen)
{
	uint8_t *o;
	if (nlen > SIZE_MAX / 4 || vlen > SIZE_MAX / 4)
		return -E2BIG;
	int err = room_at(b, nlen + vlen + 8, &o);
	if (err)
		return err;
	if (comma)
		*o++ = ',';
	memcpy(o, "[\"", 2);
	memcpy(o + 2, name, nlen);
	o += 2 + nlen;
	memcpy(o, "\",\"", 3);
	memcpy(o + 3, value, vlen);
	o += 3 + vlen;
	memcpy(o, "\"]", 2);
	b->len = (size_t)(o + 2 - b->p);
	return 0;
}

int json_pair(struct h2_buf *b, int comma, const void *name, size_t nlen, const void *value,
	      size_t vlen)
{
	uint8_t *o;
	if (nlen > SIZE_MAX / 16 || vlen > SIZE_MAX / 16)
		return -E2BIG;
	int err = room_at(b, 6 * (nlen + vlen) + 8 + 2 * JSON_SLACK, &o);
	if (err)
		return err;
	if (comma)
		*o++ = ',';
	*o++ = '[';
	*o++ = '"';
	o = str_any(name, nlen, o);
	memcpy(o, "\",\"", 3);
	o = str_any(value, vlen, o + 3);
	memcpy(o, "\"]", 2);
	b->len = (size_t)(o + 2 - b->p);
	return 0;
}

int json_text(struct h2_buf *b, const void *data, size_t n)
{
	return put_str(b, data, n, 1);
}

uint8_t *json_w_str(uint8_t *o, const void *p, size_t n)
{
	*o++ = '"';
	o = str_any(p, n, o);
	*o++ = '"';
	return o;
}

uint8_t *json_w_text(uint8_t *o, const void *p, size_t n)
{
	*o++ = '"';
	o = str_best(p, n, o, 1);
	if (!o)
		return NULL;
	*o++ = '"';
	return o;
}

uint8_t *json_w_u64(uint8_t *o, uint64_t v)
{
	/* the length from the powers of ten, then two digits per division
	 * from a table, back to front */
	static const char d2[] = "00010203040506070809101112131415161718192021222324"
				 "25262728293031323334353637383940414243444546474849"
				 "50515253545556575859606162636465666768697071727374"
				 "75767778798081828384858687888990919293949596979899";
	unsigned k = 1;
	for (uint64_t p10 = 10; k < 20 && v >= p10; p10 *= 10)
		k++;
	uint8_t *e = o + k, *b = e;
	while (v >= 100) {
		unsigned r = (unsigned)(v % 100);
		v /= 100;
		b -= 2;
		memcpy(b, d2 + 2 * r, 2);
	}
	if (v >= 10)
		memcpy(b - 2, d2 + 2 * v, 2);
	else
		b[-1] = (uint8_t)('0' + v);
	return e;
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

#ifdef JSON_X86
/*
 * 48 bytes to 64 characters per step with AVX-512 VBMI: a byte permute puts
 * each 3-byte group into a 32-bit lane as b1 b0 b2 b1, a multishift takes
 * the four 6-bit indices out of it (bit offsets 10, 4, 22, 16), and a
 * second permute looks them up in the 64-character alphabet. Reads exactly
 * 48 bytes per step (a masked load); returns the input bytes done.
 */
AVX512_TARGET static size_t b64_avx512(const uint8_t *in, size_t n, uint8_t *out)
{
	static const char alphabet[64] __attribute__((aligned(64))) =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const __m512i spread = _mm512_setr_epi32(
		0x01020001, 0x04050304, 0x07080607, 0x0a0b090a, 0x0d0e0c0d, 0x10110f10,
		0x13141213, 0x16171516, 0x191a1819, 0x1c1d1b1c, 0x1f201e1f, 0x22232122,
		0x25262425, 0x28292728, 0x2b2c2a2b, 0x2e2f2d2e);
	const __m512i shifts = _mm512_set1_epi64(0x3036242a1016040aLL);
	const __m512i lut = _mm512_load_si512((const void *)alphabet);
	size_t i = 0;
	for (; i + 48 <= n; i += 48, out += 64) {
		__m512i v = _mm512_maskz_loadu_epi8(0x0000ffffffffffffull, in + i);
		v = _mm512_permutexvar_epi8(spread, v);
		v = _mm512_multishift_epi64_epi8(shifts, v);
		_mm512_storeu_si512((void *)out, _mm512_permutexvar_epi8(v, lut));
	}
	return i;
}
#endif

int json_base64(struct h2_buf *b, const void *data, size_t n)
{
	if (n > SIZE_MAX / 2)
		return -E2BIG;
	uint8_t *o;
	int err = room_at(b, JSON_B64_ROOM(n), &o);
	if (err)
		return err;
	o = json_w_base64(o, data, n);
	b->len = (size_t)(o - b->p);
	return 0;
}

uint8_t *json_w_base64(uint8_t *o, const void *data, size_t n)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const uint8_t *p = data;
	*o++ = '"';
	size_t i = 0;
#ifdef JSON_X86
	if (have_avx512()) {
		i = b64_avx512(p, n, o);
		o += i / 3 * 4;
	}
	if (have_ssse3()) {
		size_t k = b64_ssse3(p + i, n - i, o);
		i += k;
		o += k / 3 * 4;
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
	return o;
}
