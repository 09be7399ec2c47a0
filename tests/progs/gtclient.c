/* GnuTLS echo client for the tests: every send/recv variant libgnutls has, its own key-log function. */
/*
 * usage: gtclient HOST PORT CAFILE ROUNDS SIZE KEYLOG [CONNS PAUSE_MS]
 * Speaks recserver.py's echo protocol ('LEN n\n' + n bytes -> 'ECHO n\n' +
 * the bytes reversed). Round r sends with gnutls_record_send, _send2 or
 * _send_range (r % 3) and reads with gnutls_record_recv, _recv_seq or
 * _recv_packet. The application's own key-log function writes
 * "LABEL HEXSECRET" lines to KEYLOG. Prints "round R ok" per round.
 * CONNS connections (default 1) one after the other, ROUNDS rounds each,
 * PAUSE_MS between rounds (tlsmirror attach tests: one connection open
 * across the attach, the next ones opened after it); with these, each
 * connection prints "conn N PORT" once connected, before its handshake.
 */
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gen.h"

static FILE *keylog;

static int app_keylog(gnutls_session_t s, const char *label, const gnutls_datum_t *secret)
{
	fprintf(keylog, "%s ", label);
	for (unsigned i = 0; i < secret->size; i++)
		fprintf(keylog, "%02x", secret->data[i]);
	fprintf(keylog, "\n");
	fflush(keylog);
	return 0;
}

static int dial(const char *host, const char *port)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	int fd = -1;
	if (getaddrinfo(host, port, &hints, &res) != 0)
		return -1;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

static int send_all(gnutls_session_t s, const unsigned char *p, size_t n, int variant)
{
	while (n) {
		ssize_t k;
		if (variant == 1) {
			k = gnutls_record_send2(s, p, n, 0, 0);
		} else if (variant == 2 && gnutls_record_can_use_length_hiding(s)) {
			gnutls_range_st r = { .low = n > 16384 ? 16384 : n, .high = n > 16384 ? 16384 : n };
			k = gnutls_record_send_range(s, p, n > 16384 ? 16384 : n, &r);
		} else {
			k = gnutls_record_send(s, p, n);
		}
		if (k < 0) {
			fprintf(stderr, "send: %s\n", gnutls_strerror((int)k));
			return -1;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* A post-handshake message (a TLS 1.3 ticket) returns GNUTLS_E_AGAIN: read on. */
static ssize_t recv_one(gnutls_session_t s, unsigned char *p, size_t n, int variant);

static ssize_t recv_some(gnutls_session_t s, unsigned char *p, size_t n, int variant)
{
	ssize_t k;
	do
		k = recv_one(s, p, n, variant);
	while (k == GNUTLS_E_AGAIN || k == GNUTLS_E_INTERRUPTED);
	return k;
}

static ssize_t recv_one(gnutls_session_t s, unsigned char *p, size_t n, int variant)
{
	if (variant == 1) {
		unsigned char seq[8];
		return gnutls_record_recv_seq(s, p, n, seq);
	}
	if (variant == 2) {
		gnutls_packet_t pkt = NULL;
		ssize_t k = gnutls_record_recv_packet(s, &pkt);
		if (k <= 0)
			return k;
		gnutls_datum_t d;
		gnutls_packet_get(pkt, &d, NULL);
		if (d.size > n) { /* callers ask for at least a record */
			gnutls_packet_deinit(pkt);
			return -1;
		}
		memcpy(p, d.data, d.size);
		gnutls_packet_deinit(pkt);
		return d.size;
	}
	return gnutls_record_recv(s, p, n);
}

/* Reads exactly n bytes into buf; bytes beyond wait in spill for the next read. */
static int recv_exact(gnutls_session_t s, unsigned char *buf, size_t n, int variant,
		      unsigned char *spill, size_t *spilled)
{
	size_t got = 0;
	if (*spilled) {
		size_t take = *spilled < n ? *spilled : n;
		memcpy(buf, spill, take);
		memmove(spill, spill + take, *spilled - take);
		*spilled -= take;
		got = take;
	}
	unsigned char rec[16384 + 256];
	while (got < n) {
		ssize_t k = recv_some(s, rec, sizeof(rec), variant);
		if (k <= 0) {
			fprintf(stderr, "recv: %s\n", k ? gnutls_strerror((int)k) : "EOF");
			return -1;
		}
		size_t use = (size_t)k < n - got ? (size_t)k : n - got;
		memcpy(buf + got, rec, use);
		got += use;
		memcpy(spill + *spilled, rec + use, (size_t)k - use);
		*spilled += (size_t)k - use;
	}
	return 0;
}

static int one_conn(const char *host, const char *port, gnutls_certificate_credentials_t cred,
		    int n, int rounds, size_t size, long pause_ms, int say_port)
{
	int fd = dial(host, port);
	if (fd < 0) {
		fprintf(stderr, "gtclient: cannot connect\n");
		return 1;
	}
	struct sockaddr_storage me;
	socklen_t ml = sizeof(me);
	if (say_port && getsockname(fd, (struct sockaddr *)&me, &ml) == 0) {
		printf("conn %d %u\n", n, ntohs(((struct sockaddr_in *)&me)->sin_port));
		fflush(stdout);
	}
	gnutls_session_t s;
	gnutls_datum_t alpn = { (unsigned char *)"tm-echo", 7 };
	if (gnutls_init(&s, GNUTLS_CLIENT) < 0) {
		fprintf(stderr, "gtclient: gnutls_init failed\n");
		return 1;
	}
	gnutls_set_default_priority(s);
	gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred);
	gnutls_server_name_set(s, GNUTLS_NAME_DNS, "localhost", 9);
	gnutls_alpn_set_protocols(s, &alpn, 1, 0);
	gnutls_session_set_verify_cert(s, "localhost", 0);
	gnutls_session_set_keylog_function(s, app_keylog);
	gnutls_transport_set_int(s, fd);
	int ret;
	do
		ret = gnutls_handshake(s);
	while (ret < 0 && !gnutls_error_is_fatal(ret));
	if (ret < 0) {
		fprintf(stderr, "handshake: %s\n", gnutls_strerror(ret));
		return 1;
	}
	unsigned char *msg = malloc(size + 64), *back = malloc(size + 64);
	unsigned char *spill = malloc(2 * (16384 + 256));
	size_t spilled = 0;
	for (int r = 0; r < rounds; r++) {
		int hl = snprintf((char *)msg, 64, "LEN %zu\n", size);
		gen(msg + hl, size, (uint64_t)r + 1);
		if (send_all(s, msg, (size_t)hl + size, r % 3) < 0)
			return 1;
		char want[64];
		int wl = snprintf(want, sizeof(want), "ECHO %zu\n", size);
		if (recv_exact(s, back, (size_t)wl + size, r % 3, spill, &spilled) < 0)
			return 1;
		int ok = !memcmp(back, want, (size_t)wl);
		for (size_t i = 0; ok && i < size; i++)
			ok = back[wl + i] == msg[hl + size - 1 - i];
		if (!ok) {
			fprintf(stderr, "round %d: wrong echo\n", r);
			return 1;
		}
		printf("round %d ok\n", r);
		fflush(stdout);
		if (pause_ms > 0) {
			struct timespec ts = { pause_ms / 1000, (pause_ms % 1000) * 1000000L };
			nanosleep(&ts, NULL);
		}
	}
	gnutls_bye(s, GNUTLS_SHUT_RDWR);
	gnutls_deinit(s);
	close(fd);
	free(msg);
	free(back);
	free(spill);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 7 && argc != 9) {
		fprintf(stderr, "usage: gtclient HOST PORT CAFILE ROUNDS SIZE KEYLOG [CONNS PAUSE_MS]\n");
		return 2;
	}
	int rounds = atoi(argv[4]);
	size_t size = strtoul(argv[5], NULL, 10);
	int conns = argc == 9 ? atoi(argv[7]) : 1;
	long pause_ms = argc == 9 ? atol(argv[8]) : 0;
	keylog = fopen(argv[6], "w");
	if (!keylog) {
		fprintf(stderr, "gtclient: cannot open %s\n", argv[6]);
		return 1;
	}
	gnutls_certificate_credentials_t cred;
	gnutls_certificate_allocate_credentials(&cred);
	if (gnutls_certificate_set_x509_trust_file(cred, argv[3], GNUTLS_X509_FMT_PEM) <= 0) {
		fprintf(stderr, "gtclient: bad CA file\n");
		return 1;
	}
	for (int n = 0; n < conns; n++)
		if (one_conn(argv[1], argv[2], cred, n, rounds, size, pause_ms, argc == 9))
			return 1;
	gnutls_certificate_free_credentials(cred);
	fclose(keylog);
	return 0;
}
