/* Hostile producer: attaches malformed rings and control messages to an agent, one case at a time. */
#include "transport/ctl.h"
#include "transport/ring.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <linux/sockios.h>
#include <time.h>
#include <unistd.h>

/*
 * Every connection a bad ring describes uses 127.0.0.66 (BAD_ADDR) on both
 * ends, ports BAD_CPORT -> BAD_SPORT, so a test can check that none of it
 * reached a capture file. Rings whose header is bad still carry valid OPEN
 * and DATA records: an agent that wrongly accepts the ring shows up there.
 */
#define BAD_ADDR "\x7f\x00\x00\x42"
#define BAD_CPORT 6666
#define BAD_SPORT 6667
#define SEALS_ALL (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
#define SMALL_DATA RING_MIN_DATA

struct ctx {
	const char *socket;
	int timeout_ms;
};

/* A ring under construction. */
struct bring {
	int fd;
	struct ring_hdr *hdr;
	size_t map_len;
};

struct bcase {
	const char *name;
	const char *what;
	int (*run)(const struct ctx *x, const struct bcase *bc);
	int arg;
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- building rings ---- */

/* memfd of file_len bytes with the given seals, mapped, header from ring_init(data_size). */
static int bring_new(struct bring *b, uint64_t data_size, size_t file_len, int seals)
{
	int err;
	b->hdr = NULL;
	b->fd = memfd_create("tlsmirror-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (b->fd < 0)
		return -errno;
	b->map_len = file_len;
	if (ftruncate(b->fd, (off_t)file_len) < 0) {
		err = -errno;
		goto out;
	}
	void *m = mmap(NULL, file_len, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, 0);
	if (m == MAP_FAILED) {
		err = -errno;
		goto out;
	}
	b->hdr = m;
	ring_init(b->hdr, data_size, (uint32_t)getpid());
	if (seals && fcntl(b->fd, F_ADD_SEALS, seals) < 0) {
		err = -errno;
		goto out;
	}
	return 0;
out:
	if (b->hdr)
		munmap(b->hdr, b->map_len);
	close(b->fd);
	b->fd = -1;
	return err;
}

static void bring_free(struct bring *b)
{
	if (b->hdr)
		munmap(b->hdr, b->map_len);
	if (b->fd >= 0)
		close(b->fd);
}

/* Appends a committed record; returns its header (to be spoiled) or NULL if full. */
static struct ring_rec *put(struct bring *b, uint16_t type, uint16_t flags,
			    uint64_t conn_id, uint64_t off, const void *data,
			    uint32_t len)
{
	struct ring_reservation res;
	if (ring_reserve(b->hdr, len, NULL, &res))
		return NULL;
	if (len)
		memcpy(res.data, data, len);
	ring_commit(&res, type, flags, conn_id, 1, off, len);
	return res.rec;
}

static void fill_open(struct ring_open *op)
{
	memset(op, 0, sizeof(*op));
	op->family = 4;
	op->side = RING_SIDE_SERVER;
	op->map_method = RING_MAP_FD;
	op->client_port = BAD_CPORT;
	op->server_port = BAD_SPORT;
	memcpy(op->client_addr, BAD_ADDR, 4);
	memcpy(op->server_addr, BAD_ADDR, 4);
	op->tls_version = 0x0304;
	strcpy(op->sni, "badring.test");
	strcpy(op->alpn, "http/1.1");
	strcpy(op->cipher, "TLS_AES_128_GCM_SHA256");
}

/* A valid connection 7 with data both ways, then closed. */
static int put_valid_conn(struct bring *b)
{
	static const char req[] = "GET /badring HTTP/1.1\r\nHost: badring.test\r\n\r\n";
	static const char rsp[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
	struct ring_open op;
	fill_open(&op);
	if (!put(b, RING_REC_OPEN, 0, 7, 0, &op, sizeof(op)) ||
	    !put(b, RING_REC_DATA, 0, 7, 0, req, sizeof(req) - 1) ||
	    !put(b, RING_REC_DATA, RING_F_DIR_S2C, 7, 0, rsp, sizeof(rsp) - 1) ||
	    !put(b, RING_REC_CLOSE, 0, 7, 0, NULL, 0))
		return -ENOSPC;
	return 0;
}

/* ---- talking to the agent ---- */

static int agent_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = -errno;
		close(s);
		return err;
	}
	return s;
}

/* Sends len bytes of msg with nfds descriptors attached. Returns 0 or negative errno. */
static int send_fds(int s, const void *msg, size_t len, const int *fds, int nfds)
{
	union { struct cmsghdr c; char buf[CMSG_SPACE(sizeof(int) * 8)]; } cm;
	struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
	if (nfds > 0) {
		memset(cm.buf, 0, sizeof(cm.buf));
		m.msg_control = cm.buf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	if (sendmsg(s, &m, MSG_NOSIGNAL) < 0)
		return -errno;
	return 0;
}

static void fill_hello(struct ctl_hello *h)
{
	memset(h, 0, sizeof(*h));
	h->magic = CTL_MAGIC;
	h->version = CTL_VERSION;
	h->type = CTL_ATTACH;
	h->pid = (uint32_t)getpid();
	strcpy(h->comm, "badring");
	strcpy(h->exe, "/badring");
}

/*
 * Waits up to timeout_ms for the agent to close the connection, ringing the
 * doorbell once. Returns the milliseconds it took, or -1 if it kept it open.
 */
static long wait_close(int s, int timeout_ms)
{
	char b = 1;
	uint64_t t0 = now_ms();
	(void)!send(s, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	for (;;) {
		long left = (long)timeout_ms - (long)(now_ms() - t0);
		if (left <= 0)
			return -1;
		struct pollfd p = {.fd = s, .events = POLLIN};
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		char buf[64];
		ssize_t n = recv(s, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return (long)(now_ms() - t0);
	}
}

static void verdict(const struct bcase *bc, long ms)
{
	if (ms >= 0)
		printf("badring: %-20s agent closed the connection after %ld ms\n", bc->name, ms);
	else
		printf("badring: %-20s agent kept the connection open\n", bc->name);
	fflush(stdout);
}

/* Attaches ring b with a well-formed hello, then watches what the agent does. */
static int attach_ring(const struct ctx *x, const struct bcase *bc, struct bring *b)
{
	struct ctl_hello h;
	fill_hello(&h);
	int s = agent_connect(x->socket);
	if (s < 0)
		return s;
	int err = send_fds(s, &h, sizeof(h), &b->fd, 1);
	if (!err)
		verdict(bc, wait_close(s, x->timeout_ms));
	close(s);
	return err;
}

/* ---- ring cases ---- */

enum hdr_spoil { H_MAGIC, H_VERSION, H_POW2, H_SHORT, H_UNSEALED, H_NOSHRINK, H_HEADTAIL };

static int case_hdr(const struct ctx *x, const struct bcase *bc)
{
	struct bring b;
	uint64_t dsize = bc->arg == H_POW2 ? 3 * SMALL_DATA : SMALL_DATA;
	int seals = bc->arg == H_UNSEALED ? 0 :
		    bc->arg == H_NOSHRINK ? (F_SEAL_GROW | F_SEAL_SEAL) : SEALS_ALL;
	int err = bring_new(&b, dsize, RING_HDR_SIZE + dsize, seals);
	if (err)
		return err;
	if ((err = put_valid_conn(&b)))
		goto out;
	switch (bc->arg) {
	case H_MAGIC: b.hdr->magic ^= 0xff; break;
	case H_VERSION: b.hdr->version = RING_VERSION + 1; break;
	case H_SHORT: b.hdr->data_size = RING_DEFAULT_DATA; break;
	case H_HEADTAIL: b.hdr->head = ~0ull - 5; b.hdr->tail = 12345; break;
	default: break;
	}
	err = attach_ring(x, bc, &b);
out:
	bring_free(&b);
	return err;
}

/*
 * Unsealed: if the agent accepted the ring anyway, shrink the memfd under it
 * and ring the doorbell: an agent that mapped it now touches missing pages.
 */
static int case_unsealed(const struct ctx *x, const struct bcase *bc)
{
	struct bring b;
	struct ctl_hello h;
	int err = bring_new(&b, SMALL_DATA, RING_HDR_SIZE + SMALL_DATA, 0);
	if (err)
		return err;
	if ((err = put_valid_conn(&b)))
		goto out;
	fill_hello(&h);
	int s = agent_connect(x->socket);
	if (s < 0) {
		err = s;
		goto out;
	}
	if (!(err = send_fds(s, &h, sizeof(h), &b.fd, 1))) {
		long ms = wait_close(s, x->timeout_ms / 2);
		if (ms < 0) {
			munmap(b.hdr, b.map_len);
			b.hdr = NULL;
			(void)!ftruncate(b.fd, 0);
			ms = wait_close(s, x->timeout_ms / 2);
			printf("badring: %-20s agent accepted an unsealed ring; shrank it to 0\n",
			       bc->name);
		}
		verdict(bc, ms);
	}
	close(s);
out:
	bring_free(&b);
	return err;
}

enum rec_spoil { R_LEN0, R_LEN_UNALIGNED, R_LEN_PAST_END, R_TYPE, R_DOFF_OOB,
		 R_DOFF_SMALL, R_DLEN_OOB, R_DLEN_HUGE, R_PAD_MID };

static int case_rec(const struct ctx *x, const struct bcase *bc)
{
	static const char text[] = "this record is spoiled";
	struct bring b;
	int err = bring_new(&b, SMALL_DATA, RING_HDR_SIZE + SMALL_DATA, SEALS_ALL);
	if (err)
		return err;
	if (bc->arg == R_LEN_PAST_END) /* start 64 bytes before the end */
		b.hdr->head = b.hdr->tail = SMALL_DATA - RING_ALIGN;
	struct ring_rec *r = put(&b, RING_REC_DATA, 0, 7, 0, text,
				 bc->arg == R_LEN_PAST_END ? 0 : sizeof(text));
	if (!r) {
		err = -ENOSPC;
		goto out;
	}
	switch (bc->arg) {
	case R_LEN0: r->len = 0; break;
	case R_LEN_UNALIGNED: r->len = 100; break;
	case R_LEN_PAST_END: r->len = 2 * RING_ALIGN; break;
	case R_TYPE: r->type = 77; break;
	case R_DOFF_OOB: r->data_off = r->len + 64; break;
	case R_DOFF_SMALL: r->data_off = 8; break;
	case R_DLEN_OOB: r->data_len = r->len - r->data_off + 1; break;
	case R_DLEN_HUGE: r->data_len = 0xffffffffu; break;
	case R_PAD_MID: r->type = RING_REC_PAD; break;
	}
	err = attach_ring(x, bc, &b);
out:
	bring_free(&b);
	return err;
}

enum open_spoil { O_UNTERMINATED, O_FAMILY5, O_SHORT, O_CONN0, O_DATA_UNKNOWN,
		  O_SIDE, O_DATA_NO_OPEN_CLOSE };

static int case_open(const struct ctx *x, const struct bcase *bc)
{
	static const char text[] = "data for a connection nobody opened";
	struct bring b;
	struct ring_open op;
	int err = bring_new(&b, SMALL_DATA, RING_HDR_SIZE + SMALL_DATA, SEALS_ALL);
	if (err)
		return err;
	fill_open(&op);
	uint32_t len = sizeof(op);
	uint64_t conn = 7;
	switch (bc->arg) {
	case O_UNTERMINATED:
		memset(op.sni, 'S', sizeof(op.sni));
		memset(op.alpn, 'A', sizeof(op.alpn));
		memset(op.cipher, 'C', sizeof(op.cipher));
		break;
	case O_FAMILY5: op.family = 5; break;
	case O_SHORT: len = 16; break;
	case O_CONN0: conn = 0; break;
	case O_SIDE: op.side = 9; break;
	default: break;
	}
	int ok = 1;
	if (bc->arg == O_DATA_UNKNOWN || bc->arg == O_DATA_NO_OPEN_CLOSE) {
		ok = put(&b, RING_REC_DATA, 0, 99, 0, text, sizeof(text) - 1) != NULL;
		if (bc->arg == O_DATA_NO_OPEN_CLOSE)
			ok = ok && put(&b, RING_REC_CLOSE, 0, 99, 0, NULL, 0);
	} else {
		ok = put(&b, RING_REC_OPEN, 0, conn, 0, &op, len) &&
		     put(&b, RING_REC_DATA, 0, conn, 0, text, sizeof(text) - 1) &&
		     put(&b, RING_REC_CLOSE, 0, conn, 0, NULL, 0);
	}
	err = ok ? attach_ring(x, bc, &b) : -ENOSPC;
	bring_free(&b);
	return err;
}

/* ---- control message cases ---- */

enum msg_spoil { M_MAGIC, M_VERSION, M_TYPE, M_TRUNC, M_NOFD, M_TWOFDS, M_PIPEFD,
		 M_GARBAGE, M_EMPTY, M_MANYFDS, M_FAULT };

/* Sends a malformed hello (with a valid sealed ring where an fd goes). */
static int case_msg(const struct ctx *x, const struct bcase *bc)
{
	struct bring b;
	struct ctl_hello h;
	int fds[8] = {-1, -1, -1, -1, -1, -1, -1, -1}, pipefd[2] = {-1, -1}, nfds = 1;
	size_t len = sizeof(h);
	uint8_t junk[301];
	const void *msg = &h;
	int err = bring_new(&b, SMALL_DATA, RING_HDR_SIZE + SMALL_DATA, SEALS_ALL);
	if (err)
		return err;
	if ((err = put_valid_conn(&b)))
		goto out;
	fill_hello(&h);
	fds[0] = b.fd;
	switch (bc->arg) {
	case M_MAGIC: h.magic = 0x11223344; break;
	case M_VERSION: h.version = CTL_VERSION + 7; break;
	case M_TYPE: h.type = 42; break;
	case M_TRUNC: len = 10; break;
	case M_NOFD: nfds = 0; break;
	case M_TWOFDS: fds[1] = open("/dev/null", O_RDONLY | O_CLOEXEC); nfds = 2; break;
	case M_PIPEFD:
		if (pipe2(pipefd, O_CLOEXEC) < 0) {
			err = -errno;
			goto out;
		}
		fds[0] = pipefd[0];
		break;
	case M_GARBAGE:
		srand(4242);
		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (uint8_t)rand();
		msg = junk;
		len = sizeof(junk);
		nfds = 0;
		break;
	case M_EMPTY: len = 0; nfds = 0; break;
	case M_FAULT: /* tests/progs/recvfault.c, if preloaded into the agent, fails its recvmsg */
		h.attach_gen = 0xfa17edu;
		nfds = 0;
		break;
	case M_MANYFDS: /* more than the agent's control buffer holds: MSG_CTRUNC */
		for (nfds = 1; nfds < 8; nfds++)
			fds[nfds] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		break;
	}
	int s = agent_connect(x->socket);
	if (s < 0) {
		err = s;
		goto out;
	}
	if (!(err = send_fds(s, msg, len, fds, nfds)))
		verdict(bc, wait_close(s, x->timeout_ms));
	close(s);
out:
	for (int i = 1; i < 8; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (pipefd[0] >= 0) {
		close(pipefd[0]);
		close(pipefd[1]);
	}
	bring_free(&b);
	return err;
}

/* ---- concurrent hostile producer (--flip N) ---- */

/*
 * N attaches, each of a fresh ring that starts out valid (an OPEN with ALPN
 * h2, HTTP/2 and plain DATA, a GAP, a CLOSE), while a second thread keeps
 * flipping its header (magic, version, data_size, head, tail) and its records'
 * fields (commit, len, type, data_off, data_len) and payload bytes. The last
 * FLIP_SLOTS rings stay attached and flipped while the agent drains them. An
 * agent that reads a shared field twice (checks one value, uses another)
 * reads outside the mapping here.
 */
#define FLIP_SLOTS 8
#define FLIP_RECS 5

/* Where flip_ring's records start (the same in every ring it builds). */
static uint32_t flip_at[FLIP_RECS];

struct flipper {
	pthread_mutex_t lock;       /* held by the flipper for one pass over the slots */
	struct ring_hdr *slot[FLIP_SLOTS];
	int stop;
	uint64_t rnd;
	uint64_t writes;
};

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* One field of the header gets a value that is wrong, or right again. */
static void flip_hdr(struct ring_hdr *h, uint64_t r)
{
	static const uint64_t sizes[] = {SMALL_DATA, RING_MAX_DATA, 1u << 20, 3 * SMALL_DATA,
					 0, ~0ull, SMALL_DATA};
	static const uint64_t pos[] = {0, 0x20000000ull, 0x3ff00000ull, ~0ull - 63, 3,
				       SMALL_DATA - RING_ALIGN, 0};
	uint64_t v = r >> 8;
	switch (r % 6) {
	case 0:
	case 1: /* the field that crashed the agent: twice as often */
		__atomic_store_n(&h->data_size, sizes[v % 7], __ATOMIC_RELAXED);
		break;
	case 2: __atomic_store_n(&h->head, pos[v % 7], __ATOMIC_RELAXED); break;
	case 3: __atomic_store_n(&h->tail, pos[v % 7], __ATOMIC_RELAXED); break;
	case 4: __atomic_store_n(&h->magic, v % 4 ? RING_MAGIC : ~RING_MAGIC, __ATOMIC_RELAXED); break;
	case 5: __atomic_store_n(&h->version, v % 4 ? RING_VERSION : 99, __ATOMIC_RELAXED); break;
	}
}

/* One field of one of the first records, or a payload byte. */
static void flip_rec(struct ring_hdr *h, uint64_t r)
{
	uint8_t *base = (uint8_t *)h + RING_HDR_SIZE;
	uint64_t at = __atomic_load_n(&flip_at[(r >> 8) % FLIP_RECS], __ATOMIC_RELAXED);
	struct ring_rec *rec = (struct ring_rec *)(base + at);
	uint32_t v = (uint32_t)(r >> 16);
	static const uint32_t lens[] = {0, 64, 100, 128, 192, 1u << 20, 0xffffffffu, 256};
	switch (r % 7) {
	case 0:
		__atomic_store_n(&rec->commit, v % 2 ? ring_commit_word(at) : v, __ATOMIC_RELAXED);
		break;
	case 1: __atomic_store_n(&rec->len, lens[v % 8], __ATOMIC_RELAXED); break;
	case 2: __atomic_store_n(&rec->type, (uint16_t)(v % 7), __ATOMIC_RELAXED); break;
	case 3: __atomic_store_n(&rec->data_off, lens[v % 8] & ~15u, __ATOMIC_RELAXED); break;
	case 4: __atomic_store_n(&rec->data_len, lens[v % 8], __ATOMIC_RELAXED); break;
	default: /* payload bytes: OPEN strings, GAP length, HTTP/2 frame headers */
		__atomic_store_n(base + at + 64 + v % 448, (uint8_t)(v >> 9), __ATOMIC_RELAXED);
		break;
	}
}

static void *flip_thread(void *arg)
{
	struct flipper *f = arg;
	while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED)) {
		pthread_mutex_lock(&f->lock);
		for (int i = 0; i < FLIP_SLOTS; i++) {
			struct ring_hdr *h = f->slot[i];
			for (int k = 0; h && k < 16; k++) {
				uint64_t r = xorshift(&f->rnd);
				if (r & (1ull << 63))
					flip_hdr(h, r);
				else
					flip_rec(h, r);
				f->writes++;
			}
		}
		pthread_mutex_unlock(&f->lock);
	}
	return NULL;
}

/* A valid ring: OPEN (ALPN h2 or http/1.1), DATA both ways, a GAP, CLOSE. */
static int flip_ring(struct bring *b, int h2)
{
	static const char h2c[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
				  "\x00\x00\x00\x04\x00\x00\x00\x00\x00"
				  "\x00\x00\x06\x01\x05\x00\x00\x00\x01\x82\x87\x84\x41\x01\x61";
	static const char rsp[] = "\x00\x00\x00\x04\x00\x00\x00\x00\x00";
	uint64_t gap = 1000;
	struct ring_open op;
	int err = bring_new(b, SMALL_DATA, RING_HDR_SIZE + SMALL_DATA, SEALS_ALL);
	if (err)
		return err;
	fill_open(&op);
	if (h2)
		strcpy(op.alpn, "h2");
	struct ring_rec *r[FLIP_RECS] = {
		put(b, RING_REC_OPEN, 0, 7, 0, &op, sizeof(op)),
		put(b, RING_REC_DATA, 0, 7, 0, h2c, sizeof(h2c) - 1),
		put(b, RING_REC_DATA, RING_F_DIR_S2C, 7, 0, rsp, sizeof(rsp) - 1),
		put(b, RING_REC_GAP, 0, 7, sizeof(h2c) - 1, &gap, sizeof(gap)),
		put(b, RING_REC_CLOSE, 0, 7, 0, NULL, 0),
	};
	for (int i = 0; i < FLIP_RECS; i++) {
		if (!r[i]) {
			bring_free(b);
			return -ENOSPC;
		}
		__atomic_store_n(&flip_at[i], (uint32_t)((uint8_t *)r[i] - ((uint8_t *)b->hdr +
				 RING_HDR_SIZE)), __ATOMIC_RELAXED);
	}
	return 0;
}

/*
 * Waits (up to 2 s) until the agent has read the hello sent on s (nothing left
 * in the socket's send queue): keeps the agent's accept backlog short, so
 * the flood never crowds out a real process's attach (its connect does not
 * wait). Returns 0, or -ETIMEDOUT.
 */
static int flip_wait_read(int s)
{
	uint64_t t0 = now_ms();
	for (unsigned spin = 0;; spin++) {
		int outq = 0;
		if (ioctl(s, SIOCOUTQ, &outq) < 0 || outq == 0)
			return 0;
		if (now_ms() - t0 > 2000)
			return -ETIMEDOUT;
		if (spin > 100)
			usleep(100);
	}
}

/* Attaches ring b (hello + memfd); returns the socket, kept open, or -errno. */
static int flip_attach(const char *path, struct bring *b)
{
	struct ctl_hello h;
	fill_hello(&h);
	int s = agent_connect(path);
	if (s < 0)
		return s;
	int err = send_fds(s, &h, sizeof(h), &b->fd, 1);
	if (err) {
		close(s);
		return err;
	}
	return s;
}

static int run_flip(const struct ctx *x, long n)
{
	struct flipper f = {.lock = PTHREAD_MUTEX_INITIALIZER, .rnd = 0x9e3779b97f4a7c15ull};
	struct bring rings[FLIP_SLOTS];
	int socks[FLIP_SLOTS], err = 0;
	long i;
	pthread_t th;
	for (int k = 0; k < FLIP_SLOTS; k++) {
		rings[k].fd = -1;
		rings[k].hdr = NULL;
		socks[k] = -1;
	}
	if (pthread_create(&th, NULL, flip_thread, &f)) {
		printf("badring: flip: cannot start the flipping thread\n");
		return 1;
	}
	uint64_t t0 = now_ms();
	for (i = 0; i < n && !err; i++) {
		int k = (int)(i % FLIP_SLOTS);
		pthread_mutex_lock(&f.lock);
		f.slot[k] = NULL;
		pthread_mutex_unlock(&f.lock);
		if (socks[k] >= 0)
			close(socks[k]);
		bring_free(&rings[k]);
		rings[k].fd = -1;
		rings[k].hdr = NULL;
		if ((err = flip_ring(&rings[k], (int)(i & 1))))
			break;
		socks[k] = flip_attach(x->socket, &rings[k]);
		if (socks[k] < 0) {
			err = socks[k];
			break;
		}
		int prev = socks[(i + FLIP_SLOTS - 1) % FLIP_SLOTS];
		if (i && prev >= 0 && (err = flip_wait_read(prev)))
			break;
		pthread_mutex_lock(&f.lock);
		f.slot[k] = rings[k].hdr;
		pthread_mutex_unlock(&f.lock);
	}
	__atomic_store_n(&f.stop, 1, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	for (int k = 0; k < FLIP_SLOTS; k++) {
		if (socks[k] >= 0)
			close(socks[k]);
		bring_free(&rings[k]);
	}
	printf("badring: flip %ld of %ld attaches in %llu ms, %llu flipping writes%s%s\n",
	       i, n, (unsigned long long)(now_ms() - t0), (unsigned long long)f.writes,
	       err ? ": stopped (agent gone or stalled): " : "", err ? strerror(-err) : "");
	fflush(stdout);
	return err ? 1 : 0;
}

/* ---- long-running hostile producers (issue 15): floods and lies ---- */

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Waits until stdin reaches EOF (the test closes it, or dies). */
static void wait_stdin_eof(void)
{
	char b[64];
	while (read(0, b, sizeof(b)) > 0)
		;
}

/*
 * --hold N [--attach]: N control connections kept open. Silent (never a
 * hello), or each attached with its own minimal ring that never carries a
 * record. Prints "holding K of N" once all were made (K: still open, the
 * agent may close some), then waits for EOF on stdin.
 */
static int run_hold(const struct ctx *x, long n, int attach)
{
	raise_nofile();
	int *socks = calloc((size_t)n, sizeof(int));
	long made = 0;
	if (!socks)
		return 1;
	for (long i = 0; i < n; i++) {
		int s = agent_connect(x->socket);
		if (s < 0)
			break;
		socks[made++] = s;
		if (!attach)
			continue;
		struct bring b;
		struct ctl_hello h;
		if (bring_new(&b, SMALL_DATA, RING_HDR_SIZE + SMALL_DATA, SEALS_ALL))
			break;
		fill_hello(&h);
		(void)send_fds(s, &h, sizeof(h), &b.fd, 1);
		bring_free(&b); /* the agent holds its own mapping */
	}
	usleep(300 * 1000);
	long open_now = 0;
	for (long i = 0; i < made; i++) {
		char c;
		ssize_t r = recv(socks[i], &c, 1, MSG_DONTWAIT | MSG_PEEK);
		open_now += r < 0 && errno == EAGAIN;
	}
	printf("badring: holding %ld of %ld (%ld made)\n", open_now, n, made);
	fflush(stdout);
	wait_stdin_eof();
	for (long i = 0; i < made; i++)
		close(socks[i]);
	free(socks);
	return 0;
}

/*
 * --feed-after-close MS: attaches a 16 MiB ring, announces connection 9
 * (BAD_ADDR), closes its control socket (the agent sees the process as gone)
 * and keeps committing 16 KiB DATA records for MS ms, as fast as the agent
 * frees room. Prints how much it committed before and after the close.
 */
static int run_feed_after_close(const struct ctx *x, long ms)
{
	static uint8_t chunk[16384];
	struct bring b;
	struct ring_open op;
	struct ctl_hello h;
	memset(chunk, 'F', sizeof(chunk));
	int err = bring_new(&b, RING_DEFAULT_DATA, RING_HDR_SIZE + RING_DEFAULT_DATA, SEALS_ALL);
	if (err)
		return 1;
	fill_open(&op);
	op.client_port = 6668; /* not the all-cases port: a test can tell them apart */
	put(&b, RING_REC_OPEN, 0, 9, 0, &op, sizeof(op));
	uint64_t off = 0, before = 0;
	while (put(&b, RING_REC_DATA, 0, 9, off, chunk, sizeof(chunk)))
		off += sizeof(chunk);
	before = off;
	fill_hello(&h);
	int s = agent_connect(x->socket);
	if (s < 0 || send_fds(s, &h, sizeof(h), &b.fd, 1)) {
		printf("badring: feed-after-close: cannot attach\n");
		return 1;
	}
	usleep(100 * 1000);
	close(s);
	uint64_t t0 = now_ms();
	while (now_ms() - t0 < (uint64_t)ms) {
		if (put(&b, RING_REC_DATA, 0, 9, off, chunk, sizeof(chunk)))
			off += sizeof(chunk);
		else
			sched_yield();
	}
	printf("badring: feed-after-close committed %llu bytes before the close, %llu after, "
	       "in %ld ms\n", (unsigned long long)before, (unsigned long long)(off - before), ms);
	fflush(stdout);
	bring_free(&b);
	return 0;
}

static const struct bcase cases[] = {
	{"bad-magic", "ring header magic wrong", case_hdr, H_MAGIC},
	{"bad-version", "ring header version 2", case_hdr, H_VERSION},
	{"size-not-pow2", "data_size 192 KiB, not a power of two", case_hdr, H_POW2},
	{"short-memfd", "header claims 16 MiB, memfd holds 64 KiB", case_hdr, H_SHORT},
	{"unsealed", "memfd without seals (producer could shrink it)", case_unsealed, 0},
	{"no-shrink-seal", "memfd sealed against grow only", case_hdr, H_NOSHRINK},
	{"head-tail-garbage", "head and tail nonsense", case_hdr, H_HEADTAIL},
	{"rec-len-0", "record len 0", case_rec, R_LEN0},
	{"rec-len-unaligned", "record len 100", case_rec, R_LEN_UNALIGNED},
	{"rec-len-past-end", "record crosses the end of the data area", case_rec, R_LEN_PAST_END},
	{"rec-type-unknown", "record type 77", case_rec, R_TYPE},
	{"data-off-oob", "data_off beyond the record", case_rec, R_DOFF_OOB},
	{"data-off-small", "data_off inside the record header", case_rec, R_DOFF_SMALL},
	{"data-len-oob", "data_len one past the record", case_rec, R_DLEN_OOB},
	{"data-len-huge", "data_len 0xffffffff", case_rec, R_DLEN_HUGE},
	{"pad-mid", "PAD record that does not reach the end", case_rec, R_PAD_MID},
	{"open-unterminated", "OPEN with sni/alpn/cipher not NUL-terminated", case_open, O_UNTERMINATED},
	{"open-family5", "OPEN with address family 5", case_open, O_FAMILY5},
	{"open-short", "OPEN payload of 16 bytes", case_open, O_SHORT},
	{"open-side9", "OPEN with side 9", case_open, O_SIDE},
	{"conn-id-0", "OPEN/DATA/CLOSE for conn_id 0", case_open, O_CONN0},
	{"data-unknown-conn", "DATA for a connection never opened", case_open, O_DATA_UNKNOWN},
	{"close-unknown-conn", "DATA and CLOSE, never opened", case_open, O_DATA_NO_OPEN_CLOSE},
	{"hello-bad-magic", "hello magic wrong", case_msg, M_MAGIC},
	{"hello-bad-version", "hello version 8", case_msg, M_VERSION},
	{"hello-bad-type", "hello type 42", case_msg, M_TYPE},
	{"hello-truncated", "hello of 10 bytes", case_msg, M_TRUNC},
	{"hello-no-fd", "hello without a descriptor", case_msg, M_NOFD},
	{"hello-two-fds", "hello with the ring and /dev/null", case_msg, M_TWOFDS},
	{"hello-pipe-fd", "hello with a pipe instead of a memfd", case_msg, M_PIPEFD},
	{"garbage", "301 random bytes", case_msg, M_GARBAGE},
	{"empty", "a zero-length message", case_msg, M_EMPTY},
	{"hello-eight-fds", "hello with the ring and 7 more descriptors", case_msg, M_MANYFDS},
	{"hello-recvmsg-fault", "hello without a ring; recvfault.so makes its recvmsg fail", case_msg, M_FAULT},
};

#define NCASES (sizeof(cases) / sizeof(cases[0]))

static void usage(FILE *f)
{
	fprintf(f, "usage: badring [--socket PATH] [--timeout-ms N] --case NAME|all\n"
		   "       badring [--socket PATH] --flip N   (N attaches under a flipping thread)\n"
		   "       badring [--socket PATH] --hold N [--attach]   (N idle control connections)\n"
		   "       badring [--socket PATH] --feed-after-close MS\n"
		   "       badring --list\n");
}

static int run_case(const struct ctx *x, const struct bcase *bc)
{
	int err = bc->run(x, bc);
	if (err) {
		printf("badring: %-20s could not be sent: %s\n", bc->name, strerror(-err));
		fflush(stdout);
	}
	return err;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"socket", 1, 0, 's'}, {"case", 1, 0, 'c'}, {"timeout-ms", 1, 0, 't'},
		{"list", 0, 0, 'l'}, {"help", 0, 0, 'h'}, {"flip", 1, 0, 'f'},
		{"hold", 1, 0, 'H'}, {"attach", 0, 0, 'A'}, {"feed-after-close", 1, 0, 'F'},
		{0, 0, 0, 0}};
	struct ctx x = {.socket = getenv("TLSMIRROR_SOCKET"), .timeout_ms = 2000};
	const char *name = NULL;
	long flips = 0, hold = 0, feed = 0;
	int c, rc = 0, attach = 0;

	if (!x.socket)
		x.socket = CTL_DEFAULT_SOCKET;
	while ((c = getopt_long(argc, argv, "s:c:t:lh", lo, NULL)) != -1) {
		switch (c) {
		case 's': x.socket = optarg; break;
		case 'c': name = optarg; break;
		case 't': x.timeout_ms = atoi(optarg); break;
		case 'f': flips = atol(optarg); break;
		case 'H': hold = atol(optarg); break;
		case 'A': attach = 1; break;
		case 'F': feed = atol(optarg); break;
		case 'l':
			for (size_t i = 0; i < NCASES; i++)
				printf("%-20s %s\n", cases[i].name, cases[i].what);
			return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if ((hold > 0 || feed > 0) && !name && optind == argc) {
		signal(SIGPIPE, SIG_IGN);
		return hold > 0 ? run_hold(&x, hold, attach) : run_feed_after_close(&x, feed);
	}
	if (flips > 0 && !name && optind == argc) {
		signal(SIGPIPE, SIG_IGN);
		return run_flip(&x, flips);
	}
	if (!name || optind != argc || x.timeout_ms <= 0) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	int found = 0;
	for (size_t i = 0; i < NCASES; i++) {
		if (strcmp(name, "all") && strcmp(name, cases[i].name))
			continue;
		found = 1;
		if (run_case(&x, &cases[i]))
			rc = 1;
	}
	if (!found) {
		fprintf(stderr, "badring: no case '%s' (see --list)\n", name);
		return 2;
	}
	return rc;
}
