/* TLS 1.3 application-data records sealed by the agent itself after OpenSSL's handshake (contract in record.h). */
#include "tunnel/record.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#define REC_HDR 5
#define REC_TAG 16
#define REC_MAX_PLAIN 16384 /* 2^14 (RFC 8446 5.1) */
#define REC_MAX (REC_HDR + REC_MAX_PLAIN + 1 + REC_TAG)
#define CT_ALERT 21
#define CT_HANDSHAKE 22
#define CT_APPDATA 23

/* HKDF-Expand-Label (RFC 8446 7.1) with an empty context. */
static int expand_label(const char *md, const uint8_t *secret, size_t secret_len,
			const char *label, uint8_t *out, size_t out_len)
{
	uint8_t info[2 + 1 + 255 + 1];
	size_t ll = 6 + strlen(label), n = 0;
	if (ll > 255 || out_len > 0xffff)
		return -EINVAL;
	info[n++] = (uint8_t)(out_len >> 8);
	info[n++] = (uint8_t)out_len;
	info[n++] = (uint8_t)ll;
	memcpy(info + n, "tls13 ", 6);
	memcpy(info + n + 6, label, ll - 6);
	n += ll;
	info[n++] = 0; /* context: empty */

	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *kc = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	EVP_KDF_free(kdf);
	if (!kc)
		return -ENOMEM;
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)md, 0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, secret_len),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, n),
		OSSL_PARAM_construct_end(),
	};
	int ok = EVP_KDF_derive(kc, out, out_len, params) == 1;
	EVP_KDF_CTX_free(kc);
	return ok ? 0 : -EINVAL;
}

/* The tunnel's suites: cipher, hash and key length; -ENOTSUP for others or a
 * secret that is not of the hash's length. */
static int suite_params(const char *suite, size_t secret_len, const EVP_CIPHER **c,
			const char **md, size_t *key_len)
{
	if (!strcmp(suite, "TLS_AES_128_GCM_SHA256")) {
		*c = EVP_aes_128_gcm();
		*md = "SHA256";
		*key_len = 16;
	} else if (!strcmp(suite, "TLS_AES_256_GCM_SHA384")) {
		*c = EVP_aes_256_gcm();
		*md = "SHA384";
		*key_len = 32;
	} else if (!strcmp(suite, "TLS_CHACHA20_POLY1305_SHA256")) {
		*c = EVP_chacha20_poly1305();
		*md = "SHA256";
		*key_len = 32;
	} else {
		return -ENOTSUP;
	}
	return secret_len == (!strcmp(*md, "SHA384") ? 48u : 32u) ? 0 : -ENOTSUP;
}

/* The key and iv of the current secret (RFC 8446 7.3) into the context;
 * records count from 0 again. */
static int keys_load(struct tls13_keys *k)
{
	uint8_t key[32];
	int err = expand_label(k->md, k->secret, k->secret_len, "key", key, k->key_len) ?:
		  expand_label(k->md, k->secret, k->secret_len, "iv", k->iv, sizeof(k->iv));
	if (!err && EVP_CipherInit_ex(k->ctx, NULL, NULL, key, NULL, -1) != 1)
		err = -EINVAL;
	OPENSSL_cleanse(key, sizeof(key));
	k->seq = 0;
	return err;
}

/* Keys of secret for one direction (enc: 1 sealing, 0 opening). 0, -ENOTSUP,
 * -ENOMEM or -EINVAL (k then empty). */
static int keys_init(struct tls13_keys *k, const char *suite, const uint8_t *secret,
		     size_t secret_len, int enc)
{
	memset(k, 0, sizeof(*k));
	const EVP_CIPHER *c;
	int err = suite_params(suite, secret_len, &c, &k->md, &k->key_len);
	if (err)
		return err;
	memcpy(k->secret, secret, secret_len);
	k->secret_len = secret_len;
	err = -ENOMEM;
	if ((k->ctx = EVP_CIPHER_CTX_new()) && EVP_CipherInit_ex(k->ctx, c, NULL, NULL, NULL, enc) == 1 &&
	    EVP_CIPHER_CTX_ctrl(k->ctx, EVP_CTRL_AEAD_SET_IVLEN, sizeof(k->iv), NULL) == 1)
		err = keys_load(k);
	ERR_clear_error();
	return err;
}

/* The next secret (KeyUpdate, RFC 8446 7.2) and its keys. 0 or -EIO. */
static int keys_next(struct tls13_keys *k)
{
	uint8_t next[TLS13W_MAX_SECRET];
	int err = expand_label(k->md, k->secret, k->secret_len, "traffic upd", next, k->secret_len);
	if (!err) {
		memcpy(k->secret, next, k->secret_len);
		err = keys_load(k);
	}
	OPENSSL_cleanse(next, sizeof(next));
	ERR_clear_error();
	if (err)
		return -EIO;
	k->key_updates++;
	return 0;
}

/* The nonce of the next record (RFC 8446 5.3). */
static void keys_nonce(const struct tls13_keys *k, uint8_t nonce[12])
{
	memcpy(nonce, k->iv, 12);
	for (int i = 0; i < 8; i++)
		nonce[4 + i] ^= (uint8_t)(k->seq >> (56 - 8 * i));
}

static void keys_free(struct tls13_keys *k)
{
	EVP_CIPHER_CTX_free(k->ctx);
	OPENSSL_cleanse(k, sizeof(*k));
}

int tls13w_init(struct tls13w *w, const char *suite, const uint8_t *secret, size_t secret_len,
		int fd, uint64_t records_per_key)
{
	memset(w, 0, sizeof(*w));
	w->fd = -1;
	int err = keys_init(&w->k, suite, secret, secret_len, 1);
	if (!err && !(w->buf = malloc(TLS13W_BUF)))
		err = -ENOMEM;
	if (err) {
		tls13w_free(w);
		return err;
	}
	w->records_per_key = records_per_key ? records_per_key : TLS13W_RECORDS_PER_KEY;
	w->fd = fd;
	return 0;
}

static int write_out(struct tls13w *w)
{
	size_t at = 0;
	while (at < w->used) {
		ssize_t n = send(w->fd, w->buf + at, w->used - at, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EIO;
		at += (size_t)n;
	}
	w->used = 0;
	return 0;
}

/* One record of inner type `type` holding p[0..n) (n <= REC_MAX_PLAIN) at the
 * end of the buffer, which has room for it. */
static int seal(struct tls13w *w, uint8_t type, const uint8_t *p, size_t n)
{
	uint8_t *r = w->buf + w->used;
	size_t clen = n + 1 + REC_TAG;
	r[0] = CT_APPDATA;
	r[1] = 3;
	r[2] = 3;
	r[3] = (uint8_t)(clen >> 8);
	r[4] = (uint8_t)clen;
	uint8_t nonce[12];
	keys_nonce(&w->k, nonce);
	EVP_CIPHER_CTX *ctx = w->k.ctx;
	int l;
	if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &l, r, REC_HDR) != 1 ||
	    (n && EVP_EncryptUpdate(ctx, r + REC_HDR, &l, p, (int)n) != 1) ||
	    EVP_EncryptUpdate(ctx, r + REC_HDR + n, &l, &type, 1) != 1 ||
	    EVP_EncryptFinal_ex(ctx, r + REC_HDR + n + 1, &l) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, REC_TAG, r + REC_HDR + n + 1) != 1) {
		ERR_clear_error();
		return -EIO;
	}
	w->used += REC_HDR + clen;
	w->k.seq++;
	w->records++;
	return 0;
}

/* Room for one more record, writing the buffer out if needed. */
static int room(struct tls13w *w)
{
	return TLS13W_BUF - w->used < REC_MAX ? write_out(w) : 0;
}

/* KeyUpdate (update_not_requested) under the old keys, then the next secret. */
static int key_update(struct tls13w *w)
{
	static const uint8_t msg[] = { 24, 0, 0, 1, 0 };
	return room(w) ?: seal(w, CT_HANDSHAKE, msg, sizeof(msg)) ?: keys_next(&w->k);
}

int tls13w_seal(struct tls13w *w, uint8_t type, const void *p, size_t n)
{
	if (n > REC_MAX_PLAIN)
		return -EINVAL;
	return room(w) ?: seal(w, type, p, n);
}

int tls13w_write(struct tls13w *w, const void *data, size_t n)
{
	const uint8_t *p = data;
	while (n) {
		int err;
		if (w->k.seq >= w->records_per_key && (err = key_update(w)))
			return err;
		size_t k = n < REC_MAX_PLAIN ? n : REC_MAX_PLAIN;
		if ((err = room(w)) || (err = seal(w, CT_APPDATA, p, k)))
			return err;
		p += k;
		n -= k;
	}
	return 0;
}

int tls13w_flush(struct tls13w *w)
{
	return w->used ? write_out(w) : 0;
}

void tls13w_close(struct tls13w *w)
{
	static const uint8_t close_notify[] = { 1, 0 }; /* warning, close_notify */
	if (!w->k.ctx || w->fd < 0)
		return;
	if (!room(w) && !seal(w, CT_ALERT, close_notify, sizeof(close_notify)))
		(void)write_out(w);
}

void tls13w_free(struct tls13w *w)
{
	keys_free(&w->k);
	free(w->buf);
	w->buf = NULL;
	w->used = 0;
	w->fd = -1;
}

/* ---------------------------------------------------------------- reading */

static long fail(struct tls13r *r, long err, const char *why)
{
	r->why = why;
	ERR_clear_error();
	return err;
}

int tls13r_init(struct tls13r *r, const char *suite, const uint8_t *secret, size_t secret_len,
		int fd)
{
	memset(r, 0, sizeof(*r));
	r->fd = -1;
	int err = keys_init(&r->k, suite, secret, secret_len, 0);
	if (!err && (!(r->raw = malloc(TLS13R_BUF)) || !(r->plain = malloc(REC_MAX_PLAIN + 256))))
		err = -ENOMEM;
	if (err) {
		tls13r_free(r);
		return err;
	}
	r->fd = fd;
	return 0;
}

/* The length of the whole record at raw[lo] (header included), 0 if its
 * header is not all there yet, -1 if the header is bad (why set). */
static long rec_len(struct tls13r *r)
{
	if (r->hi - r->lo < REC_HDR)
		return 0;
	const uint8_t *h = r->raw + r->lo;
	size_t len = (size_t)h[3] << 8 | h[4];
	if (h[0] != CT_APPDATA) {
		r->why = "a record that is not application data after the handshake";
		return -1;
	}
	if (h[1] != 3 || h[2] != 3) {
		r->why = "a record with a version other than 0x0303";
		return -1;
	}
	if (len < 1 + REC_TAG || len > REC_MAX_PLAIN + 256) {
		r->why = "a record of a length TLS 1.3 does not allow";
		return -1;
	}
	return (long)(REC_HDR + len);
}

int tls13r_pending(const struct tls13r *r)
{
	if (r->phi > r->plo)
		return 1;
	if (r->hi - r->lo < REC_HDR)
		return 0;
	const uint8_t *h = r->raw + r->lo;
	return r->hi - r->lo >= REC_HDR + ((size_t)h[3] << 8 | h[4]);
}

/* More ciphertext from fd: 1 got some, 0 the peer closed, -EAGAIN, -EIO. */
static int fill(struct tls13r *r)
{
	if (r->lo && (r->lo == r->hi || TLS13R_BUF - r->hi < REC_MAX)) {
		memmove(r->raw, r->raw + r->lo, r->hi - r->lo); /* at most one partial record */
		r->hi -= r->lo;
		r->lo = 0;
	}
	if (r->hi == TLS13R_BUF) { /* cannot be: a whole record would be there */
		r->why = "record buffer full";
		return -EIO;
	}
	for (;;) {
		ssize_t n = recv(r->fd, r->raw + r->hi, TLS13R_BUF - r->hi, MSG_DONTWAIT);
		if (n > 0) {
			r->hi += (size_t)n;
			return 1;
		}
		if (n == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return -EAGAIN;
		r->why = "connection lost";
		return -EIO;
	}
}

/* KeyUpdate (RFC 8446 4.6.3): the next secret for what follows. */
static long key_update_in(struct tls13r *r, const uint8_t *m, size_t n)
{
	if (n != 5 || m[0] != 24 || m[1] || m[2] || m[3] != 1)
		return fail(r, -EPROTO, "a handshake message other than KeyUpdate after the handshake");
	if (m[4] != 0)
		return fail(r, -EPROTO, m[4] == 1 ? "a KeyUpdate asking for an update (agents never do)"
					       : "a KeyUpdate with a bad request field");
	return keys_next(&r->k) ? fail(r, -EIO, "deriving the next key failed") : 0;
}

long tls13r_read(struct tls13r *r, void *out, size_t n)
{
	for (;;) {
		if (r->phi > r->plo) {
			size_t k = r->phi - r->plo < n ? r->phi - r->plo : n;
			memcpy(out, r->plain + r->plo, k);
			r->plo += k;
			return (long)k;
		}
		if (r->closed)
			return 0;
		long len = rec_len(r);
		if (len < 0)
			return fail(r, -EPROTO, r->why);
		if (!len || r->hi - r->lo < (size_t)len) {
			int got = fill(r);
			if (got == 0) {
				if (r->hi > r->lo)
					return fail(r, -EPROTO, "connection ended inside a record");
				r->why = "closed without close_notify";
				return 0;
			}
			if (got < 0)
				return got;
			continue;
		}
		const uint8_t *rec = r->raw + r->lo;
		size_t clen = (size_t)len - REC_HDR - REC_TAG; /* inner plaintext */
		if (clen > REC_MAX_PLAIN + 1) /* RFC 8446 5.4 */
			return fail(r, -EPROTO, "a record over 2^14 + 1 bytes of inner plaintext");
		/* straight into the caller's buffer when the whole record fits */
		uint8_t *dst = n >= clen ? out : r->plain;
		uint8_t nonce[12];
		keys_nonce(&r->k, nonce);
		EVP_CIPHER_CTX *ctx = r->k.ctx;
		int l;
		if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
		    EVP_DecryptUpdate(ctx, NULL, &l, rec, REC_HDR) != 1 ||
		    EVP_DecryptUpdate(ctx, dst, &l, rec + REC_HDR, (int)clen) != 1 ||
		    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, REC_TAG,
					(void *)(rec + REC_HDR + clen)) != 1 ||
		    EVP_DecryptFinal_ex(ctx, dst + clen, &l) != 1)
			return fail(r, -EPROTO, "a record that does not decrypt (bad record MAC)");
		r->lo += (size_t)len;
		r->k.seq++;
		r->records++;
		size_t k = clen;
		while (k && !dst[k - 1])
			k--;
		if (!k)
			return fail(r, -EPROTO, "a record without a content type");
		uint8_t type = dst[k - 1];
		size_t content = k - 1;
		if (type == CT_APPDATA) {
			if (!content)
				continue;
			if (dst == out)
				return (long)content;
			r->plo = 0;
			r->phi = content;
			continue;
		}
		if (type == CT_ALERT) {
			if (content != 2)
				return fail(r, -EPROTO, "a malformed alert");
			if (dst[1] != 0)
				return fail(r, -EPROTO, "an alert from the peer");
			r->closed = 1;
			r->why = "closed (close_notify)";
			return 0;
		}
		if (type == CT_HANDSHAKE) {
			long e = key_update_in(r, dst, content);
			if (e)
				return e;
			continue;
		}
		return fail(r, -EPROTO, "a record of an unknown content type");
	}
}

void tls13r_free(struct tls13r *r)
{
	keys_free(&r->k);
	if (r->plain)
		OPENSSL_cleanse(r->plain, REC_MAX_PLAIN + 256);
	free(r->raw);
	free(r->plain);
	memset(r, 0, sizeof(*r));
	r->fd = -1;
}
