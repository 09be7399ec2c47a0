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

/* Keys of the current secret into the cipher context. */
static int set_keys(struct tls13w *w)
{
	uint8_t key[32];
	int err = expand_label(w->md, w->secret, w->secret_len, "key", key, w->key_len);
	if (!err)
		err = expand_label(w->md, w->secret, w->secret_len, "iv", w->iv, sizeof(w->iv));
	if (!err && EVP_EncryptInit_ex(w->ctx, NULL, NULL, key, NULL) != 1)
		err = -EINVAL;
	OPENSSL_cleanse(key, sizeof(key));
	w->seq = 0;
	return err;
}

int tls13w_init(struct tls13w *w, const char *suite, const uint8_t *secret, size_t secret_len,
		int fd, uint64_t records_per_key)
{
	memset(w, 0, sizeof(*w));
	w->fd = -1;
	const EVP_CIPHER *c;
	if (!strcmp(suite, "TLS_AES_128_GCM_SHA256")) {
		c = EVP_aes_128_gcm();
		w->md = "SHA256";
		w->key_len = 16;
	} else if (!strcmp(suite, "TLS_AES_256_GCM_SHA384")) {
		c = EVP_aes_256_gcm();
		w->md = "SHA384";
		w->key_len = 32;
	} else if (!strcmp(suite, "TLS_CHACHA20_POLY1305_SHA256")) {
		c = EVP_chacha20_poly1305();
		w->md = "SHA256";
		w->key_len = 32;
	} else {
		return -ENOTSUP;
	}
	size_t hash_len = !strcmp(w->md, "SHA384") ? 48 : 32;
	if (secret_len != hash_len)
		return -ENOTSUP;
	memcpy(w->secret, secret, secret_len);
	w->secret_len = secret_len;
	w->records_per_key = records_per_key ? records_per_key : TLS13W_RECORDS_PER_KEY;
	w->buf = malloc(TLS13W_BUF);
	w->ctx = EVP_CIPHER_CTX_new();
	int err = -ENOMEM;
	if (w->buf && w->ctx && EVP_EncryptInit_ex(w->ctx, c, NULL, NULL, NULL) == 1 &&
	    EVP_CIPHER_CTX_ctrl(w->ctx, EVP_CTRL_AEAD_SET_IVLEN, sizeof(w->iv), NULL) == 1)
		err = set_keys(w);
	if (err) {
		ERR_clear_error();
		tls13w_free(w);
		return err;
	}
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
	memcpy(nonce, w->iv, sizeof(nonce));
	for (int i = 0; i < 8; i++)
		nonce[4 + i] ^= (uint8_t)(w->seq >> (56 - 8 * i));
	int l;
	if (EVP_EncryptInit_ex(w->ctx, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_EncryptUpdate(w->ctx, NULL, &l, r, REC_HDR) != 1 ||
	    (n && EVP_EncryptUpdate(w->ctx, r + REC_HDR, &l, p, (int)n) != 1) ||
	    EVP_EncryptUpdate(w->ctx, r + REC_HDR + n, &l, &type, 1) != 1 ||
	    EVP_EncryptFinal_ex(w->ctx, r + REC_HDR + n + 1, &l) != 1 ||
	    EVP_CIPHER_CTX_ctrl(w->ctx, EVP_CTRL_AEAD_GET_TAG, REC_TAG, r + REC_HDR + n + 1) != 1) {
		ERR_clear_error();
		return -EIO;
	}
	w->used += REC_HDR + clen;
	w->seq++;
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
	uint8_t next[TLS13W_MAX_SECRET];
	int err = room(w) ?: seal(w, CT_HANDSHAKE, msg, sizeof(msg));
	if (!err)
		err = expand_label(w->md, w->secret, w->secret_len, "traffic upd", next, w->secret_len);
	if (!err) {
		memcpy(w->secret, next, w->secret_len);
		err = set_keys(w);
		w->key_updates++;
	}
	OPENSSL_cleanse(next, sizeof(next));
	return err ? -EIO : 0;
}

int tls13w_write(struct tls13w *w, const void *data, size_t n)
{
	const uint8_t *p = data;
	while (n) {
		int err;
		if (w->seq >= w->records_per_key && (err = key_update(w)))
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
	if (!w->ctx || w->fd < 0)
		return;
	if (!room(w) && !seal(w, CT_ALERT, close_notify, sizeof(close_notify)))
		(void)write_out(w);
}

void tls13w_free(struct tls13w *w)
{
	EVP_CIPHER_CTX_free(w->ctx);
	free(w->buf);
	OPENSSL_cleanse(w->secret, sizeof(w->secret));
	OPENSSL_cleanse(w->iv, sizeof(w->iv));
	w->ctx = NULL;
	w->buf = NULL;
	w->used = 0;
	w->fd = -1;
}
