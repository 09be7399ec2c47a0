/* -C collector: a source; each agent's TLS tunnel is an origin whose validated connection events feed the chain. */
#include "agent/agent.h"
#include "common/log.h"
#include "pipeline/pipeline.h"
#include "sources/source.h"
#include "common/bytes.h"
#include "tunnel/frame.h"
#include "tunnel/record.h"
#include "tunnel/tunnel.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/*
 * Each peer goes: TLS handshake (client certificate required, signed by
 * --ca) -> HELLO -> EVENTS/HEARTBEAT ... -> GOODBYE or close. A frame is
 * read whole into the peer's buffer (bounded by FRAME_MAX_PAYLOAD), checked
 * completely (header, decompression to exactly raw_len, every field of
 * every event) and only then its events go to the chain, under the peer's
 * own origin (one per authenticated connection; the metadata's host is the
 * agent's identity): a bad frame injects nothing and closes the connection
 * with a log line naming the peer and the reason. When a peer goes, its
 * origin is closed: the chain ends its connections (a FIN exchange each);
 * a reconnected agent announces them again mid-stream. Timeouts
 * (a tick): the handshake and HELLO within COL_HELLO_MS, then some bytes at
 * least every COL_IDLE_MS (agents send a HEARTBEAT every second).
 * Unauthenticated connections (before HELLO) cannot lock agents out: one
 * source address holds at most COL_UNAUTH_PER_ADDR of them, all of them at
 * most --max-peers less a reserve (a sixteenth, at least one) kept for peers
 * that authenticate; past either bound a new connection closes the oldest
 * unauthenticated one (of its address, or of all) rather than being refused,
 * so a flood of idle connections gives way to a real agent, whose handshake
 * takes milliseconds (unauth_evicted).
 * Counters are kept per agent identity (the certificate's CN, or the HELLO
 * name on a plaintext collector) across reconnects.
 */

#define COL_MAX_PEERS 256      /* default of --max-peers */
#define COL_MAX_AGENTS 4094   /* also the VLAN id range */
#define COL_HELLO_MS 5000       /* the TLS handshake and HELLO: unauthenticated until then */
#define COL_UNAUTH_PER_ADDR 32   /* unauthenticated connections of one source address */
#define COL_IDLE_MS 15000
#define COL_READS_PER_EVENT 64
#define COL_BATCH 256
#define VLAN_TAG_LEN 4

struct agent_rec {
	char name[FRAME_MAX_NAME + 1];
	char host[FRAME_MAX_NAME + 1];
	char peer[64];
	uint16_t vlan;
	int online;
	uint64_t connects, frames, events, conns, open_conns, refused_conns, bytes;
	uint64_t orphan_events, bad_frames, clamped_ts, keys;
	uint64_t agent_dropped_events, agent_dropped_bytes;
};

struct peer {
	struct agent_watch w;
	struct collector *col;
	struct peer *next;
	SSL *ssl;
	struct tls13r rr;            /* the agent's records opened here after the handshake */
	int own_records;             /* rr in use, SSL_read otherwise */
	int hs_done, hello, more;
	char addr[64];
	char host[INET6_ADDRSTRLEN]; /* addr without the port */
	char ident[FRAME_MAX_NAME + 1];
	struct agent_rec *rec;
	uint64_t origin;             /* its origin in the chain, from HELLO on */
	uint64_t open_conns;
	uint8_t *buf;
	size_t used, cap;
	uint8_t *raw;
	size_t raw_cap;
	uint64_t start_ns, last_ns;
};

struct collector {
	struct agent_watch lw;
	struct agent *a;
	SSL_CTX *ctx;
	char listen[300];
	int tag_vlan;
	struct peer *peers;
	size_t n_peers;
	struct agent_rec *recs;
	size_t n_recs, cap_recs;
	uint64_t accepted, rejected, bad_frames, unauth_evicted;
	uint64_t own_records;        /* connections whose records the collector opened itself */
	uint64_t key_updates;        /* KeyUpdates of closed connections */
	struct log_limit lim;
	uint64_t log_window_ns, log_lines;
};

static struct collector *the_col;

/* Peer log lines: the first COL_LOG_BURST of every 10 s in full, then rate-limited
 * (a flood of bad peers must not flood the log). */
#define COL_LOG_BURST 50
#define col_log(col, ...)                                                          \
	do {                                                                       \
		uint64_t now_ = agent_now_ns();                                   \
		if (now_ - (col)->log_window_ns > 10000000000ull) {                \
			(col)->log_window_ns = now_;                               \
			(col)->log_lines = 0;                                      \
		}                                                                  \
		if ((col)->log_lines++ < COL_LOG_BURST)                           \
			log_warn(__VA_ARGS__);                                     \
		else                                                               \
			log_limited(&(col)->lim, 1, __VA_ARGS__);                  \
	} while (0)

static void peer_close(struct peer *p, const char *fmt, const char *why)
{
	struct collector *col = p->col;
	const char *who = p->ident[0] ? p->ident : "unauthenticated peer";
	if (fmt)
		col_log(col, "collector: %s (%s): %s%s", who, p->addr, fmt, why ? why : "");
	if (p->origin) {
		/* its connections end here; a reconnected agent opens them again */
		pipeline_origin(col->a->pl, p->origin, ORIGIN_CLOSED, agent_now_ns());
		pipeline_origin(col->a->pl, p->origin, ORIGIN_FORGOTTEN, 0);
		if (p->rec)
			p->rec->open_conns -= p->open_conns < p->rec->open_conns ?
					      p->open_conns : p->rec->open_conns;
	}
	agent_unwatch_fd(col->a, &p->w);
	close(p->w.fd);
	if (p->ssl)
		SSL_free(p->ssl);
	if (p->own_records) {
		col->key_updates += p->rr.k.key_updates;
		tls13r_free(&p->rr);
	}
	if (p->rec)
		p->rec->online = 0;
	for (struct peer **pp = &col->peers; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	col->n_peers--;
	free(p->buf);
	free(p->raw);
	free(p);
}

/* A protocol violation: counted, logged, the connection closed. */
static void peer_bad(struct peer *p, const char *why)
{
	p->col->bad_frames++;
	if (p->rec)
		p->rec->bad_frames++;
	peer_close(p, "bad input, closing: ", why);
}

static struct agent_rec *rec_for(struct collector *col, const char *ident)
{
	for (size_t i = 0; i < col->n_recs; i++)
		if (!strcmp(col->recs[i].name, ident))
			return &col->recs[i];
	if (col->n_recs >= COL_MAX_AGENTS)
		return NULL;
	if (col->n_recs == col->cap_recs) {
		size_t n = col->cap_recs ? col->cap_recs * 2 : 4;
		struct agent_rec *v = realloc(col->recs, n * sizeof(*v));
		if (!v)
			return NULL;
		/* peers point into the array: re-point them */
		for (struct peer *q = col->peers; q; q = q->next)
			if (q->rec)
				q->rec = v + (q->rec - col->recs);
		col->recs = v;
		col->cap_recs = n;
	}
	struct agent_rec *r = &col->recs[col->n_recs++];
	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", ident);
	r->vlan = (uint16_t)col->n_recs;
	return r;
}

/* The authenticated identity: the client certificate's CN. */
static int cert_ident(struct peer *p, const char **why)
{
	X509 *x = SSL_get1_peer_certificate(p->ssl);
	if (!x) {
		*why = "no client certificate";
		return -EACCES;
	}
	char cn[256] = "";
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
	X509_free(x);
	size_t n = strlen(cn);
	if (!n || n > FRAME_MAX_NAME) {
		*why = "client certificate CN empty or longer than 64";
		return -EACCES;
	}
	for (size_t i = 0; i < n; i++)
		if (cn[i] < 0x20 || cn[i] > 0x7e)
			cn[i] = '?';
	memcpy(p->ident, cn, n + 1);
	return 0;
}

/* Connection ids of a peer in the chain: its origin and the agent's id. */
static struct conn_id peer_id(const struct peer *p, uint64_t conn)
{
	return (struct conn_id){ p->origin, conn };
}

/* The metadata of an OPEN, the agent's identity as its host. */
static struct conn_meta *open_meta(struct peer *p, const struct frame_open *fo)
{
	struct conn_meta *m = conn_meta_new();
	if (!m)
		return NULL;
	m->kind = fo->kind;
	m->side = (fo->flags & FRAME_OPEN_SERVER) ? 1 : 0;
	m->map_method = fo->map_method;
	m->flags = (fo->flags & FRAME_OPEN_MIDSTREAM) ? CONN_META_MIDSTREAM : 0;
	m->tls_version = fo->tls_version;
	m->real_server_port = fo->real_server_port;
	m->pid = fo->pid;
	m->uid = fo->uid;
	m->vlan = p->col->tag_vlan ? p->rec->vlan : 0;
	/* validated by frame_event_next: printable, within these sizes */
	_Static_assert(sizeof(m->comm) >= sizeof(fo->comm) && sizeof(m->sni) >= sizeof(fo->sni) &&
		       sizeof(m->alpn) >= sizeof(fo->alpn) &&
		       sizeof(m->cipher) >= sizeof(fo->cipher), "metadata fields too small");
	memcpy(m->comm, fo->comm, sizeof(fo->comm));
	memcpy(m->sni, fo->sni, sizeof(fo->sni));
	memcpy(m->alpn, fo->alpn, sizeof(fo->alpn));
	memcpy(m->cipher, fo->cipher, sizeof(fo->cipher));
	size_t hl = strnlen(p->ident, sizeof(m->host) - 1);
	memcpy(m->host, p->ident, hl);
	m->host[hl] = 0;
	return m;
}

static void on_open_ev(struct peer *p, const struct frame_event *ev, const struct frame_open *fo)
{
	struct conn_open o;
	memset(&o, 0, sizeof(o));
	o.id = peer_id(p, ev->conn);
	o.ts_ns = ev->ts_ns;
	o.family = fo->family;
	o.side = (fo->flags & FRAME_OPEN_SERVER) ? 1 : 0;
	o.midstream = (fo->flags & FRAME_OPEN_MIDSTREAM) ? 1 : 0;
	o.synthetic = (fo->flags & FRAME_OPEN_SYNTHETIC) ? 1 : 0;
	o.client_port = fo->client_port;
	o.server_port = fo->server_port;
	memcpy(o.client_addr, fo->client_addr, 16);
	memcpy(o.server_addr, fo->server_addr, 16);
	o.off[0] = fo->off[0];
	o.off[1] = fo->off[1];
	o.isn_seed = fo->seed;
	struct conn_meta *m = open_meta(p, fo);
	if (!m) {
		p->rec->refused_conns++;
		return;
	}
	o.meta = m;
	int err = pipeline_open(p->col->a->pl, &o);
	conn_meta_unref(m); /* the stages took their references */
	if (err == -ENFILE || err == -EMFILE || err == -ENOMEM)
		p->rec->refused_conns++; /* over --max-conns(-per-proc): the flow engine logged it */
	if (err < 0)
		return;
	p->rec->conns++;
	p->rec->open_conns++;
	p->open_conns++;
}

/*
 * Event timestamps are the agent's word (its clock, and what its producers
 * wrote, within the agent's own window): kept within COL_TS_PAST_NS before
 * and COL_TS_FUTURE_NS after the collector's clock, the ones outside moved to
 * the nearest edge and counted per agent (clamped_ts), the first logged. The
 * future edge is wider than the agent's 2 s: hosts' clocks differ a little.
 */
#define COL_TS_PAST_NS (3600ull * 1000000000)
#define COL_TS_FUTURE_NS (10ull * 1000000000)

static uint64_t col_clamp_ts(struct peer *p, uint64_t ts, uint64_t now)
{
	uint64_t lo = now > COL_TS_PAST_NS ? now - COL_TS_PAST_NS : 0, hi = now + COL_TS_FUTURE_NS;
	if (ts >= lo && ts <= hi)
		return ts;
	if (!p->rec->clamped_ts++)
		log_warn("agent %s (%s): an event's timestamp is %.0f s %s the collector's clock: "
			 "shown at the edge of the window (1 h before, 10 s after), counted as "
			 "clamped_ts", p->rec->name, p->addr,
			 ts < lo ? ((double)now - (double)ts) / 1e9 : ((double)ts - (double)now) / 1e9,
			 ts < lo ? "behind" : "ahead of");
	return ts < lo ? lo : hi;
}

/* Hands the events of a checked EVENTS payload to the chain. */
static void apply(struct peer *p, const uint8_t *pl, size_t n)
{
	uint64_t now = agent_now_ns();
	struct pipeline *chain = p->col->a->pl;
	struct frame_open fo;
	struct frame_event ev = { .open = &fo };
	const char *why = NULL;
	size_t off = 4;
	while (frame_event_next(pl, n, &off, &ev, &why) == 1) {
		struct conn_id id = peer_id(p, ev.conn);
		uint64_t gap = 0;
		int err = 0;
		p->rec->events++;
		ev.ts_ns = col_clamp_ts(p, ev.ts_ns, now);
		switch (ev.type) {
		case FRAME_EV_OPEN:
			on_open_ev(p, &ev, &fo);
			break;
		case FRAME_EV_DATA:
			err = pipeline_data(chain, &id, ev.dir, ev.ts_ns, ev.off, ev.data,
					    (size_t)ev.len, &gap);
			if (!err)
				p->rec->bytes += ev.len;
			break;
		case FRAME_EV_GAP:
			/* up to the gap's offset first (events the agent dropped), then the gap */
			err = pipeline_data(chain, &id, ev.dir, ev.ts_ns, ev.off, NULL, 0, &gap);
			if (!err)
				err = pipeline_gap(chain, &id, ev.dir, ev.ts_ns, ev.len);
			break;
		case FRAME_EV_KEY:
			/* a secret the agent's libraries saw (--send-keys): checked by
			 * frame_event_next, to --keylog and tlsmirror decrypt */
			if (keylog_received(p->col->a, ev.flags, ev.data, ev.data + 32, (size_t)ev.len) == 0)
				p->rec->keys++;
			break;
		case FRAME_EV_CLOSE:
			err = pipeline_close(chain, &id, ev.ts_ns, 0);
			if (!err && p->open_conns) {
				p->open_conns--;
				if (p->rec->open_conns)
					p->rec->open_conns--;
			}
			break;
		}
		if (err == -ENOENT)
			p->rec->orphan_events++; /* its OPEN was refused or dropped by the agent */
	}
}

static int on_hello(struct peer *p, const uint8_t *pl, size_t n, const char **why)
{
	struct frame_hello h;
	if (frame_hello_parse(pl, n, &h, why) < 0)
		return -EPROTO;
	if (!p->ssl)
		snprintf(p->ident, sizeof(p->ident), "%s", h.name);
	p->rec = rec_for(p->col, p->ident);
	if (!p->rec) {
		*why = "too many agents";
		return -ENOSPC;
	}
	snprintf(p->rec->host, sizeof(p->rec->host), "%s", h.host);
	snprintf(p->rec->peer, sizeof(p->rec->peer), "%s", p->addr);
	p->rec->online = 1;
	p->rec->connects++;
	p->hello = 1;
	p->origin = pipeline_origin_new(p->col->a->pl);
	struct flow_table *ft = pipeline_stage_priv(p->col->a->pl, "flows");
	char label[96];
	snprintf(label, sizeof(label), "agent %s", p->ident);
	if (ft)
		flow_origin_label(ft, p->origin, label);
	log_info("collector: agent %s (host %s) connected from %s%s%s%s, vlan %u", p->ident, h.host,
		 p->addr, p->ssl ? " over TLS 1.3 (" : " in PLAINTEXT",
		 p->ssl ? SSL_get_cipher_name(p->ssl) : "", p->ssl ? ")" : "", p->rec->vlan);
	return 0;
}

/* One complete frame in p->buf. Returns 0, 1 (GOODBYE: closed) or -EPROTO. */
static int on_frame(struct peer *p, const struct frame_hdr *h, const char **why)
{
	const uint8_t *pl = p->buf + FRAME_HDR_SIZE;
	if (!p->hello) {
		if (h->type != FRAME_HELLO) {
			*why = "first frame is not HELLO";
			return -EPROTO;
		}
		return on_hello(p, pl, h->len, why);
	}
	p->rec->frames++;
	switch (h->type) {
	case FRAME_HELLO:
		*why = "second HELLO";
		return -EPROTO;
	case FRAME_HEARTBEAT: {
		struct frame_heartbeat hb;
		if (frame_heartbeat_parse(pl, h->len, &hb, why) < 0)
			return -EPROTO;
		p->rec->agent_dropped_events = hb.dropped_events;
		p->rec->agent_dropped_bytes = hb.dropped_bytes;
		return 0;
	}
	case FRAME_GOODBYE:
		log_info("collector: agent %s (%s) said goodbye", p->ident, p->addr);
		peer_close(p, NULL, NULL);
		return 1;
	default:
		break;
	}
	if (h->flags) {
		if (p->raw_cap < h->raw_len) {
			uint8_t *r = realloc(p->raw, h->raw_len);
			if (!r) {
				*why = "out of memory";
				return -ENOMEM;
			}
			p->raw = r;
			p->raw_cap = h->raw_len;
		}
		if (frame_decompress(h, pl, p->raw, why) < 0)
			return -EPROTO;
		pl = p->raw;
	}
	if (frame_events_check(pl, h->raw_len, why) < 0)
		return -EPROTO;
	apply(p, pl, h->raw_len);
	return 0;
}

/* Reads what is there (bounded). Returns 1 if the peer was closed. */
static int peer_read(struct peer *p, uint64_t now)
{
	for (int i = 0; i < COL_READS_PER_EVENT; i++) {
		struct frame_hdr h;
		const char *why = NULL;
		size_t need = FRAME_HDR_SIZE;
		if (p->used >= FRAME_HDR_SIZE) {
			if (frame_hdr_parse(p->buf, p->used, &h, &why) < 0)
				return peer_bad(p, why), 1;
			need = FRAME_HDR_SIZE + h.len;
		}
		if (need > p->cap) {
			uint8_t *b = realloc(p->buf, need);
			if (!b)
				return peer_close(p, "out of memory", NULL), 1;
			p->buf = b;
			p->cap = need;
		}
		int n;
		if (p->own_records) {
			long r = tls13r_read(&p->rr, p->buf + p->used, need - p->used);
			if (r == -EAGAIN)
				return 0;
			n = r > 0 ? (int)r : 0;
			if (r <= 0)
				why = p->rr.why ? p->rr.why : "connection lost";
		} else if (p->ssl) {
			n = SSL_read(p->ssl, p->buf + p->used, (int)(need - p->used));
			if (n <= 0) {
				int e = SSL_get_error(p->ssl, n);
				if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
					return 0;
				why = e == SSL_ERROR_ZERO_RETURN ? "closed" :
				      (ERR_peek_error() ? tls_last_error() : "connection lost");
			}
		} else {
			ssize_t r = recv(p->w.fd, p->buf + p->used, need - p->used, MSG_DONTWAIT);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				return 0;
			n = (int)r;
			if (r <= 0)
				why = r == 0 ? "closed" : strerror(errno);
		}
		if (n <= 0) {
			if (p->used)
				return peer_bad(p, "truncated frame (connection ended inside it)"), 1;
			return peer_close(p, p->hello ? "disconnected: " :
					  "disconnected before HELLO: ", why), 1;
		}
		p->used += (size_t)n;
		p->last_ns = now;
		if (p->used < FRAME_HDR_SIZE) {
			if (frame_hdr_parse(p->buf, p->used, &h, &why) == -EPROTO)
				return peer_bad(p, why), 1;
			continue;
		}
		if (frame_hdr_parse(p->buf, p->used, &h, &why) < 0)
			return peer_bad(p, why), 1;
		if (p->used < FRAME_HDR_SIZE + h.len)
			continue;
		int r = on_frame(p, &h, &why);
		if (r == 1)
			return 1;
		if (r < 0)
			return peer_bad(p, why), 1;
		p->used = 0;
	}
	p->more = 1;  /* fairness: the tick comes back for the rest */
	return 0;
}

/* After the handshake: the reading direction to the record reader when the
 * secret was kept and the suite is one it opens (record.h), starting with
 * what the buffering BIO read ahead; SSL_read otherwise, as before.
 * Returns -1 if the connection cannot go on (the BIO's bytes half moved). */
static int own_records(struct peer *p)
{
	uint8_t secret[TLS13W_MAX_SECRET];
	size_t len = 0;
	const char *suite;
	BIO *rb = SSL_get_rbio(p->ssl);
	size_t pre = rb ? BIO_ctrl_pending(rb) : 0;
	int ok = tls_record_keys(p->ssl, secret, sizeof(secret), &len, &suite) == 0 &&
		 !SSL_has_pending(p->ssl) && pre <= TLS13R_BUF &&
		 tls13r_init(&p->rr, suite, secret, len, p->w.fd) == 0;
	OPENSSL_cleanse(secret, sizeof(secret));
	int rc = 0;
	if (ok) {
		p->own_records = 1;
		p->col->own_records++;
		if (pre && BIO_read(rb, p->rr.raw, (int)pre) != (int)pre)
			rc = -1;
		else
			p->rr.hi = pre;
	}
	ERR_clear_error();
	return rc;
}

static int peer_pending(const struct peer *p)
{
	return p->own_records ? tls13r_pending(&p->rr) : p->ssl && tls_pending(p->ssl);
}

static void peer_handshake(struct peer *p, uint64_t now)
{
	int r = SSL_accept(p->ssl);
	if (r != 1) {
		int e = SSL_get_error(p->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return;
		p->col->rejected++;
		long v = SSL_get_verify_result(p->ssl);
		const char *why = v != X509_V_OK ? X509_verify_cert_error_string(v) :
				  ERR_peek_error() ? tls_last_error() : "connection closed";
		peer_close(p, "rejected in the TLS handshake: ", why);
		return;
	}
	const char *why = NULL;
	if (cert_ident(p, &why) < 0) {
		p->col->rejected++;
		peer_close(p, "rejected: ", why);
		return;
	}
	p->hs_done = 1;
	p->last_ns = now;
	if (own_records(p) < 0) {
		peer_close(p, "closed: ", "could not move its records to the record reader");
		return;
	}
	peer_read(p, now);
}

static void on_peer(struct agent *a, struct agent_watch *w, uint32_t events)
{
	struct peer *p = (struct peer *)w;
	uint64_t now = agent_now_ns();
	if (!p->hs_done)
		peer_handshake(p, now);
	else
		peer_read(p, now);
}

static void peer_addr(const struct sockaddr_storage *ss, char *out, size_t len,
		      char h[INET6_ADDRSTRLEN])
{
	snprintf(h, INET6_ADDRSTRLEN, "?");
	unsigned port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)ss;
		inet_ntop(AF_INET, &s->sin_addr, h, INET6_ADDRSTRLEN);
		port = ntohs(s->sin_port);
		snprintf(out, len, "%s:%u", h, port);
	} else {
		const struct sockaddr_in6 *s = (const void *)ss;
		inet_ntop(AF_INET6, &s->sin6_addr, h, INET6_ADDRSTRLEN);
		port = ntohs(s->sin6_port);
		snprintf(out, len, "[%s]:%u", h, port);
	}
}

/* Room for one more unauthenticated connection from host: closes the oldest
 * unauthenticated one of host when it has its share, or the oldest of all
 * when they fill what is not reserved for authenticated peers. */
static void make_unauth_room(struct collector *col, const char *host, size_t max)
{
	size_t reserve = max / 16 ? max / 16 : 1, all = 0, mine = 0;
	struct peer *oldest = NULL, *oldest_mine = NULL;
	for (struct peer *p = col->peers; p; p = p->next) {
		if (p->hello)
			continue;
		int same = !strcmp(p->host, host);
		all++;
		mine += same;
		if (!oldest || p->start_ns < oldest->start_ns)
			oldest = p;
		if (same && (!oldest_mine || p->start_ns < oldest_mine->start_ns))
			oldest_mine = p;
	}
	struct peer *victim = mine >= COL_UNAUTH_PER_ADDR ? oldest_mine :
			      all + reserve >= max ? oldest : NULL;
	if (!victim)
		return;
	col->unauth_evicted++;
	if (!victim->hs_done)
		col->rejected++;
	peer_close(victim, "closed: unauthenticated connections fill their share "
		   "(the oldest gives way to a new one)", NULL);
}

static void on_listen(struct agent *a, struct agent_watch *w, uint32_t events)
{
	struct collector *col = w->arg;
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(col->lw.fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		char addr[64], host[INET6_ADDRSTRLEN];
		peer_addr(&ss, addr, sizeof(addr), host);
		size_t max = a->cfg.max_peers ? a->cfg.max_peers : COL_MAX_PEERS;
		make_unauth_room(col, host, max);
		struct peer *p = col->n_peers < max ? calloc(1, sizeof(*p)) : NULL;
		if (!p) {
			col->rejected++;
			col_log(col, "collector: %s: rejected: %zu connections already (--max-peers)",
				addr, col->n_peers);
			close(fd);
			continue;
		}
		p->w.fd = fd;
		p->w.on_event = on_peer;
		p->w.arg = p;
		p->col = col;
		snprintf(p->addr, sizeof(p->addr), "%s", addr);
		snprintf(p->host, sizeof(p->host), "%s", host);
		p->start_ns = p->last_ns = agent_now_ns();
		p->hs_done = !col->ctx;
		if (col->ctx && (!(p->ssl = SSL_new(col->ctx)) || tls_set_buffered_fd(p->ssl, fd, 0) < 0)) {
			ERR_clear_error();
			if (p->ssl)
				SSL_free(p->ssl);
			free(p);
			close(fd);
			continue;
		}
		if (p->ssl)
			SSL_set_accept_state(p->ssl);
		if (agent_watch_fd(a, &p->w, EPOLLIN | EPOLLRDHUP) < 0) {
			if (p->ssl)
				SSL_free(p->ssl);
			free(p);
			close(fd);
			continue;
		}
		p->next = col->peers;
		col->peers = p;
		col->n_peers++;
		col->accepted++;
	}
}

/* Timeouts and the peers that had more to read than one turn allows. */
static void col_tick(struct agent *a, uint64_t now, void *arg)
{
	struct collector *col = arg;
	struct peer *next;
	for (struct peer *p = col->peers; p; p = next) {
		next = p->next;
		if (!p->hello && now - p->start_ns > COL_HELLO_MS * 1000000ull) {
			if (!p->hs_done)
				p->col->rejected++;
			peer_close(p, p->hs_done ? "no HELLO in time, closing" :
				   "TLS handshake timed out, closing", NULL);
		} else if (now > p->last_ns && now - p->last_ns > COL_IDLE_MS * 1000000ull) {
			peer_bad(p, "stalled (nothing received for 15 s)");
		}
	}
}

/* The peers that had more to read than one turn allows. */
static size_t col_poll(struct source *s, size_t budget)
{
	struct collector *col = s->priv;
	size_t work = 0;
	uint64_t now = agent_now_ns();
	struct peer *next;
	for (struct peer *p = col->peers; p; p = next) {
		next = p->next;
		if (p->more || peer_pending(p)) {
			p->more = 0;
			work++;
			peer_read(p, now);
		}
	}
	return work;
}

static int col_prepare_sleep(struct source *s)
{
	struct collector *col = s->priv;
	for (struct peer *p = col->peers; p; p = p->next)
		if (p->more || peer_pending(p))
			return 1;
	return 0;
}

/* At exit: what the peers have sent and the socket holds is still taken
 * (bounded: a peer that keeps sending does not hold the exit). */
static void col_drain(struct source *s)
{
	struct collector *col = s->priv;
	uint64_t now = agent_now_ns();
	for (int round = 0; round < 64; round++) {
		int more = 0;
		struct peer *next;
		for (struct peer *p = col->peers; p; p = next) {
			next = p->next;
			if (!p->hs_done)
				continue;
			p->more = 0;
			if (!peer_read(p, now) && p->more)
				more = 1;
		}
		if (!more)
			break;
	}
}

/* At exit (after the event loop is gone): frees what the collector holds. */
static void col_free(struct source *s)
{
	struct collector *col = the_col;
	if (!col)
		return;
	while (col->peers) {
		struct peer *p = col->peers;
		col->peers = p->next;
		if (p->ssl)
			SSL_free(p->ssl);
		close(p->w.fd);
		free(p->buf);
		free(p->raw);
		free(p);
	}
	if (col->lw.fd >= 0)
		close(col->lw.fd);
	SSL_CTX_free(col->ctx);
	free(col->recs);
	free(col);
	the_col = NULL;
	frame_zstd_release();
}

static int col_listen(struct collector *col, const char **why)
{
	char host[256], port[16];
	if (tunnel_split_addr(col->listen, host, sizeof(host), port, sizeof(port)) < 0) {
		*why = "want ADDR:PORT (or [IPv6]:PORT)";
		return -EINVAL;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	int gai = getaddrinfo(host, port, &hints, &res);
	if (gai) {
		*why = gai_strerror(gai);
		return -EINVAL;
	}
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1, err = 0;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 128) < 0) {
		err = -errno;
		*why = strerror(errno);
		if (fd >= 0)
			close(fd);
	}
	freeaddrinfo(res);
	if (err)
		return err;
	col->lw.fd = fd;
	return 0;
}

static int collector_open(struct source *s, struct agent *a, const char *arg, const char **why_out)
{
	const struct agent_config *c = &a->cfg;
	const char *why = NULL;
	int err = -ENOMEM;
	if (c->tag_agents && !strcmp(c->tag_agents, "vni")) {
		log_err("--tag-agents vni is not available in this version yet: use "
			"--tag-agents vlan");
		return -ENOTSUP;
	}
	struct collector *col = calloc(1, sizeof(*col));
	if (!col)
		goto fail;
	col->a = a;
	col->lw.fd = -1;
	col->tag_vlan = c->tag_agents && !strcmp(c->tag_agents, "vlan");
	snprintf(col->listen, sizeof(col->listen), "%s",
		 c->listen_addr ? c->listen_addr : TUNNEL_DEFAULT_LISTEN);
	if (c->sink.insecure_plaintext) {
		log_warn("!!! INSECURE: --insecure-plaintext-tunnel: the collector on %s accepts "
			 "UNENCRYPTED, UNAUTHENTICATED agents: anyone who can connect can inject "
			 "packets !!!", col->listen);
	} else if (!(col->ctx = tls_server_ctx(&c->sink, &why))) {
		err = -EINVAL;
		goto fail;
	}
	if ((err = col_listen(col, &why)) < 0)
		goto fail;
	col->lw.on_event = on_listen;
	col->lw.arg = col;
	if ((err = agent_watch_fd(a, &col->lw, EPOLLIN)) < 0 ||
	    (err = agent_add_tick(a, (struct agent_tick){ .run = col_tick, .arg = col })) < 0) {
		why = strerror(-err);
		goto fail;
	}
	the_col = col;
	s->priv = col;
	log_info("collector: listening on %s (%s)%s", col->listen,
		 col->ctx ? "TLS 1.3, client certificates required" : "PLAINTEXT",
		 col->tag_vlan ? ", tagging each agent with a VLAN id" : "");
	return 0;
fail:
	log_err("-C (collector) on %s: %s", col ? col->listen : "?", why ? why : strerror(-err));
	if (col) {
		if (col->lw.fd >= 0)
			close(col->lw.fd);
		SSL_CTX_free(col->ctx);
		free(col);
	}
	return err;
}

static size_t col_stats(struct collector *col, char *buf, size_t len, size_t at)
{
	int n = snprintf(buf + at, len - at,
			 "collector listen=%s tls=%s peers=%zu agents=%zu accepted=%llu "
			 "rejected=%llu bad_frames=%llu unauth_evicted=%llu own_records=%llu "
			 "key_updates=%llu\n", col->listen,
			 col->ctx ? "yes" : "NO", col->n_peers, col->n_recs,
			 (unsigned long long)col->accepted, (unsigned long long)col->rejected,
			 (unsigned long long)col->bad_frames, (unsigned long long)col->unauth_evicted,
			 (unsigned long long)col->own_records, (unsigned long long)col->key_updates);
	if (n > 0)
		at = at + (size_t)n >= len ? len - 1 : at + (size_t)n;
	for (size_t i = 0; i < col->n_recs && at < len; i++) {
		const struct agent_rec *r = &col->recs[i];
		n = snprintf(buf + at, len - at,
			     "collector_agent name=%s host=%s state=%s peer=%s vlan=%u connects=%llu "
			     "frames=%llu events=%llu conns=%llu open_conns=%llu refused_conns=%llu "
			     "bytes=%llu orphan_events=%llu bad_frames=%llu clamped_ts=%llu "
			     "agent_dropped_events=%llu agent_dropped_bytes=%llu keys=%llu\n",
			     r->name, r->host[0] ? r->host : "?", r->online ? "connected" : "gone",
			     r->peer, r->vlan, (unsigned long long)r->connects,
			     (unsigned long long)r->frames, (unsigned long long)r->events,
			     (unsigned long long)r->conns, (unsigned long long)r->open_conns,
			     (unsigned long long)r->refused_conns,
			     (unsigned long long)r->bytes, (unsigned long long)r->orphan_events,
			     (unsigned long long)r->bad_frames, (unsigned long long)r->clamped_ts,
			     (unsigned long long)r->agent_dropped_events,
			     (unsigned long long)r->agent_dropped_bytes, (unsigned long long)r->keys);
		if (n > 0)
			at = at + (size_t)n >= len ? len - 1 : at + (size_t)n;
	}
	return at;
}

size_t tunnel_stats_format(struct agent *a, char *buf, size_t len, size_t at)
{
	if (!len || at >= len)
		return at;
	at = tunnel_sink_stats(buf, len, at);
	if (the_col && the_col->a == a)
		at = col_stats(the_col, buf, len, at);
	return at;
}

const struct source_ops collector_source_ops = {
	.name = "collector",
	.open = collector_open,
	.poll = col_poll,
	.prepare_sleep = col_prepare_sleep,
	.drain = col_drain,
	.close = col_free,
};
