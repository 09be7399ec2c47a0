/* RFC 9113 §8.2-8.3 checks of decoded HTTP/2 field lists before they are written as HTTP/1.1. */
#include "transforms/h2_h1.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

/*
 * Everything the HTTP/1.1 writer copies must be unable to end a line or a
 * head: a field that breaks a rule of RFC 9113 §8.2.1 (names, values),
 * §8.2.2 (connection-specific fields), §8.3 (pseudo-headers) or RFC 9110's
 * syntax of the request line makes the message malformed (-EBADMSG), and
 * the connection is then mirrored as the HTTP/2 it was.
 */

enum {
	P_METHOD = 1, P_SCHEME = 2, P_AUTHORITY = 4, P_PATH = 8, P_PROTOCOL = 16, P_STATUS = 32
};
#define NPSEUDO 6

/* A name and its length, for comparisons that look at the length first. */
struct name {
	const char *s;
	size_t n;
};
#define NAME(lit) { lit, sizeof(lit) - 1 }

/* The pseudo-headers, in the order of the P_ bits. */
static const struct name pseudo_names[NPSEUDO] = {
	NAME(":method"), NAME(":scheme"), NAME(":authority"), NAME(":path"), NAME(":protocol"),
	NAME(":status")
};

/* Fields that belong to one HTTP/1.1 hop, never to HTTP/2 (§8.2.2). */
static const struct name hop_names[] = {
	NAME("connection"), NAME("keep-alive"), NAME("proxy-connection"),
	NAME("transfer-encoding"), NAME("upgrade")
};

/* Character classes, one table look-up per byte. */
enum {
	C_ALPHA = 1, C_DIGIT = 2,
	C_TCHAR = 4,      /* RFC 9110 §5.6.2 tchar */
	C_NAME = 8,       /* tchar but upper case: a regular field name (§8.2.1) */
	C_BADVAL = 16,    /* NUL, CR, LF: never in a value */
	C_SCHEME = 32,    /* RFC 3986 scheme after its first letter */
	C_AUTH = 64       /* host [":" port] without userinfo */
};
#define UPPER ['A' ... 'Z'] = C_ALPHA | C_TCHAR | C_SCHEME | C_AUTH
#define LOWER ['a' ... 'z'] = C_ALPHA | C_TCHAR | C_NAME | C_SCHEME | C_AUTH
#define DIGIT ['0' ... '9'] = C_DIGIT | C_TCHAR | C_NAME | C_SCHEME | C_AUTH
#define T C_TCHAR | C_NAME
static const uint8_t cls[256] = {
	[0] = C_BADVAL, ['\r'] = C_BADVAL, ['\n'] = C_BADVAL,
	UPPER, LOWER, DIGIT,
	['!'] = T | C_AUTH, ['#'] = T, ['$'] = T | C_AUTH, ['%'] = T | C_AUTH,
	['&'] = T | C_AUTH, ['\''] = T | C_AUTH, ['*'] = T | C_AUTH,
	['+'] = T | C_SCHEME | C_AUTH, ['-'] = T | C_SCHEME | C_AUTH,
	['.'] = T | C_SCHEME | C_AUTH, ['^'] = T, ['_'] = T | C_AUTH, ['`'] = T, ['|'] = T,
	['~'] = T | C_AUTH,
	['('] = C_AUTH, [')'] = C_AUTH, [','] = C_AUTH, [';'] = C_AUTH, ['='] = C_AUTH,
	[':'] = C_AUTH, ['['] = C_AUTH, [']'] = C_AUTH,
};
#undef UPPER
#undef LOWER
#undef DIGIT
#undef T

static int is_digit(uint8_t c)
{
	return cls[c] & C_DIGIT;
}

/* Every byte of p[0..n) in class want. */
static int all_in(const uint8_t *p, size_t n, uint8_t want)
{
	uint8_t all = want;
	for (size_t i = 0; i < n; i++)
		all &= cls[p[i]];
	return all == want;
}

static int eq(const uint8_t *p, size_t n, const char *s)
{
	return n == strlen(s) && !memcmp(p, s, n);
}

static int is_name(const uint8_t *p, size_t n, const struct name *nm)
{
	return n == nm->n && !memcmp(p, nm->s, n);
}

static int token_ok(const uint8_t *p, size_t n)
{
	return n && all_in(p, n, C_TCHAR);
}

/* A regular field name: a non-empty token without upper case (§8.2.1). */
static int name_ok(const uint8_t *p, size_t n)
{
	return n && all_in(p, n, C_NAME);
}

static int value_ok(const uint8_t *p, size_t n)
{
	uint8_t any = 0;
	if (n && (p[0] == ' ' || p[0] == '\t' || p[n - 1] == ' ' || p[n - 1] == '\t'))
		return 0;
	for (size_t i = 0; i < n; i++)
		any |= cls[p[i]];
	return !(any & C_BADVAL);
}

static int connection_specific(const struct h2_field *f)
{
	for (size_t i = 0; i < sizeof(hop_names) / sizeof(hop_names[0]); i++)
		if (is_name(f->name, f->nlen, &hop_names[i]))
			return 1;
	return f->nlen == 2 && !memcmp(f->name, "te", 2) &&
	       !(f->vlen == 8 && !strncasecmp((const char *)f->value, "trailers", 8));
}

/* content-length: 1*DIGIT, at most one field (RFC 9110 §8.6). */
static int content_length(const struct h2_field *f, int64_t *clen)
{
	if (*clen >= 0 || !f->vlen || f->vlen > 18)
		return -EBADMSG;
	int64_t v = 0;
	for (size_t i = 0; i < f->vlen; i++) {
		if (!is_digit(f->value[i]))
			return -EBADMSG;
		v = v * 10 + (f->value[i] - '0');
	}
	*clen = v;
	return 0;
}

/* The index of a pseudo-header in pseudo_names, or -1. */
static int pseudo_index(const struct h2_field *f)
{
	for (int i = 0; i < NPSEUDO; i++)
		if (is_name(f->name, f->nlen, &pseudo_names[i]))
			return i;
	return -1;
}

/* What one pass over a block found. */
struct seen {
	unsigned bits;                 /* P_ of the pseudo-headers present */
	struct h2_field p[NPSEUDO];    /* each of them, by index of pseudo_names */
	int64_t clen;                  /* content-length, -1 without one */
	struct h2_field host;          /* the host field (nlen 0: none) */
};

/*
 * The rules every block shares: names and values, pseudo-headers (only those
 * in `allowed`, each once, all before the regular fields), no
 * connection-specific field, content-length. *sn gets what was there.
 */
static int check_fields(const struct h2_hdrs *h, unsigned allowed, struct seen *sn)
{
	static const struct name clen = NAME("content-length"), host = NAME("host");
	struct h2_field f;
	size_t pos = 0;
	int regular = 0;
	sn->bits = 0;
	sn->clen = -1;
	sn->host.nlen = 0;
	while (h2_hdrs_next(h, &pos, &f)) {
		if (!value_ok(f.value, f.vlen))
			return -EBADMSG;
		if (f.nlen && f.name[0] == ':') {
			int i = pseudo_index(&f);
			unsigned bit = i < 0 ? 0 : 1u << i;
			if (regular || !(bit & allowed) || (sn->bits & bit))
				return -EBADMSG;
			sn->bits |= bit;
			sn->p[i] = f;
			continue;
		}
		regular = 1;
		if (!name_ok(f.name, f.nlen) || connection_specific(&f))
			return -EBADMSG;
		if (is_name(f.name, f.nlen, &clen) && content_length(&f, &sn->clen))
			return -EBADMSG;
		if (is_name(f.name, f.nlen, &host)) {
			if (sn->host.nlen)
				return -EBADMSG; /* one Host only (RFC 9110 §7.2) */
			sn->host = f;
		}
	}
	return 0;
}

/* RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
static int scheme_ok(const struct h2_field *f)
{
	return f->vlen && (cls[f->value[0]] & C_ALPHA) &&
	       all_in(f->value + 1, f->vlen - 1, C_SCHEME);
}

/* host [":" port] of RFC 3986 without userinfo (§8.3.1): no "@", "/", "?",
 * "#", white space or control characters (empty: no authority). */
static int authority_ok(const struct h2_field *f)
{
	return all_in(f->value, f->vlen, C_AUTH);
}

/* An origin-form target ("/..." without white space or controls), or "*"
 * for OPTIONS (§8.3.1, RFC 9110 §7.1). */
static int path_ok(const struct h2_field *f, const struct h2_field *m)
{
	if (eq(f->value, f->vlen, "*"))
		return eq(m->value, m->vlen, "OPTIONS");
	if (!f->vlen || f->value[0] != '/')
		return 0;
	for (size_t i = 0; i < f->vlen; i++)
		if (f->value[i] <= 0x20 || f->value[i] == 0x7f)
			return 0;
	return 1;
}

int h2_check_request(const struct h2_hdrs *h, int64_t *clen)
{
	struct seen sn;
	int err = check_fields(h, P_METHOD | P_SCHEME | P_AUTHORITY | P_PATH | P_PROTOCOL, &sn);
	*clen = sn.clen;
	if (err)
		return err;
	unsigned seen = sn.bits;
	const struct h2_field *m = &sn.p[0];
	if (!(seen & P_METHOD) || !token_ok(m->value, m->vlen))
		return -EBADMSG;
	int connect = eq(m->value, m->vlen, "CONNECT");
	if ((seen & P_PROTOCOL) && !connect)
		return -EBADMSG; /* :protocol only in an extended CONNECT (RFC 8441) */
	if (connect && !(seen & P_PROTOCOL)) {
		/* §8.5: :authority only, no :scheme or :path */
		if ((seen & (P_SCHEME | P_PATH)) || !(seen & P_AUTHORITY))
			return -EBADMSG;
	} else if ((seen & (P_SCHEME | P_PATH)) != (P_SCHEME | P_PATH)) {
		return -EBADMSG;
	}
	if ((seen & P_SCHEME) && !scheme_ok(&sn.p[1]))
		return -EBADMSG;
	if ((seen & P_PATH) && !path_ok(&sn.p[3], m))
		return -EBADMSG;
	if ((seen & P_AUTHORITY) && (!authority_ok(&sn.p[2]) || (connect && !sn.p[2].vlen)))
		return -EBADMSG;
	/* the writer keeps host over :authority: they must name the same (§8.3.1) */
	const struct h2_field *a = &sn.p[2], *hf = &sn.host;
	if ((seen & P_AUTHORITY) && hf->nlen && (a->vlen != hf->vlen ||
	    strncasecmp((const char *)a->value, (const char *)hf->value, a->vlen)))
		return -EBADMSG;
	return 0;
}

int h2_check_response(const struct h2_hdrs *h, int64_t *clen)
{
	struct seen sn;
	int err = check_fields(h, P_STATUS, &sn);
	*clen = sn.clen;
	if (err)
		return err;
	const struct h2_field *s = &sn.p[5];
	if (!(sn.bits & P_STATUS) || s->vlen != 3 || !is_digit(s->value[0]) ||
	    !is_digit(s->value[1]) || !is_digit(s->value[2]) || s->value[0] < '1' ||
	    s->value[0] > '5' || eq(s->value, 3, "101"))
		return -EBADMSG; /* 101: no Upgrade in HTTP/2 (§8.6) */
	return 0;
}

int h2_check_trailers(const struct h2_hdrs *h)
{
	struct seen sn;
	return check_fields(h, 0, &sn);
}
