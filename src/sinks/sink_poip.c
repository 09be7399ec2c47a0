/* PCAP-over-IP sink: a TCP server; every client gets a pcap header, then the live packets. */
#include "sinks/sink.h"
#include "common/text.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Target [ADDR:]PORT: listens on ADDR (default 127.0.0.1, loopback only:
 * the stream is decrypted traffic; give 0.0.0.0 or :: to serve the network)
 * port PORT (57012 by convention). Every client that connects receives the
 * classic pcap header (nanosecond magic, Ethernet) and from then on every
 * packet, like `tcpdump -w -`; Arkime, Zeek and `nc HOST PORT | tshark -r -`
 * read it. Nothing is ever read from clients (what they send is discarded).
 *
 * Sockets are non-blocking; the sink never waits. Each client has a bounded
 * buffer of 8 MiB (beyond the kernel's socket buffer): a client that lets it fill is too
 * slow and is disconnected (counted in peers_dropped, as is a client over
 * POIP_MAX_CLIENTS, closed at once), so one stalled
 * reader costs neither the other clients nor the other sinks anything.
 * New clients are accepted on every write and flush (the agent flushes when
 * idle, the sink's queue worker at least every 50 ms).
 */

#define POIP_DEFAULT_PORT "57012"
#define POIP_DEFAULT_ADDR "127.0.0.1"
#define POIP_MAX_CLIENTS 32
#define POIP_CLIENT_BUF (8u << 20)
#define PCAP_MAGIC_NS 0xa1b23c4du

struct poip_client {
	int fd;
	uint8_t *buf;
	size_t off, used;
};

struct poip_sink {
	int lfd;
	size_t buf_cap;
	size_t n;
	struct poip_client c[POIP_MAX_CLIENTS];
};

static char open_err[512];

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void put16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}

static void drop_client(struct sink *s, struct poip_sink *p, size_t i, int counted)
{
	close(p->c[i].fd);
	free(p->c[i].buf);
	p->c[i] = p->c[--p->n];
	if (counted)
		__atomic_add_fetch(&s->ctr.peers_dropped, 1, __ATOMIC_RELAXED);
}

/* Over POIP_MAX_CLIENTS (or out of memory) a new client is closed at once:
 * counted in peers_dropped, logged (rate-limited). */
static void accept_new(struct sink *s, struct poip_sink *p)
{
	for (;;) {
		int fd = accept4(p->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		uint8_t *buf = p->n < POIP_MAX_CLIENTS ? malloc(p->buf_cap) : NULL;
		if (!buf) {
			static struct log_limit lim;
			close(fd);
			__atomic_add_fetch(&s->ctr.peers_dropped, 1, __ATOMIC_RELAXED);
			log_limited(&lim, 10, "--pcap-over-ip: client refused: %zu clients already "
				    "(at most %d)", p->n, POIP_MAX_CLIENTS);
			continue;
		}
		put32(buf, PCAP_MAGIC_NS);
		put16(buf + 4, 2);
		put16(buf + 6, 4);
		put32(buf + 8, 0);
		put32(buf + 12, 0);
		put32(buf + 16, 262144);
		put32(buf + 20, 1); /* Ethernet */
		p->c[p->n++] = (struct poip_client){ .fd = fd, .buf = buf, .used = 24 };
	}
}

/* Sends what the client can take now; 0, or -1 if it is gone. */
static int client_send(struct poip_client *c)
{
	while (c->off < c->used) {
		ssize_t n = send(c->fd, c->buf + c->off, c->used - c->off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			c->off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		return -1;
	}
	if (c->off == c->used) {
		c->off = c->used = 0;
	} else if (c->off > c->used / 2) {
		memmove(c->buf, c->buf + c->off, c->used - c->off);
		c->used -= c->off;
		c->off = 0;
	}
	return 0;
}

/* A client that closed its end (or sent something) is noticed here. */
static int client_alive(struct poip_client *c)
{
	char tmp[512];
	for (;;) {
		ssize_t n = recv(c->fd, tmp, sizeof(tmp), MSG_DONTWAIT);
		if (n > 0)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
	}
}

static int poip_open(struct sink *s, const char *target, const struct sink_opts *o,
		     const char **err_msg)
{
	char host[256] = POIP_DEFAULT_ADDR;
	const char *port = target;
	const char *colon = strrchr(target, ':');
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV | AI_NUMERICHOST | AI_PASSIVE };
	struct addrinfo *ai = NULL;
	int ret = -EINVAL, one = 1;
	struct poip_sink *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->lfd = -1;
	p->buf_cap = POIP_CLIENT_BUF;
	if (colon) {
		const char *h = target;
		size_t n = (size_t)(colon - target);
		if (n && h[0] == '[' && h[n - 1] == ']') {
			h++;
			n -= 2;
		}
		if (n >= sizeof(host))
			goto bad;
		if (n) {
			memcpy(host, h, n);
			host[n] = 0;
		}
		port = colon + 1;
	}
	if (!*port)
		port = POIP_DEFAULT_PORT;
	if (text_port(port) < 0) /* 1..65535: not 0, a random port nobody would be told */
		goto bad;
	if (getaddrinfo(host, port, &hints, &ai))
		goto bad;
	p->lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->lfd < 0) {
		ret = -errno;
		goto out;
	}
	setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(p->lfd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(p->lfd, 16) < 0) {
		ret = -errno;
		snprintf(open_err, sizeof(open_err), "cannot listen on %s port %s: %s", host, port,
			 strerror(errno));
		*err_msg = open_err;
		goto out;
	}
	s->priv = p;
	p = NULL;
	ret = 0;
	goto out;
bad:
	*err_msg = "expected [ADDR:]PORT with PORT 1..65535, like 57012 or 0.0.0.0:57012 (ADDR numeric)";
out:
	if (ai)
		freeaddrinfo(ai);
	if (p) {
		if (p->lfd >= 0)
			close(p->lfd);
		free(p);
	}
	return ret;
}

static void append(struct poip_client *c, const uint8_t *rec, const struct pkt *pk)
{
	memcpy(c->buf + c->used, rec, 16);
	memcpy(c->buf + c->used + 16, pk->hdr, pk->hdr_len);
	pkt_copy_payload(c->buf + c->used + 16 + pk->hdr_len, pk, pk->payload_len + pk->more_len);
	c->used += 16 + (uint32_t)pkt_frame_len(pk);
}

static int poip_write(struct sink *s, const struct pkt *pkts, size_t n)
{
	struct poip_sink *p = s->priv;
	accept_new(s, p);
	if (!p->n)
		return 0;
	for (size_t k = 0; k < n; k++) {
		const struct pkt *pk = &pkts[k];
		uint32_t len = (uint32_t)pkt_frame_len(pk);
		uint8_t rec[16];
		put32(rec, (uint32_t)(pk->ts_ns / 1000000000ull));
		put32(rec + 4, (uint32_t)(pk->ts_ns % 1000000000ull));
		put32(rec + 8, len);
		put32(rec + 12, len);
		for (size_t i = 0; i < p->n;) {
			struct poip_client *c = &p->c[i];
			if (c->used + 16 + len > p->buf_cap && (client_send(c) < 0 ||
			    c->used + 16 + len > p->buf_cap)) {
				drop_client(s, p, i, 1);
				continue;
			}
			append(c, rec, pk);
			i++;
		}
		sink_ctr_add(&s->ctr.packets, 1);
		sink_ctr_add(&s->ctr.bytes, len);
	}
	for (size_t i = 0; i < p->n;) {
		if (client_send(&p->c[i]) < 0)
			drop_client(s, p, i, 0);
		else
			i++;
	}
	return 0;
}

static int poip_flush(struct sink *s)
{
	struct poip_sink *p = s->priv;
	accept_new(s, p);
	for (size_t i = 0; i < p->n;) {
		if (client_send(&p->c[i]) < 0 || !client_alive(&p->c[i]))
			drop_client(s, p, i, 0);
		else
			i++;
	}
	return 0;
}

static void poip_close(struct sink *s)
{
	struct poip_sink *p = s->priv;
	if (!p)
		return;
	/* clients that keep reading get the rest within 2 s; then they lose it */
	for (int round = 0; round < 200; round++) {
		size_t pending = 0;
		for (size_t i = 0; i < p->n; i++)
			if (p->c[i].fd >= 0 && p->c[i].used > p->c[i].off &&
			    client_send(&p->c[i]) == 0 && p->c[i].used > p->c[i].off)
				pending++;
		if (!pending)
			break;
		poll(NULL, 0, 10);
	}
	for (size_t i = 0; i < p->n; i++) {
		close(p->c[i].fd);
		free(p->c[i].buf);
	}
	close(p->lfd);
	free(p);
	s->priv = NULL;
}

const struct sink_ops sink_poip_ops = {
	.name = "pcap-over-ip",
	.open = poip_open,
	.write = poip_write,
	.flush = poip_flush,
	.close = poip_close,
};
