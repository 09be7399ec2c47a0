/* HTTP/2 -> HTTP/1.1 helpers: bounded buffers, HPACK decoding into field lists, HTTP/1.1 heads. */
#include "transforms/h2_h1.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"

int h2_buf_grow(struct h2_buf *b, size_t n)
{
	if (n > b->cap || b->len > b->cap - n)
		return -E2BIG;
	if (b->len + n > b->size) {
		size_t sz = b->size ? b->size : 256;
		while (sz < b->len + n)
			sz *= 2;
		if (sz > b->cap)
			sz = b->cap;
		uint8_t *p = realloc(b->p, sz);
		if (!p)
			return -ENOMEM;
		b->p = p;
		b->size = sz;
	}
	return 0;
}

int h2_buf_str(struct h2_buf *b, const char *s)
{
	return h2_buf_put(b, s, strlen(s));
}

void h2_buf_free(struct h2_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->size = 0;
}

void h2_hdrs_reset(struct h2_hdrs *h)
{
	h->buf.len = 0;
	h->list_size = 0;
	/* the encoded list holds at most the cap plus 8 bytes of lengths per field */
	h->buf.cap = 2 * H2_MAX_HEADER_LIST;
}

int h2_hdrs_add(struct h2_hdrs *h, const void *name, size_t nlen, const void *value,
		size_t vlen)
{
	size_t add = nlen + vlen + 32;
	if (nlen > H2_MAX_HEADER_LIST || vlen > H2_MAX_HEADER_LIST ||
	    h->list_size > H2_MAX_HEADER_LIST - add)
		return -E2BIG;
	int err = h2_buf_grow(&h->buf, 8 + nlen + vlen);
	if (err)
		return err;
	uint8_t *o = h->buf.p + h->buf.len;
	put_be32(o, (uint32_t)nlen);
	put_be32(o + 4, (uint32_t)vlen);
	memcpy(o + 8, name, nlen);
	memcpy(o + 8 + nlen, value, vlen);
	h->buf.len += 8 + nlen + vlen;
	h->list_size += add;
	return 0;
}

int h2_hdrs_next(const struct h2_hdrs *h, size_t *pos, struct h2_field *f)
{
	if (!h->buf.p || h->buf.len - *pos < 8)
		return 0;
	struct reader r = { h->buf.p + *pos, h->buf.len - *pos };
	f->nlen = get_be32(r.p);
	f->vlen = get_be32(r.p + 4);
	f->name = r.p + 8;
	f->value = f->name + f->nlen;
	*pos += 8 + f->nlen + f->vlen;
	return 1;
}

/* f's name is the literal lit (its length compared first) */
#define IS(f, lit) ((f)->nlen == sizeof(lit) - 1 && !memcmp((f)->name, lit, sizeof(lit) - 1))

static int put_field(struct h2_buf *out, const uint8_t *name, size_t nlen,
		     const uint8_t *value, size_t vlen)
{
	size_t n = nlen + vlen + 4;
	int err = n > out->size - out->len ? h2_buf_grow(out, n) : 0;
	if (err)
		return err;
	uint8_t *p = out->p + out->len;
	if (nlen)
		memcpy(p, name, nlen);
	p[nlen] = ':';
	p[nlen + 1] = ' ';
	if (vlen)
		memcpy(p + nlen + 2, value, vlen);
	p[nlen + 2 + vlen] = '\r';
	p[nlen + 3 + vlen] = '\n';
	out->len += n;
	return 0;
}

/* Regular fields (no pseudo-headers), cookie crumbs joined into one field
 * where the first one was. *has_cl / *has_host tell what was there. */
static int put_fields(const struct h2_hdrs *h, struct h2_buf *out, int *has_cl,
		      int *has_host)
{
	struct h2_field f;
	size_t pos = 0;
	int cookie_done = 0, err = 0;
	while (!err && h2_hdrs_next(h, &pos, &f)) {
		if (f.nlen && f.name[0] == ':')
			continue;
		if (IS(&f, "content-length"))
			*has_cl = 1;
		if (IS(&f, "host"))
			*has_host = 1;
		if (!IS(&f, "cookie")) {
			err = put_field(out, f.name, f.nlen, f.value, f.vlen);
			continue;
		}
		if (cookie_done)
			continue;
		cookie_done = 1;
		err = h2_buf_str(out, "cookie: ");
		struct h2_field c;
		size_t cpos = 0;
		int first = 1;
		while (!err && h2_hdrs_next(h, &cpos, &c)) {
			if (!IS(&c, "cookie"))
				continue;
			if (!first)
				err = h2_buf_put(out, "; ", 2);
			if (!err)
				err = h2_buf_put(out, c.value, c.vlen);
			first = 0;
		}
		if (!err)
			err = h2_buf_put(out, "\r\n", 2);
	}
	return err;
}

/* The first field with this name (a pseudo-header or not), or NULL. */
static const struct h2_field *pseudo(const struct h2_hdrs *h, const char *name,
				     struct h2_field *f)
{
	size_t pos = 0;
	size_t n = strlen(name);
	while (h2_hdrs_next(h, &pos, f))
		if (f->nlen == n && !memcmp(f->name, name, n))
			return f;
	return NULL;
}

/* The first field of each name a request head is made from, in one pass. */
struct req_fields {
	struct h2_field m, p, a;
	int have_m, have_p, have_a, have_host;
};

static void req_fields(const struct h2_hdrs *h, struct req_fields *r)
{
	struct h2_field f;
	size_t pos = 0;
	memset(r, 0, sizeof(*r));
	while (h2_hdrs_next(h, &pos, &f)) {
		if (!r->have_m && IS(&f, ":method")) {
			r->m = f;
			r->have_m = 1;
		} else if (!r->have_p && IS(&f, ":path")) {
			r->p = f;
			r->have_p = 1;
		} else if (!r->have_a && IS(&f, ":authority")) {
			r->a = f;
			r->have_a = 1;
		} else if (IS(&f, "host")) {
			r->have_host = 1;
		}
	}
}

int h2_h1_request(const struct h2_hdrs *h, int end_stream, struct h2_buf *out,
		  struct h2_head_info *hi)
{
	struct req_fields r;
	memset(hi, 0, sizeof(*hi));
	req_fields(h, &r);
	const struct h2_field *m = &r.m, *p = &r.p, *a = &r.a;
	if (!r.have_m)
		return -EPROTO;
	int connect = m->vlen == 7 && !memcmp(m->value, "CONNECT", 7);
	if ((!connect && !r.have_p) || (connect && !r.have_a))
		return -EPROTO;
	hi->head_method = m->vlen == 4 && !memcmp(m->value, "HEAD", 4);
	int err = h2_buf_put(out, m->value, m->vlen);
	if (!err)
		err = h2_buf_put(out, " ", 1);
	if (!err)
		err = connect ? h2_buf_put(out, a->value, a->vlen) : h2_buf_put(out, p->value, p->vlen);
	if (!err)
		err = h2_buf_str(out, " HTTP/1.1\r\n");
	int has_cl = 0, has_host = 0;
	if (!err && r.have_a && !r.have_host)
		err = put_field(out, (const uint8_t *)"Host", 4, a->value, a->vlen);
	if (!err)
		err = put_fields(h, out, &has_cl, &has_host);
	if (!err && !end_stream && !has_cl) {
		hi->chunked = 1;
		err = h2_buf_str(out, "transfer-encoding: chunked\r\n");
	}
	if (!err)
		err = h2_buf_put(out, "\r\n", 2);
	return err;
}

const char *http_reason(unsigned status)
{
	switch (status) {
	case 100: return "Continue";
	case 103: return "Early Hints";
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	}
	return "Status";
}

int h2_h1_response(const struct h2_hdrs *h, int end_stream, int head_req,
		   struct h2_buf *out, struct h2_head_info *hi)
{
	struct h2_field s;
	memset(hi, 0, sizeof(*hi));
	if (!pseudo(h, ":status", &s) || s.vlen != 3)
		return -EPROTO;
	unsigned status = 0;
	for (int i = 0; i < 3; i++) {
		if (s.value[i] < '0' || s.value[i] > '9')
			return -EPROTO;
		status = status * 10 + (unsigned)(s.value[i] - '0');
	}
	if (status < 100)
		return -EPROTO;
	hi->informational = status < 200;
	int has_cl = 0, has_host = 0;
	int err = h2_buf_str(out, "HTTP/1.1 ");
	if (!err)
		err = h2_buf_put(out, s.value, 3);
	if (!err)
		err = h2_buf_put(out, " ", 1);
	if (!err)
		err = h2_buf_str(out, http_reason(status));
	if (!err)
		err = h2_buf_put(out, "\r\n", 2);
	if (!err)
		err = put_fields(h, out, &has_cl, &has_host);
	int bodyless = hi->informational || status == 204 || status == 304 || head_req;
	hi->bodyless = bodyless;
	if (!err && !bodyless && !has_cl) {
		if (end_stream) {
			err = h2_buf_str(out, "content-length: 0\r\n");
		} else {
			hi->chunked = 1;
			err = h2_buf_str(out, "transfer-encoding: chunked\r\n");
		}
	}
	if (!err)
		err = h2_buf_put(out, "\r\n", 2);
	return err;
}

int h2_h1_trailers(const struct h2_hdrs *h, struct h2_buf *out)
{
	struct h2_field f;
	size_t pos = 0;
	int err = h2_buf_str(out, "0\r\n");
	while (!err && h2_hdrs_next(h, &pos, &f))
		if (!(f.nlen && f.name[0] == ':'))
			err = put_field(out, f.name, f.nlen, f.value, f.vlen);
	if (!err)
		err = h2_buf_put(out, "\r\n", 2);
	return err;
}
