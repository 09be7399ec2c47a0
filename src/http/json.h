/* JSON text for records: strings escaped, byte strings as UTF-8 text or base64 (json.c). */
#ifndef TLSMIRROR_HTTP_JSON_H
#define TLSMIRROR_HTTP_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "transforms/h2_h1.h"

/* Each appends to b (bounded by b->cap) and returns 0, or -E2BIG/-ENOMEM
 * (b may then hold part of it: the caller drops the record). */

/* A JSON string of p[0..n): UTF-8 kept, controls and '"' '\\' escaped;
 * a byte that is not part of valid UTF-8 is written as the code point of
 * the same value (U+0080..U+00FF, Latin-1), so any bytes give valid JSON. */
int json_str(struct h2_buf *b, const void *p, size_t n);
/* The same for bytes shown as text only if they are UTF-8 without NUL:
 * -EILSEQ (nothing appended) otherwise. One pass: no json_is_utf8 first. */
int json_text(struct h2_buf *b, const void *p, size_t n);
int json_cstr(struct h2_buf *b, const char *s);
/* [name,value] as two JSON strings (a ',' first if comma): one field of a head. */
int json_pair(struct h2_buf *b, int comma, const void *name, size_t nlen, const void *value,
	      size_t vlen);
/* The same for a name and value known to be JSON string text as they are. */
int json_pair_plain(struct h2_buf *b, int comma, const void *name, size_t nlen,
		    const void *value, size_t vlen);
int json_raw(struct h2_buf *b, const char *s);
/* A literal: its length known at compile time. */
#define JSON_LIT(b, lit) h2_buf_put((b), (lit), sizeof(lit) - 1)
int json_u64(struct h2_buf *b, uint64_t v);
int json_i64(struct h2_buf *b, int64_t v);
/* A JSON string of p[0..n) in base64 (RFC 4648, padded). */
int json_base64(struct h2_buf *b, const void *p, size_t n);
/* The vector code used, at most (tests: 0 scalar, 1 SSSE3, 2 AVX-512);
 * the CPU's best by default. */
extern int json_simd;
/*
 * The same at a pointer, for a writer that made room for a whole record at
 * once: each writes at o and returns the end. Room needed: JSON_STR_ROOM(n)
 * for a string (vector stores may go JSON_SLACK bytes past its end),
 * JSON_B64_ROOM(n) for base64, 20 for a number. json_w_text returns NULL
 * (having written garbage) if the bytes are not UTF-8 without NUL.
 */
#define JSON_SLACK 64
#define JSON_STR_ROOM(n) (6 * (size_t)(n) + 2 + JSON_SLACK)
#define JSON_B64_ROOM(n) (((size_t)(n) + 2) / 3 * 4 + 2)
uint8_t *json_w_str(uint8_t *o, const void *p, size_t n);
uint8_t *json_w_text(uint8_t *o, const void *p, size_t n);
uint8_t *json_w_base64(uint8_t *o, const void *p, size_t n);
uint8_t *json_w_u64(uint8_t *o, uint64_t v);

/* 1 if p[0..n) is valid UTF-8 without NUL (shown as text). */
int json_is_utf8(const uint8_t *p, size_t n);

#endif
