/* Integration-test program: a TLS connection handed over to a child by fork() (client and pre-fork server). */
/*
 * usage: forkhand client HOST PORT CAFILE SIZE
 *        forkhand split  HOST PORT CAFILE SIZE
 *        forkhand hold   HOST PORT CAFILE SIZE
 *        forkhand exit   HOST PORT CAFILE SIZE
 *        forkhand server PORT CERT KEY NCONN
 *
 * client: connect and handshake, fork; the child sends one echo request
 * ("LEN n\n" + n bytes, recserver.py's echo protocol), checks the echo and
 * shuts the connection down; the parent frees its SSL and closes its socket
 * without SSL_shutdown (as real programs do) right after the fork.
 * split: the parent writes the first half of the request before forking,
 * the child writes the rest and reads the echo.
 * hold: like client, but the parent keeps its copy open until the child has
 * exited, then frees and closes it.
 * exit: the parent exits at once without closing anything (a daemon's
 * parent); the child waits 500 ms (so the agent sees the parent gone first),
 * then does the request.
 * Both print "conn PID LOCAL_PORT N" (the child) and exit 0 only if the echo
 * matched.
 *
 * server: a pre-fork server on 127.0.0.1:PORT: accepts and handshakes in the
 * parent, forks, the child answers one echo request and shuts down, the
 * parent frees its copy without SSL_shutdown and accepts the next one;
 * NCONN connections, then it prints "DONE" and exits 0 if every child did.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tlsprog.h"

static int local_port(int fd)
{
	struct sockaddr_in6 me;
	socklen_t ml = sizeof(me);
	if (getsockname(fd, (struct sockaddr *)&me, &ml) < 0)
		return -1;
	return ntohs(me.sin6_family == AF_INET6 ? me.sin6_port
						 : ((struct sockaddr_in *)&me)->sin_port);
}

static int write_all(SSL *ssl, const unsigned char *p, int n)
{
	return SSL_write(ssl, p, n) == n ? 0 : -1;
}

/* The child's part: the rest of the request from `sent`, then the echo. */
static int child_request(SSL *ssl, int fd, const unsigned char *req, int total, int sent, int n)
{
	char want[32], line[64];
	size_t wl = (size_t)snprintf(want, sizeof(want), "ECHO %d\n", n);
	unsigned char *resp = malloc(wl + (size_t)n);
	int hl = total - n;
	if (!resp || write_all(ssl, req + sent, total - sent) < 0 ||
	    read_exact(ssl, resp, wl + (size_t)n) < 0 || memcmp(resp, want, wl) != 0)
		return -1;
	for (int k = 0; k < n; k++)
		if (resp[wl + (size_t)k] != req[hl + n - 1 - k])
			return -1;
	free(resp);
	SSL_shutdown(ssl);
	int l = snprintf(line, sizeof(line), "conn %d %d %d\n", (int)getpid(), local_port(fd), n);
	return write(1, line, (size_t)l) == l ? 0 : -1;
}

static int client(const char *mode, const char *host, const char *port, const char *ca, int n)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
		return 2;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	unsigned char *req = malloc((size_t)n + 32);
	int hl = snprintf((char *)req, 32, "LEN %d\n", n);
	gen(req + hl, (size_t)n, 7);
	int fd = tcp_connect_to(host, port);
	if (fd < 0)
		return 2;
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "localhost");
	SSL_set1_host(ssl, "localhost");
	if (SSL_connect(ssl) != 1)
		return 2;
	int sent = !strcmp(mode, "split") ? hl + n / 2 : 0;
	if (sent && write_all(ssl, req, sent) < 0)
		return 2;
	pid_t kid = fork();
	if (kid < 0)
		return 2;
	if (kid == 0) {
		if (!strcmp(mode, "exit"))
			usleep(500 * 1000);
		_exit(child_request(ssl, fd, req, hl + n, sent, n) < 0 ? 1 : 0);
	}
	if (!strcmp(mode, "exit"))
		_exit(0);
	int hold = !strcmp(mode, "hold"), st;
	if (!hold) {
		SSL_free(ssl); /* no SSL_shutdown: the child goes on with the connection */
		close(fd);
	}
	if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "child failed\n");
		return 1;
	}
	if (hold) {
		SSL_free(ssl);
		close(fd);
	}
	SSL_CTX_free(ctx);
	free(req);
	return 0;
}

/* A child of the pre-fork server: one echo request on an established connection. */
static int serve(SSL *ssl)
{
	char line[32];
	size_t l = 0;
	while (l + 1 < sizeof(line)) {
		if (SSL_read(ssl, line + l, 1) != 1)
			return -1;
		if (line[l++] == '\n')
			break;
	}
	line[l] = 0;
	int n;
	if (sscanf(line, "LEN %d", &n) != 1 || n < 0 || n > (1 << 24))
		return -1;
	unsigned char *b = malloc((size_t)n + 32);
	if (!b || read_exact(ssl, b + 32, (size_t)n) < 0)
		return -1;
	int hl = snprintf((char *)b, 32, "ECHO %d\n", n);
	unsigned char *out = malloc((size_t)(hl + n));
	memcpy(out, b, (size_t)hl);
	for (int k = 0; k < n; k++)
		out[hl + k] = b[32 + n - 1 - k];
	int ok = write_all(ssl, out, hl + n);
	SSL_shutdown(ssl);
	free(b);
	free(out);
	return ok;
}

static int server(const char *port, const char *cert, const char *key, int nconn)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		return 2;
	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1, bad = 0;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 16) < 0)
		return 2;
	printf("LISTENING\n");
	fflush(stdout);
	for (int i = 0; i < nconn; i++) {
		int fd = accept(ls, NULL, NULL);
		if (fd < 0)
			return 2;
		SSL *ssl = SSL_new(ctx);
		SSL_set_fd(ssl, fd);
		if (SSL_accept(ssl) != 1) {
			bad = 1;
			SSL_free(ssl);
			close(fd);
			continue;
		}
		pid_t kid = fork();
		if (kid == 0) {
			close(ls);
			_exit(serve(ssl) < 0 ? 1 : 0);
		}
		SSL_free(ssl); /* the parent's copy: no SSL_shutdown */
		close(fd);
		int st;
		if (kid < 0 || waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st))
			bad = 1;
	}
	printf("DONE\n");
	fflush(stdout);
	SSL_CTX_free(ctx);
	return bad;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 6 && (!strcmp(argv[1], "client") || !strcmp(argv[1], "split") ||
			  !strcmp(argv[1], "hold") || !strcmp(argv[1], "exit")))
		return client(argv[1], argv[2], argv[3], argv[4], atoi(argv[5]));
	if (argc == 6 && !strcmp(argv[1], "server"))
		return server(argv[2], argv[3], argv[4], atoi(argv[5]));
	fprintf(stderr, "usage: forkhand client|split|hold|exit HOST PORT CAFILE SIZE\n"
			"       forkhand server PORT CERT KEY NCONN\n");
	return 2;
}
