/* Test object for dbclient: one TLS echo exchange, its libssl calls bound from here (RTLD_DEEPBIND) or via dlsym. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlsprog.h"

typedef int (*rw_fn)(SSL *, void *, int);

/* Direct calls through this object's PLT: a pointer copied before the
 * library patched the GOT would keep calling libssl directly. */
static int plt_write(SSL *ssl, void *p, int n)
{
	return SSL_write(ssl, p, n);
}

static int plt_read(SSL *ssl, void *p, int n)
{
	return SSL_read(ssl, p, n);
}

/* Reads exactly n bytes with rd; 0 or -1. */
static int get_exact(rw_fn rd, SSL *ssl, unsigned char *p, size_t n)
{
	for (size_t got = 0; got < n;) {
		int r = rd(ssl, p + got, (int)(n - got));
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/* Connects to host:port (trusting ca), sends 'LEN n' + n bytes, reads the echo.
 * via_dlsym: SSL_write/SSL_read through pointers from dlsym on libssl's own
 * handle, the one way no GOT patching can reach. Prints 'conn PORT SENT GOT'. */
int db_run(const char *host, const char *port, const char *ca, size_t n, int via_dlsym)
{
	rw_fn wr = plt_write, rd = plt_read;
	if (via_dlsym) {
		void *h = dlopen("libssl.so.3", RTLD_LAZY | RTLD_NOLOAD);
		wr = h ? (rw_fn)dlsym(h, "SSL_write") : NULL;
		rd = h ? (rw_fn)dlsym(h, "SSL_read") : NULL;
		if (!wr || !rd)
			return fprintf(stderr, "no libssl handle\n"), -1;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
		return fprintf(stderr, "ctx\n"), -1;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	int fd = tcp_connect_to(host, port);
	SSL *ssl = SSL_new(ctx);
	if (fd < 0 || !ssl || !SSL_set_fd(ssl, fd) || SSL_connect(ssl) != 1)
		return fprintf(stderr, "connect\n"), -1;
	unsigned char *buf = malloc(n + 64), *back = malloc(n + 64);
	int hl = snprintf((char *)buf, 64, "LEN %zu\n", n);
	gen(buf + hl, n, n);
	if (wr(ssl, buf, hl + (int)n) != hl + (int)n)
		return fprintf(stderr, "write\n"), -1;
	char line[64];
	size_t ll = 0;
	while (ll < sizeof(line) - 1 && get_exact(rd, ssl, (unsigned char *)line + ll, 1) == 0 &&
	       line[ll] != '\n')
		ll++;
	line[ll] = 0;
	size_t m = strtoul(line + 5, NULL, 10);
	if (strncmp(line, "ECHO ", 5) || m != n || get_exact(rd, ssl, back, m))
		return fprintf(stderr, "bad echo '%s'\n", line), -1;
	for (size_t i = 0; i < n; i++)
		if (back[i] != buf[hl + n - 1 - i])
			return fprintf(stderr, "echo mismatch\n"), -1;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	int lport = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	SSL_shutdown(ssl);
	SSL_free(ssl);
	close(fd);
	SSL_CTX_free(ctx);
	printf("conn %d %zu %zu\n", lport, hl + n, ll + 1 + m);
	free(buf);
	free(back);
	return 0;
}
