/*
 * A TLS program with OpenSSL linked into the executable (libssl.a, libcrypto.a),
 * as node or Envoy carry it: tlsmirror must hook its own SSL_read/SSL_write in place.
 *
 *   staticssl server PORT CERT KEY    accept one connection
 *   staticssl client HOST PORT CAFILE [SNI]
 *
 * Like `openssl s_server/s_client -quiet`: stdin goes to the peer, what the
 * peer sends goes to stdout; at stdin's end it sends close_notify and reads
 * until the peer ends too. The server reads with SSL_read_ex and writes with
 * SSL_write, the client reads with SSL_read and writes with SSL_write_ex, so
 * that every hooked entry point is used. Prints "ACCEPT"/"CONNECTED" on
 * stderr once the handshake is done (with SSL_do_handshake).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int die(const char *what)
{
	fprintf(stderr, "staticssl: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static int listen_accept(int port)
{
	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 1) < 0)
		die("listen");
	fprintf(stderr, "LISTEN\n");
	int fd = accept(ls, NULL, NULL);
	close(ls);
	if (fd < 0)
		die("accept");
	return fd;
}

static int connect_to(const char *host, int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("connect");
	return fd;
}

static int tls_read(SSL *ssl, int server, char *buf, size_t n)
{
	if (server) {
		size_t got = 0;
		return SSL_read_ex(ssl, buf, n, &got) == 1 ? (int)got : -1;
	}
	return SSL_read(ssl, buf, (int)n);
}

static int tls_write_all(SSL *ssl, int server, const char *buf, size_t n)
{
	while (n) {
		size_t done = 0;
		if (server) {
			int r = SSL_write(ssl, buf, (int)n);
			if (r <= 0)
				return -1;
			done = (size_t)r;
		} else if (SSL_write_ex(ssl, buf, n, &done) != 1) {
			return -1;
		}
		buf += done;
		n -= done;
	}
	return 0;
}

static void write_out(const char *b, size_t n)
{
	while (n) {
		ssize_t w = write(1, b, n);
		if (w <= 0)
			die("stdout");
		b += w;
		n -= (size_t)w;
	}
}

int main(int argc, char **argv)
{
	int server = argc == 5 && !strcmp(argv[1], "server");
	int client = (argc == 5 || argc == 6) && !strcmp(argv[1], "client");
	if (!server && !client) {
		fprintf(stderr, "usage: staticssl server PORT CERT KEY | client HOST PORT CAFILE [SNI]\n");
		return 2;
	}
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!ctx)
		die("SSL_CTX_new");
	if (server) {
		if (SSL_CTX_use_certificate_chain_file(ctx, argv[3]) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, argv[4], SSL_FILETYPE_PEM) != 1)
			die("certificate");
	} else {
		if (SSL_CTX_load_verify_locations(ctx, argv[4], NULL) != 1)
			die("CA file");
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	int fd = server ? listen_accept(atoi(argv[2])) : connect_to(argv[2], atoi(argv[3]));
	SSL *ssl = SSL_new(ctx);
	if (!ssl || SSL_set_fd(ssl, fd) != 1)
		die("SSL_new");
	if (server) {
		SSL_set_accept_state(ssl);
	} else {
		SSL_set_connect_state(ssl);
		const char *sni = argc == 6 ? argv[5] : "localhost";
		SSL_set_tlsext_host_name(ssl, sni);
	}
	if (SSL_do_handshake(ssl) != 1)
		die("handshake");
	fprintf(stderr, server ? "ACCEPT\n" : "CONNECTED\n");
	char buf[16384];
	int in_open = 1;
	for (;;) {
		struct pollfd p[2] = { { .fd = fd, .events = POLLIN }, { .fd = 0, .events = POLLIN } };
		if (!SSL_pending(ssl) && poll(p, in_open ? 2 : 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (SSL_pending(ssl) || p[0].revents) {
			int r = tls_read(ssl, server, buf, sizeof(buf));
			if (r <= 0)
				break; /* close_notify or EOF */
			write_out(buf, (size_t)r);
		}
		if (in_open && p[1].revents) {
			ssize_t n = read(0, buf, sizeof(buf));
			if (n > 0) {
				if (tls_write_all(ssl, server, buf, (size_t)n) < 0)
					die("write");
			} else {
				in_open = 0;
				SSL_shutdown(ssl);
			}
		}
	}
	if (in_open)
		SSL_shutdown(ssl);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	return 0;
}
