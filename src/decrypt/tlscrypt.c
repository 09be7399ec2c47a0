/* Cipher suites, key derivation and record opening for the passive decryptor (tlscrypt.h), on OpenSSL's libcrypto. */
#include "decrypt/tlscrypt.h"
#include "common/bytes.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

/* IANA ids; names as OpenSSL gives them (SSL_CIPHER_get_name) */
static const struct tls_suite suites[] = {
	{ 0x1301, "TLS_AES_128_GCM_SHA256", SK_GCM, 16, 0, 0, 1, 0, 0 },
	{ 0x1302, "TLS_AES_256_GCM_SHA384", SK_GCM, 32, 0, 0, 1, 1, 0 },
	{ 0x1303, "TLS_CHACHA20_POLY1305_SHA256", SK_CHACHA, 32, 0, 0, 1, 0, 0 },
	{ 0x1304, "TLS_AES_128_CCM_SHA256", SK_CCM, 16, 0, 0, 1, 0, 0 },
	{ 0x1305, "TLS_AES_128_CCM_8_SHA256", SK_CCM8, 16, 0, 0, 1, 0, 0 },
	{ 0xc02f, "ECDHE-RSA-AES128-GCM-SHA256", SK_GCM, 16, 4, 0, 0, 0, 0 },
	{ 0xc02b, "ECDHE-ECDSA-AES128-GCM-SHA256", SK_GCM, 16, 4, 0, 0, 0, 0 },
	{ 0x009e, "DHE-RSA-AES128-GCM-SHA256", SK_GCM, 16, 4, 0, 0, 0, 0 },
	{ 0x009c, "AES128-GCM-SHA256", SK_GCM, 16, 4, 0, 0, 0, 1 },
	{ 0xc030, "ECDHE-RSA-AES256-GCM-SHA384", SK_GCM, 32, 4, 0, 0, 1, 0 },
	{ 0xc02c, "ECDHE-ECDSA-AES256-GCM-SHA384", SK_GCM, 32, 4, 0, 0, 1, 0 },
	{ 0x009f, "DHE-RSA-AES256-GCM-SHA384", SK_GCM, 32, 4, 0, 0, 1, 0 },
	{ 0x009d, "AES256-GCM-SHA384", SK_GCM, 32, 4, 0, 0, 1, 1 },
	{ 0xcca8, "ECDHE-RSA-CHACHA20-POLY1305", SK_CHACHA, 32, 12, 0, 0, 0, 0 },
	{ 0xcca9, "ECDHE-ECDSA-CHACHA20-POLY1305", SK_CHACHA, 32, 12, 0, 0, 0, 0 },
	{ 0xccaa, "DHE-RSA-CHACHA20-POLY1305", SK_CHACHA, 32, 12, 0, 0, 0, 0 },
	{ 0xc013, "ECDHE-RSA-AES128-SHA", SK_CBC, 16, 0, 20, 0, 0, 0 },
	{ 0xc014, "ECDHE-RSA-AES256-SHA", SK_CBC, 32, 0, 20, 0, 0, 0 },
	{ 0xc009, "ECDHE-ECDSA-AES128-SHA", SK_CBC, 16, 0, 20, 0, 0, 0 },
	{ 0xc00a, "ECDHE-ECDSA-AES256-SHA", SK_CBC, 32, 0, 20, 0, 0, 0 },
	{ 0x0033, "DHE-RSA-AES128-SHA", SK_CBC, 16, 0, 20, 0, 0, 0 },
	{ 0x0039, "DHE-RSA-AES256-SHA", SK_CBC, 32, 0, 20, 0, 0, 0 },
	{ 0x002f, "AES128-SHA", SK_CBC, 16, 0, 20, 0, 0, 1 },
	{ 0x0035, "AES256-SHA", SK_CBC, 32, 0, 20, 0, 0, 1 },
	{ 0xc027, "ECDHE-RSA-AES128-SHA256", SK_CBC, 16, 0, 32, 0, 0, 0 },
	{ 0xc023, "ECDHE-ECDSA-AES128-SHA256", SK_CBC, 16, 0, 32, 0, 0, 0 },
	{ 0x0067, "DHE-RSA-AES128-SHA256", SK_CBC, 16, 0, 32, 0, 0, 0 },
	{ 0x006b, "DHE-RSA-AES256-SHA256", SK_CBC, 32, 0, 32, 0, 0, 0 },
	{ 0x003c, "AES128-SHA256", SK_CBC, 16, 0, 32, 0, 0, 1 },
	{ 0x003d, "AES256-SHA256", SK_CBC, 32, 0, 32, 0, 0, 1 },
	{ 0xc028, "ECDHE-RSA-AES256-SHA384", SK_CBC, 32, 0, 48, 0, 1, 0 },
	{ 0xc024, "ECDHE-ECDSA-AES256-SHA384", SK_CBC, 32, 0, 48, 0, 1, 0 },
};

const struct tls_suite *tls_suite_find(uint16_t id)
{
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
		if (suites[i].id == id)
			return &suites[i];
	return NULL;
}

static const EVP_MD *md_of(int sha384)
{
	return sha384 ? EVP_sha384() : EVP_sha256();
}

static const EVP_MD *mac_md(unsigned mac_len)
{
	return mac_len == 20 ? EVP_sha1() : mac_len == 32 ? EVP_sha256() : EVP_sha384();
}

int tls12_prf(int sha384, const uint8_t *secret, size_t slen, const char *label,
	      const uint8_t *seed, size_t seedlen, uint8_t *out, size_t n)
{
	const EVP_MD *md = md_of(sha384);
	uint8_t ls[128], a[64], blk[64];
	size_t ll = strlen(label);
	unsigned hl = (unsigned)EVP_MD_get_size(md), l;
	if (ll + seedlen > sizeof(ls))
		return -1;
	memcpy(ls, label, ll);
	memcpy(ls + ll, seed, seedlen);
	/* A(1) = HMAC(secret, label + seed); out = HMAC(A(i) + label + seed)... */
	if (!HMAC(md, secret, (int)slen, ls, ll + seedlen, a, &l))
		return -1;
	for (size_t at = 0; at < n; at += hl) {
		uint8_t in[64 + sizeof(ls)];
		memcpy(in, a, hl);
		memcpy(in + hl, ls, ll + seedlen);
		if (!HMAC(md, secret, (int)slen, in, hl + ll + seedlen, blk, &l))
			return -1;
		memcpy(out + at, blk, n - at < hl ? n - at : hl);
		if (!HMAC(md, secret, (int)slen, a, hl, a, &l))
			return -1;
	}
	return 0;
}

int tls13_expand_label(int sha384, const uint8_t *secret, size_t slen, const char *label,
		       uint8_t *out, size_t n)
{
	const EVP_MD *md = md_of(sha384);
	uint8_t info[2 + 1 + 6 + 32 + 1 + 1], t[64], in[64 + sizeof(info) + 1];
	size_t ll = strlen(label), il = 0, tl = 0;
	unsigned hl = (unsigned)EVP_MD_get_size(md), l;
	if (ll > 32 || n > 255)
		return -1;
	put_be16(info, (uint16_t)n);
	info[2] = (uint8_t)(6 + ll);
	memcpy(info + 3, "tls13 ", 6);
	memcpy(info + 9, label, ll);
	info[9 + ll] = 0; /* empty context */
	il = 10 + ll;
	/* HKDF-Expand: T(i) = HMAC(secret, T(i-1) | info | i) */
	for (size_t at = 0, i = 1; at < n; at += hl, i++) {
		memcpy(in, t, tl);
		memcpy(in + tl, info, il);
		in[tl + il] = (uint8_t)i;
		if (!HMAC(md, secret, (int)slen, in, tl + il + 1, t, &l))
			return -1;
		tl = hl;
		memcpy(out + at, t, n - at < hl ? n - at : hl);
	}
	return 0;
}

static const EVP_CIPHER *evp_of(const struct tls_suite *s)
{
	switch (s->kind) {
	case SK_GCM:
		return s->key_len == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm();
	case SK_CHACHA:
		return EVP_chacha20_poly1305();
	case SK_CCM:
	case SK_CCM8:
		return EVP_aes_128_ccm();
	case SK_CBC:
		return s->key_len == 16 ? EVP_aes_128_cbc() : EVP_aes_256_cbc();
	}
	return NULL;
}

static int rc_key(struct rec_cipher *c)
{
	const EVP_CIPHER *ev = evp_of(c->s);
	if (!c->ctx && !(c->ctx = EVP_CIPHER_CTX_new()))
		return -1;
	if (!ev)
		return -1;
	if (c->s->kind == SK_CCM || c->s->kind == SK_CCM8) {
		c->ready = 1; /* keyed per record (the tag comes first) */
		return 0;
	}
	if (!EVP_DecryptInit_ex(c->ctx, ev, NULL, c->key, NULL))
		return -1;
	if (c->s->kind == SK_CBC)
		EVP_CIPHER_CTX_set_padding(c->ctx, 0);
	c->ready = 1;
	return 0;
}

int rc_init12(struct rec_cipher *c, const struct tls_suite *s, const uint8_t *key,
	      const uint8_t *iv, const uint8_t *mac_key, int etm)
{
	c->s = s;
	memcpy(c->key, key, s->key_len);
	memset(c->iv, 0, sizeof(c->iv));
	memcpy(c->iv, iv, s->fixed_iv);
	if (s->mac_len)
		memcpy(c->mac_key, mac_key, s->mac_len);
	c->etm = (uint8_t)(etm && s->kind == SK_CBC);
	return rc_key(c);
}

int rc_init13(struct rec_cipher *c, const struct tls_suite *s, const uint8_t *secret, size_t len)
{
	if (len > sizeof(c->secret))
		return -1;
	c->s = s;
	memcpy(c->secret, secret, len);
	c->secret_len = (uint8_t)len;
	if (tls13_expand_label(s->sha384, secret, len, "key", c->key, s->key_len) < 0 ||
	    tls13_expand_label(s->sha384, secret, len, "iv", c->iv, 12) < 0)
		return -1;
	return rc_key(c);
}

int rc_key_update(struct rec_cipher *c)
{
	uint8_t next[64];
	if (!c->s || tls13_expand_label(c->s->sha384, c->secret, c->secret_len, "traffic upd", next,
					c->secret_len) < 0)
		return -1;
	return rc_init13(c, c->s, next, c->secret_len);
}

void rc_free(struct rec_cipher *c)
{
	if (c->ctx)
		EVP_CIPHER_CTX_free(c->ctx);
	memset(c, 0, sizeof(*c));
}

static size_t tag_len(const struct tls_suite *s)
{
	return s->kind == SK_CCM8 ? 8 : 16;
}

size_t rc_plain_len(const struct rec_cipher *c, size_t len, int *exact)
{
	size_t over;
	*exact = 1;
	if (!c->s)
		return *exact = 0, len;
	if (c->s->kind == SK_CBC) {
		*exact = 0; /* padding */
		over = 16 + c->s->mac_len + 1;
	} else if (c->s->tls13) {
		*exact = 0; /* padding and the inner type; usually 1 byte */
		over = tag_len(c->s) + 1;
	} else {
		over = tag_len(c->s) + (c->s->kind == SK_GCM || c->s->kind == SK_CCM ||
					c->s->kind == SK_CCM8 ? 8 : 0);
	}
	return len > over ? len - over : 0;
}

/* AEAD open of ct[0..n) with tag, nonce and aad into out. 0 or -1. */
static int aead_open(struct rec_cipher *c, const uint8_t nonce[12], const uint8_t *aad, size_t al,
		     const uint8_t *ct, size_t n, const uint8_t *tag, uint8_t *out)
{
	EVP_CIPHER_CTX *x = c->ctx;
	int l;
	size_t tl = tag_len(c->s);
	if (c->s->kind == SK_CCM || c->s->kind == SK_CCM8) {
		if (!EVP_DecryptInit_ex(x, EVP_aes_128_ccm(), NULL, NULL, NULL) ||
		    !EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) ||
		    !EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, (int)tl, (void *)tag) ||
		    !EVP_DecryptInit_ex(x, NULL, NULL, c->key, nonce) ||
		    !EVP_DecryptUpdate(x, NULL, &l, NULL, (int)n) ||
		    !EVP_DecryptUpdate(x, NULL, &l, aad, (int)al))
			return -1;
		return EVP_DecryptUpdate(x, out, &l, ct, (int)n) > 0 ? 0 : -1;
	}
	if (!EVP_DecryptInit_ex(x, NULL, NULL, NULL, nonce) ||
	    !EVP_DecryptUpdate(x, NULL, &l, aad, (int)al) ||
	    !EVP_DecryptUpdate(x, out, &l, ct, (int)n) ||
	    !EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, (int)tl, (void *)tag))
		return -1;
	return EVP_DecryptFinal_ex(x, out + l, &l) > 0 ? 0 : -1;
}

/* HMAC(mac key, ad[13] | p[0..n)) into mac (HMAC_CTX is deprecated: one call on a copy). */
static int hmac2(const struct rec_cipher *c, const uint8_t ad[13], const uint8_t *p, size_t n,
		 uint8_t *mac)
{
	static __thread uint8_t buf[13 + TLS_MAX_CIPHER];
	unsigned l;
	if (n > TLS_MAX_CIPHER)
		return -1;
	memcpy(buf, ad, 13);
	memcpy(buf + 13, p, n);
	return HMAC(mac_md(c->s->mac_len), c->mac_key, c->s->mac_len, buf, 13 + n, mac, &l) ? 0 : -1;
}

static long open_cbc(struct rec_cipher *c, uint64_t seq, const uint8_t hdr[5], const uint8_t *body,
		     size_t len, uint8_t *out)
{
	size_t ml = c->s->mac_len, cl = len - 16;
	uint8_t mac[64], ad[13];
	int ol;
	if (len < 16 + 16 || (c->etm && len < 16 + 16 + ml))
		return -1;
	put_be32(ad, (uint32_t)(seq >> 32));
	put_be32(ad + 4, (uint32_t)seq);
	memcpy(ad + 8, hdr, 3);
	if (c->etm) {
		cl = len - 16 - ml;
		if (cl % 16)
			return -1;
		put_be16(ad + 11, (uint16_t)(len - ml));
		if (hmac2(c, ad, body, len - ml, mac) < 0 || CRYPTO_memcmp(mac, body + len - ml, ml))
			return -1;
	} else if (cl % 16) {
		return -1;
	}
	if (!EVP_DecryptInit_ex(c->ctx, NULL, NULL, NULL, body) ||
	    !EVP_DecryptUpdate(c->ctx, out, &ol, body + 16, (int)cl))
		return -1;
	size_t pad = out[cl - 1];
	if (pad + 1 > cl)
		return -1;
	for (size_t i = cl - pad - 1; i < cl; i++)
		if (out[i] != pad)
			return -1;
	size_t pl = cl - pad - 1;
	if (c->etm)
		return (long)pl;
	if (pl < ml)
		return -1;
	pl -= ml;
	put_be16(ad + 11, (uint16_t)pl);
	if (hmac2(c, ad, out, pl, mac) < 0 || CRYPTO_memcmp(mac, out + pl, ml))
		return -1;
	return (long)pl;
}

long rc_open(struct rec_cipher *c, uint64_t seq, const uint8_t hdr[5], const uint8_t *body,
	     size_t len, uint8_t *out, uint8_t *type)
{
	if (!c->ready)
		return -1;
	if (c->s->kind == SK_CBC)
		return open_cbc(c, seq, hdr, body, len, out);
	size_t tl = tag_len(c->s);
	uint8_t nonce[12], ad[13];
	memcpy(nonce, c->iv, 12);
	if (c->s->tls13) {
		if (len < tl + 1)
			return -1;
		for (int i = 0; i < 8; i++)
			nonce[4 + i] ^= (uint8_t)(seq >> (56 - 8 * i));
		if (aead_open(c, nonce, hdr, 5, body, len - tl, body + len - tl, out) < 0)
			return -1;
		size_t n = len - tl;
		while (n && !out[n - 1])
			n--; /* the padding, then the real content type */
		if (!n)
			return -1;
		*type = out[--n];
		return (long)n;
	}
	size_t ex = c->s->kind == SK_CHACHA ? 0 : 8; /* GCM and CCM: an explicit nonce */
	if (len < ex + tl)
		return -1;
	if (ex) {
		memcpy(nonce + 4, body, 8);
	} else {
		for (int i = 0; i < 8; i++)
			nonce[4 + i] ^= (uint8_t)(seq >> (56 - 8 * i));
	}
	size_t n = len - ex - tl;
	put_be32(ad, (uint32_t)(seq >> 32));
	put_be32(ad + 4, (uint32_t)seq);
	memcpy(ad + 8, hdr, 3);
	put_be16(ad + 11, (uint16_t)n);
	if (aead_open(c, nonce, ad, 13, body + ex, n, body + len - tl, out) < 0)
		return -1;
	return (long)n;
}
