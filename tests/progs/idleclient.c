/* Integration-test client: one TLS connection, one echo exchange, then idle; reports the first calls' durations. */
/*
 * usage: idleclient HOST PORT CAFILE
 *
 * Connects, does SSL_connect and one echo exchange of 100 bytes
 * (recserver.py echo protocol: "LEN n\n" + n bytes, answered by
 * "ECHO n\n" + the bytes reversed), then prints
 *   "ready CONNECT_US WRITE_US CPU_US\n"
 * (the wall-clock time of the process's first TLS calls: SSL_connect, and
 * the first SSL_write; and the CPU time the process spent in both) and holds the connection open, idle, until its stdin
 * reaches EOF. Exit 0 only if the echo matched.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tlsprog.h"

static long long us_since_on(clockid_t clk, const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(clk, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1000000LL + (t1.tv_nsec - t0->tv_nsec) / 1000;
}

static long long us_since(const struct timespec *t0)
{
	return us_since_on(CLOCK_MONOTONIC, t0);
}

int main(int argc, char **argv)
{
	unsigned char req[132], resp[132];
	struct timespec t0, c0;
	char line[64];
	long long t_conn, t_write, t_cpu;
	int n = 100, fd, hl;

	if (argc != 4) {
		fprintf(stderr, "usage: idleclient HOST PORT CAFILE\n");
		return 2;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx || SSL_CTX_load_verify_locations(ctx, argv[3], NULL) != 1)
		return 1;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	fd = tcp_connect_to(argv[1], argv[2]);
	if (fd < 0)
		return 1;
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "localhost");
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (SSL_connect(ssl) != 1) {
		ERR_print_errors_fp(stderr);
		return 1;
	}
	t_conn = us_since(&t0);
	hl = snprintf((char *)req, 32, "LEN %d\n", n);
	gen(req + hl, (size_t)n, 42);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (SSL_write(ssl, req, hl + n) != hl + n)
		return 1;
	t_write = us_since(&t0);
	t_cpu = us_since_on(CLOCK_PROCESS_CPUTIME_ID, &c0);
	if (read_exact(ssl, resp, (size_t)hl + 1 + (size_t)n) < 0 || memcmp(resp, "ECHO", 4))
		return 1;
	for (int i = 0; i < n; i++)
		if (resp[hl + 1 + i] != req[hl + n - 1 - i])
			return 1;
	printf("ready %lld %lld %lld\n", t_conn, t_write, t_cpu);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin))
		;
	SSL_shutdown(ssl);
	SSL_free(ssl);
	close(fd);
	SSL_CTX_free(ctx);
	return 0;
}
