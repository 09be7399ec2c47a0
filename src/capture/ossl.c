/* The OpenSSL back-end: per-SSL state in ex-data, the metadata libssl gives; two table rows: the shared libssl, and a copy linked into the executable (inline.c). */
#include "capture/capture.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The OpenSSL functions the library calls (never hooks), of one OpenSSL copy. */
struct ossl_fns {
	int (*get_fd)(const struct ssl_st *s);
	int (*is_server)(const struct ssl_st *s);
	const char *(*get_servername)(const struct ssl_st *s, int type);
	void (*get0_alpn)(const struct ssl_st *s, const unsigned char **data, unsigned int *len);
	int (*version)(const struct ssl_st *s);
	const struct ssl_cipher_st *(*get_cipher)(const struct ssl_st *s);
	const char *(*cipher_name)(const struct ssl_cipher_st *c);
	size_t (*client_random)(const struct ssl_st *s, unsigned char *out, size_t outlen);
	size_t (*server_random)(const struct ssl_st *s, unsigned char *out, size_t outlen);
	const struct ssl_cipher_st *(*pending_cipher)(const struct ssl_st *s);
	uint16_t (*cipher_id)(const struct ssl_cipher_st *c);
	int (*init_finished)(const struct ssl_st *s);
	void *(*get_ex)(const struct ssl_st *s, int idx);
	int (*set_ex)(struct ssl_st *s, int idx, void *data);
	int (*new_index)(int class_index, long argl, void *argp, void *new_func,
			 void *dup_func, void (*free_func)(void *, void *, void *, int, long, void *));
	/* BoringSSL has no CRYPTO_get_ex_new_index, only this (a macro in OpenSSL) */
	int (*ssl_new_index)(long argl, void *argp, void *new_func, void *dup_func,
			     void (*free_func)(void *, void *, void *, int, long, void *));
};

struct ossl_be {
	struct ossl_fns f;
	int ex_idx;
	pthread_once_t once;
	void *(*lookup)(const char *name);
	const struct cap_tls_ops *ops;
};

static void ex_free(void *parent, void *ptr, void *ad, int idx, long argl, void *argp);

static void be_resolve(struct ossl_be *b)
{
	struct ossl_fns *f = &b->f;
	f->get_fd = b->lookup("SSL_get_fd");
	f->is_server = b->lookup("SSL_is_server");
	f->get_servername = b->lookup("SSL_get_servername");
	f->get0_alpn = b->lookup("SSL_get0_alpn_selected");
	f->version = b->lookup("SSL_version");
	f->get_cipher = b->lookup("SSL_get_current_cipher");
	f->cipher_name = b->lookup("SSL_CIPHER_get_name");
	f->client_random = b->lookup("SSL_get_client_random");
	f->server_random = b->lookup("SSL_get_server_random");
	f->pending_cipher = b->lookup("SSL_get_pending_cipher");
	f->cipher_id = b->lookup("SSL_CIPHER_get_protocol_id");
	f->init_finished = b->lookup("SSL_is_init_finished");
	f->get_ex = b->lookup("SSL_get_ex_data");
	f->set_ex = b->lookup("SSL_set_ex_data");
	f->new_index = b->lookup("CRYPTO_get_ex_new_index");
	f->ssl_new_index = f->new_index ? NULL : b->lookup("SSL_get_ex_new_index");
	if (!f->get_ex || !f->set_ex || !f->is_server)
		return;
	if (f->new_index)
		b->ex_idx = f->new_index(0 /* CRYPTO_EX_INDEX_SSL */, 0, NULL, NULL, NULL, ex_free);
	else if (f->ssl_new_index)
		b->ex_idx = f->ssl_new_index(0, NULL, NULL, NULL, ex_free);
}

static struct cap_conn *be_state(struct ossl_be *b, void *sess, int create)
{
	struct ssl_st *ssl = sess;
	if (b->ex_idx < 0 || !ssl)
		return NULL;
	struct cap_conn *c = b->f.get_ex(ssl, b->ex_idx);
	if (c || !create)
		return c;
	c = conn_new(b->ops);
	if (!c)
		return NULL;
	if (!b->f.set_ex(ssl, b->ex_idx, c)) {
		free(c);
		return NULL;
	}
	/* every call that handshakes is hooked: a session first seen with its
	 * handshake done is older than the library (tlsmirror attach) */
	c->late = b->f.init_finished && b->f.init_finished(ssl) ? 1 : 0;
	if (b->ops == &cap_tls_openssl && !c->late)
		keys_openssl_prepare(ssl); /* before its handshake makes the secrets */
	return c;
}

static int be_get_fd(struct ossl_be *b, void *sess)
{
	return b->f.get_fd ? b->f.get_fd(sess) : -1;
}

static int be_client_random(struct ossl_be *b, void *sess, uint8_t out[32])
{
	if (!b->f.client_random || b->f.client_random(sess, out, 32) != 32)
		return -ENOENT;
	return 0;
}

static int be_server_hello(struct ossl_be *b, void *sess, uint8_t sr[32], uint16_t *version,
			   uint16_t *suite)
{
	const struct ossl_fns *f = &b->f;
	if (!f->server_random || f->server_random(sess, sr, 32) != 32)
		return -ENOENT;
	*version = f->version ? (uint16_t)f->version(sess) : 0;
	/* in the key-log callback the suite being negotiated is the pending one */
	const struct ssl_cipher_st *ci = f->pending_cipher ? f->pending_cipher(sess) : NULL;
	if (!ci && f->get_cipher)
		ci = f->get_cipher(sess);
	*suite = ci && f->cipher_id ? f->cipher_id(ci) : 0;
	return 0;
}

static void be_describe(struct ossl_be *b, void *sess, struct ring_open *o)
{
	struct ssl_st *ssl = sess;
	const struct ossl_fns *f = &b->f;
	o->tls_version = f->version ? (uint16_t)f->version(ssl) : 0;
	const char *sni = f->get_servername ? f->get_servername(ssl, 0) : NULL;
	conn_copy_str(o->sni, sizeof(o->sni), sni, sni ? strlen(sni) : 0);
	const unsigned char *alpn = NULL;
	unsigned int alen = 0;
	if (f->get0_alpn)
		f->get0_alpn(ssl, &alpn, &alen);
	conn_copy_str(o->alpn, sizeof(o->alpn), (const char *)alpn, alen);
	const struct ssl_cipher_st *ci = f->get_cipher ? f->get_cipher(ssl) : NULL;
	const char *cn = ci && f->cipher_name ? f->cipher_name(ci) : NULL;
	conn_copy_str(o->cipher, sizeof(o->cipher), cn, cn ? strlen(cn) : 0);
}

/* OpenSSL frees the SSL (after our SSL_free hook, or SSL_free called inside
 * it): the ex-data's reference goes. */
static void ex_free(void *parent, void *ptr, void *ad, int idx, long argl, void *argp)
{
	if (ptr)
		conn_release(ptr, parent);
}

/* One table row per OpenSSL copy: its functions found by lookup. */
#define OSSL_BACKEND(NAME, LOOKUP, OPSNAME, BIT, WATCH)                                         \
	static struct ossl_be NAME = { .ex_idx = -1, .once = PTHREAD_ONCE_INIT,                 \
				       .lookup = LOOKUP, .ops = &OPSNAME };                      \
	static void NAME##_resolve(void) { be_resolve(&NAME); }                                  \
	static int NAME##_ready(void)                                                            \
	{                                                                                        \
		pthread_once(&NAME.once, NAME##_resolve);                                        \
		return NAME.ex_idx < 0 ? -ENOENT : 0;                                            \
	}                                                                                        \
	static struct cap_conn *NAME##_state(void *sess, int create)                             \
	{                                                                                        \
		return NAME##_ready() < 0 ? NULL : be_state(&NAME, sess, create);                \
	}                                                                                        \
	static int NAME##_is_server(void *sess) { return NAME.f.is_server(sess); }               \
	static int NAME##_get_fd(void *sess) { return be_get_fd(&NAME, sess); }                  \
	static void NAME##_describe(void *sess, struct ring_open *o) { be_describe(&NAME, sess, o); } \
	static int NAME##_client_random(void *sess, uint8_t out[32])                             \
	{                                                                                        \
		return be_client_random(&NAME, sess, out);                                       \
	}                                                                                        \
	static int NAME##_server_hello(void *sess, uint8_t sr[32], uint16_t *v, uint16_t *cs)   \
	{                                                                                        \
		return be_server_hello(&NAME, sess, sr, v, cs);                                  \
	}                                                                                        \
	const struct cap_tls_ops OPSNAME = {                                                     \
		.name = #NAME, .bit = BIT, .watch = WATCH, .resolve = NAME##_ready,              \
		.state = NAME##_state, .is_server = NAME##_is_server, .get_fd = NAME##_get_fd,   \
		.describe = NAME##_describe, .client_random = NAME##_client_random,              \
		.server_hello = NAME##_server_hello,                                             \
	}

/* bypass detection (watch.c) counts through the shared libssl's BIO functions */
OSSL_BACKEND(openssl, sym_ssl, cap_tls_openssl, CAP_TLS_OPENSSL, 1);
OSSL_BACKEND(openssl_static, inl_sym, cap_tls_openssl_static, CAP_TLS_OPENSSL_STATIC, 0);
