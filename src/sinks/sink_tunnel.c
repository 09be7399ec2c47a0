/* -t HOST:PORT sink: batches connection events into bounded chunks that its own thread sends to a collector over TLS. */
#include "sinks/sink.h"
#include "common/bytes.h"
#include "common/log.h"
#include "common/text.h"
#include "tunnel/frame.h"
#include "tunnel/record.h"
#include "tunnel/tunnel.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/*
 * An event sink (sink.h): the flow engine hands it every connection it
 * shows. The agent's main thread only encodes the events into the current
 * chunk (an EVENTS frame being built) and hands full chunks to the sender
 * thread under a mutex: it never waits for the network. At most max_chunks
 * chunks exist (--queue-size / TUN_CHUNK); DATA may not take the last free
 * one (it is kept for OPEN, GAP and CLOSE, so a full queue loses clear text
 * before it loses a connection's beginning or end); an event with no room
 * is dropped and counted (dropped_events, dropped_bytes: its clear text).
 *
 * The sender keeps, from the chunks it sends, every connection open on the
 * collector (its OPEN and the stream offsets delivered so far, `live`).
 * After a reconnect it first sends each of them again as a mid-stream OPEN
 * at those offsets, so the new collector continues them; what a lost chunk
 * held shows there as a gap of exactly its size. The sender connects with exponential backoff (0.1 s .. 5 s),
 * sends HELLO, then the chunks in order, and a HEARTBEAT (with the drop
 * totals) when idle for a second. A chunk whose send failed is counted as
 * dropped. Sockets have 5 s send/receive timeouts so a stalled collector
 * cannot hold the sender forever; on close the sender gets up to
 * TUN_CLOSE_SECONDS to deliver what is queued, then its socket is shut down.
 * When the agent goes idle (flush) a partial chunk is handed over only if
 * the sender has nothing queued and the chunk is big or TUN_BATCH_MS old.
 */

#define TUN_CHUNK (1u << 20)
#define TUN_DEFAULT_QUEUE (64ull << 20)
#define TUN_BACKOFF_MIN_MS 100
#define TUN_BACKOFF_MAX_MS 5000
#define TUN_IO_TIMEOUT_S 5
#define TUN_HEARTBEAT_MS 1000
#define TUN_CLOSE_SECONDS 5
#define TUN_ZSTD_LEVEL 1
#define TUN_BATCH_MS 5        /* an idle agent holds a partial chunk at most this long */
#define TUN_OPEN_OFF (FRAME_EV_HDR + 38) /* off_c2s in an OPEN event */

struct chunk {
	struct chunk *next;
	uint32_t used;        /* payload bytes, count field included */
	uint32_t count;       /* events */
	uint64_t text_bytes;  /* clear text of its DATA events */
	uint64_t first_ms;    /* when its first packet came (CLOCK_MONOTONIC) */
	uint8_t data[FRAME_HDR_SIZE + TUN_CHUNK];
};

struct tun {
	struct sink *sink;
	char target[300];
	char host[256], port[16];
	struct sink_opts o;
	SSL_CTX *ctx;
	int zstd;                      /* FRAME_F_ZSTD, FRAME_F_LZ4 or 0 */
	char name[FRAME_MAX_NAME + 1];
	char hostname[FRAME_MAX_NAME + 1];

	pthread_t th;
	int started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct chunk *cur;             /* main thread only */
	struct chunk *ready, *ready_tail, *free_list;
	size_t n_chunks, max_chunks, n_free;
	int stop;
	int abort;                     /* close gave up waiting: no more attempts */

	/* sender thread */
	int fd;
	SSL *ssl;
	struct tls13w rw;              /* records sealed here after the handshake (record.h) */
	uint64_t records_per_key;      /* 0: TLS13W_RECORDS_PER_KEY */
	int own_records;               /* rw in use, SSL_write otherwise */
	uint8_t *zbuf;
	struct log_limit lim;
	struct live **live;            /* connections open on the collector, by id */
	size_t live_mask, n_live;

	/* counters: written by either thread with atomics */
	uint64_t connected, connects, reconnect_tries;
	uint64_t sent_frames, sent_events, sent_bytes, wire_bytes;
	uint64_t buffered_bytes;
	uint64_t dropped_events, dropped_bytes;
	uint64_t reopened, live_conns;
	uint64_t key_updates;
	int records_mode;              /* own_records, for the stats thread */
};

/* A connection the collector knows (sender thread): its OPEN as sent. */
struct live {
	struct live *next;
	uint64_t conn;
	uint64_t off[2];
	uint32_t len;
	uint8_t rec[];
};

static struct tun *all_tuns[8];

#define ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_RELAXED)
#define GET(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define SET(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void drop(struct tun *t, uint64_t events, uint64_t bytes)
{
	ADD(&t->dropped_events, events);
	ADD(&t->dropped_bytes, bytes);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- live table (sender) */

static uint64_t rd64(const uint8_t *p)
{
	return ((uint64_t)get_be32(p) << 32) | get_be32(p + 4);
}

static void wr64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

static struct live **live_link(struct tun *t, uint64_t conn)
{
	uint64_t h = conn * 0x9e3779b97f4a7c15ull;
	struct live **pp = &t->live[(h >> 32) & t->live_mask];
	while (*pp && (*pp)->conn != conn)
		pp = &(*pp)->next;
	return pp;
}

static void live_grow(struct tun *t)
{
	size_t n = t->live ? (t->live_mask + 1) * 2 : 256;
	struct live **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	struct live **old = t->live;
	size_t old_n = old ? t->live_mask + 1 : 0;
	t->live = b;
	t->live_mask = n - 1;
	for (size_t i = 0; i < old_n; i++) {
		for (struct live *e = old[i], *next; e; e = next) {
			next = e->next;
			struct live **h = live_link(t, e->conn);
			e->next = *h;
			*h = e;
		}
	}
	free(old);
}

static void live_open(struct tun *t, uint64_t conn, const uint8_t *rec, size_t len)
{
	if (!t->live || t->n_live > t->live_mask)
		live_grow(t);
	if (!t->live)
		return;
	struct live **pp = live_link(t, conn);
	if (*pp)
		return;
	struct live *e = malloc(sizeof(*e) + len);
	if (!e)
		return;
	e->next = NULL;
	e->conn = conn;
	e->len = (uint32_t)len;
	memcpy(e->rec, rec, len);
	e->off[0] = rd64(rec + TUN_OPEN_OFF);
	e->off[1] = rd64(rec + TUN_OPEN_OFF + 8);
	*pp = e;
	SET(&t->live_conns, ++t->n_live);
}

static void live_close(struct tun *t, uint64_t conn)
{
	if (!t->live)
		return;
	struct live **pp = live_link(t, conn), *e = *pp;
	if (!e)
		return;
	*pp = e->next;
	free(e);
	SET(&t->live_conns, --t->n_live);
}

static void live_free(struct tun *t)
{
	for (size_t i = 0; t->live && i <= t->live_mask; i++) {
		while (t->live[i]) {
			struct live *e = t->live[i];
			t->live[i] = e->next;
			free(e);
		}
	}
	free(t->live);
	t->live = NULL;
	t->n_live = 0;
}

/* The length of the (self-made, trusted) event at p. */
static size_t ev_len(const uint8_t *p)
{
	switch (p[0]) {
	case FRAME_EV_OPEN: {
		size_t n = FRAME_EV_OPEN_FIXED - 4, i;
		for (i = 0; i < 4; i++)
			n += 1 + p[n];
		return n;
	}
	case FRAME_EV_DATA:
		return FRAME_EV_DATA_HDR + get_be32(p + FRAME_EV_HDR + 9);
	case FRAME_EV_GAP:
		return FRAME_EV_GAP_LEN;
	case FRAME_EV_KEY:
		return FRAME_EV_HDR + 34 + p[FRAME_EV_HDR + 1];
	default:
		return FRAME_EV_CLOSE_LEN;
	}
}

/* What the collector now knows from chunk c: opens and closes always (a
 * lost OPEN is sent again after the reconnect), offsets only if delivered. */
static void live_apply(struct tun *t, const struct chunk *c, int delivered)
{
	const uint8_t *p = c->data + FRAME_HDR_SIZE + 4, *end = c->data + FRAME_HDR_SIZE + c->used;
	while (p < end) {
		size_t n = ev_len(p);
		uint64_t conn = rd64(p + 1);
		const uint8_t *q = p + FRAME_EV_HDR;
		if (p[0] == FRAME_EV_OPEN) {
			live_open(t, conn, p, n);
		} else if (p[0] == FRAME_EV_CLOSE) {
			live_close(t, conn);
		} else if (p[0] == FRAME_EV_KEY) {
			/* belongs to no connection */
		} else if (delivered && t->live) {
			struct live *e = *live_link(t, conn);
			int dir = q[0] ? 1 : 0;
			if (e && p[0] == FRAME_EV_DATA)
				e->off[dir] = rd64(q + 1) + get_be32(q + 9);
			else if (e)
				e->off[dir] = rd64(q + 2) + rd64(q + 10);
		}
		p += n;
	}
}

/* ---------------------------------------------------------------- sender thread */

static void disconnect(struct tun *t)
{
	if (t->own_records) {
		if (GET(&t->connected))
			tls13w_close(&t->rw);
		tls13w_free(&t->rw);
		t->own_records = 0;
		SET(&t->records_mode, 0);
	} else if (t->ssl && GET(&t->connected)) {
		SSL_shutdown(t->ssl);
	}
	if (t->ssl) {
		ERR_clear_error();
		SSL_free(t->ssl);
		t->ssl = NULL;
	}
	pthread_mutex_lock(&t->mu); /* tun_close may shutdown() it */
	if (t->fd >= 0) {
		close(t->fd);
		t->fd = -1;
	}
	pthread_mutex_unlock(&t->mu);
	SET(&t->connected, 0);
}

/* Writes all of buf on the connection; with TLS, records collect in a 256 KiB
 * buffer (one write() for 16 records, not one each) until flush_out. Returns 0
 * or -EIO (why logged by caller). */
static int send_all(struct tun *t, const uint8_t *buf, size_t len)
{
	if (t->own_records) {
		uint64_t ku = t->rw.k.key_updates;
		int err = tls13w_write(&t->rw, buf, len);
		if (t->rw.k.key_updates != ku)
			ADD(&t->key_updates, t->rw.k.key_updates - ku);
		if (err < 0)
			return -EIO;
		ADD(&t->wire_bytes, (uint64_t)len);
		return 0;
	}
	while (len) {
		int n;
		if (t->ssl) {
			n = SSL_write(t->ssl, buf, len > (1u << 30) ? (1 << 30) : (int)len);
			if (n <= 0) {
				ERR_clear_error();
				return -EIO;
			}
		} else {
			ssize_t w = send(t->fd, buf, len, MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return -EIO;
			n = (int)w;
		}
		buf += n;
		len -= (size_t)n;
		ADD(&t->wire_bytes, (uint64_t)n);
	}
	return 0;
}

/* What TLS left in its write buffer goes out. Returns 0 or -EIO. */
static int flush_out(struct tun *t)
{
	if (t->own_records)
		return tls13w_flush(&t->rw) < 0 ? -EIO : 0;
	if (t->ssl && BIO_flush(SSL_get_wbio(t->ssl)) <= 0) {
		ERR_clear_error();
		return -EIO;
	}
	return 0;
}

static int send_frame(struct tun *t, uint8_t type, const uint8_t *payload, uint32_t len)
{
	uint8_t hdr[FRAME_HDR_SIZE];
	struct frame_hdr h = { .type = type, .len = len, .raw_len = len };
	frame_hdr_put(hdr, &h);
	if (send_all(t, hdr, sizeof(hdr)) < 0 || (len && send_all(t, payload, len) < 0))
		return -EIO;
	return flush_out(t);
}

static int tcp_connect(struct tun *t, const char **why)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL;
	int gai = getaddrinfo(t->host, t->port, &hints, &res);
	if (gai) {
		*why = gai_strerror(gai);
		return -EHOSTUNREACH;
	}
	int err = -ECONNREFUSED;
	*why = "connection refused";
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		struct timeval tv = { .tv_sec = TUN_IO_TIMEOUT_S };
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			pthread_mutex_lock(&t->mu);
			t->fd = fd;
			pthread_mutex_unlock(&t->mu);
			err = 0;
			break;
		}
		err = -errno;
		*why = strerror(errno);
		close(fd);
	}
	freeaddrinfo(res);
	return err;
}

/* After the handshake: the sending direction to the record writer when the
 * secret was captured and the suite is one it seals (record.h); SSL_write
 * otherwise, as before. */
static void own_records(struct tun *t)
{
	uint8_t secret[TLS13W_MAX_SECRET];
	size_t len = 0;
	const char *suite;
	BIO *wb = SSL_get_wbio(t->ssl);
	if (tls_record_keys(t->ssl, secret, sizeof(secret), &len, &suite) == 0 &&
	    BIO_flush(wb) == 1 && BIO_wpending(wb) == 0 &&
	    tls13w_init(&t->rw, suite, secret, len, t->fd, t->records_per_key) == 0)
		t->own_records = 1;
	SET(&t->records_mode, t->own_records);
	ERR_clear_error();
	OPENSSL_cleanse(secret, sizeof(secret));
}

static int tls_connect(struct tun *t, const char **why)
{
	t->ssl = SSL_new(t->ctx);
	if (!t->ssl || tls_set_buffered_fd(t->ssl, t->fd, 1) < 0) {
		*why = tls_last_error();
		return -ENOMEM;
	}
	X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
	if (X509_VERIFY_PARAM_set1_ip_asc(vp, t->host) != 1) {
		ERR_clear_error();
		SSL_set_tlsext_host_name(t->ssl, t->host);
		SSL_set1_host(t->ssl, t->host);
	}
	if (SSL_connect(t->ssl) != 1) {
		long v = SSL_get_verify_result(t->ssl);
		if (v != X509_V_OK) {
			*why = X509_verify_cert_error_string(v);
			ERR_clear_error();
		} else {
			unsigned long e = ERR_peek_error();
			*why = e ? tls_last_error() : "TLS handshake failed (closed or timed out)";
		}
		return -EPROTO;
	}
	own_records(t);
	return 0;
}

/* One connection attempt: TCP, TLS unless plaintext, HELLO. */
static int try_connect(struct tun *t, const char **why)
{
	int err = tcp_connect(t, why);
	if (!err && t->ctx)
		err = tls_connect(t, why);
	if (!err) {
		uint8_t hello[FRAME_HELLO_MAX];
		int n = frame_hello_put(hello, t->name, t->hostname);
		if (n < 0 || send_frame(t, FRAME_HELLO, hello, (uint32_t)n) < 0) {
			*why = "sending HELLO failed";
			err = -EIO;
		}
	}
	if (err)
		disconnect(t);
	return err;
}

static int send_chunk(struct tun *t, struct chunk *c)
{
	uint8_t *payload = c->data + FRAME_HDR_SIZE;
	put_be32(payload, c->count);
	struct frame_hdr h = { .type = FRAME_EVENTS, .len = c->used, .raw_len = c->used };
	const uint8_t *body = payload;
	if (t->zstd) {
		int z = t->zstd == FRAME_F_LZ4 ? frame_compress_lz4(payload, c->used, t->zbuf, TUN_CHUNK)
			: frame_compress_zstd(payload, c->used, t->zbuf, TUN_CHUNK, TUN_ZSTD_LEVEL);
		if (z > 0) {
			h.flags = (uint8_t)t->zstd;
			h.len = (uint32_t)z;
			body = t->zbuf;
		}
	}
	frame_hdr_put(c->data, &h);
	int err;
	if (body == payload)
		err = send_all(t, c->data, FRAME_HDR_SIZE + h.len);
	else
		err = send_all(t, c->data, FRAME_HDR_SIZE) ?: send_all(t, body, h.len);
	if (err || (err = flush_out(t)))
		return err;
	ADD(&t->sent_frames, 1);
	ADD(&t->sent_events, c->count);
	ADD(&t->sent_bytes, c->text_bytes);
	return 0;
}

/* After a reconnect: every connection the previous collector knew, again,
 * as a mid-stream OPEN at the offsets delivered, before anything queued. */
static int reopen_all(struct tun *t)
{
	if (!t->n_live)
		return 0;
	uint8_t *buf = malloc(FRAME_HDR_SIZE + TUN_CHUNK);
	if (!buf)
		return -ENOMEM;
	uint32_t used = 4, count = 0;
	uint64_t ts = now_ns(), n = 0;
	int err = 0;
	for (size_t i = 0; i <= t->live_mask && !err; i++) {
		for (struct live *e = t->live[i]; e && !err; e = e->next) {
			if (used + e->len > TUN_CHUNK || count == FRAME_MAX_EVENTS) {
				put_be32(buf + FRAME_HDR_SIZE, count);
				err = send_frame(t, FRAME_EVENTS, buf + FRAME_HDR_SIZE, used);
				used = 4;
				count = 0;
			}
			uint8_t *r = buf + FRAME_HDR_SIZE + used;
			memcpy(r, e->rec, e->len);
			wr64(r + 9, ts);
			r[FRAME_EV_HDR] |= FRAME_OPEN_MIDSTREAM;
			wr64(r + TUN_OPEN_OFF, e->off[0]);
			wr64(r + TUN_OPEN_OFF + 8, e->off[1]);
			used += e->len;
			count++;
			n++;
		}
	}
	if (!err && count) {
		put_be32(buf + FRAME_HDR_SIZE, count);
		err = send_frame(t, FRAME_EVENTS, buf + FRAME_HDR_SIZE, used);
	}
	free(buf);
	if (!err)
		ADD(&t->reopened, n);
	return err;
}

/* The collector sends nothing after the handshake (no tickets, no key
 * updates), so a readable socket is its end: EOF or a reset (a killed
 * collector's kernel closes it at once). A send into it would still
 * succeed once, so an idle agent would only notice at its second
 * heartbeat; this notices at the first. Bytes waiting (never expected)
 * are left alone. */
static int peer_gone(struct tun *t)
{
	struct pollfd pfd = { .fd = t->fd, .events = POLLIN | POLLRDHUP };
	if (poll(&pfd, 1, 0) <= 0)
		return 0;
	if (pfd.revents & (POLLERR | POLLHUP | POLLRDHUP))
		return 1;
	uint8_t b;
	ssize_t n = recv(t->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void heartbeat(struct tun *t)
{
	uint8_t b[FRAME_HEARTBEAT_LEN];
	struct frame_heartbeat hb = { .dropped_events = GET(&t->dropped_events),
				      .dropped_bytes = GET(&t->dropped_bytes) };
	frame_heartbeat_put(b, &hb);
	if (send_frame(t, FRAME_HEARTBEAT, b, sizeof(b)) < 0) {
		log_warn("tunnel to %s: connection lost (heartbeat failed); reconnecting", t->target);
		SET(&t->connected, 0);
		disconnect(t);
	}
}

/* Takes the oldest ready chunk, waiting up to ms. NULL if none. */
static struct chunk *take(struct tun *t, unsigned ms)
{
	pthread_mutex_lock(&t->mu);
	if (!t->ready && !t->stop && ms) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += ms / 1000;
		ts.tv_nsec += (long)(ms % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&t->cv, &t->mu, &ts);
	}
	struct chunk *c = t->ready;
	if (c) {
		t->ready = c->next;
		if (!t->ready)
			t->ready_tail = NULL;
		SET(&t->buffered_bytes, GET(&t->buffered_bytes) - c->used);
	}
	pthread_mutex_unlock(&t->mu);
	return c;
}

static void give_back(struct tun *t, struct chunk *c)
{
	pthread_mutex_lock(&t->mu);
	c->next = t->free_list;
	t->free_list = c;
	t->n_free++;
	pthread_mutex_unlock(&t->mu);
}

static int stopping(struct tun *t)
{
	pthread_mutex_lock(&t->mu);
	int s = t->stop;
	pthread_mutex_unlock(&t->mu);
	return s;
}

/* Sleeps ms or until close() wakes us. */
static void nap(struct tun *t, unsigned ms)
{
	pthread_mutex_lock(&t->mu);
	if (!t->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += ms / 1000;
		ts.tv_nsec += (long)(ms % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&t->cv, &t->mu, &ts);
	}
	pthread_mutex_unlock(&t->mu);
}

/* Not connected: one attempt, then the backoff. Returns 0 once connected. */
static int reconnect(struct tun *t, unsigned *backoff_ms)
{
	const char *why = "?";
	ADD(&t->reconnect_tries, 1);
	if (try_connect(t, &why) == 0) {
		SET(&t->connected, 1);
		ADD(&t->connects, 1);
		log_info("tunnel to %s: connected%s%s%s", t->target, t->ctx ? " (TLS 1.3, " : " (PLAINTEXT)",
			 t->ssl ? SSL_get_cipher_name(t->ssl) : "", t->ctx ? ", verified)" : "");
		*backoff_ms = TUN_BACKOFF_MIN_MS;
		heartbeat(t); /* the collector learns our drop totals at once */
		if (t->fd >= 0 && reopen_all(t) < 0) {
			log_warn("tunnel to %s: connection lost while announcing the open "
				 "connections; reconnecting", t->target);
			disconnect(t);
			return -ENOTCONN;
		}
		return 0;
	}
	log_limited(&t->lim, 10, "tunnel to %s: cannot connect: %s (retrying, buffering up to "
		    "%zu MiB)", t->target, why, t->max_chunks * (TUN_CHUNK >> 20));
	nap(t, *backoff_ms);
	*backoff_ms = *backoff_ms * 2 > TUN_BACKOFF_MAX_MS ? TUN_BACKOFF_MAX_MS : *backoff_ms * 2;
	return -ENOTCONN;
}

static void *sender(void *arg)
{
	struct tun *t = arg;
	unsigned backoff = TUN_BACKOFF_MIN_MS;
	uint64_t last_send = mono_ms(), stop_at = 0;
	int last_try = 0;
	for (;;) {
		int stop = stopping(t);
		if (stop && !stop_at)
			stop_at = mono_ms() + TUN_CLOSE_SECONDS * 1000;
		if (stop && (mono_ms() > stop_at || GET(&t->abort)))
			break;
		if (t->fd < 0) {
			/* closing while disconnected: one last attempt, no backoff */
			if (stop && (last_try++ || GET(&t->abort)))
				break;
			reconnect(t, &backoff);
			continue;
		}
		struct chunk *c = take(t, stop ? 0 : TUN_HEARTBEAT_MS);
		if (c) {
			int lost = send_chunk(t, c) < 0;
			live_apply(t, c, !lost);
			if (lost) {
				drop(t, c->count, c->text_bytes);
				log_warn("tunnel to %s: connection lost; %u events dropped, reconnecting",
					 t->target, c->count);
				SET(&t->connected, 0);
				disconnect(t);
			}
			give_back(t, c);
			last_send = mono_ms();
		} else if (stop) {
			send_frame(t, FRAME_GOODBYE, NULL, 0);
			break;
		} else if (mono_ms() - last_send >= TUN_HEARTBEAT_MS) {
			if (peer_gone(t)) {
				log_warn("tunnel to %s: the collector closed the connection; reconnecting",
					 t->target);
				SET(&t->connected, 0);
				disconnect(t);
				continue;
			}
			heartbeat(t);
			last_send = mono_ms();
		}
	}
	/* whatever could not be delivered is dropped */
	for (struct chunk *c; (c = take(t, 0));) {
		drop(t, c->count, c->text_bytes);
		give_back(t, c);
	}
	disconnect(t);
	live_free(t);
	frame_zstd_release();
	return NULL;
}

/* ---------------------------------------------------------------- main thread */

/* Hands the current chunk to the sender. */
static void push_cur(struct tun *t)
{
	struct chunk *c = t->cur;
	if (!c || !c->count)
		return;
	t->cur = NULL;
	c->next = NULL;
	pthread_mutex_lock(&t->mu);
	if (t->ready_tail)
		t->ready_tail->next = c;
	else
		t->ready = c;
	t->ready_tail = c;
	SET(&t->buffered_bytes, GET(&t->buffered_bytes) + c->used);
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

/* A chunk's memory, its pages mapped at once (MAP_POPULATE): a queue that
 * grows while the collector is slow is fresh memory, and a fault per 4 KiB page
 * as the chunk is written cost the agent a quarter of its CPU. */
static struct chunk *chunk_new(void)
{
	void *m = mmap(NULL, sizeof(struct chunk), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	return m == MAP_FAILED ? NULL : m;
}

static void chunk_free(struct chunk *c)
{
	if (c)
		munmap(c, sizeof(*c));
}

/* A free chunk for the current batch, or NULL when the queue is full; DATA
 * (reserve 1) may not take the last one. */
static struct chunk *new_cur(struct tun *t, int reserve)
{
	pthread_mutex_lock(&t->mu);
	struct chunk *c = NULL;
	size_t avail = t->max_chunks - t->n_chunks + t->n_free;
	if (avail > (size_t)reserve) {
		if ((c = t->free_list)) {
			t->free_list = c->next;
			t->n_free--;
		} else if ((c = chunk_new())) {
			t->n_chunks++;
		}
	}
	pthread_mutex_unlock(&t->mu);
	if (c) {
		c->used = 4;
		c->count = 0;
		c->text_bytes = 0;
	}
	return c;
}

/* Room for one event of need bytes in the current chunk (a new one if the
 * current is full), or NULL: the event is dropped. */
static uint8_t *room(struct tun *t, size_t need, int is_data)
{
	struct chunk *c = t->cur;
	if (c && (TUN_CHUNK - c->used < need || c->count == FRAME_MAX_EVENTS)) {
		push_cur(t);
		c = NULL;
	}
	if (!c && !(c = t->cur = new_cur(t, is_data)))
		return NULL;
	if (!c->count)
		c->first_ms = mono_ms();
	return c->data + FRAME_HDR_SIZE + c->used;
}

/* The event just written at room()'s pointer: counted in the chunk. */
static void used(struct tun *t, size_t n, uint64_t text)
{
	t->cur->used += (uint32_t)n;
	t->cur->count++;
	t->cur->text_bytes += text;
	sink_ctr_add(&t->sink->ctr.packets, 1);
	sink_ctr_add(&t->sink->ctr.bytes, n);
}

static void lost(struct tun *t, uint64_t text)
{
	sink_ctr_add(&t->sink->ctr.lost_packets, 1);
	drop(t, 1, text);
}

static void ev_open(struct sink *s, const struct conn_tag *tag, uint64_t ts_ns,
		    const uint64_t off[2], int synthetic)
{
	struct tun *t = s->priv;
	if (t->o.keys_only)
		return;
	const struct conn_meta *m = tag->meta;
	struct frame_open o;
	memset(&o, 0, sizeof(o));
	o.flags = (m->side ? FRAME_OPEN_SERVER : 0) | (synthetic ? FRAME_OPEN_SYNTHETIC : 0) |
		  ((off[0] | off[1] || (m->flags & CONN_META_MIDSTREAM)) ? FRAME_OPEN_MIDSTREAM : 0);
	o.family = tag->family;
	o.client_port = tag->client_port;
	o.server_port = tag->server_port;
	memcpy(o.client_addr, tag->client_addr, 16);
	memcpy(o.server_addr, tag->server_addr, 16);
	o.off[0] = off[0];
	o.off[1] = off[1];
	o.seed = tag->id.conn;
	o.kind = m->kind ? m->kind : CONN_KIND_CAPTURE;
	o.map_method = m->map_method;
	o.tls_version = m->tls_version;
	o.real_server_port = m->real_server_port;
	o.pid = m->pid;
	o.uid = m->uid;
	memcpy(o.comm, m->comm, sizeof(o.comm));
	memcpy(o.sni, m->sni, sizeof(o.sni));
	memcpy(o.alpn, m->alpn, sizeof(o.alpn));
	memcpy(o.cipher, m->cipher, sizeof(o.cipher));
	o.comm[sizeof(o.comm) - 1] = o.sni[sizeof(o.sni) - 1] = 0;
	o.alpn[sizeof(o.alpn) - 1] = o.cipher[sizeof(o.cipher) - 1] = 0;
	size_t n = frame_ev_open_len(&o);
	uint8_t *p = room(t, n, 0);
	if (!p)
		return lost(t, 0);
	used(t, frame_ev_open_put(p, tag->serial, ts_ns, &o), 0);
}

static void ev_data(struct sink *s, const struct conn_tag *tag, int dir, uint64_t ts_ns,
		    uint64_t off, const uint8_t *d, size_t n)
{
	struct tun *t = s->priv;
	if (t->o.keys_only)
		return;
	while (n) {
		uint32_t k = n > FRAME_MAX_DATA ? FRAME_MAX_DATA : (uint32_t)n;
		uint8_t *p = room(t, FRAME_EV_DATA_HDR + k, 1);
		if (!p)
			lost(t, k); /* the collector shows it as a gap of exactly k */
		else
			used(t, frame_ev_data_put(p, tag->serial, ts_ns, dir, off, d, k), k);
		off += k;
		d += k;
		n -= k;
	}
}

static void ev_gap(struct sink *s, const struct conn_tag *tag, int dir, uint64_t ts_ns,
		   uint64_t off, uint64_t n)
{
	struct tun *t = s->priv;
	if (t->o.keys_only)
		return;
	uint8_t *p = room(t, FRAME_EV_GAP_LEN, 0);
	if (!p)
		return lost(t, 0);
	used(t, frame_ev_gap_put(p, tag->serial, ts_ns, dir, off, n, 1), 0);
}

static void ev_close(struct sink *s, const struct conn_tag *tag, uint64_t ts_ns, unsigned how)
{
	struct tun *t = s->priv;
	if (t->o.keys_only)
		return;
	uint8_t *p = room(t, FRAME_EV_CLOSE_LEN, 0);
	if (!p)
		return lost(t, 0);
	used(t, frame_ev_close_put(p, tag->serial, ts_ns,
				   how == SINK_EV_CLOSE_MOVED ? FRAME_CLOSE_MOVED : FRAME_CLOSE_END), 0);
}

static void ev_key(struct sink *s, uint64_t ts_ns, unsigned label, const uint8_t cr[32],
		   const uint8_t *secret, size_t len)
{
	struct tun *t = s->priv;
	uint8_t *p = room(t, FRAME_EV_KEY_MAX, 0);
	if (!p)
		return lost(t, 0);
	used(t, frame_ev_key_put(p, ts_ns, label, cr, secret, len), 0);
}

/* The agent is idle: hand over the partial chunk, unless the sender still has
 * chunks queued (it is busy anyway: filling this one further costs no latency
 * and keeps small chunks from using up the queue's chunk budget). */
static int tun_flush(struct sink *s)
{
	struct tun *t = s->priv;
	struct chunk *c = t->cur;
	if (!c || !c->count || GET(&t->buffered_bytes))
		return 0;
	/* a few ms of batching: fewer, larger frames cost less on both ends */
	if (c->used >= TUN_CHUNK / 4 || mono_ms() - c->first_ms >= TUN_BATCH_MS)
		push_cur(t);
	return 0;
}

static void tun_free(struct tun *t)
{
	for (size_t i = 0; i < sizeof(all_tuns) / sizeof(all_tuns[0]); i++)
		if (all_tuns[i] == t)
			all_tuns[i] = NULL;
	chunk_free(t->cur);
	while (t->free_list) {
		struct chunk *c = t->free_list;
		t->free_list = c->next;
		chunk_free(c);
	}
	SSL_CTX_free(t->ctx);
	free(t->zbuf);
	pthread_mutex_destroy(&t->mu);
	pthread_cond_destroy(&t->cv);
	free(t);
}

static void tun_close(struct sink *s)
{
	struct tun *t = s->priv;
	if (!t)
		return;
	push_cur(t);
	if (t->started) {
		pthread_mutex_lock(&t->mu);
		t->stop = 1;
		pthread_cond_broadcast(&t->cv);
		pthread_mutex_unlock(&t->mu);
		/* a stalled collector must not hold the exit: after TUN_CLOSE_SECONDS the
		 * connection is shut down under the sender's feet */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += TUN_CLOSE_SECONDS;
		if (pthread_timedjoin_np(t->th, NULL, &ts) != 0) {
			pthread_mutex_lock(&t->mu);
			SET(&t->abort, 1);
			if (t->fd >= 0)
				shutdown(t->fd, SHUT_RDWR);
			pthread_mutex_unlock(&t->mu);
			pthread_join(t->th, NULL);
		}
	}
	uint64_t dp = GET(&t->dropped_events);
	if (dp)
		log_warn("tunnel to %s: %llu events (%llu bytes of clear text) dropped in all", t->target,
			 (unsigned long long)dp, (unsigned long long)GET(&t->dropped_bytes));
	tun_free(t);
	s->priv = NULL;
}

/* Configuration checks and the TLS context; no network yet. */
static int tun_setup(struct tun *t, const char *target, const struct sink_opts *o,
		     const char **err_msg)
{
	snprintf(t->target, sizeof(t->target), "%s", target);
	if (tunnel_split_addr(target, t->host, sizeof(t->host), t->port, sizeof(t->port)) < 0) {
		*err_msg = "want HOST:PORT (or [IPv6]:PORT)";
		return -EINVAL;
	}
	if (o->compress && !strcmp(o->compress, "zstd"))
		t->zstd = FRAME_F_ZSTD;
	else if (o->compress && !strcmp(o->compress, "lz4"))
		t->zstd = FRAME_F_LZ4;
	if (t->zstd && !(t->zbuf = malloc(TUN_CHUNK)))
		return -ENOMEM;
	if (o->insecure_plaintext) {
		log_warn("!!! INSECURE: --insecure-plaintext-tunnel: the mirrored clear text goes to "
			 "%s UNENCRYPTED and UNAUTHENTICATED; anyone on the path can read it !!!",
			 target);
	} else if (!(t->ctx = tls_client_ctx(o, err_msg))) {
		return -EINVAL;
	}
	const char *env = getenv("TLSMIRROR_AGENT_NAME");
	char hn[256] = "agent";
	if (env && *env)
		snprintf(hn, sizeof(hn), "%s", env);
	else
		gethostname(hn, sizeof(hn) - 1);
	snprintf(t->name, sizeof(t->name), "%s", hn);
	for (char *c = t->name; *c; c++)
		if (*c < 0x21 || *c > 0x7e)
			*c = '?';
	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	snprintf(t->hostname, sizeof(t->hostname), "%s", host);
	for (char *c = t->hostname; *c; c++)
		if (*c < 0x21 || *c > 0x7e)
			*c = '?';
	uint64_t q = o->queue_bytes ? o->queue_bytes : TUN_DEFAULT_QUEUE;
	t->max_chunks = q / TUN_CHUNK < 2 ? 2 : q / TUN_CHUNK;
	return 0;
}

static int tun_open(struct sink *s, const char *target, const struct sink_opts *o,
		    const char **err_msg)
{
	struct tun *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->sink = s;
	t->fd = -1;
	t->o = *o;
	pthread_mutex_init(&t->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cv, &ca);
	pthread_condattr_destroy(&ca);
	int err = tun_setup(t, target, o, err_msg);
	/* the thread takes no signals: the agent's signalfd must see SIGTERM */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	if (!err && (err = -pthread_create(&t->th, NULL, sender, t)) < 0)
		*err_msg = "cannot start the tunnel thread";
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		tun_free(t);
		return err;
	}
	t->started = 1;
	s->priv = t;
	for (size_t i = 0; i < sizeof(all_tuns) / sizeof(all_tuns[0]); i++) {
		if (!all_tuns[i]) {
			all_tuns[i] = t;
			break;
		}
	}
	return 0;
}

/* Appends one `tunnel ...` line per -t sink (called by the stats text). */
size_t tunnel_sink_stats(char *buf, size_t len, size_t at)
{
	for (size_t i = 0; i < sizeof(all_tuns) / sizeof(all_tuns[0]); i++) {
		struct tun *t = all_tuns[i];
		if (!t || at >= len)
			continue;
		int n = snprintf(buf + at, len - at,
				 "tunnel target=%s state=%s tls=%s compress=%s connects=%llu "
				 "sent_frames=%llu sent_events=%llu sent_bytes=%llu wire_bytes=%llu "
				 "buffered_bytes=%llu dropped_events=%llu dropped_bytes=%llu "
				 "live_conns=%llu reopened=%llu records=%s key_updates=%llu\n",
				 t->target, GET(&t->connected) ? "connected" : "disconnected",
				 t->ctx ? "yes" : "NO", t->zstd == FRAME_F_ZSTD ? "zstd" :
				 t->zstd == FRAME_F_LZ4 ? "lz4" : "none",
				 (unsigned long long)GET(&t->connects),
				 (unsigned long long)GET(&t->sent_frames),
				 (unsigned long long)GET(&t->sent_events),
				 (unsigned long long)GET(&t->sent_bytes),
				 (unsigned long long)GET(&t->wire_bytes),
				 (unsigned long long)GET(&t->buffered_bytes),
				 (unsigned long long)GET(&t->dropped_events),
				 (unsigned long long)GET(&t->dropped_bytes),
				 (unsigned long long)GET(&t->live_conns),
				 (unsigned long long)GET(&t->reopened),
				 !t->ctx ? "none" : GET(&t->records_mode) ? "own" : "openssl",
				 (unsigned long long)GET(&t->key_updates));
		if (n > 0)
			at = at + (size_t)n >= len ? len - 1 : at + (size_t)n;
	}
	return at;
}

/* The sink line counts events, not packets. */
static size_t tun_counters(const struct sink *s, struct kv *out, size_t max)
{
	size_t n = kv_put(out, max, 0, "events", __atomic_load_n(&s->ctr.packets, __ATOMIC_RELAXED), 0);
	n = kv_put(out, max, n, "bytes", __atomic_load_n(&s->ctr.bytes, __ATOMIC_RELAXED), 0);
	return kv_put(out, max, n, "lost_events",
		      __atomic_load_n(&s->ctr.lost_packets, __ATOMIC_RELAXED), 0);
}

static const struct sink_event_ops tun_events = {
	.open = ev_open,
	.data = ev_data,
	.gap = ev_gap,
	.close = ev_close,
	.key = ev_key,
};

const struct sink_ops sink_tunnel_ops = {
	.name = "tunnel",
	.flags = SINK_F_OWN_QUEUE,
	.events = &tun_events,
	.counters = tun_counters,
	.open = tun_open,
	.flush = tun_flush,
	.close = tun_close,
};
