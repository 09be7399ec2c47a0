/* Integration-test client: reads every response with SSL_peek/SSL_peek_ex before SSL_read/SSL_read_ex. */
/*
 * usage: peekclient HOST PORT CAFILE SIZE
 *
 * Two echo exchanges (recserver.py echo protocol) on one connection. The
 * response of the first is consumed with SSL_peek then SSL_read of the same
 * length, in chunks of varying sizes; the second with SSL_peek_ex then
 * SSL_read_ex. Peeked bytes must equal the bytes read. Prints
 * "conn LOCAL_PORT SENT RECEIVED"; exit 0 only if everything matched.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tlsprog.h"

/* Peeks then reads up to want bytes; returns bytes read or -1 if they differ. */
static int peek_then_read(SSL *ssl, unsigned char *dst, size_t want, int ex)
{
	unsigned char peek[16384];
	size_t pn = 0, rn = 0;
	int r;

	if (want > sizeof(peek))
		want = sizeof(peek);
	if (ex) {
		if (SSL_peek_ex(ssl, peek, want, &pn) != 1)
			return -1;
		/* a second peek must see the same bytes again */
		if (SSL_peek_ex(ssl, dst, pn, &rn) != 1 || rn != pn || memcmp(dst, peek, pn))
			return -1;
		if (SSL_read_ex(ssl, dst, pn, &rn) != 1 || rn != pn)
			return -1;
	} else {
		r = SSL_peek(ssl, peek, (int)want);
		if (r <= 0)
			return -1;
		pn = (size_t)r;
		if (SSL_peek(ssl, dst, 1) != 1 || dst[0] != peek[0])
			return -1;
		r = SSL_read(ssl, dst, (int)pn);
		if (r != (int)pn)
			return -1;
	}
	return memcmp(dst, peek, pn) ? -1 : (int)pn;
}

/* One exchange of n bytes; returns 0 if the echo matched. */
static int exchange(SSL *ssl, int n, uint64_t seed, int ex, long *sent, long *recvd)
{
	static const size_t chunks[] = { 1, 7, 100, 1000, 5000, 16384, 3 };
	unsigned char *req = malloc((size_t)n + 32), *resp = malloc((size_t)n + 64);
	size_t got = 0, total, k = 0;
	int hl, ret = -1;
	char want[32];

	if (!req || !resp)
		goto out;
	hl = snprintf((char *)req, 32, "LEN %d\n", n);
	gen(req + hl, (size_t)n, seed);
	if (SSL_write(ssl, req, hl + n) != hl + n)
		goto out;
	*sent += hl + n;
	snprintf(want, sizeof(want), "ECHO %d\n", n);
	total = strlen(want) + (size_t)n;
	while (got < total) {
		size_t w = chunks[k++ % (sizeof(chunks) / sizeof(chunks[0]))];
		int r = peek_then_read(ssl, resp + got, w < total - got ? w : total - got, ex);

		if (r <= 0) {
			fprintf(stderr, "peek/read mismatch or error at %zu\n", got);
			goto out;
		}
		got += (size_t)r;
	}
	*recvd += (long)got;
	if (memcmp(resp, want, strlen(want)) != 0)
		goto out;
	for (int i = 0; i < n; i++)
		if (resp[strlen(want) + (size_t)i] != req[hl + n - 1 - i])
			goto out;
	ret = 0;
out:
	free(req);
	free(resp);
	return ret;
}

int main(int argc, char **argv)
{
	SSL_CTX *ctx;
	SSL *ssl;
	int fd, n, bad = 0;
	long sent = 0, recvd = 0;
	struct sockaddr_storage me;
	socklen_t ml = sizeof(me);

	if (argc != 5) {
		fprintf(stderr, "usage: peekclient HOST PORT CAFILE SIZE\n");
		return 2;
	}
	n = atoi(argv[4]);
	ctx = SSL_CTX_new(TLS_client_method());
	if (n < 1 || !ctx || SSL_CTX_load_verify_locations(ctx, argv[3], NULL) != 1)
		return 2;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	fd = tcp_connect_to(argv[1], argv[2]);
	if (fd < 0)
		return 2;
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "localhost");
	SSL_set1_host(ssl, "localhost");
	if (SSL_connect(ssl) != 1) {
		ERR_print_errors_fp(stderr);
		return 1;
	}
	bad |= exchange(ssl, n, 11, 0, &sent, &recvd) < 0;
	bad |= exchange(ssl, n / 2 + 1, 12, 1, &sent, &recvd) < 0;
	SSL_shutdown(ssl);
	getsockname(fd, (struct sockaddr *)&me, &ml);
	printf("conn %d %ld %ld\n",
	       ntohs(me.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&me)->sin6_port
					      : ((struct sockaddr_in *)&me)->sin_port), sent, recvd);
	SSL_free(ssl);
	close(fd);
	SSL_CTX_free(ctx);
	if (bad)
		fprintf(stderr, "echo mismatch\n");
	return bad;
}
