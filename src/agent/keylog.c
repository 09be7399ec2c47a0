/* --keylog FILE: the TLS secrets the capture libraries send (RING_REC_KEY) as an NSS key log (docs/capture.md, Keys). */
#include "agent/agent.h"
#include "common/log.h"
#include "common/text.h"
#include "sinks/sink_file.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/*
 * Keys are a liability: off by default, and with --keylog the agent asks
 * each ring for them (RING_CONSUMER_KEYS, set when it maps the ring).
 * Each record is read once into a private copy, checked (label, lengths)
 * and written as one line with one write(2) to a file opened for appending
 * with the capture files' rules (mode 0600, no link followed in a shared
 * directory): a line is in the file as soon as its connection's secret
 * is made, never half of one, and another tool reading the file (tshark -o
 * tls.keylog_file, tlsmirror decrypt --keys) sees it at once. A failed write is
 * counted (keys_lost) and logged once. Both ends of a connection mirrored
 * on this host (curl and nginx under capture) send the same secrets: a line
 * written among the last KEYLOG_RECENT is not written again.
 */

#define KEYLOG_RECENT 256

/* The same line (label, client random, what follows) written lately? Then 1; else it is noted. */
static int seen_lately(unsigned label, const uint8_t cr[32], const uint8_t *p, size_t n)
{
	static uint64_t recent[KEYLOG_RECENT];
	static unsigned next;
	uint64_t h = 1469598103934665603ull ^ label;
	for (int i = 0; i < 32; i++)
		h = (h ^ cr[i]) * 1099511628211ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	h |= 1; /* 0: an empty slot */
	for (unsigned i = 0; i < KEYLOG_RECENT; i++)
		if (recent[i] == h)
			return 1;
	recent[next++ % KEYLOG_RECENT] = h;
	return 0;
}

int keylog_open(struct agent *a)
{
	a->keylog_fd = -1;
	if (!a->cfg.keylog)
		return 0;
	const char *why = NULL;
	int fd = sink_file_open_private(a->cfg.keylog, O_APPEND, &why);
	if (fd < 0) {
		log_err("--keylog %s: %s", a->cfg.keylog, why ? why : strerror(-fd));
		return fd;
	}
	a->keylog_fd = fd;
	return 0;
}

void keylog_close(struct agent *a)
{
	if (a->keylog_fd >= 0)
		close(a->keylog_fd);
	a->keylog_fd = -1;
}

uint32_t keylog_ring_flags(const struct agent *a)
{
	/* # TUPLE lines go to --keylog only: the tunnel's KEY events carry secrets */
	return RING_CONSUMER_SEEN | (a->cfg.keylog || a->cfg.send_keys ? RING_CONSUMER_KEYS : 0) |
	       (a->cfg.keylog ? RING_CONSUMER_TUPLES : 0);
}

/* LABEL CLIENT_RANDOM SECRET\n at line (room for KEYLOG_LINE_MAX); its length. */
#define KEYLOG_LINE_MAX (64 + 1 + 64 + 1 + 2 * RING_KEY_MAX_SECRET + 1)
static size_t key_line(char *line, const char *label, const uint8_t cr[32], const uint8_t *secret,
		       size_t len)
{
	size_t n = strlen(label);
	memcpy(line, label, n);
	line[n++] = ' ';
	n = (size_t)(text_hex(line + n, cr, 32) - line);
	line[n++] = ' ';
	n = (size_t)(text_hex(line + n, secret, len) - line);
	line[n++] = '\n';
	return n;
}

/* 1: written; 0: no file, or lost (counted) */
static int write_line(struct agent *a, const char *line, size_t n)
{
	if (a->keylog_fd < 0)
		return 0;
	ssize_t w = write(a->keylog_fd, line, n);
	if (w == (ssize_t)n)
		return 1;
	if (!a->keys_lost++)
		log_warn("--keylog %s: cannot write: %s (keys lost from now on are counted: keys_lost)",
			 a->cfg.keylog, w < 0 ? strerror(errno) : "short write");
	return 0;
}

/* One KEY record of p: 0, or -EINVAL (what is wrong in *why). */
int keylog_record(struct agent *a, const struct ring_view *v, const char **why)
{
	struct ring_key k;
	if (a->keylog_fd < 0 && !a->cfg.send_keys) {
		*why = "KEY record the agent did not ask for";
		return -EINVAL;
	}
	if (v->data_len != sizeof(k)) {
		*why = "KEY record of the wrong size";
		return -EINVAL;
	}
	memcpy(&k, v->data, sizeof(k)); /* one copy: the producer may still write */
	const char *label = ring_key_label_name(k.label);
	if (!label || !k.secret_len || k.secret_len > RING_KEY_MAX_SECRET) {
		*why = "KEY record with invalid fields";
		return -EINVAL;
	}
	if (seen_lately(k.label, k.client_random, k.secret, k.secret_len))
		return 0;
	char line[KEYLOG_LINE_MAX];
	a->keys_written += (uint64_t)write_line(a, line, key_line(line, label, k.client_random, k.secret, k.secret_len));
	if (a->cfg.send_keys) {
		/* over the tunnel (-t): mutually authenticated TLS only (cli.c refuses
		 * --send-keys with --insecure-plaintext-tunnel) */
		uint64_t now = agent_now_ns();
		for (size_t i = 0; i < a->sinks.n; i++) {
			const struct sink_ops *ops = a->sinks.v[i]->ops;
			if (ops->events && ops->events->key) {
				ops->events->key(a->sinks.v[i], now, k.label, k.client_random, k.secret,
						 k.secret_len);
				a->keys_sent++;
			}
		}
	}
	return 0;
}

/* An endpoint as the # TUPLE line writes it: 192.0.2.1:443, [2001:db8::1]:443. */
static char *endpoint(char *p, int family, const uint8_t addr[16], uint16_t port)
{
	char a[INET6_ADDRSTRLEN];
	inet_ntop(family == 4 ? AF_INET : AF_INET6, addr, a, sizeof(a));
	return p + sprintf(p, family == 4 ? "%s:%u" : "[%s]:%u", a, port);
}

/*
 * "# TUPLE CLIENT SERVER CLIENT_RANDOM SERVER_RANDOM VERSION SUITE": a
 * comment to every other reader of key logs; to tlsmirror decrypt it places
 * a connection first seen mid-stream (docs/decrypt.md). Written before the
 * handshake's first secret after its ServerHello. A handshake whose socket
 * the library did not know (family 0) has no line.
 */
int keylog_tuple(struct agent *a, const struct ring_view *v, const char **why)
{
	struct ring_tuple t;
	if (a->keylog_fd < 0) {
		*why = "TUPLE record the agent did not ask for";
		return -EINVAL;
	}
	if (v->data_len != sizeof(t)) {
		*why = "TUPLE record of the wrong size";
		return -EINVAL;
	}
	memcpy(&t, v->data, sizeof(t)); /* one copy: the producer may still write */
	if (t.family != 0 && t.family != 4 && t.family != 6) {
		*why = "TUPLE record with invalid fields";
		return -EINVAL;
	}
	t.side = 0; /* both ends of a connection on this host send the same line */
	memset(t._pad, 0, sizeof(t._pad));
	if (!t.family || seen_lately(0x100, t.client_random, (const uint8_t *)&t, sizeof(t)))
		return 0;
	char line[2 * 48 + 2 * 64 + 64], *p = line;
	p += sprintf(p, "# TUPLE ");
	p = endpoint(p, t.family, t.client_addr, t.client_port);
	*p++ = ' ';
	p = endpoint(p, t.family, t.server_addr, t.server_port);
	*p++ = ' ';
	p = text_hex(p, t.client_random, 32);
	*p++ = ' ';
	p = text_hex(p, t.server_random, 32);
	/* 0: not known ("-"; libgnutls names no suite) */
	p += sprintf(p, t.version ? " %04x" : " -", t.version);
	p += sprintf(p, t.suite ? " %04x\n" : " -\n", t.suite);
	a->tuples_written += (uint64_t)write_line(a, line, (size_t)(p - line));
	return 0;
}

int keylog_received(struct agent *a, unsigned label, const uint8_t cr[32], const uint8_t *secret,
		    size_t len)
{
	const char *name = ring_key_label_name(label);
	if (!name || !len || len > RING_KEY_MAX_SECRET)
		return -EINVAL;
	char line[KEYLOG_LINE_MAX];
	size_t n = key_line(line, name, cr, secret, len);
	a->keys_written += (uint64_t)write_line(a, line, n);
	if (a->key_consumer)
		a->key_consumer(a->key_consumer_arg, line, n - 1);
	return 0;
}
