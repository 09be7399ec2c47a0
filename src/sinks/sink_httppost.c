/* HTTP(S) POST sink: HTTP records in batches to a collector URL (--http-post URL), TLS verified, retried with backoff, bounded. */
#include "sinks/sink.h"
#include "common/log.h"

#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/*
 * Records reach it through the sink's queue, in the queue's worker thread,
 * which collects them into a batch (at most POST_BATCH_RECORDS records or
 * POST_BATCH_BYTES) and POSTs the batch when it is full, or when the queue
 * runs dry and the batch is POST_LINGER_NS old: one request carries many
 * records under load, and a record waits at most a fraction of a second
 * when there is little. The body: the records as JSON Lines
 * (application/x-ndjson), or with --http-format akto the object Akto's
 * ingestion takes, {"batchData": [record, ...]}. One keep-alive connection,
 * opened again when it breaks. https:// is verified (the system's CAs, or
 * --http-post-ca FILE; the host name against the certificate). A batch that
 * fails (no connection, a timeout, 408, 429, 5xx) is sent again after
 * 0.25, 0.5, 1, 2, 4 s, then given up (failed_records=); one the server
 * refuses (another 4xx) is not retried. While the worker waits the sink's
 * queue fills, and what does not fit is dropped and counted, so a collector
 * that is down costs bounded memory and never stalls the agent.
 */

#define POST_BATCH_RECORDS 500
#define POST_BATCH_BYTES (1u << 20)
#define POST_LINGER_NS 200000000ull
#define POST_TRIES 6
#define POST_IO_TIMEOUT_MS 5000

struct post {
	char host[256], port[8], path[1024], hostport[300];
	int tls;
	int akto;              /* {"batchData": [...]} */
	SSL_CTX *ctx;
	SSL *ssl;
	int fd;
	const int *cancel;
	char *batch;           /* the records (JSON Lines, or the Akto array's elements) */
	size_t len, n;
	uint64_t first_ns;     /* when the batch's first record came */
	/* counters */
	uint64_t posts, records_sent, failed_records, retries, rejected, connects;
	char why[600];
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cancelled(const struct post *p)
{
	return p->cancel && __atomic_load_n(p->cancel, __ATOMIC_RELAXED);
}

/* http[s]://HOST[:PORT][/PATH]; IPv6 as [ADDR]. */
static int parse_url(struct post *p, const char *url)
{
	const char *r;
	if (!strncmp(url, "https://", 8)) {
		p->tls = 1;
		r = url + 8;
	} else if (!strncmp(url, "http://", 7)) {
		r = url + 7;
	} else {
		return -1;
	}
	size_t hl;
	const char *after;
	if (*r == '[') {
		const char *e = strchr(r, ']');
		if (!e)
			return -1;
		hl = (size_t)(e - r - 1);
		memcpy(p->host, r + 1, hl < sizeof(p->host) ? hl : 0);
		after = e + 1;
	} else {
		hl = strcspn(r, ":/");
		if (hl < sizeof(p->host))
			memcpy(p->host, r, hl);
		after = r + hl;
	}
	if (!hl || hl >= sizeof(p->host))
		return -1;
	p->host[hl] = 0;
	snprintf(p->port, sizeof(p->port), "%s", p->tls ? "443" : "80");
	if (*after == ':') {
		size_t pl = strcspn(after + 1, "/");
		if (!pl || pl >= sizeof(p->port))
			return -1;
		memcpy(p->port, after + 1, pl);
		p->port[pl] = 0;
		long v = strtol(p->port, NULL, 10);
		if (v < 1 || v > 65535 || strspn(p->port, "0123456789") != pl)
			return -1;
		after += 1 + pl;
	}
	if (*after && *after != '/')
		return -1;
	snprintf(p->path, sizeof(p->path), "%s", *after ? after : "/");
	for (const char *c = p->path; *c; c++)
		if (*c <= ' ' || *c == 0x7f)
			return -1; /* it goes into the request line as it is */
	snprintf(p->hostport, sizeof(p->hostport), strchr(p->host, ':') ? "[%s]:%s" : "%s:%s",
		 p->host, p->port);
	return 0;
}

static void disconnect(struct post *p)
{
	if (p->ssl) {
		SSL_free(p->ssl);
		p->ssl = NULL;
	}
	if (p->fd >= 0) {
		close(p->fd);
		p->fd = -1;
	}
}

/* Waits for fd to be ready (POLLIN/POLLOUT) within the I/O timeout, giving up on cancel. */
static int wait_fd(struct post *p, short ev)
{
	for (int waited = 0; waited < POST_IO_TIMEOUT_MS; waited += 100) {
		if (cancelled(p))
			return -ECANCELED;
		struct pollfd pf = { p->fd, ev, 0 };
		int r = poll(&pf, 1, 100);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
	return -ETIMEDOUT;
}

static int tls_io_wait(struct post *p, int r)
{
	int e = SSL_get_error(p->ssl, r);
	if (e == SSL_ERROR_WANT_READ)
		return wait_fd(p, POLLIN);
	if (e == SSL_ERROR_WANT_WRITE)
		return wait_fd(p, POLLOUT);
	unsigned long err = ERR_get_error();
	snprintf(p->why, sizeof(p->why), "TLS: %s", err ? ERR_reason_error_string(err) : "closed");
	long v = SSL_get_verify_result(p->ssl);
	if (v != X509_V_OK)
		snprintf(p->why, sizeof(p->why), "certificate: %s", X509_verify_cert_error_string(v));
	ERR_clear_error();
	return -EPROTO;
}

static int do_connect(struct post *p)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	int err = getaddrinfo(p->host, p->port, &hints, &res);
	if (err) {
		snprintf(p->why, sizeof(p->why), "%s: %s", p->host, gai_strerror(err));
		return -EHOSTUNREACH;
	}
	int rc = -ECONNREFUSED;
	for (struct addrinfo *a = res; a && p->fd < 0; a = a->ai_next) {
		p->fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (p->fd < 0)
			continue;
		if (connect(p->fd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINPROGRESS) {
			rc = -errno;
			close(p->fd);
			p->fd = -1;
			continue;
		}
		int so = 0;
		socklen_t sl = sizeof(so);
		if ((rc = wait_fd(p, POLLOUT)) < 0 ||
		    getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &so, &sl) < 0 || so) {
			rc = rc < 0 ? rc : -(so ? so : errno);
			close(p->fd);
			p->fd = -1;
		}
	}
	freeaddrinfo(res);
	if (p->fd < 0) {
		snprintf(p->why, sizeof(p->why), "cannot connect to %s: %s", p->hostport, strerror(-rc));
		return rc;
	}
	sink_ctr_add(&p->connects, 1);
	if (!p->tls)
		return 0;
	p->ssl = SSL_new(p->ctx);
	if (!p->ssl || !SSL_set_fd(p->ssl, p->fd) || !SSL_set_tlsext_host_name(p->ssl, p->host) ||
	    !SSL_set1_host(p->ssl, p->host)) {
		disconnect(p);
		return -ENOMEM;
	}
	for (;;) {
		int r = SSL_connect(p->ssl);
		if (r == 1)
			return 0;
		if ((rc = tls_io_wait(p, r)) < 0) {
			disconnect(p);
			return rc;
		}
	}
}

static int send_all(struct post *p, const void *data, size_t n)
{
	const char *c = data;
	while (n) {
		ssize_t k;
		if (p->ssl) {
			size_t w = 0;
			int r = SSL_write_ex(p->ssl, c, n, &w);
			if (r <= 0) {
				int e = tls_io_wait(p, r);
				if (e < 0)
					return e;
				continue;
			}
			k = (ssize_t)w;
		} else {
			k = send(p->fd, c, n, MSG_NOSIGNAL);
			if (k < 0) {
				if (errno == EAGAIN || errno == EINTR) {
					int e = wait_fd(p, POLLOUT);
					if (e < 0)
						return e;
					continue;
				}
				return -errno;
			}
		}
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Some bytes of the response into buf; 0 at the close. */
static ssize_t recv_some(struct post *p, char *buf, size_t n)
{
	for (;;) {
		if (p->ssl) {
			size_t got = 0;
			int r = SSL_read_ex(p->ssl, buf, n, &got);
			if (r > 0)
				return (ssize_t)got;
			if (SSL_get_error(p->ssl, r) == SSL_ERROR_ZERO_RETURN)
				return 0;
			int e = tls_io_wait(p, r);
			if (e < 0)
				return e;
			continue;
		}
		ssize_t k = recv(p->fd, buf, n, 0);
		if (k >= 0)
			return k;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		int e = wait_fd(p, POLLIN);
		if (e < 0)
			return e;
	}
}

/* Reads the response: its status (the body is read and dropped). *keep:
 * the connection can carry the next request. */
static int read_response(struct post *p, int *keep)
{
	char buf[16384];
	size_t have = 0;
	char *end = NULL;
	*keep = 0;
	while (!end) {
		if (have == sizeof(buf) - 1)
			return -EPROTO;
		ssize_t k = recv_some(p, buf + have, sizeof(buf) - 1 - have);
		if (k <= 0)
			return k ? (int)k : -ECONNRESET;
		have += (size_t)k;
		buf[have] = 0;
		end = strstr(buf, "\r\n\r\n");
	}
	int status = 0;
	if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
		return -EPROTO;
	long clen = -1;
	int chunked = 0, close_it = 0;
	for (char *l = strstr(buf, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n")) {
		char *h = l + 2;
		if (!strncasecmp(h, "content-length:", 15))
			clen = strtol(h + 15, NULL, 10);
		else if (!strncasecmp(h, "transfer-encoding:", 18))
			chunked = 1;
		else if (!strncasecmp(h, "connection:", 11) && strcasestr(h, "close") &&
			 strcasestr(h, "close") < strstr(h, "\r\n"))
			close_it = 1;
	}
	size_t body = have - (size_t)(end + 4 - buf);
	if (clen >= 0 && !chunked && !close_it) {
		while ((long)body < clen) {
			ssize_t k = recv_some(p, buf, sizeof(buf));
			if (k <= 0)
				return status;
			body += (size_t)k;
		}
		*keep = (long)body == clen;
	}
	return status;
}

/* POSTs the batch once: the status, or a negative errno (no answer). */
static int post_once(struct post *p)
{
	if (p->fd < 0) {
		int err = do_connect(p);
		if (err < 0)
			return err;
	}
	static const char pre[] = "{\"batchData\":[", post_[] = "]}";
	size_t blen = p->akto ? sizeof(pre) - 1 + p->len + sizeof(post_) - 1 : p->len;
	char head[1600];
	int hn = snprintf(head, sizeof(head),
			  "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tlsmirror\r\n"
			  "Content-Type: %s\r\nContent-Length: %zu\r\nConnection: keep-alive\r\n\r\n",
			  p->path, p->hostport, p->akto ? "application/json" : "application/x-ndjson",
			  blen);
	int err = send_all(p, head, (size_t)hn);
	if (!err && p->akto)
		err = send_all(p, pre, sizeof(pre) - 1);
	if (!err)
		err = send_all(p, p->batch, p->len);
	if (!err && p->akto)
		err = send_all(p, post_, sizeof(post_) - 1);
	int keep = 0;
	int status = err ? err : read_response(p, &keep);
	if (!keep)
		disconnect(p);
	return status;
}

static void pause_ms(struct post *p, unsigned ms)
{
	for (unsigned t = 0; t < ms && !cancelled(p); t += 50) {
		struct timespec ts = { 0, 50000000L };
		nanosleep(&ts, NULL);
	}
}

/* Sends the batch, retrying with backoff; empties it either way. */
static void send_batch(struct sink *s)
{
	struct post *p = s->priv;
	if (!p->n)
		return;
	unsigned delay = 250;
	for (int t = 0; t < POST_TRIES && !cancelled(p); t++) {
		if (t) {
			sink_ctr_add(&p->retries, 1);
			pause_ms(p, delay);
			delay *= 2;
		}
		int st = post_once(p);
		if (st >= 200 && st < 300) {
			sink_ctr_add(&p->posts, 1);
			sink_ctr_add(&p->records_sent, p->n);
			sink_ctr_add(&s->ctr.packets, p->n);
			sink_ctr_add(&s->ctr.bytes, p->len);
			goto done;
		}
		if (st >= 400 && st < 500 && st != 408 && st != 429) {
			snprintf(p->why, sizeof(p->why), "the collector answered %d", st);
			sink_ctr_add(&p->rejected, 1);
			break;
		}
		if (st > 0)
			snprintf(p->why, sizeof(p->why), "the collector answered %d", st);
	}
	sink_ctr_add(&p->failed_records, p->n);
	sink_ctr_add(&s->ctr.lost_packets, p->n);
	sink_ctr_add(&s->ctr.lost_bytes, p->len);
	{
		static struct log_limit lim;
		log_limited(&lim, 10, "--http-post %s: %zu records given up: %s", s->target, p->n,
			    p->why[0] ? p->why : "cancelled at exit");
	}
done:
	p->n = p->len = 0;
}

static int post_write(struct sink *s, const struct pkt *pkts, size_t n)
{
	struct post *p = s->priv;
	for (size_t i = 0; i < n; i++) {
		size_t len = pkts[i].hdr_len;
		const uint8_t *rec = pkts[i].hdr;
		if (p->akto && len && rec[len - 1] == '\n')
			len--; /* an element of the array */
		if (p->n && p->len + len + 1 > POST_BATCH_BYTES)
			send_batch(s);
		if (len + 1 > POST_BATCH_BYTES) {
			sink_ctr_add(&s->ctr.lost_packets, 1); /* cannot be: records are smaller */
			continue;
		}
		if (p->akto && p->n)
			p->batch[p->len++] = ',';
		memcpy(p->batch + p->len, rec, len);
		p->len += len;
		if (!p->n++)
			p->first_ns = now_ns();
		if (p->n >= POST_BATCH_RECORDS)
			send_batch(s);
	}
	return 0;
}

static int post_flush(struct sink *s)
{
	struct post *p = s->priv;
	if (p->n && (now_ns() - p->first_ns >= POST_LINGER_NS || cancelled(p) || !s->queue))
		send_batch(s);
	return 0;
}

static void post_close(struct sink *s)
{
	struct post *p = s->priv;
	if (!p)
		return;
	send_batch(s); /* the drain gave it its time already; cancelled: counted lost */
	disconnect(p);
	SSL_CTX_free(p->ctx);
	free(p->batch);
	free(p);
	s->priv = NULL;
}

static int post_open(struct sink *s, const char *target, const struct sink_opts *o,
		     const char **err_msg)
{
	struct post *p = calloc(1, sizeof(*p));
	*err_msg = "out of memory";
	if (!p)
		return -ENOMEM;
	s->priv = p;
	p->fd = -1;
	p->cancel = &s->cancel;
	p->akto = o->post_akto;
	p->batch = malloc(POST_BATCH_BYTES + 2);
	if (!p->batch) {
		post_close(s);
		return -ENOMEM;
	}
	if (parse_url(p, target) < 0) {
		post_close(s);
		*err_msg = "a URL: http://HOST[:PORT][/PATH] or https://... (IPv6: [ADDR])";
		return -EINVAL;
	}
	if (o->post_ca && access(o->post_ca, R_OK) < 0) {
		int e = errno;
		post_close(s);
		*err_msg = "cannot read the CA file (--http-post-ca)";
		return -e;
	}
	if (p->tls) {
		p->ctx = SSL_CTX_new(TLS_client_method());
		if (!p->ctx || !SSL_CTX_set_min_proto_version(p->ctx, TLS1_2_VERSION)) {
			post_close(s);
			return -ENOMEM;
		}
		SSL_CTX_set_verify(p->ctx, SSL_VERIFY_PEER, NULL);
		int ok = o->post_ca ? SSL_CTX_load_verify_locations(p->ctx, o->post_ca, NULL) :
				      SSL_CTX_set_default_verify_paths(p->ctx);
		if (!ok) {
			post_close(s);
			*err_msg = "cannot read the CA file (--http-post-ca)";
			return -EINVAL;
		}
	}
	return 0;
}

static size_t post_counters(const struct sink *s, struct kv *out, size_t max)
{
	const struct post *p = s->priv;
	size_t n = sink_record_counters(s, out, max);
	if (!p)
		return n;
#define ROW(name, x) n = kv_put(out, max, n, name, __atomic_load_n(&p->x, __ATOMIC_RELAXED), 0)
	ROW("posts", posts);
	ROW("records_sent", records_sent);
	ROW("failed_records", failed_records);
	ROW("retries", retries);
	ROW("rejected_posts", rejected);
	ROW("connects", connects);
#undef ROW
	return n;
}

const struct sink_ops sink_httppost_ops = {
	.name = "http-post",
	.open = post_open,
	.write = post_write,
	.flush = post_flush,
	.close = post_close,
	.counters = post_counters,
};
