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

/* A finished handshake over a socket pair: the client's own writer (sealing
 * with a KeyUpdate every per_key records, 0: the default) or its SSL, the
 * server's reader or its SSL. */
struct pair {
	char dir[256], cert[300], key[300];
	SSL_CTX *cc, *sc;
	SSL *c, *s;
	int sv[2];
	struct tls13w w;
	struct tls13r r;
};

static void *accept_thread(void *arg)
{
	SSL *s = arg;
	return (void *)(long)(SSL_accept(s) == 1);
}

static int pair_open(struct pair *p, const char *suites, int own_writer, int own_reader,
		     uint64_t per_key)
{
	memset(p, 0, sizeof(*p));
	p->sv[0] = p->sv[1] = -1;
	/* under the run's directory (removed at exit, even after a test that
	 * returned before pair_close); XXXXXX: mkdtemp's template */
	snprintf(p->dir, sizeof(p->dir), "%s/rec.XXXXXX", unit_tmpdir());
	if (!mkdtemp(p->dir) || make_cert(p->dir, p->cert, p->key, sizeof(p->cert)))
		return -1;
	struct sink_opts o = { .cert = p->cert, .key = p->key, .ca = p->cert };
	const char *why;
	p->cc = tls_client_ctx(&o, &why);
	p->sc = tls_server_ctx(&o, &why);
	if (!p->cc || !p->sc || SSL_CTX_set_ciphersuites(p->cc, suites) != 1 ||
	    SSL_CTX_set_ciphersuites(p->sc, suites) != 1 ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, p->sv))
		return -1;
	/* a writer whose reader gave up fails instead of hanging */
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(p->sv[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	p->c = SSL_new(p->cc);
	p->s = SSL_new(p->sc);
	if (tls_set_buffered_fd(p->c, p->sv[0], 1) || tls_set_buffered_fd(p->s, p->sv[1], 0))
		return -1;
	pthread_t th;
	pthread_create(&th, NULL, accept_thread, p->s);
	int ok = SSL_connect(p->c) == 1 && BIO_flush(SSL_get_wbio(p->c)) == 1;
	void *acc;
	pthread_join(th, &acc);
	if (!ok || !acc)
		return -1;
	uint8_t secret[TLS13W_MAX_SECRET];
	size_t len;
	const char *suite;
	if (own_writer && (tls_record_keys(p->c, secret, sizeof(secret), &len, &suite) ||
			   tls13w_init(&p->w, suite, secret, len, p->sv[0], per_key)))
		return -1;
	if (own_reader && (tls_record_keys(p->s, secret, sizeof(secret), &len, &suite) ||
			   tls13r_init(&p->r, suite, secret, len, p->sv[1])))
		return -1;
	return 0;
}

static void pair_close(struct pair *p)
{
	tls13w_free(&p->w);
	tls13r_free(&p->r);
	SSL_free(p->c);
	SSL_free(p->s);
	SSL_CTX_free(p->cc);
	SSL_CTX_free(p->sc);
	if (p->sv[0] >= 0)
		close(p->sv[0]);
	if (p->sv[1] >= 0)
		close(p->sv[1]);
	unlink(p->cert);
	unlink(p->key);
	rmdir(p->dir);
	ERR_clear_error();
}

struct server {
	SSL *ssl;
	size_t want;
	uint8_t *got;
	size_t have;
	int closed;
};

static void *serve(void *arg)
{
	struct server *s = arg;
	while (s->have < s->want) {
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
	s->closed = SSL_read(s->ssl, &b, 1) == 0 && SSL_get_error(s->ssl, 0) == SSL_ERROR_ZERO_RETURN;
	return NULL;
}

/* total bytes of a pattern through the writer with key updates every
 * per_key records, in writes of the sizes in `sizes` (cycled), on `suite`,
 * read by OpenSSL. */
static void one_run(const char *suites, size_t total, uint64_t per_key)
{
	struct pair p;
	if (!CHECK_EQ(pair_open(&p, suites, 1, 0, per_key), 0)) {
		pair_close(&p);
		return;
	}
	/* the secret is taken once: wiped after */
	uint8_t again[TLS13W_MAX_SECRET];
	size_t alen;
	const char *suite;
	CHECK_EQ(tls_record_keys(p.c, again, sizeof(again), &alen, &suite), -ENOENT);
	struct server s = { .ssl = p.s, .want = total, .got = malloc(total) };
	pthread_t th;
	pthread_create(&th, NULL, serve, &s);

	uint8_t *src = malloc(total);
	for (size_t i = 0; i < total; i++)
		src[i] = (uint8_t)(i * 131 + (i >> 11));
	static const size_t sizes[] = { 1, 16384, 16385, 7, 100000, 0, 32768, 3 };
	size_t at = 0;
	for (int k = 0; at < total; k++) {
		size_t n = sizes[k % 8];
		if (n > total - at)
			n = total - at;
		if (!CHECK_EQ(tls13w_write(&p.w, src + at, n), 0))
			break;
		at += n;
		if (k % 5 == 0)
			CHECK_EQ(tls13w_flush(&p.w), 0);
	}
	CHECK_EQ(tls13w_flush(&p.w), 0);
	uint64_t records = p.w.records, updates = p.w.k.key_updates;
	tls13w_close(&p.w);
	pthread_join(th, NULL);
	CHECK_EQ(s.have, total);
	CHECK(s.have == total && !memcmp(s.got, src, total));
	CHECK(s.closed);
	if (per_key && records > per_key)
		CHECK(updates >= (records - 1) / (per_key + 1));
	else
		CHECK_EQ(updates, 0);
	free(src);
	free(s.got);
	pair_close(&p);
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

/* ---------------------------------------------------------------- the reader */

/* What the server's BIO holds moves to the reader (as the collector does). */
static void pair_take_ahead(struct pair *p)
{
	BIO *rb = SSL_get_rbio(p->s);
	size_t pre = BIO_ctrl_pending(rb);
	if (pre)
		CHECK_EQ(BIO_read(rb, p->r.raw + p->r.hi, (int)pre), (int)pre);
	p->r.hi += pre;
}

/* Reads until want bytes, the end or an error; returns the last result. */
static long read_all(struct tls13r *r, uint8_t *out, size_t want, size_t *got, size_t step)
{
	long n = 0;
	*got = 0;
	for (int spins = 0; *got < want && spins < 100000; spins++) {
		size_t ask = want - *got < step ? want - *got : step;
		n = tls13r_read(r, out + *got, ask);
		if (n == -EAGAIN) {
			usleep(100);
			continue;
		}
		if (n <= 0)
			break;
		*got += (size_t)n;
	}
	return n;
}

struct wjob {
	struct tls13w *w;
	const uint8_t *src;
	size_t n;
	int err;
};

static void *write_thread(void *arg)
{
	struct wjob *j = arg;
	for (size_t at = 0; at < j->n && !j->err;) {
		size_t k = j->n - at < 70000 ? j->n - at : 70000;
		j->err = tls13w_write(j->w, j->src + at, k) || tls13w_flush(j->w);
		at += k;
	}
	tls13w_close(j->w);
	return NULL;
}

TEST(tunnel_records_writer_to_reader)
{
	/* our writer (key update every 2 records) to our reader, read in steps
	 * smaller and larger than a record, then the close_notify */
	static const char *suites[] = { "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
					"TLS_CHACHA20_POLY1305_SHA256" };
	static const size_t steps[] = { 1000, 16384, 1 << 20 };
	for (int i = 0; i < 3; i++) {
		struct pair p;
		if (!CHECK_EQ(pair_open(&p, suites[i], 1, 1, 2), 0)) {
			pair_close(&p);
			return;
		}
		pair_take_ahead(&p);
		size_t total = 700000;
		uint8_t *src = malloc(total), *dst = malloc(total);
		for (size_t k = 0; k < total; k++)
			src[k] = (uint8_t)(k * 7 + i);
		struct wjob j = { &p.w, src, total, 0 };
		pthread_t th;
		pthread_create(&th, NULL, write_thread, &j);
		size_t got;
		long last = read_all(&p.r, dst, total, &got, steps[i]);
		CHECK(last > 0);
		CHECK_EQ(got, total);
		CHECK(!memcmp(src, dst, total));
		uint8_t b;
		long end;
		while ((end = tls13r_read(&p.r, &b, 1)) == -EAGAIN)
			usleep(100);
		pthread_join(th, NULL);
		CHECK_EQ(j.err, 0);
		CHECK_EQ(end, 0);
		CHECK(p.r.why && strstr(p.r.why, "close_notify"));
		CHECK(p.r.k.key_updates > 10);
		CHECK_EQ(p.r.k.key_updates, p.w.k.key_updates);
		free(src);
		free(dst);
		pair_close(&p);
	}
}

TEST(tunnel_records_openssl_writer_to_reader)
{
	/* an agent on SSL_write (a suite or an agent without our writer) is read as well */
	struct pair p;
	if (!CHECK_EQ(pair_open(&p, "TLS_AES_128_GCM_SHA256", 0, 1, 0), 0)) {
		pair_close(&p);
		return;
	}
	uint8_t msg[50000];
	for (size_t k = 0; k < sizeof(msg); k++)
		msg[k] = (uint8_t)(k ^ 0x5a);
	for (size_t at = 0; at < sizeof(msg);) { /* partial writes: a record at a time */
		int k = SSL_write(p.c, msg + at, (int)(sizeof(msg) - at));
		if (!CHECK(k > 0))
			break;
		at += (size_t)k;
	}
	CHECK_EQ(BIO_flush(SSL_get_wbio(p.c)), 1);
	pair_take_ahead(&p);
	uint8_t got[sizeof(msg)];
	size_t n;
	CHECK(read_all(&p.r, got, sizeof(got), &n, 3000) > 0);
	CHECK_EQ(n, sizeof(msg));
	CHECK(!memcmp(msg, got, sizeof(msg)));
	SSL_shutdown(p.c);
	BIO_flush(SSL_get_wbio(p.c));
	long end;
	while ((end = tls13r_read(&p.r, got, 1)) == -EAGAIN)
		usleep(100);
	CHECK_EQ(end, 0);
	pair_close(&p);
}

/* One hostile case: what `make` puts on the wire after a good record; the
 * reader must deliver the good record, then fail with a reason containing
 * `why` (or end, want_end), never deliver a byte of the bad one. */
static void hostile(const char *name, void (*make)(struct pair *), const char *why, int want_end)
{
	struct pair p;
	if (!CHECK_EQ(pair_open(&p, "TLS_AES_128_GCM_SHA256", 1, 1, 2), 0)) {
		pair_close(&p);
		return;
	}
	CHECK_EQ(tls13w_write(&p.w, "good", 4), 0);
	CHECK_EQ(tls13w_flush(&p.w), 0);
	make(&p);
	pair_take_ahead(&p);
	uint8_t out[40000];
	long n;
	while ((n = tls13r_read(&p.r, out, sizeof(out))) == -EAGAIN)
		usleep(100);
	CHECK_EQ(n, 4);
	CHECK(!memcmp(out, "good", 4));
	for (int spins = 0; (n = tls13r_read(&p.r, out, sizeof(out))) == -EAGAIN && spins < 20000; spins++)
		usleep(100);
	if (want_end)
		CHECK_EQ(n, 0);
	else
		CHECK_EQ(n, -EPROTO);
	if (!CHECK(p.r.why && strstr(p.r.why, why)))
		fprintf(stderr, "%s: why \"%s\", wanted \"%s\"\n", name, p.r.why ? p.r.why : "", why);
	pair_close(&p);
}

static void raw_bytes(struct pair *p, const uint8_t *b, size_t n)
{
	CHECK_EQ(write(p->sv[0], b, n), (ssize_t)n);
}

static void mk_outer_handshake(struct pair *p)
{
	static const uint8_t b[] = { 22, 3, 3, 0, 20, 1, 2, 3 };
	raw_bytes(p, b, sizeof(b));
}
static void mk_bad_version(struct pair *p)
{
	static const uint8_t b[] = { 23, 3, 1, 0, 20 };
	raw_bytes(p, b, sizeof(b));
}
static void mk_too_long(struct pair *p)
{
	static const uint8_t b[] = { 23, 3, 3, 0x41, 0x01 }; /* 2^14 + 257 */
	raw_bytes(p, b, sizeof(b));
}
static void mk_too_short(struct pair *p)
{
	static const uint8_t b[] = { 23, 3, 3, 0, 16 };
	raw_bytes(p, b, sizeof(b));
}
static void mk_flipped(struct pair *p)
{
	CHECK_EQ(tls13w_write(&p->w, "secret bytes", 12), 0);
	p->w.buf[7] ^= 1; /* a ciphertext byte in the buffer, before it is sent */
	CHECK_EQ(tls13w_flush(&p->w), 0);
}
static void mk_truncated(struct pair *p)
{
	CHECK_EQ(tls13w_write(&p->w, "cut short", 9), 0);
	p->w.used -= 3;
	CHECK_EQ(tls13w_flush(&p->w), 0);
	shutdown(p->sv[0], SHUT_WR);
}
static void mk_alert(struct pair *p)
{
	static const uint8_t a[] = { 2, 40 }; /* fatal handshake_failure */
	CHECK_EQ(tls13w_seal(&p->w, 21, a, 2), 0);
	CHECK_EQ(tls13w_flush(&p->w), 0);
}
static void mk_keyupdate_requested(struct pair *p)
{
	static const uint8_t m[] = { 24, 0, 0, 1, 1 };
	CHECK_EQ(tls13w_seal(&p->w, 22, m, sizeof(m)), 0);
	CHECK_EQ(tls13w_flush(&p->w), 0);
}
static void mk_ticket(struct pair *p)
{
	static const uint8_t m[] = { 4, 0, 0, 1, 0 };
	CHECK_EQ(tls13w_seal(&p->w, 22, m, sizeof(m)), 0);
	CHECK_EQ(tls13w_flush(&p->w), 0);
}
static void mk_no_type(struct pair *p)
{
	static const uint8_t z[8] = { 0 };
	CHECK_EQ(tls13w_seal(&p->w, 0, z, sizeof(z)), 0);
	CHECK_EQ(tls13w_flush(&p->w), 0);
}
static void mk_unknown_type(struct pair *p)
{
	CHECK_EQ(tls13w_seal(&p->w, 99, "x", 1), 0);
	CHECK_EQ(tls13w_flush(&p->w), 0);
}
static void mk_eof(struct pair *p)
{
	shutdown(p->sv[0], SHUT_WR);
}

TEST(tunnel_records_reader_refuses_hostile)
{
	hostile("outer handshake", mk_outer_handshake, "not application data", 0);
	hostile("version", mk_bad_version, "version", 0);
	hostile("too long", mk_too_long, "length", 0);
	hostile("too short", mk_too_short, "length", 0);
	hostile("flipped", mk_flipped, "bad record MAC", 0);
	hostile("truncated", mk_truncated, "inside a record", 0);
	hostile("alert", mk_alert, "alert", 0);
	hostile("keyupdate", mk_keyupdate_requested, "asking for an update", 0);
	hostile("ticket", mk_ticket, "other than KeyUpdate", 0);
	hostile("no type", mk_no_type, "without a content type", 0);
	hostile("unknown", mk_unknown_type, "unknown content type", 0);
	hostile("eof", mk_eof, "without close_notify", 1);
}
