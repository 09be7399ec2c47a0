/* Synthetic producer: attaches a ring to a running agent like the capture library and pushes clear text. */
#include "transport/ctl.h"
#include "transport/ring.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/*
 * Payload pattern (so a test can check the mirror byte for byte): the byte at
 * stream offset o of connection index c (0-based), direction d (0 c2s, 1 s2c)
 * is RINGGEN_ALPHABET[(o + 7 * c + 31 * d) % 64]. Connection c is
 * 127.0.0.1:(port_base + c) -> 127.0.0.1:server_port, this process the server;
 * beyond the port range (c >= 65536 - port_base) the client address moves on:
 * 127.a.b.1 with a.b = c / (65536 - port_base).
 * --hold (a producer that never closes): OPEN then one DATA of --chunk bytes
 * per connection while --bytes last, no CLOSE; prints "holding" and stays
 * attached until its standard input ends.
 */
#define RINGGEN_ALPHABET \
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
#define STALL_NS (30ull * 1000000000ull) /* no progress this long: give up */

struct opts {
	const char *socket;
	uint64_t bytes;
	uint32_t conns;
	uint32_t chunk;
	uint64_t ring_size;
	uint64_t rate;          /* bytes per second, 0 = as fast as possible */
	uint16_t port_base;
	uint16_t server_port;
	int dir;                /* 0 c2s, 1 s2c, 2 both (alternating chunks) */
	int hold;               /* --hold: never close */
	long long ts_offset;    /* --ts-offset SECONDS: forged record timestamps */
};

static long long ts_offset_ns; /* o->ts_offset in ns, added to every record's timestamp */

struct gen {
	struct ring_hdr *ring;
	int sock;
	uint8_t *pattern;       /* RING_MAX_CHUNK + 64 bytes of the alphabet */
	uint64_t (*off)[2];     /* per connection, per direction */
	uint64_t records;
	uint64_t full_waits;
	uint64_t doorbells;
	uint64_t sent;
	uint64_t t0;
};

static uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* "4G", "16M", "64k", "1460": bytes (binary multiples). Returns 0 or -EINVAL. */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	unsigned shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: break;
	}
	if (*end == 'i' || *end == 'B')
		end++;
	if (*end == 'B')
		end++;
	if (*end || (shift && v > (ULLONG_MAX >> shift)))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

/* A record's timestamp: the real time, moved by --ts-offset. */
static uint64_t rec_ts(void)
{
	return (uint64_t)((long long)now_ns(CLOCK_REALTIME) + ts_offset_ns);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ringgen [--socket PATH] [--bytes N] [--conns K] [--chunk N]\n"
		"               [--ring-size N] [--rate BYTES_PER_S] [--dir c2s|s2c|both]\n"
		"               [--port-base P] [--server-port P] [--hold] [--ts-offset S]\n"
		"Attaches to a tlsmirror agent like the capture library and pushes N bytes\n"
		"of clear text over K connections (sizes accept K/M/G suffixes).\n"
		"--hold: K connections that are never closed, --chunk bytes each while N\n"
		"last; stays attached until stdin ends.\n"
		"--ts-offset S: every record's timestamp S seconds (may be negative) away\n"
		"from the real time (a producer forging its clock).\n");
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{"socket", 1, 0, 's'}, {"bytes", 1, 0, 'b'}, {"conns", 1, 0, 'c'},
		{"chunk", 1, 0, 'k'}, {"ring-size", 1, 0, 'r'}, {"rate", 1, 0, 'R'},
		{"dir", 1, 0, 'd'}, {"port-base", 1, 0, 'p'}, {"server-port", 1, 0, 'P'},
		{"hold", 0, 0, 'H'}, {"ts-offset", 1, 0, 'T'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
	uint64_t v;
	int c;
	while ((c = getopt_long(argc, argv, "s:b:c:k:r:R:d:p:P:hHT:", lo, NULL)) != -1) {
		if (c == 's') { o->socket = optarg; continue; }
		if (c == 'T') {
			char *end;
			o->ts_offset = strtoll(optarg, &end, 10);
			if (*end || o->ts_offset < -3000000000LL || o->ts_offset > 3000000000LL)
				return -EINVAL;
			ts_offset_ns = o->ts_offset * 1000000000LL;
			continue;
		}
		if (c == 'H') { o->hold = 1; continue; }
		if (c == 'h') { usage(stdout); exit(0); }
		if (c == 'd') {
			o->dir = !strcmp(optarg, "c2s") ? 0 : !strcmp(optarg, "s2c") ? 1 :
				 !strcmp(optarg, "both") ? 2 : -1;
			if (o->dir < 0)
				return -EINVAL;
			continue;
		}
		if (c == '?' || parse_size(optarg, &v))
			return -EINVAL;
		switch (c) {
		case 'b': o->bytes = v; break;
		case 'c': o->conns = (uint32_t)v; if (!v || v > 16000000) return -EINVAL; break;
		case 'k': o->chunk = (uint32_t)v; if (!v || v > RING_MAX_CHUNK) return -EINVAL; break;
		case 'r': o->ring_size = v; break;
		case 'R': o->rate = v; break;
		case 'p': o->port_base = (uint16_t)v; if (!v || v > 65535) return -EINVAL; break;
		case 'P': o->server_port = (uint16_t)v; if (!v || v > 65535) return -EINVAL; break;
		}
	}
	if (optind != argc)
		return -EINVAL;
	return 0;
}

/* Creates, sizes, seals and maps the ring. Returns the memfd or negative errno. */
static int ring_create(uint64_t data_size, struct ring_hdr **out)
{
	size_t len = RING_HDR_SIZE + data_size;
	int err;
	int fd = memfd_create("tlsmirror-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)len) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		err = -errno;
		goto out;
	}
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (m == MAP_FAILED) {
		err = -errno;
		goto out;
	}
	ring_init(m, data_size, (uint32_t)getpid());
	*out = m;
	return fd;
out:
	close(fd);
	return err;
}

/* Connects to the agent and sends CTL_ATTACH with the memfd. Returns the socket or negative errno. */
static int attach(const char *path, int memfd)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct ctl_hello h = {.magic = CTL_MAGIC, .version = CTL_VERSION,
			      .type = CTL_ATTACH, .pid = (uint32_t)getpid()};
	union { struct cmsghdr c; char buf[CMSG_SPACE(sizeof(int))]; } cm;
	struct iovec iov = {.iov_base = &h, .iov_len = sizeof(h)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf)};
	int err;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	snprintf(h.comm, sizeof(h.comm), "ringgen");
	ssize_t n = readlink("/proc/self/exe", h.exe, sizeof(h.exe) - 1);
	if (n < 0)
		h.exe[0] = 0;
	memset(cm.buf, 0, sizeof(cm.buf));
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &memfd, sizeof(int));

	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    sendmsg(s, &msg, MSG_NOSIGNAL) != (ssize_t)sizeof(h)) {
		err = -errno;
		goto out;
	}
	return s;
out:
	close(s);
	return err;
}

/* Rings the doorbell if the agent went to sleep (flag cleared first) and the
 * ring is an eighth full: the capture library's policy (cap_doorbell; the
 * agent wakes by itself every few ms), so the agent wakes as often as it
 * would for a real application. */
static void doorbell(struct gen *g)
{
	/* Order our commit before reading the flag (the agent does the mirror image). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!__atomic_load_n(&g->ring->consumer_sleeping, __ATOMIC_RELAXED))
		return;
	if (ring_used(g->ring) < g->ring->data_size / 8)
		return;
	if (!__atomic_exchange_n(&g->ring->consumer_sleeping, 0, __ATOMIC_ACQ_REL))
		return;
	char b = 1;
	if (send(g->sock, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1) {
		g->doorbells++;
		__atomic_fetch_add(&g->ring->doorbells, 1, __ATOMIC_RELAXED);
	}
}

/* 0 while the agent holds the connection, -EPIPE once it closed it. */
static int agent_alive(int sock)
{
	char b;
	ssize_t n = recv(sock, &b, 1, MSG_DONTWAIT | MSG_PEEK);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
		return -EPIPE;
	return 0;
}

/* Waits for ring space: spins, yields, keeps ringing. Returns 0 or -EPIPE/-ETIMEDOUT. */
static int wait_space(struct gen *g, uint32_t spins)
{
	static uint64_t stall_since;
	if (spins == 1) {
		g->full_waits++;
		stall_since = now_ns(CLOCK_MONOTONIC);
	}
	doorbell(g);
	if (spins < 64) {
		__builtin_ia32_pause();
		return 0;
	}
	sched_yield();
	if (spins % 1024)
		return 0;
	if (agent_alive(g->sock))
		return -EPIPE;
	if (now_ns(CLOCK_MONOTONIC) - stall_since > STALL_NS)
		return -ETIMEDOUT;
	return 0;
}

/* Reserves len payload bytes, waiting as long as the agent needs. */
static int reserve(struct gen *g, uint32_t len, const void *src,
		   struct ring_reservation *res)
{
	for (uint32_t spins = 1;; spins++) {
		int err = ring_reserve(g->ring, len, src, res);
		if (err != -EAGAIN && err != -EBUSY)
			return err;
		err = wait_space(g, spins);
		if (err)
			return err;
	}
}

static int emit_open(struct gen *g, const struct opts *o, uint32_t c)
{
	struct ring_reservation res;
	struct ring_open op;
	int err = reserve(g, sizeof(op), NULL, &res);
	if (err)
		return err;
	memset(&op, 0, sizeof(op));
	op.family = 4;
	op.side = RING_SIDE_SERVER;
	op.map_method = RING_MAP_FD;
	uint32_t span = 65536u - o->port_base, hi = c / span;
	op.client_port = (uint16_t)(o->port_base + c % span);
	op.server_port = o->server_port;
	uint8_t cli[4] = { 127, (uint8_t)(hi >> 8), (uint8_t)hi, 1 };
	memcpy(op.client_addr, cli, 4);
	memcpy(op.server_addr, "\x7f\x00\x00\x01", 4);
	op.tls_version = 0x0304;
	op.tid = (uint32_t)gettid();
	snprintf(op.sni, sizeof(op.sni), "ringgen.test");
	snprintf(op.alpn, sizeof(op.alpn), "http/1.1");
	snprintf(op.cipher, sizeof(op.cipher), "TLS_AES_128_GCM_SHA256");
	memcpy(res.data, &op, sizeof(op));
	ring_commit(&res, RING_REC_OPEN, 0, c + 1, rec_ts(), 0, sizeof(op));
	g->records++;
	doorbell(g);
	return 0;
}

static int emit_data(struct gen *g, uint32_t c, int d, uint32_t len)
{
	struct ring_reservation res;
	uint64_t off = g->off[c][d];
	const uint8_t *src = g->pattern + (off + 7ull * c + 31ull * d) % 64;
	int err = reserve(g, len, src, &res);
	if (err)
		return err;
	memcpy(res.data, src, len);
	ring_commit(&res, RING_REC_DATA, d ? RING_F_DIR_S2C : 0, c + 1, rec_ts(), off, len);
	g->off[c][d] += len;
	g->sent += len;
	g->records++;
	doorbell(g);
	return 0;
}

static int emit_close(struct gen *g, uint32_t c)
{
	struct ring_reservation res;
	int err = reserve(g, 0, NULL, &res);
	if (err)
		return err;
	ring_commit(&res, RING_REC_CLOSE, 0, c + 1, rec_ts(), 0, 0);
	g->records++;
	doorbell(g);
	return 0;
}

/* Sleeps as needed so the average stays at o->rate bytes per second. */
static void pace(const struct gen *g, const struct opts *o)
{
	if (!o->rate)
		return;
	uint64_t due = g->t0 + (uint64_t)((double)g->sent * 1e9 / (double)o->rate);
	uint64_t now = now_ns(CLOCK_MONOTONIC);
	if (due > now + 100000) {
		struct timespec ts = {.tv_sec = (time_t)((due - now) / 1000000000ull),
				      .tv_nsec = (long)((due - now) % 1000000000ull)};
		nanosleep(&ts, NULL);
	}
}

/* OPEN for every connection, DATA round robin until o->bytes, CLOSE for every one. */
static int run(struct gen *g, const struct opts *o)
{
	int err = 0;
	for (uint32_t c = 0; c < o->conns && !err; c++)
		err = emit_open(g, o, c);
	uint64_t step = 0;
	while (!err && g->sent < o->bytes) {
		uint32_t c = (uint32_t)(step % o->conns);
		int d = o->dir == 2 ? (int)((step / o->conns) & 1) : o->dir;
		uint64_t left = o->bytes - g->sent;
		err = emit_data(g, c, d, left < o->chunk ? (uint32_t)left : o->chunk);
		pace(g, o);
		step++;
	}
	for (uint32_t c = 0; c < o->conns && !err; c++)
		err = emit_close(g, c);
	return err;
}

/* --hold: OPEN (and DATA while o->bytes last) for every connection, no CLOSE. */
static int run_hold(struct gen *g, const struct opts *o)
{
	int err = 0;
	for (uint32_t c = 0; c < o->conns && !err; c++) {
		err = emit_open(g, o, c);
		if (!err && g->sent + o->chunk <= o->bytes)
			err = emit_data(g, c, o->dir == 2 ? 0 : o->dir, o->chunk);
	}
	return err;
}

/* Waits until the agent consumed everything (tail reaches head). */
static int drain(struct gen *g)
{
	uint64_t start = now_ns(CLOCK_MONOTONIC);
	for (uint32_t spins = 0; ring_used(g->ring); spins++) {
		doorbell(g);
		if (spins < 1000) {
			sched_yield();
			continue;
		}
		usleep(100);
		if (agent_alive(g->sock))
			return -EPIPE;
		if (now_ns(CLOCK_MONOTONIC) - start > STALL_NS)
			return -ETIMEDOUT;
	}
	return 0;
}

static void report(const struct gen *g, const struct opts *o, uint64_t t1)
{
	double secs = (double)(t1 - g->t0) / 1e9;
	printf("ringgen: sent %llu bytes in %.3f s (%.2f Gbit/s) conns=%u records=%llu "
	       "full_waits=%llu doorbells=%llu\n",
	       (unsigned long long)g->sent, secs,
	       secs > 0 ? (double)g->sent * 8 / secs / 1e9 : 0.0, o->conns,
	       (unsigned long long)g->records, (unsigned long long)g->full_waits,
	       (unsigned long long)g->doorbells);
	printf("bytes=%llu elapsed_s=%.6f\n", (unsigned long long)g->sent, secs);
}

static const char *why(int err)
{
	if (err == -EPIPE)
		return "the agent closed the connection (see its log)";
	if (err == -ETIMEDOUT)
		return "the agent stopped consuming the ring for 30 s";
	return strerror(-err);
}

int main(int argc, char **argv)
{
	struct opts o = {.socket = getenv("TLSMIRROR_SOCKET"), .bytes = 1ull << 30,
			 .conns = 4, .chunk = 16384, .ring_size = RING_DEFAULT_DATA,
			 .port_base = 40000, .server_port = 8443, .dir = 2};
	struct gen g = {.sock = -1};
	int memfd = -1, rc = 1, err;

	if (!o.socket)
		o.socket = CTL_DEFAULT_SOCKET;
	if (parse_args(argc, argv, &o)) {
		usage(stderr);
		return 2;
	}
	if (o.ring_size < RING_MIN_DATA || o.ring_size > RING_MAX_DATA ||
	    (o.ring_size & (o.ring_size - 1))) {
		fprintf(stderr, "ringgen: --ring-size must be a power of two, 64K..1G\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	g.pattern = malloc(RING_MAX_CHUNK + 64);
	g.off = calloc(o.conns, sizeof(*g.off));
	if (!g.pattern || !g.off) {
		fprintf(stderr, "ringgen: out of memory\n");
		goto out;
	}
	for (uint32_t i = 0; i < RING_MAX_CHUNK + 64; i++)
		g.pattern[i] = (uint8_t)RINGGEN_ALPHABET[i % 64];
	memfd = ring_create(o.ring_size, &g.ring);
	if (memfd < 0) {
		fprintf(stderr, "ringgen: cannot create the ring: %s\n", strerror(-memfd));
		goto out;
	}
	g.sock = attach(o.socket, memfd);
	if (g.sock < 0) {
		fprintf(stderr, "ringgen: cannot attach to the agent at %s: %s "
			"(is 'tlsmirror --socket %s -w FILE' running?)\n",
			o.socket, strerror(-g.sock), o.socket);
		goto out;
	}
	g.t0 = now_ns(CLOCK_MONOTONIC);
	err = o.hold ? run_hold(&g, &o) : run(&g, &o);
	if (!err)
		err = drain(&g);
	if (!err && o.hold) {
		char b[256];
		report(&g, &o, now_ns(CLOCK_MONOTONIC));
		printf("holding\n");
		fflush(stdout);
		while (read(STDIN_FILENO, b, sizeof(b)) > 0)
			;
		rc = 0;
		goto out;
	}
	if (err) {
		fprintf(stderr, "ringgen: stopped after %llu bytes: %s\n",
			(unsigned long long)g.sent, why(err));
		goto out;
	}
	report(&g, &o, now_ns(CLOCK_MONOTONIC));
	rc = 0;
out:
	if (g.sock >= 0)
		close(g.sock);
	if (memfd >= 0)
		close(memfd);
	free(g.pattern);
	free(g.off);
	return rc;
}
