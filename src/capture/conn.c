/* One TLS connection in the capture library: its TCP identity, its records in the ring. */
#include "capture/capture.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FD_MAP_SIZE 65536   /* fds beyond this are not tracked for close() */
/* ClientHellos remembered for memory BIOs (asyncio): a hash table on the
 * client random, open addressing over a window of HELLO_PROBE slots. A match
 * frees its slot; an entry older than HELLO_MAX_AGE_S (a handshake that never
 * finished) is free too; a full window gives up its oldest. */
#define HELLO_SLOTS 16384   /* power of two: > 3 x the 5,000 handshakes tested at once */
#define HELLO_PROBE 32
#define HELLO_MAX_AGE_S 120
#define HELLO_FREE 0u
#define HELLO_BUSY 1u       /* being written or read by one thread */
#define ANNOUNCE_SPINS 1000
#define DIAG_MAX_READS 64   /* netlink replies read looking for a listener */
#define TCP_LISTEN_STATE 10

/* Which connection each socket fd carries, for close(): the state itself,
 * so the CLOSE carries the final offsets. An entry holds a reference
 * (cap_conn.refs): whoever takes the pointer out of the table (close() by
 * exchange, SSL_free by compare-and-exchange, a later connection on the same
 * number) owns that reference and drops it when done, so a pointer taken
 * from here stays alive however the threads of the application interleave
 * close() and SSL_free(). No lock, no allocation. */
static struct cap_conn *fd_conn[FD_MAP_SIZE];

/* 88 bytes. state: HELLO_FREE, HELLO_BUSY, or a ticket >= 2 (the entry is
 * complete); a thread owns the other fields while it holds the slot BUSY.
 * born_s and key are also read (atomically) without holding it. */
struct hello {
	uint32_t state;
	uint32_t born_s;        /* cap_now_ns() seconds at insertion */
	uint64_t key;           /* bytes 4..11 of the random: a cheap first test */
	uint8_t random[32];
	uint8_t caddr[16], saddr[16];
	uint16_t cport, sport;
	uint8_t family;
};
static struct hello hellos[HELLO_SLOTS]; /* untouched pages cost nothing */
static uint32_t hello_next = 2;

static __thread struct cap_call *tl_call __attribute__((tls_model("initial-exec")));
static __thread int tl_depth __attribute__((tls_model("initial-exec")));

struct cap_conn *conn_new(const struct cap_tls_ops *ops)
{
	struct cap_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->id = cap_next_conn_id();
	c->io_fd = -1;
	c->fd = -1;
	c->refs = 1; /* the TLS session's own reference (ex-data, session table) */
	if (!ops->watch)
		c->watch.state = WATCH_DONE;
	return c;
}

int conn_call_begin(struct cap_call *call, const struct cap_tls_ops *ops, void *sess)
{
	if (tl_depth++ > 0)
		return 0;
	int saved = errno;
	call->ops = ops;
	call->sess = sess;
	call->conn = ops->state(sess, 1);
	call->io_fd = -1;
	call->want_fd = call->conn && !call->conn->map_method && call->conn->io_fd < 0;
	call->watched = 0;
	if (call->conn && call->conn->watch.state == WATCH_ON)
		watch_begin(call);
	tl_call = call;
	errno = saved;
	return 1;
}

void conn_call_end(struct cap_call *call)
{
	tl_depth--;
	if (tl_call != call)
		return;
	tl_call = NULL;
	if (call->io_fd >= 0 && call->conn && call->conn->io_fd < 0)
		call->conn->io_fd = call->io_fd;
	if (call->conn && (call->watched || call->conn->watch.state == WATCH_OFF))
		watch_end(call);
}

void conn_call_finish(struct cap_call *call, int top, int app_write, const void *buf,
		      size_t moved)
{
	int saved = errno;
	conn_call_end(call);
	if (top && moved)
		conn_data(call, app_write, buf, moved);
	errno = saved;
}

/* An IPv4 or IPv6 stream socket? */
static int inet_stream(int fd, int *family)
{
	int d = 0, t = 0;
	socklen_t l = sizeof(d);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &d, &l) < 0)
		return 0;
	l = sizeof(t);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &l) < 0 || t != SOCK_STREAM)
		return 0;
	if (d != AF_INET && d != AF_INET6)
		return 0;
	*family = d;
	return 1;
}

void conn_note_io_fd(int fd)
{
	struct cap_call *c = tl_call;
	if (!c || !c->want_fd || c->io_fd >= 0 || fd < 0)
		return;
	int saved = errno, fam;
	if (inet_stream(fd, &fam))
		c->io_fd = fd;
	else
		c->want_fd = 0; /* not a socket (node reads files here): stop looking */
	errno = saved;
}

/* Address of a sockaddr as family (4/6), 16 bytes, port; v4-mapped v6 -> v4. */
static int addr_of(const struct sockaddr_storage *ss, uint8_t *family,
		   uint8_t addr[16], uint16_t *port)
{
	memset(addr, 0, 16);
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
		memcpy(addr, &s4->sin_addr, 4);
		*port = ntohs(s4->sin_port);
		*family = 4;
		return 0;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
		static const uint8_t mapped[12] = { 0,0,0,0,0,0,0,0,0,0,0xff,0xff };
		*port = ntohs(s6->sin6_port);
		if (!memcmp(s6->sin6_addr.s6_addr, mapped, 12)) {
			memcpy(addr, s6->sin6_addr.s6_addr + 12, 4);
			*family = 4;
		} else {
			memcpy(addr, s6->sin6_addr.s6_addr, 16);
			*family = 6;
		}
		return 0;
	}
	return -EAFNOSUPPORT;
}

int cap_names_of(int fd, int local_is_client, uint8_t *family, uint8_t caddr[16], uint16_t *cport,
		 uint8_t saddr[16], uint16_t *sport)
{
	struct sockaddr_storage l, p;
	socklen_t ll = sizeof(l), pl = sizeof(p);
	uint8_t f1, f2;
	if (getsockname(fd, (struct sockaddr *)&l, &ll) < 0 ||
	    getpeername(fd, (struct sockaddr *)&p, &pl) < 0)
		return -errno;
	const struct sockaddr_storage *c = local_is_client ? &l : &p;
	const struct sockaddr_storage *s = local_is_client ? &p : &l;
	if (addr_of(c, &f1, caddr, cport) < 0 || addr_of(s, &f2, saddr, sport) < 0 || f1 != f2)
		return -EAFNOSUPPORT;
	*family = f1;
	return 0;
}

static uint32_t hello_home(const uint8_t random[32])
{
	uint32_t h;
	memcpy(&h, random, sizeof(h)); /* the client random is random */
	return h;
}

static uint64_t hello_key(const uint8_t random[32])
{
	uint64_t k;
	memcpy(&k, random + 4, sizeof(k));
	return k;
}

static int hello_stale(uint32_t born_s, uint32_t now_s)
{
	return now_s - born_s > HELLO_MAX_AGE_S;
}

/* Claims a slot of random's window: a free or stale one, else the oldest.
 * Returns it held BUSY, or NULL when every slot is busy right now. */
static struct hello *hello_claim(const uint8_t random[32], uint32_t now_s)
{
	uint32_t home = hello_home(random);
	struct hello *oldest = NULL;
	uint32_t oldest_v = 0;
	for (int pass = 0; pass < 2; pass++) {
		for (uint32_t i = 0; i < HELLO_PROBE; i++) {
			struct hello *h = &hellos[(home + i) & (HELLO_SLOTS - 1)];
			uint32_t v = __atomic_load_n(&h->state, __ATOMIC_ACQUIRE);
			if (v == HELLO_BUSY)
				continue;
			int take = pass ? h == oldest && v == oldest_v
					: v == HELLO_FREE ||
					  hello_stale(__atomic_load_n(&h->born_s, __ATOMIC_RELAXED), now_s);
			if (take && __atomic_compare_exchange_n(&h->state, &v, HELLO_BUSY, 0,
								__ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
				return h;
			if (!pass && v != HELLO_FREE && (!oldest || v - oldest_v > 0x80000000u)) {
				oldest = h; /* tickets grow: the smallest (mod 2^32) is the oldest */
				oldest_v = v;
			}
		}
		if (!oldest)
			return NULL;
	}
	return NULL;
}

void conn_note_client_hello(int fd, const uint8_t *buf, size_t len, int sent)
{
	/* Inside a TLS call the socket is found directly; this is for memory
	 * BIOs, whose socket I/O happens outside. TLS record: handshake(22),
	 * version 3.x, then ClientHello(1). */
	if (tl_call || len < 43 || buf[0] != 0x16 || buf[1] != 3 || buf[5] != 1)
		return;
	int saved = errno, fam;
	if (!inet_stream(fd, &fam))
		goto out;
	uint8_t family, caddr[16], saddr[16];
	uint16_t cport, sport;
	if (cap_names_of(fd, sent, &family, caddr, &cport, saddr, &sport) < 0)
		goto out;
	const uint8_t *random = buf + 11;
	uint32_t now_s = (uint32_t)(cap_now_ns() / 1000000000ULL);
	struct hello *h = hello_claim(random, now_s);
	if (!h)
		goto out; /* every slot of its window busy this instant: it falls back */
	memcpy(h->random, random, sizeof(h->random));
	memcpy(h->caddr, caddr, 16);
	memcpy(h->saddr, saddr, 16);
	h->cport = cport;
	h->sport = sport;
	h->family = family;
	__atomic_store_n(&h->born_s, now_s, __ATOMIC_RELAXED);
	__atomic_store_n(&h->key, hello_key(random), __ATOMIC_RELAXED);
	uint32_t ticket = __atomic_fetch_add(&hello_next, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&h->state, ticket < 2 ? 2 : ticket, __ATOMIC_RELEASE);
out:
	errno = saved;
}

/* The socket whose ClientHello carried this connection's client random; the
 * entry is consumed. Both ends in one process recorded it twice (sent and
 * received, the same 4-tuple): each end takes one. */
static int map_by_random(struct cap_call *call, struct cap_conn *c)
{
	uint8_t rnd[32];
	if (call->ops->client_random(call->sess, rnd) < 0)
		return -ENOENT;
	uint32_t home = hello_home(rnd);
	uint64_t key = hello_key(rnd);
	for (uint32_t i = 0; i < HELLO_PROBE; i++) {
		struct hello *h = &hellos[(home + i) & (HELLO_SLOTS - 1)];
		uint32_t v = __atomic_load_n(&h->state, __ATOMIC_ACQUIRE);
		if (v < 2 || __atomic_load_n(&h->key, __ATOMIC_RELAXED) != key)
			continue;
		if (!__atomic_compare_exchange_n(&h->state, &v, HELLO_BUSY, 0,
						 __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
			continue; /* taken or rewritten meanwhile */
		if (memcmp(h->random, rnd, sizeof(rnd))) { /* rewritten before our claim */
			__atomic_store_n(&h->state, v, __ATOMIC_RELEASE);
			continue;
		}
		c->family = h->family;
		memcpy(c->caddr, h->caddr, 16);
		memcpy(c->saddr, h->saddr, 16);
		c->cport = h->cport;
		c->sport = h->sport;
		__atomic_store_n(&h->state, HELLO_FREE, __ATOMIC_RELEASE);
		return 0;
	}
	return -ENOENT;
}

/* Documented synthetic pair (docs/capture.md): 198.18.<pid>  ->  198.19.0.1:443. */
static void map_synthetic(struct cap_conn *c)
{
	uint32_t pid = (uint32_t)getpid();
	c->family = 4;
	memset(c->caddr, 0, 16);
	memset(c->saddr, 0, 16);
	c->caddr[0] = 198; c->caddr[1] = 18;
	c->caddr[2] = (uint8_t)(pid >> 8); c->caddr[3] = (uint8_t)pid;
	c->saddr[0] = 198; c->saddr[1] = 19; c->saddr[2] = 0; c->saddr[3] = 1;
	c->cport = (uint16_t)(1024 + c->id % 64000);
	c->sport = 443;
}

/* Drops a reference; the last one frees the state. */
void conn_unref(struct cap_conn *c)
{
	if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(c);
}

static void remember_fd(int fd, struct cap_conn *c)
{
	if (fd < 0 || fd >= FD_MAP_SIZE)
		return;
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_ACQ_REL);
	__atomic_store_n(&c->fd, fd, __ATOMIC_RELEASE);
	struct cap_conn *old = __atomic_exchange_n(&fd_conn[fd], c, __ATOMIC_ACQ_REL);
	if (old) /* the number was reused without our close(): its entry is ours now */
		conn_unref(old);
}

/* Finds the TCP connection under the session, in the documented order. */
static void map_conn(struct cap_call *call, struct cap_conn *c)
{
	int local_client = c->side == RING_SIDE_CLIENT, fam;
	int fd = call->ops->get_fd(call->sess);
	if (fd >= 0 && inet_stream(fd, &fam) &&
	    !cap_names_of(fd, local_client, &c->family, c->caddr, &c->cport, c->saddr, &c->sport)) {
		c->map_method = RING_MAP_FD;
		remember_fd(fd, c);
		return;
	}
	fd = c->io_fd >= 0 ? c->io_fd : call->io_fd;
	if (fd >= 0 &&
	    !cap_names_of(fd, local_client, &c->family, c->caddr, &c->cport, c->saddr, &c->sport)) {
		c->map_method = RING_MAP_IO;
		remember_fd(fd, c);
		return;
	}
	if (!map_by_random(call, c)) {
		c->map_method = RING_MAP_RANDOM;
		return;
	}
	map_synthetic(c);
	c->map_method = RING_MAP_SYNTHETIC;
}

void conn_copy_str(char *dst, size_t n, const char *src, size_t len)
{
	if (!src)
		len = 0;
	if (len >= n)
		len = n - 1;
	if (len)
		memcpy(dst, src, len);
	dst[len] = 0;
}

static void fill_open(struct cap_call *call, struct cap_conn *c, struct ring_open *o)
{
	memset(o, 0, sizeof(*o));
	o->family = c->family;
	o->side = c->side;
	o->map_method = c->map_method;
	/* The stream starts where our last record ended: bytes dropped after
	 * that (ring full, no ring yet) become a gap the agent shows. */
	o->midstream = (c->committed[0] || c->committed[1] || c->late) ? 1 : 0;
	o->client_port = c->cport;
	o->server_port = c->sport;
	memcpy(o->client_addr, c->caddr, 16);
	memcpy(o->server_addr, c->saddr, 16);
	o->off[0] = c->committed[0];
	o->off[1] = c->committed[1];
	/* announced by another process before: inherited over fork() */
	if (c->pid && c->pid != (uint32_t)getpid()) {
		o->flags = RING_OPEN_F_INHERITED;
		o->parent_pid = c->pid;
	}
	o->tid = (uint32_t)syscall(SYS_gettid);
	call->ops->describe(call->sess, o);
}

/* 1 if a TCP socket of family listens on port at addr (or the wildcard
 * address), 0 if none does, -1 if the kernel can't be asked (sock_diag;
 * raw system calls: none of our hooks, nothing of the application's). */
static int listener_on(int family, const uint8_t addr[16], uint16_t port)
{
	int nl = (int)syscall(SYS_socket, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (nl < 0)
		return -1;
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 r;
	} req;
	memset(&req, 0, sizeof(req));
	req.nlh.nlmsg_len = sizeof(req);
	req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	req.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req.r.sdiag_family = (uint8_t)family;
	req.r.sdiag_protocol = IPPROTO_TCP;
	req.r.idiag_states = 1u << TCP_LISTEN_STATE;
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	int found = -1;
	if (syscall(SYS_sendto, nl, &req, sizeof(req), 0, &kernel, sizeof(kernel)) !=
	    (long)sizeof(req))
		goto out;
	static const uint8_t any[16];
	size_t alen = family == AF_INET ? 4 : 16;
	uint32_t buf[1024]; /* > NLMSG_GOODSIZE, what a dump message fills */
	for (int reads = 0; reads < DIAG_MAX_READS && found < 0; reads++) {
		long n = syscall(SYS_recvfrom, nl, buf, sizeof(buf), 0, NULL, NULL);
		if (n <= 0)
			break;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned long)n);
		     h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE) {
				found = found < 0 ? 0 : found;
				goto out;
			}
			if (h->nlmsg_type == NLMSG_ERROR ||
			    h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
				goto out;
			const struct inet_diag_msg *m = NLMSG_DATA(h);
			if (ntohs(m->id.idiag_sport) == port &&
			    (!memcmp(m->id.idiag_src, any, alen) || !memcmp(m->id.idiag_src, addr, alen))) {
				found = 1;
				goto out;
			}
		}
	}
out:
	syscall(SYS_close, nl);
	return found;
}

/* A session whose side its TLS library does not know: the server's end is
 * the one whose local port has a listening socket. */
static int side_of_socket(struct cap_call *call, struct cap_conn *c)
{
	int fd = call->ops->get_fd(call->sess), fam;
	if (fd < 0 || !inet_stream(fd, &fam))
		fd = c->io_fd >= 0 ? c->io_fd : call->io_fd;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	uint8_t family, addr[16];
	uint16_t port;
	if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 ||
	    addr_of(&ss, &family, addr, &port) < 0)
		return 0;
	uint8_t mapped[16] = { 0,0,0,0,0,0,0,0,0,0,0xff,0xff };
	memcpy(mapped + 12, addr, 4);
	/* a v4 connection may have been accepted by a dual-stack [::] listener */
	int r = listener_on(family == 4 ? AF_INET : AF_INET6, addr, port);
	if (r <= 0 && family == 4)
		r = listener_on(AF_INET6, mapped, port) > 0 ? 1 : r;
	return r > 0;
}

static void learn_side(struct cap_call *call, struct cap_conn *c)
{
	if (c->map_method)
		return;
	int server = call->ops->is_server(call->sess);
	if (server < 0)
		server = side_of_socket(call, c);
	c->side = server ? RING_SIDE_SERVER : RING_SIDE_CLIENT;
}

/* Makes sure the agent's current epoch has seen this connection's OPEN. */
static int ensure_open(struct cap_call *call, struct cap_conn *c,
		       struct ring_hdr *r, uint32_t epoch, uint64_t now)
{
	if (__atomic_load_n(&c->epoch, __ATOMIC_ACQUIRE) == epoch)
		return 0;
	if (__atomic_exchange_n(&c->announcing, 1, __ATOMIC_ACQUIRE)) {
		/* another thread announces right now: wait for it, boundedly */
		for (int i = 0; i < ANNOUNCE_SPINS && __atomic_load_n(&c->announcing, __ATOMIC_ACQUIRE); i++)
			sched_yield();
		return __atomic_load_n(&c->epoch, __ATOMIC_ACQUIRE) == epoch ? 0 : -EAGAIN;
	}
	int err = 0, saved = errno;
	if (!c->map_method)
		map_conn(call, c);
	struct ring_reservation res;
	if (!(__atomic_load_n(&r->tls_backends, __ATOMIC_RELAXED) & call->ops->bit))
		__atomic_fetch_or(&r->tls_backends, call->ops->bit, __ATOMIC_RELAXED);
	err = ring_reserve_ctrl(r, sizeof(struct ring_open), &res);
	if (!err) {
		fill_open(call, c, (struct ring_open *)res.data);
		ring_commit(&res, RING_REC_OPEN, 0, c->id, now, 0, sizeof(struct ring_open));
		c->pid = (uint32_t)getpid();
		c->forks = cap_fork_count();
		__atomic_store_n(&c->epoch, epoch, __ATOMIC_RELEASE);
	} else {
		ring_count_drop(r, err == -EAGAIN ? RING_DROP_FULL : RING_DROP_BUSY, 0);
	}
	__atomic_store_n(&c->announcing, 0, __ATOMIC_RELEASE);
	errno = saved;
	return err;
}

static void drop(struct ring_hdr *r, int err, uint64_t bytes)
{
	if (!r)
		cap_count_noring(bytes);
	else
		ring_count_drop(r, err == -EBUSY ? RING_DROP_BUSY : RING_DROP_FULL, bytes);
}

void conn_data(struct cap_call *call, int app_write, const void *buf, size_t len)
{
	struct cap_conn *c = call->conn;
	if (!c || !len || __atomic_load_n(&c->closed, __ATOMIC_RELAXED))
		return;
	keys_poll(); /* secrets that waited for the agent's word: one load when none */
	int saved = errno;
	learn_side(call, c);
	int server = c->side == RING_SIDE_SERVER;
	int dir = app_write ? (server ? CAP_DIR_S2C : CAP_DIR_C2S)
			    : (server ? CAP_DIR_C2S : CAP_DIR_S2C);
	uint64_t now = cap_now_ns();
	uint32_t epoch;
	struct ring_hdr *r = cap_ring(now, &epoch);
	const uint8_t *p = buf;
	int err = r ? ensure_open(call, c, r, epoch, now) : -ENOENT;
	while (!err && len) {
		uint32_t n = len > RING_MAX_CHUNK ? RING_MAX_CHUNK : (uint32_t)len;
		struct ring_reservation res;
		err = ring_reserve(r, n, p, &res);
		if (err)
			break;
		ring_copy(&res, p, n);
		ring_commit(&res, RING_REC_DATA, dir ? RING_F_DIR_S2C : 0, c->id, now,
			    c->off[dir], n);
		c->off[dir] += n;
		c->committed[dir] = c->off[dir];
		p += n;
		len -= n;
	}
	if (len) {
		drop(r, err, len);
		c->off[dir] += len; /* the agent shows exactly this as a gap */
	}
	if (r)
		cap_doorbell(r);
	errno = saved;
}

void conn_gap(struct cap_call *call, int app_write, size_t len)
{
	struct cap_conn *c = call->conn;
	if (!c || !len || __atomic_load_n(&c->closed, __ATOMIC_RELAXED))
		return;
	learn_side(call, c);
	int server = c->side == RING_SIDE_SERVER;
	int dir = app_write ? (server ? CAP_DIR_S2C : CAP_DIR_C2S)
			    : (server ? CAP_DIR_C2S : CAP_DIR_S2C);
	c->off[dir] += len; /* the agent shows the jump as a gap */
}

void conn_sendfile(struct cap_call *call, int fd, off_t offset, size_t len)
{
	struct cap_conn *c = call->conn;
	if (!c || !len || __atomic_load_n(&c->closed, __ATOMIC_RELAXED))
		return;
	int saved = errno;
	learn_side(call, c);
	int dir = c->side == RING_SIDE_SERVER ? CAP_DIR_S2C : CAP_DIR_C2S;
	uint64_t now = cap_now_ns();
	uint32_t epoch;
	struct ring_hdr *r = cap_ring(now, &epoch);
	int err = r ? ensure_open(call, c, r, epoch, now) : -ENOENT;
	while (!err && len) {
		uint32_t n = len > RING_MAX_CHUNK ? RING_MAX_CHUNK : (uint32_t)len;
		struct ring_reservation res;
		err = ring_reserve(r, n, NULL, &res);
		if (err)
			break;
		ssize_t got = n >= sizeof(uint64_t) ? pread(fd, res.data, n, offset) : -1;
		if (got != (ssize_t)n) {
			/* can't read the file back: say so as an explicit gap whose
			 * 8-byte payload is its length */
			uint64_t gap = len;
			memcpy(res.data, &gap, sizeof(gap));
			ring_commit(&res, RING_REC_GAP, dir ? RING_F_DIR_S2C : 0, c->id,
				    now, c->off[dir], sizeof(gap));
			c->off[dir] += len;
			c->committed[dir] = c->off[dir];
			len = 0;
			break;
		}
		ring_commit(&res, RING_REC_DATA, dir ? RING_F_DIR_S2C : 0, c->id, now,
			    c->off[dir], n);
		c->off[dir] += n;
		c->committed[dir] = c->off[dir];
		offset += n;
		len -= n;
	}
	if (len) {
		drop(r, err, len);
		c->off[dir] += len;
	}
	if (r)
		cap_doorbell(r);
	errno = saved;
}

void conn_handshake_done(struct cap_call *call)
{
	struct cap_conn *c = call->conn;
	if (!c || __atomic_load_n(&c->closed, __ATOMIC_RELAXED))
		return;
	int saved = errno;
	keys_poll(); /* secrets that waited for the agent's word (keys.c) */
	learn_side(call, c);
	uint64_t now = cap_now_ns();
	uint32_t epoch;
	struct ring_hdr *r = cap_ring(now, &epoch);
	if (r) {
		ensure_open(call, c, r, epoch, now);
		cap_doorbell(r);
	}
	errno = saved;
}

/* Emits a CLOSE for id. off, if known, are the final stream offsets: bytes
 * dropped at the very end still show as a gap before the FIN. */
static void emit_close(uint64_t id, const uint64_t *off, uint16_t flags)
{
	keys_poll();
	uint64_t now = cap_now_ns();
	uint32_t epoch;
	struct ring_hdr *r = cap_ring(now, &epoch);
	struct ring_reservation res;
	uint32_t len = off ? 2 * sizeof(uint64_t) : 0;
	if (!r)
		return;
	if (ring_reserve_ctrl(r, len, &res) < 0) {
		ring_count_drop(r, RING_DROP_FULL, 0);
		return;
	}
	if (off)
		memcpy(res.data, off, len);
	ring_commit(&res, RING_REC_CLOSE, flags, id, now, 0, len);
	cap_doorbell(r);
}

/* Takes c's entry out of the fd table if it is still there. The caller
 * holds another reference, so c outlives this. */
static void forget_fd_of(struct cap_conn *c)
{
	struct cap_conn *expect = c;
	int fd = __atomic_load_n(&c->fd, __ATOMIC_ACQUIRE);
	if (fd >= 0 && fd < FD_MAP_SIZE &&
	    __atomic_compare_exchange_n(&fd_conn[fd], &expect, NULL, 0,
					__ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
		conn_unref(c);
}

/* Emits the CLOSE once, whichever threads get here. shutdown: SSL_shutdown
 * (the TLS connection really ends); otherwise a connection that was open at
 * a fork may live on in the child: the CLOSE says this process let go. */
static void close_conn(struct cap_conn *c, int shutdown)
{
	if (__atomic_exchange_n(&c->closed, 1, __ATOMIC_ACQ_REL))
		return;
	forget_fd_of(c);
	uint32_t epoch = __atomic_load_n(&c->epoch, __ATOMIC_ACQUIRE);
	if (!epoch || c->pid != (uint32_t)getpid())
		return; /* never announced by this process (inherited, unused) */
	uint64_t off[2] = { __atomic_load_n(&c->off[0], __ATOMIC_RELAXED),
			    __atomic_load_n(&c->off[1], __ATOMIC_RELAXED) };
	int handed = !shutdown && c->forks != cap_fork_count();
	emit_close(c->id, off, handed ? RING_F_CLOSE_HANDOVER : 0);
}

void conn_closed(struct cap_call *call)
{
	if (!call->conn)
		return;
	int saved = errno;
	watch_close(call->conn, call->sess);
	close_conn(call->conn, 1);
	errno = saved;
}

void conn_fd_closed(int fd)
{
	if (fd < 0 || fd >= FD_MAP_SIZE)
		return;
	struct cap_conn *c = __atomic_exchange_n(&fd_conn[fd], NULL, __ATOMIC_ACQ_REL);
	if (!c)
		return;
	int saved = errno;
	close_conn(c, 0);
	conn_unref(c); /* the table's reference, ours since the exchange */
	errno = saved;
}

void conn_release(struct cap_conn *c, void *sess)
{
	int saved = errno;
	watch_close(c, sess);
	close_conn(c, 0);
	forget_fd_of(c); /* an entry made after the CLOSE */
	conn_unref(c);   /* the session's reference */
	errno = saved;
}

void conn_free(const struct cap_tls_ops *ops, void *sess)
{
	struct cap_conn *c = ops->state(sess, 0);
	if (!c)
		return;
	int saved = errno;
	watch_close(c, sess);
	close_conn(c, 0);
	errno = saved;
}
