/* Integration-test client: TLS connections before and after fork(), in the parent and in children. */
/*
 * usage: forkclient HOST PORT CAFILE NCHILD SIZE
 *
 * The parent makes one connection, forks NCHILD children (sharing the
 * SSL_CTX made before fork), each child makes two connections, the parent
 * one more. Every connection prints "conn PID LOCAL_PORT N". When all are
 * done the parent prints "READY" and waits for a line (or EOF) on stdin so
 * the test can query `tlsmirror stats` while every process is still alive;
 * then the children exit and the parent prints "DONE". Echo protocol of
 * recserver.py. Exit 0 only if every echo matched in every process.
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
#include <sys/wait.h>
#include <unistd.h>

#include "tlsprog.h"

static const char *host, *port;
static SSL_CTX *ctx;
static int size;

static int tcp_connect(void)
{
	return tcp_connect_to(host, port);
}

/* One echo connection with payload seeded by seed; 0 if the echo matched. */
static int one_conn(uint64_t seed)
{
	int n = size + (int)(seed % 997);
	unsigned char *req = malloc((size_t)n + 32), *resp = malloc((size_t)n + 32);
	int hl, fd = -1, ret = -1;
	SSL *ssl = NULL;
	struct sockaddr_storage me;
	socklen_t ml = sizeof(me);
	char want[32], line[64];

	if (!req || !resp)
		goto out;
	hl = snprintf((char *)req, 32, "LEN %d\n", n);
	gen(req + hl, (size_t)n, seed);
	fd = tcp_connect();
	if (fd < 0)
		goto out;
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "localhost");
	SSL_set1_host(ssl, "localhost");
	if (SSL_connect(ssl) != 1 || SSL_write(ssl, req, hl + n) != hl + n)
		goto out;
	snprintf(want, sizeof(want), "ECHO %d\n", n);
	if (read_exact(ssl, resp, strlen(want) + (size_t)n) < 0 ||
	    memcmp(resp, want, strlen(want)) != 0)
		goto out;
	for (int k = 0; k < n; k++)
		if (resp[strlen(want) + (size_t)k] != req[hl + n - 1 - k])
			goto out;
	SSL_shutdown(ssl);
	getsockname(fd, (struct sockaddr *)&me, &ml);
	/* one write() per line: parent and children share stdout */
	hl = snprintf(line, sizeof(line), "conn %d %d %d\n", (int)getpid(),
		      ntohs(me.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&me)->sin6_port
						     : ((struct sockaddr_in *)&me)->sin_port), n);
	if (write(1, line, (size_t)hl) != hl)
		goto out;
	ret = 0;
out:
	if (ret < 0)
		fprintf(stderr, "pid %d: connection seed %llu failed\n", (int)getpid(),
			(unsigned long long)seed);
	SSL_free(ssl);
	if (fd >= 0)
		close(fd);
	free(req);
	free(resp);
	return ret;
}

static void child(int k, int ready_w, int release_r)
{
	int bad = 0;
	char c = 'r';

	bad |= one_conn(100 + (uint64_t)k * 2) < 0;
	bad |= one_conn(101 + (uint64_t)k * 2) < 0;
	if (write(ready_w, &c, 1) != 1)
		bad = 1;
	while (read(release_r, &c, 1) > 0)
		;
	_exit(bad);
}

int main(int argc, char **argv)
{
	int nchild, bad = 0, ready[2], release[2];
	pid_t *kids;
	char c, buf[64];

	if (argc != 6) {
		fprintf(stderr, "usage: forkclient HOST PORT CAFILE NCHILD SIZE\n");
		return 2;
	}
	host = argv[1];
	port = argv[2];
	nchild = atoi(argv[4]);
	size = atoi(argv[5]);
	ctx = SSL_CTX_new(TLS_client_method());
	if (nchild < 1 || size < 1 || !ctx ||
	    SSL_CTX_load_verify_locations(ctx, argv[3], NULL) != 1)
		return 2;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	kids = calloc((size_t)nchild, sizeof(*kids));
	if (!kids || pipe(ready) < 0 || pipe(release) < 0)
		return 2;
	bad |= one_conn(1) < 0;
	for (int k = 0; k < nchild; k++) {
		kids[k] = fork();
		if (kids[k] == 0) {
			close(release[1]);
			close(ready[0]);
			child(k, ready[1], release[0]);
		}
		if (kids[k] < 0)
			return 2;
	}
	close(release[0]);
	close(ready[1]);
	bad |= one_conn(2) < 0;
	for (int k = 0; k < nchild; k++)
		if (read(ready[0], &c, 1) != 1)
			bad = 1;
	printf("READY\n");
	fflush(stdout);
	if (!fgets(buf, sizeof(buf), stdin))
		buf[0] = 0;
	close(release[1]);
	for (int k = 0; k < nchild; k++) {
		int st;

		if (waitpid(kids[k], &st, 0) != kids[k] || !WIFEXITED(st) || WEXITSTATUS(st))
			bad = 1;
	}
	printf("DONE\n");
	fflush(stdout);
	free(kids);
	SSL_CTX_free(ctx);
	return bad;
}
