/* Helpers shared by the TLS test programs: deterministic payloads, TCP connect, exact reads. */
#ifndef TLSMIRROR_TLSPROG_H
#define TLSMIRROR_TLSPROG_H

#include <netdb.h>
#include <openssl/ssl.h>

#include "gen.h"
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

/* A connected TCP socket to host:port, -1 on failure. */
static int tcp_connect_to(const char *host, const char *port)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	int fd = -1;

	if (getaddrinfo(host, port, &hints, &res) != 0)
		return -1;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

/* Reads exactly n bytes with SSL_read; 0 or -1. */
static __attribute__((unused)) int read_exact(SSL *ssl, unsigned char *p, size_t n)
{
	size_t got = 0;

	while (got < n) {
		int r = SSL_read(ssl, p + got, (int)(n - got));

		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

#endif
