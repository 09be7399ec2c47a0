/* HTTP/2 -> HTTP/1.1 helpers: bounded buffers, decoded header lists (HPACK) and HTTP/1.1 heads. */
#ifndef TLSMIRROR_H2_H1_H
#define TLSMIRROR_H2_H1_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A growable byte buffer that never grows beyond cap. */
struct h2_buf {
	uint8_t *p;
	size_t len, size, cap;
};

/* Makes room for n more bytes. Returns 0, -E2BIG past the cap, -ENOMEM. */
int h2_buf_grow(struct h2_buf *b, size_t n);

/* Appends n bytes. Returns 0, -E2BIG past the cap, -ENOMEM. Inline: heads
 * are written a few bytes at a time. */
static inline int h2_buf_put(struct h2_buf *b, const void *data, size_t n)
{
	if (n > b->size - b->len) {
		int err = h2_buf_grow(b, n);
		if (err)
			return err;
	}
	if (n)
		memcpy(b->p + b->len, data, n);
	b->len += n;
	return 0;
}
int h2_buf_str(struct h2_buf *b, const char *s);
void h2_buf_free(struct h2_buf *b);

/*
 * One decoded header block: fields stored as [be32 name len][be32 value
 * len][name][value] in buf. list_size counts name + value + 32 per field (as
 * SETTINGS_MAX_HEADER_LIST_SIZE does) and is capped (H2_MAX_HEADER_LIST).
 */
#define H2_MAX_HEADER_LIST (256u * 1024)
struct h2_hdrs {
	struct h2_buf buf;
	size_t list_size;
};

struct h2_field {
	const uint8_t *name, *value;
	size_t nlen, vlen;
};

void h2_hdrs_reset(struct h2_hdrs *h);
/* Appends a field (copied). Returns 0, -E2BIG past the list cap, -ENOMEM. */
int h2_hdrs_add(struct h2_hdrs *h, const void *name, size_t nlen, const void *value,
		size_t vlen);
/* Iterates: *pos starts at 0. Returns 1 with *f filled, 0 at the end. */
int h2_hdrs_next(const struct h2_hdrs *h, size_t *pos, struct h2_field *f);

/*
 * h2_check.c: RFC 9113 §8.2-8.3 rules for a decoded block before it is
 * written as HTTP/1.1 (the writers below copy names and values as they are,
 * so they must only see checked blocks). Values: no NUL, CR or LF, no
 * leading or trailing SP/HTAB. Regular names: non-empty lower-case tokens.
 * Pseudo-headers: only the defined ones, each once, before every regular
 * field. No connection-specific field (connection, keep-alive,
 * proxy-connection, transfer-encoding, upgrade; te other than "trailers").
 * content-length: digits, at most once (*clen gets it, -1 without).
 * Requests: :method a token; :scheme and :path (origin form, no white
 * space, "*" only for OPTIONS) unless CONNECT, which has :authority only;
 * :authority host[:port] without userinfo (not empty for CONNECT), the
 * same as the host field if there is one (at most one host field);
 * :protocol only with CONNECT.
 * Responses: :status of 3 digits (1xx-5xx, not 101) only. Trailers: no
 * pseudo-headers. Each returns 0 or -EBADMSG (malformed).
 */
int h2_check_request(const struct h2_hdrs *h, int64_t *clen);
int h2_check_response(const struct h2_hdrs *h, int64_t *clen);
int h2_check_trailers(const struct h2_hdrs *h);

/* What the HTTP/1.1 head says about the message that follows. */
struct h2_head_info {
	int chunked;        /* body in chunked transfer coding */
	int informational;  /* a 1xx response: the final one follows */
	int head_method;    /* request: HEAD (its response has no body) */
	int bodyless;       /* response: 1xx, 204, 304 or to HEAD (no body may follow) */
};

/*
 * Appends the HTTP/1.1 request head for a request header block that
 * h2_check_request() accepted:
 * request line from :method/:path (:authority for CONNECT), Host from
 * :authority unless a host field exists, the other fields as they are
 * (cookie crumbs joined with "; "), then Transfer-Encoding: chunked when a
 * body follows (!end_stream) without content-length. Returns 0, -EPROTO
 * (no :method), -E2BIG/-ENOMEM.
 */
int h2_h1_request(const struct h2_hdrs *h, int end_stream, struct h2_buf *out,
		  struct h2_head_info *hi);

/* The same for a response (:status). head_req: the request was HEAD. */
int h2_h1_response(const struct h2_hdrs *h, int end_stream, int head_req,
		   struct h2_buf *out, struct h2_head_info *hi);

/* The standard reason phrase of a status ("OK"; "" for one without). */
const char *http_reason(unsigned status);

/* Trailer fields after the last chunk: "0\r\n" fields "\r\n". */
int h2_h1_trailers(const struct h2_hdrs *h, struct h2_buf *out);

#endif
