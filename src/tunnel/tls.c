/* TLS 1.3 contexts for the tunnel: both ends present a certificate and verify the other's against --ca. */
#include "tunnel/tunnel.h"
#include "common/text.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

const char *tls_last_error(void)
{
	static __thread char buf[256];
	unsigned long e = ERR_get_error();
	if (!e)
		return "unknown TLS error";
	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

/* "cannot load --cert FILE (a PEM certificate): <OpenSSL's reason>" in a
 * per-thread buffer: the file and the reason from OpenSSL's error queue. */
static const char *load_error(const char *opt, const char *file, const char *what)
{
	static __thread char buf[PATH_MAX + 512];
	snprintf(buf, sizeof(buf), "cannot load %s %s (%s): %s", opt, file, what,
		 tls_last_error());
	return buf;
}

/* Loads our certificate, key and the CA; shared by both ends. */
static SSL_CTX *ctx_new(const SSL_METHOD *m, const struct sink_opts *o, const char **why)
{
	if (!o->cert || !o->key || !o->ca) {
		*why = "the tunnel needs --cert, --key and --ca (make them with `tlsmirror pki`), "
		       "or --insecure-plaintext-tunnel";
		return NULL;
	}
	SSL_CTX *ctx = SSL_CTX_new(m);
	if (!ctx) {
		*why = tls_last_error();
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	/* AES-128-GCM first: with AES-NI the cheapest suite per byte (a tenth less
	 * CPU than AES-256-GCM, which the tunnel spends on every byte twice) */
	if (SSL_CTX_set_ciphersuites(ctx, TUNNEL_CIPHERSUITES) != 1) {
		*why = tls_last_error();
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
		*why = load_error("--cert", o->cert, "a PEM certificate");
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1) {
		*why = load_error("--key", o->key, "a PEM private key");
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		*why = load_error("--key", o->key, "it does not match --cert");
		goto fail;
	}
	if (SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1) {
		*why = load_error("--ca", o->ca, "a PEM CA certificate");
		goto fail;
	}
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	return ctx;
fail:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

/* The client's application traffic secret of a handshake, kept with its SSL
 * (ex_data) from the key-log callback (OpenSSL hands secrets only to it)
 * until taken, then wiped; freed with the SSL. A collector runs many
 * handshakes at once, so the secret must stay with its own connection. */
struct secret {
	size_t len;
	uint8_t b[48];
};

static int secret_idx = -1;
static pthread_once_t secret_once = PTHREAD_ONCE_INIT;

static void secret_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	if (ptr) {
		OPENSSL_cleanse(ptr, sizeof(struct secret));
		free(ptr);
	}
}

static void secret_init(void)
{
	secret_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, secret_free);
}

static void keylog_cb(const SSL *cssl, const char *line)
{
	static const char pfx[] = "CLIENT_TRAFFIC_SECRET_0 ";
	SSL *ssl = (SSL *)cssl; /* the callback's SSL is the connection's own */
	if (secret_idx < 0 || strncmp(line, pfx, sizeof(pfx) - 1))
		return;
	const char *hex = strchr(line + sizeof(pfx) - 1, ' '); /* after the client random */
	if (!hex)
		return;
	struct secret *s = SSL_get_ex_data(ssl, secret_idx);
	if (!s && (!(s = calloc(1, sizeof(*s))) || !SSL_set_ex_data(ssl, secret_idx, s))) {
		free(s);
		ERR_clear_error();
		return;
	}
	size_t n = 0;
	if (OPENSSL_hexstr2buf_ex(s->b, sizeof(s->b), &n, hex + 1, '\0') != 1)
		n = 0; /* never expected of OpenSSL's own line: no secret then */
	s->len = n;
	ERR_clear_error();
}

/* The secret kept with ssl, once: wiped and freed as it is taken. */
static int take_client_secret(SSL *ssl, uint8_t *out, size_t cap, size_t *len)
{
	struct secret *s = secret_idx >= 0 ? SSL_get_ex_data(ssl, secret_idx) : NULL;
	int ok = s && s->len && s->len <= cap;
	if (ok) {
		memcpy(out, s->b, s->len);
		*len = s->len;
	}
	if (s) {
		SSL_set_ex_data(ssl, secret_idx, NULL);
		OPENSSL_cleanse(s, sizeof(*s));
		free(s);
	}
	return ok ? 0 : -ENOENT;
}

int tls_record_keys(SSL *ssl, uint8_t *secret, size_t cap, size_t *len, const char **suite)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
	*suite = c ? SSL_CIPHER_standard_name(c) : NULL;
	int err = take_client_secret(ssl, secret, cap, len);
	if (!err && (!*suite || SSL_version(ssl) != TLS1_3_VERSION)) {
		OPENSSL_cleanse(secret, cap);
		err = -ENOTSUP;
	}
	return err;
}

/* Both ends keep the client's traffic secret for their own record layer (record.h). */
static void keep_secrets(SSL_CTX *ctx)
{
	pthread_once(&secret_once, secret_init);
	SSL_CTX_set_keylog_callback(ctx, keylog_cb); /* in memory only: record.h */
}

SSL_CTX *tls_client_ctx(const struct sink_opts *o, const char **why)
{
	SSL_CTX *ctx = ctx_new(TLS_client_method(), o, why);
	if (ctx) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		keep_secrets(ctx);
	}
	return ctx;
}

SSL_CTX *tls_server_ctx(const struct sink_opts *o, const char **why)
{
	SSL_CTX *ctx = ctx_new(TLS_server_method(), o, why);
	if (!ctx)
		return NULL;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca);
	if (names)
		SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE); /* ours, also for older agents */
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	/* no read-ahead: OpenSSL 3.0 moves what it read ahead to the front of its
	 * buffer before every record (payload alignment), which copied each byte
	 * eight times in a 256 KiB buffer. Bulk reads come from tls_set_buffered_fd. */
	SSL_CTX_set_read_ahead(ctx, 0);
	keep_secrets(ctx);
	ERR_clear_error();
	return ctx;
}

int tls_set_buffered_fd(SSL *ssl, int fd, int writes)
{
	BIO *sock = BIO_new_socket(fd, BIO_NOCLOSE);
	BIO *buf = BIO_new(BIO_f_buffer());
	if (!sock || !buf || BIO_up_ref(sock) != 1 ||
	    (writes ? BIO_set_write_buffer_size(buf, TLS_BIO_BUF) :
		      BIO_set_read_buffer_size(buf, TLS_BIO_BUF)) != 1) {
		BIO_free(buf);
		BIO_free(sock);
		ERR_clear_error();
		return -ENOMEM;
	}
	BIO_push(buf, sock);
	/* each holds one reference of sock */
	if (writes)
		SSL_set_bio(ssl, sock, buf);
	else
		SSL_set_bio(ssl, buf, sock);
	return 0;
}

int tls_pending(SSL *ssl)
{
	BIO *r = SSL_get_rbio(ssl);
	return SSL_has_pending(ssl) || (r && BIO_ctrl_pending(r) > 0);
}

int tunnel_split_addr(const char *s, char *host, size_t host_len, char *port, size_t port_len)
{
	const char *colon;
	const char *h = s;
	size_t hl;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':')
			return -EINVAL;
		h = s + 1;
		hl = (size_t)(end - h);
		colon = end + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || strchr(s, ':') != colon)
			return -EINVAL;
		hl = (size_t)(colon - s);
	}
	size_t pl = strlen(colon + 1);
	if (!hl || hl >= host_len || pl >= port_len || text_port(colon + 1) < 0)
		return -EINVAL; /* 1..65535, never taken modulo 65536 */
	memcpy(host, h, hl);
	host[hl] = 0;
	memcpy(port, colon + 1, pl + 1);
	return 0;
}
