/* Integration-test client: N pthreads each make M TLS connections, each with its own known payload. */
/*
 * usage: mtclient HOST PORT CAFILE THREADS CONNS SIZE [DELAY_MS]
 *
 * Talks the echo protocol of tests/integration/helpers/recserver.py:
 * sends "LEN n\n" + n bytes, expects "ECHO n\n" + the bytes reversed.
 * Connection (t, i) sends SIZE + (t * 7919 + i * 104729) % SIZE bytes of a
 * pseudo-random sequence seeded by (t, i), without any 0x03 byte. Prints
 * "conn T I LOCAL_PORT N" per connection; exit 0 only if every echo matched.
 * SIGPIPE is left at its default on purpose: the capture library must not
 * raise it.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tlsprog.h"

static const char *host, *port;
static SSL_CTX *ctx;
static int nconns, size, delay_ms;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static int tcp_connect(void)
{
	return tcp_connect_to(host, port);
}

/* One connection; returns 0 if the echo came back exactly. */
static int one_conn(int t, int i)
{
	int n = size + (t * 7919 + i * 104729) % size;
	unsigned char *req = malloc((size_t)n + 32), *resp = malloc((size_t)n + 32);
	int hl, fd = -1, ret = -1;
	SSL *ssl = NULL;
	struct sockaddr_storage me;
	socklen_t ml = sizeof(me);
	char want[32];

	if (!req || !resp)
		goto out;
	hl = snprintf((char *)req, 32, "LEN %d\n", n);
	gen(req + hl, (size_t)n, (uint64_t)t << 32 | (uint64_t)i);
	fd = tcp_connect();
	if (fd < 0) {
		fprintf(stderr, "conn %d/%d: connect failed\n", t, i);
		goto out;
	}
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "localhost");
	SSL_set1_host(ssl, "localhost");
	if (SSL_connect(ssl) != 1) {
		fprintf(stderr, "conn %d/%d: handshake failed\n", t, i);
		ERR_print_errors_fp(stderr);
		goto out;
	}
	if (SSL_write(ssl, req, hl + n) != hl + n) {
		fprintf(stderr, "conn %d/%d: SSL_write failed\n", t, i);
		goto out;
	}
	snprintf(want, sizeof(want), "ECHO %d\n", n);
	if (read_exact(ssl, resp, strlen(want) + (size_t)n) < 0 ||
	    memcmp(resp, want, strlen(want)) != 0) {
		fprintf(stderr, "conn %d/%d: bad or short echo header\n", t, i);
		goto out;
	}
	for (int k = 0; k < n; k++) {
		if (resp[strlen(want) + (size_t)k] != req[hl + n - 1 - k]) {
			fprintf(stderr, "conn %d/%d: echo differs at %d\n", t, i, k);
			goto out;
		}
	}
	SSL_shutdown(ssl);
	getsockname(fd, (struct sockaddr *)&me, &ml);
	pthread_mutex_lock(&out_lock);
	printf("conn %d %d %d %d\n", t, i,
	       ntohs(me.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&me)->sin6_port
					      : ((struct sockaddr_in *)&me)->sin_port), n);
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
	ret = 0;
out:
	SSL_free(ssl);
	if (fd >= 0)
		close(fd);
	free(req);
	free(resp);
	return ret;
}

static void *worker(void *arg)
{
	int t = (int)(intptr_t)arg;
	intptr_t bad = 0;

	for (int i = 0; i < nconns; i++) {
		if (one_conn(t, i) < 0)
			bad++;
		if (delay_ms) {
			struct timespec ts = { delay_ms / 1000, (delay_ms % 1000) * 1000000L };

			nanosleep(&ts, NULL);
		}
	}
	return (void *)bad;
}

int main(int argc, char **argv)
{
	int nthreads, bad = 0;
	pthread_t *th;

	if (argc < 7) {
		fprintf(stderr, "usage: mtclient HOST PORT CAFILE THREADS CONNS SIZE [DELAY_MS]\n");
		return 2;
	}
	host = argv[1];
	port = argv[2];
	nthreads = atoi(argv[4]);
	nconns = atoi(argv[5]);
	size = atoi(argv[6]);
	delay_ms = argc > 7 ? atoi(argv[7]) : 0;
	if (nthreads < 1 || nconns < 1 || size < 1)
		return 2;
	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx || SSL_CTX_load_verify_locations(ctx, argv[3], NULL) != 1)
		return 2;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	th = calloc((size_t)nthreads, sizeof(*th));
	if (!th)
		return 2;
	for (int t = 0; t < nthreads; t++)
		pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t);
	for (int t = 0; t < nthreads; t++) {
		void *r;

		pthread_join(th[t], &r);
		bad += (int)(intptr_t)r;
	}
	free(th);
	SSL_CTX_free(ctx);
	if (bad)
		fprintf(stderr, "%d connections failed\n", bad);
	return bad ? 1 : 0;
}
