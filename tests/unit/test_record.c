/* Unit tests for tunnel/record.c: records the agent seals itself, read back by OpenSSL's own reader, across key updates, for every suite. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "sinks/sink.h"
#include "tunnel/record.h"
#include "tunnel/tunnel.h"
#include "unit.h"

/* A self-signed P-256 certificate and its key, as PEM files in dir: both
 * ends present it and trust it. */
static int make_cert(const char *dir, char *cert, char *key, size_t len)
{
	snprintf(cert, len, "%s/c.pem", dir);
	snprintf(key, len, "%s/k.pem", dir);
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	int ok = pk && x;
	if (ok) {
		X509_set_version(x, 2);
		ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
		X509_gmtime_adj(X509_getm_notBefore(x), -60);
		X509_gmtime_adj(X509_getm_notAfter(x), 3600);
		X509_set_pubkey(x, pk);
		X509_NAME *n = X509_get_subject_name(x);
		X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"unit", -1, -1, 0);
		X509_set_issuer_name(x, n);
		ok = X509_sign(x, pk, EVP_sha256()) > 0;
	}
	FILE *fc = ok ? fopen(cert, "w") : NULL, *fk = ok ? fopen(key, "w") : NULL;
	ok = fc && fk && PEM_write_X509(fc, x) && PEM_write_PrivateKey(fk, pk, NULL, NULL, 0, NULL, NULL);
	if (fc)
		fclose(fc);
	if (fk)
		fclose(fk);
	X509_free(x);
	EVP_PKEY_free(pk);
	return ok ? 0 : -1;
}

struct server {
	SSL *ssl;
	size_t want;
	uint8_t *got;
	size_t have;
	int accepted, closed;
};

static void *serve(void *arg)
{
	struct server *s = arg;
	s->accepted = SSL_accept(s->ssl) == 1;
	while (s->accepted && s->have < s->want) {
		int n = SSL_read(s->ssl, s->got + s->have, (int)(s->want - s->have));
		if (n <= 0)
			break;
		s->have += (size_t)n;
	}
	if (s->have < s->want) {
		/* a record OpenSSL refused: the writer's next send fails, not hangs */
		shutdown(SSL_get_fd(s->ssl), SHUT_RDWR);
		return NULL;
	}
	/* then the close_notify: a clean end of the stream */
	uint8_t b;
	s->closed = s->accepted && SSL_read(s->ssl, &b, 1) == 0 &&
		    SSL_get_error(s->ssl, 0) == SSL_ERROR_ZERO_RETURN;
	return NULL;
}

/* total bytes of a pattern through the writer with key updates every
 * per_key records, in writes of the sizes in `sizes` (cycled), on `suite`. */
static void one_run(const char *suites, size_t total, uint64_t per_key)
{
	char dir[] = "/tmp/tlsmirror-rec.XXXXXX", cert[64], key[64];
	if (!CHECK(mkdtemp(dir) != NULL) || !CHECK_EQ(make_cert(dir, cert, key, sizeof(cert)), 0))
		return;
	struct sink_opts o = { .cert = cert, .key = key, .ca = cert };
	const char *why = NULL;
	SSL_CTX *cc = tls_client_ctx(&o, &why), *sc = tls_server_ctx(&o, &why);
	CHECK(cc && sc);
	CHECK_EQ(SSL_CTX_set_ciphersuites(cc, suites), 1);
	CHECK_EQ(SSL_CTX_set_ciphersuites(sc, suites), 1);
	int sv[2];
	CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	SSL *c = SSL_new(cc);
	struct server s = { .ssl = SSL_new(sc), .want = total, .got = malloc(total) };
	CHECK_EQ(tls_set_buffered_fd(c, sv[0], 1), 0);
	CHECK_EQ(tls_set_buffered_fd(s.ssl, sv[1], 0), 0);
	pthread_t th;
	pthread_create(&th, NULL, serve, &s);
	CHECK_EQ(SSL_connect(c), 1);
	CHECK_EQ(BIO_flush(SSL_get_wbio(c)), 1);

	uint8_t secret[TLS13W_MAX_SECRET];
	size_t slen = 0;
	CHECK_EQ(tls_take_client_secret(c, secret, sizeof(secret), &slen), 0);
	/* taken once: wiped after */
	size_t again;
	CHECK_EQ(tls_take_client_secret(c, secret + 0, sizeof(secret), &again), -ENOENT);
	struct tls13w w;
	const char *suite = SSL_CIPHER_standard_name(SSL_get_current_cipher(c));
	CHECK_EQ(tls13w_init(&w, suite, secret, slen, sv[0], per_key), 0);

	uint8_t *src = malloc(total);
	for (size_t i = 0; i < total; i++)
		src[i] = (uint8_t)(i * 131 + (i >> 11));
	static const size_t sizes[] = { 1, 16384, 16385, 7, 100000, 0, 32768, 3 };
	size_t at = 0;
	for (int k = 0; at < total; k++) {
		size_t n = sizes[k % 8];
		if (n > total - at)
			n = total - at;
		if (!CHECK_EQ(tls13w_write(&w, src + at, n), 0))
			break;
		at += n;
		if (k % 5 == 0)
			CHECK_EQ(tls13w_flush(&w), 0);
	}
	CHECK_EQ(tls13w_flush(&w), 0);
	uint64_t records = w.records, updates = w.key_updates;
	tls13w_close(&w);
	pthread_join(th, NULL);
	CHECK(s.accepted);
	CHECK_EQ(s.have, total);
	CHECK(s.have == total && !memcmp(s.got, src, total));
	CHECK(s.closed);
	if (per_key && records > per_key)
		CHECK(updates >= (records - 1) / (per_key + 1));
	else
		CHECK_EQ(updates, 0);
	tls13w_free(&w);
	free(src);
	free(s.got);
	SSL_free(c);
	SSL_free(s.ssl);
	SSL_CTX_free(cc);
	SSL_CTX_free(sc);
	close(sv[0]);
	close(sv[1]);
	unlink(cert);
	unlink(key);
	rmdir(dir);
	ERR_clear_error();
}

TEST(tunnel_records_read_by_openssl)
{
	/* each suite, no key update, then one every 3 records and every record */
	one_run("TLS_AES_128_GCM_SHA256", 1 << 20, 0);
	one_run("TLS_AES_256_GCM_SHA384", 1 << 20, 0);
	one_run("TLS_CHACHA20_POLY1305_SHA256", 1 << 20, 0);
	one_run("TLS_AES_128_GCM_SHA256", 600000, 3);
	one_run("TLS_AES_256_GCM_SHA384", 300000, 1);
	one_run("TLS_CHACHA20_POLY1305_SHA256", 300000, 2);
}

TEST(tunnel_records_refuse_unknown)
{
	struct tls13w w;
	uint8_t secret[48] = { 1 };
	CHECK_EQ(tls13w_init(&w, "TLS_AES_128_CCM_SHA256", secret, 32, -1, 0), -ENOTSUP);
	/* a secret of the wrong length for the suite's hash */
	CHECK_EQ(tls13w_init(&w, "TLS_AES_256_GCM_SHA384", secret, 32, -1, 0), -ENOTSUP);
}
