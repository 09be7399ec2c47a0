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
int json_cstr(struct h2_buf *b, const char *s);
int json_raw(struct h2_buf *b, const char *s);
/* A literal: its length known at compile time. */
#define JSON_LIT(b, lit) h2_buf_put((b), (lit), sizeof(lit) - 1)
int json_u64(struct h2_buf *b, uint64_t v);
int json_i64(struct h2_buf *b, int64_t v);
/* A JSON string of p[0..n) in base64 (RFC 4648, padded). */
int json_base64(struct h2_buf *b, const void *p, size_t n);
/* Set (tests): json_base64 uses its scalar code only. */
extern int json_base64_scalar;
/* 1 if p[0..n) is valid UTF-8 without NUL (shown as text). */
int json_is_utf8(const uint8_t *p, size_t n);

#endif
