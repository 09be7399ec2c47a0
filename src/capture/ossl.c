/* The OpenSSL back-end: per-SSL state in ex-data, the metadata libssl gives (one row of the TLS back-end table). */
#include "capture/capture.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* libssl functions the library calls (never hooks). */
static struct {
	int (*get_fd)(const struct ssl_st *s);
	int (*is_server)(const struct ssl_st *s);
	const char *(*get_servername)(const struct ssl_st *s, int type);
	void (*get0_alpn)(const struct ssl_st *s, const unsigned char **data, unsigned int *len);
	int (*version)(const struct ssl_st *s);
	const struct ssl_cipher_st *(*get_cipher)(const struct ssl_st *s);
	const char *(*cipher_name)(const struct ssl_cipher_st *c);
	size_t (*client_random)(const struct ssl_st *s, unsigned char *out, size_t outlen);
	void *(*get_ex)(const struct ssl_st *s, int idx);
	int (*set_ex)(struct ssl_st *s, int idx, void *data);
	int (*new_index)(int class_index, long argl, void *argp, void *new_func,
			 void *dup_func, void (*free_func)(void *, void *, void *, int, long, void *));
} ossl;

static int ex_idx = -1;
static pthread_once_t ossl_once = PTHREAD_ONCE_INIT;

static void ex_free(void *parent, void *ptr, void *ad, int idx, long argl, void *argp);

static void ossl_resolve(void)
{
	ossl.get_fd = sym_ssl("SSL_get_fd");
	ossl.is_server = sym_ssl("SSL_is_server");
	ossl.get_servername = sym_ssl("SSL_get_servername");
	ossl.get0_alpn = sym_ssl("SSL_get0_alpn_selected");
	ossl.version = sym_ssl("SSL_version");
	ossl.get_cipher = sym_ssl("SSL_get_current_cipher");
	ossl.cipher_name = sym_ssl("SSL_CIPHER_get_name");
	ossl.client_random = sym_ssl("SSL_get_client_random");
	ossl.get_ex = sym_ssl("SSL_get_ex_data");
	ossl.set_ex = sym_ssl("SSL_set_ex_data");
	ossl.new_index = sym_ssl("CRYPTO_get_ex_new_index");
	if (ossl.get_ex && ossl.set_ex && ossl.new_index && ossl.is_server)
		ex_idx = ossl.new_index(0 /* CRYPTO_EX_INDEX_SSL */, 0, NULL, NULL, NULL, ex_free);
}

static int ossl_ready(void)
{
	pthread_once(&ossl_once, ossl_resolve);
	return ex_idx < 0 ? -ENOENT : 0;
}

static struct cap_conn *ossl_state(void *sess, int create)
{
	struct ssl_st *ssl = sess;
	if (ossl_ready() < 0 || !ssl)
		return NULL;
	struct cap_conn *c = ossl.get_ex(ssl, ex_idx);
	if (c || !create)
		return c;
	c = conn_new(&cap_tls_openssl);
	if (!c)
		return NULL;
	if (!ossl.set_ex(ssl, ex_idx, c)) {
		free(c);
		return NULL;
	}
	return c;
}

static int ossl_is_server(void *sess)
{
	return ossl.is_server(sess);
}

static int ossl_get_fd(void *sess)
{
	return ossl.get_fd ? ossl.get_fd(sess) : -1;
}

static int ossl_client_random(void *sess, uint8_t out[32])
{
	if (!ossl.client_random || ossl.client_random(sess, out, 32) != 32)
		return -ENOENT;
	return 0;
}

static void ossl_describe(void *sess, struct ring_open *o)
{
	struct ssl_st *ssl = sess;
	o->tls_version = ossl.version ? (uint16_t)ossl.version(ssl) : 0;
	const char *sni = ossl.get_servername ? ossl.get_servername(ssl, 0) : NULL;
	conn_copy_str(o->sni, sizeof(o->sni), sni, sni ? strlen(sni) : 0);
	const unsigned char *alpn = NULL;
	unsigned int alen = 0;
	if (ossl.get0_alpn)
		ossl.get0_alpn(ssl, &alpn, &alen);
	conn_copy_str(o->alpn, sizeof(o->alpn), (const char *)alpn, alen);
	const struct ssl_cipher_st *ci = ossl.get_cipher ? ossl.get_cipher(ssl) : NULL;
	const char *cn = ci && ossl.cipher_name ? ossl.cipher_name(ci) : NULL;
	conn_copy_str(o->cipher, sizeof(o->cipher), cn, cn ? strlen(cn) : 0);
}

/* libssl frees the SSL (after our SSL_free hook, or SSL_free called inside
 * libssl): the ex-data's reference goes. */
static void ex_free(void *parent, void *ptr, void *ad, int idx, long argl, void *argp)
{
	if (ptr)
		conn_release(ptr, parent);
}

const struct cap_tls_ops cap_tls_openssl = {
	.name = "openssl",
	.bit = CAP_TLS_OPENSSL,
	.watch = 1,
	.resolve = ossl_ready,
	.state = ossl_state,
	.is_server = ossl_is_server,
	.get_fd = ossl_get_fd,
	.describe = ossl_describe,
	.client_random = ossl_client_random,
};
