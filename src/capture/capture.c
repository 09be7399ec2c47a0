/* Capture library process state: configuration, the ring, attaching to the agent, fork. */
#include "capture/capture.h"
#include "transport/ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CHECK_INTERVAL_NS 1000000000ULL /* health check / re-attach at most 1/s */
#define WAIT_RING_SPINS 1064              /* ~100 ms at most, once per process */

enum ring_state { RS_NONE = 0, RS_CREATING, RS_READY, RS_FAILED };

/* Everything process-wide lives here and only here. */
static struct {
	int disabled;
	char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int sock_default;         /* no $TLSMIRROR_SOCKET: the packaged agent's is tried too */
	uint64_t ring_size;
	int ring_state;           /* enum ring_state, atomic */
	struct ring_hdr *ring;    /* atomic; stays mapped for the process lifetime */
	int memfd;
	int ctl_fd;               /* stable number once created (dup3 on re-attach) */
	int preconn;              /* connected by the parent before fork: its rights */
	int fork_fd;              /* the one connected for the child of the fork under way */
	int attached;
	uint32_t epoch;           /* bumps when the agent may have lost our OPENs */
	uint32_t attach_count;
	uint64_t next_check_ns;
	int maint_busy;           /* try-lock for maintenance */
	uint64_t conn_ids;
	uint64_t noring_bytes;
	uint64_t noring_records;
	uint32_t forks;           /* fork() calls so far (atfork prepare) */
} g = { .memfd = -1, .ctl_fd = -1, .preconn = -1, .fork_fd = -1, .epoch = 1 };

uint64_t cap_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t cap_next_conn_id(void)
{
	return __atomic_add_fetch(&g.conn_ids, 1, __ATOMIC_RELAXED);
}

void cap_count_noring(uint64_t bytes)
{
	__atomic_fetch_add(&g.noring_bytes, bytes, __ATOMIC_RELAXED);
	__atomic_fetch_add(&g.noring_records, 1, __ATOMIC_RELAXED);
}

/* Parses "16M", "65536", "1G". Returns 0 on nonsense. */
static uint64_t parse_size(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	return *end ? 0 : v;
}

static uint64_t pow2_floor(uint64_t v)
{
	uint64_t p = 1;
	while (p <= v / 2)
		p <<= 1;
	return p;
}

static void at_fork_child(void);
static void preconnect_prepare(void);
static void preconnect_parent(void);
static void preconnect_child(void);
static void at_fork_count(void);

/* Runs in every process the library is preloaded into: read configuration
 * now, while the environment is there (nginx workers get an empty one).
 * Once, whichever constructor comes first (inline.c's needs it too). */
void cap_setup(void)
{
	static int done;
	if (done)
		return;
	done = 1;
	sym_init_libc();
	const char *v = getenv("TLSMIRROR_DISABLE");
	if (v && *v && strcmp(v, "0") != 0)
		g.disabled = 1;
	const char *path = getenv("TLSMIRROR_SOCKET");
	if (!path || !*path || strlen(path) >= sizeof(g.sock_path)) {
		path = CTL_DEFAULT_SOCKET;
		g.sock_default = 1;
	}
	memcpy(g.sock_path, path, strlen(path) + 1);
	g.ring_size = RING_DEFAULT_DATA;
	v = getenv("TLSMIRROR_RING_SIZE");
	if (v && *v) {
		uint64_t s = parse_size(v);
		if (s >= RING_MIN_DATA && s <= RING_MAX_DATA)
			g.ring_size = pow2_floor(s);
	}
	pthread_atfork(NULL, NULL, at_fork_child);
	pthread_atfork(preconnect_prepare, preconnect_parent, preconnect_child);
	pthread_atfork(at_fork_count, NULL, NULL);
}

__attribute__((constructor)) static void cap_init(void)
{
	cap_setup();
}

int cap_set_socket(const char *path)
{
	if (!path || !*path || strlen(path) >= sizeof(g.sock_path))
		return -ENAMETOOLONG;
	memcpy(g.sock_path, path, strlen(path) + 1);
	g.sock_default = 0;
	return 0;
}

/* The ring is created only once an agent answers: a process that never
 * meets one commits no ring memory. Its pages are not pre-faulted either:
 * only what the records touch is ever allocated (an idle connection costs
 * a page or two), and the agent maps it without touching more. */
static struct ring_hdr *create_ring(void)
{
	size_t map_len = RING_HDR_SIZE + g.ring_size;
	int fd = memfd_create("tlsmirror-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return NULL;
	if (ftruncate(fd, (off_t)map_len) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		goto fail;
	void *m = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		goto fail;
	struct ring_hdr *r = m;
	ring_init(r, g.ring_size, (uint32_t)getpid());
	uint64_t nb = __atomic_exchange_n(&g.noring_bytes, 0, __ATOMIC_RELAXED);
	uint64_t nr = __atomic_exchange_n(&g.noring_records, 0, __ATOMIC_RELAXED);
	r->drop_bytes[RING_DROP_NO_RING] = nb;
	r->drop_records[RING_DROP_NO_RING] = nr;
	inl_report(r);
	g.memfd = fd;
	return r;
fail:
	cap_libc.close(fd);
	return NULL;
}

/* The process name (no /proc needed: works in a chroot). */
static void read_comm(char *out, size_t n)
{
	char name[17] = { 0 };
	memset(out, 0, n);
	if (prctl(PR_GET_NAME, name) == 0)
		memcpy(out, name, n - 1 < 16 ? n - 1 : 16);
}

/* Anyone may bind an abstract name: talk only to an agent run by root or by
 * our own user (SO_PEERCRED of a listener: who called listen()). */
static int agent_trusted(int fd)
{
	struct ucred c;
	socklen_t cl = sizeof(c);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &cl) < 0)
		return 0;
	return c.uid == 0 || c.uid == geteuid();
}

/* A non-blocking connection to the agent: the socket path first (file
 * permissions, mount and network namespaces as configured), else the
 * abstract name (a chroot hides the path). Returns the fd or -errno. */
static int connect_agent(void)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	/* no socket named and none at the usual path: the packaged agent's */
	const char *path = g.sock_default && access(g.sock_path, F_OK) &&
			   !access(CTL_SERVICE_SOCKET, F_OK) ? CTL_SERVICE_SOCKET : g.sock_path;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return fd;
	int err = -errno;
	socklen_t len;
	if (ctl_abstract_addr(path, &sa, &len) == 0) {
		if (connect(fd, (struct sockaddr *)&sa, len) == 0) {
			if (agent_trusted(fd))
				return fd;
			err = -EPERM;
		} else {
			err = -errno;
		}
	}
	cap_libc.close(fd);
	return err;
}

/* The hello, the ring's memfd and our own credentials (checked by the
 * kernel: the agent learns who sends even on a socket a parent connected). */
static int send_attach(int fd, const struct ctl_hello *h)
{
	struct iovec iov = { .iov_base = (void *)h, .iov_len = sizeof(*h) };
	union {
		char buf[CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct ucred))];
		struct cmsghdr align;
	} cm;
	memset(&cm, 0, sizeof(cm));
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &g.memfd, sizeof(int));
	c = CMSG_NXTHDR(&msg, c);
	struct ucred me = { .pid = getpid(), .uid = geteuid(), .gid = getegid() };
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_CREDENTIALS;
	c->cmsg_len = CMSG_LEN(sizeof(me));
	memcpy(CMSG_DATA(c), &me, sizeof(me));
	return cap_libc.sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ? -errno : 0;
}

/* A socket to the agent: the one our parent connected before fork, else a
 * fresh non-blocking connection. Returns the fd or -errno. */
static int agent_socket(int *from_parent)
{
	int fd = __atomic_exchange_n(&g.preconn, -1, __ATOMIC_ACQ_REL);
	*from_parent = fd >= 0;
	return fd >= 0 ? fd : connect_agent();
}

/* Sends the hello and the memfd on fd (taken over: kept as the control
 * socket or closed). A socket our parent connected may lead to an agent
 * that is gone: then one fresh connection is tried. */
static int attach_on(int fd, int from_parent)
{
	int err = 0;
	struct ctl_hello h;
	memset(&h, 0, sizeof(h));
	h.magic = CTL_MAGIC;
	h.version = CTL_VERSION;
	h.type = CTL_ATTACH;
	h.pid = (uint32_t)getpid();
	h.attach_gen = g.attach_count;
	read_comm(h.comm, sizeof(h.comm));
	ssize_t n = readlink("/proc/self/exe", h.exe, sizeof(h.exe) - 1);
	if (n < 0)
		h.exe[0] = 0;
	if ((err = send_attach(fd, &h)) < 0) {
		cap_libc.close(fd);
		if (!from_parent)
			return err;
		if ((fd = connect_agent()) < 0)
			return fd;
		if ((err = send_attach(fd, &h)) < 0)
			goto out;
	}
	/* Keep the control socket's fd number stable: a thread about to ring
	 * the doorbell must never hit an unrelated fd that reused the number. */
	if (g.ctl_fd >= 0) {
		if (dup3(fd, g.ctl_fd, O_CLOEXEC) < 0) {
			err = -errno;
			goto out;
		}
	} else {
		__atomic_store_n(&g.ctl_fd, fd, __ATOMIC_RELEASE);
		fd = -1;
	}
	g.attach_count++;
	__atomic_store_n(&g.attached, 1, __ATOMIC_RELEASE);
out:
	if (fd >= 0)
		cap_libc.close(fd);
	return err;
}

/* One non-blocking attach attempt. */
static int try_attach(void)
{
	int from_parent, fd = agent_socket(&from_parent);
	return fd < 0 ? fd : attach_on(fd, from_parent);
}

/* Is the agent still there? EOF on the control socket says it is gone. */
static void check_attached(void)
{
	char b;
	ssize_t n = cap_libc.recv(g.ctl_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)))
		return;
	__atomic_store_n(&g.attached, 0, __ATOMIC_RELEASE);
	/* The next agent has not seen what this one consumed: announce every
	 * connection again before its next data. */
	__atomic_add_fetch(&g.epoch, 1, __ATOMIC_RELEASE);
}

static void maintain(uint64_t now)
{
	if (__atomic_exchange_n(&g.maint_busy, 1, __ATOMIC_ACQUIRE))
		return;
	if (now >= __atomic_load_n(&g.next_check_ns, __ATOMIC_RELAXED)) {
		int saved = errno;
		if (__atomic_load_n(&g.attached, __ATOMIC_ACQUIRE) && g.ctl_fd >= 0)
			check_attached();
		if (!__atomic_load_n(&g.attached, __ATOMIC_ACQUIRE))
			try_attach();
		__atomic_store_n(&g.next_check_ns, now + CHECK_INTERVAL_NS, __ATOMIC_RELAXED);
		errno = saved;
	}
	__atomic_store_n(&g.maint_busy, 0, __ATOMIC_RELEASE);
}

/* Another thread is creating the ring (well under a millisecond, once per
 * process): wait for it, boundedly, rather than drop the first bytes of
 * every thread. */
static struct ring_hdr *wait_ring(uint32_t *epoch)
{
	for (int i = 0; i < WAIT_RING_SPINS; i++) {
		int st = __atomic_load_n(&g.ring_state, __ATOMIC_ACQUIRE);
		if (st == RS_READY)
			break;
		if (st != RS_CREATING)
			return NULL; /* failed, or no agent answered */
		if (i < 64)
			sched_yield();
		else
			usleep(100);
	}
	struct ring_hdr *r = __atomic_load_n(&g.ring, __ATOMIC_ACQUIRE);
	*epoch = __atomic_load_n(&g.epoch, __ATOMIC_ACQUIRE);
	return r;
}

/* First use, or no agent so far: an agent answers (at most one try a
 * second) -> the ring, attached to it. NULL while none answers. */
static struct ring_hdr *first_ring(uint64_t now, uint32_t *epoch)
{
	if (now < __atomic_load_n(&g.next_check_ns, __ATOMIC_RELAXED))
		return NULL;
	int expect = RS_NONE;
	if (!__atomic_compare_exchange_n(&g.ring_state, &expect, RS_CREATING, 0,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return expect == RS_CREATING ? wait_ring(epoch) : NULL;
	int saved = errno, from_parent;
	struct ring_hdr *r = NULL;
	int fd = agent_socket(&from_parent);
	if (fd < 0) {
		__atomic_store_n(&g.next_check_ns, now + CHECK_INTERVAL_NS, __ATOMIC_RELAXED);
		__atomic_store_n(&g.ring_state, RS_NONE, __ATOMIC_RELEASE);
		errno = saved;
		return NULL;
	}
	r = create_ring();
	if (!r) {
		cap_libc.close(fd);
		__atomic_store_n(&g.ring_state, RS_FAILED, __ATOMIC_RELEASE);
		errno = saved;
		return NULL;
	}
	attach_on(fd, from_parent); /* failed: re-attached later like after a restart */
	__atomic_store_n(&g.next_check_ns, now + CHECK_INTERVAL_NS, __ATOMIC_RELAXED);
	__atomic_store_n(&g.ring, r, __ATOMIC_RELEASE);
	__atomic_store_n(&g.ring_state, RS_READY, __ATOMIC_RELEASE);
	errno = saved;
	*epoch = __atomic_load_n(&g.epoch, __ATOMIC_ACQUIRE);
	return r;
}

struct ring_hdr *cap_ring(uint64_t now, uint32_t *epoch)
{
	if (g.disabled)
		return NULL;
	struct ring_hdr *r = __atomic_load_n(&g.ring, __ATOMIC_ACQUIRE);
	if (!r)
		return first_ring(now, epoch);
	if (now >= __atomic_load_n(&g.next_check_ns, __ATOMIC_RELAXED))
		maintain(now);
	*epoch = __atomic_load_n(&g.epoch, __ATOMIC_ACQUIRE);
	return r;
}

void cap_doorbell(struct ring_hdr *ring)
{
	if (!__atomic_load_n(&ring->consumer_sleeping, __ATOMIC_RELAXED))
		return;
	/* The agent wakes by itself every few ms; ring only when it fills. */
	if (ring_used(ring) < ring->data_size / 8)
		return;
	if (!__atomic_exchange_n(&ring->consumer_sleeping, 0, __ATOMIC_ACQ_REL))
		return;
	int fd = __atomic_load_n(&g.ctl_fd, __ATOMIC_ACQUIRE);
	if (fd < 0 || !__atomic_load_n(&g.attached, __ATOMIC_ACQUIRE))
		return;
	int saved = errno;
	char b = 0;
	cap_libc.send(fd, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	__atomic_fetch_add(&ring->doorbells, 1, __ATOMIC_RELAXED);
	errno = saved;
}

int cap_is_own_fd(int fd)
{
	return fd >= 0 && (fd == __atomic_load_n(&g.ctl_fd, __ATOMIC_RELAXED) ||
			   fd == __atomic_load_n(&g.memfd, __ATOMIC_RELAXED) ||
			   fd == __atomic_load_n(&g.preconn, __ATOMIC_RELAXED));
}

void cap_fd_closed(int fd)
{
	/* The application closes our fd (a daemon closing everything): stop
	 * using the number before the application reuses it. */
	if (fd == g.ctl_fd) {
		__atomic_store_n(&g.attached, 0, __ATOMIC_RELEASE);
		__atomic_store_n(&g.ctl_fd, -1, __ATOMIC_RELEASE);
		__atomic_add_fetch(&g.epoch, 1, __ATOMIC_RELEASE);
	}
	if (fd == g.preconn)
		__atomic_compare_exchange_n(&g.preconn, &fd, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
	if (fd == g.memfd) {
		/* the mapping stays; without the fd we can't attach again */
		__atomic_store_n(&g.memfd, -1, __ATOMIC_RELEASE);
		__atomic_store_n(&g.disabled, 1, __ATOMIC_RELEASE);
	}
}

uint32_t cap_fork_count(void)
{
	return __atomic_load_n(&g.forks, __ATOMIC_ACQUIRE);
}

/* Before fork, in the parent: connections open now may go on in the child.
 * The agent hears it too (a FORK record), so this process's exit does not end
 * them while a child may still use them. */
static void at_fork_count(void)
{
	__atomic_add_fetch(&g.forks, 1, __ATOMIC_ACQ_REL);
	struct ring_hdr *r = __atomic_load_n(&g.ring, __ATOMIC_ACQUIRE);
	struct ring_reservation res;
	if (!r || g.disabled)
		return; /* no ring: no connection announced yet */
	int saved = errno;
	if (ring_reserve_ctrl(r, 0, &res) == 0)
		ring_commit(&res, RING_REC_FORK, 0, 0, cap_now_ns(), 0, 0);
	else
		ring_count_drop(r, RING_DROP_FULL, 0);
	errno = saved;
}

/* The child of fork gets a ring and an attachment of its own; connections it
 * inherited are announced again there, as inherited from the parent (conn.c),
 * so the agent continues the parent's flow. Only this thread exists now. */
static void at_fork_child(void)
{
	if (g.ctl_fd >= 0)
		cap_libc.close(g.ctl_fd);
	if (g.memfd >= 0)
		cap_libc.close(g.memfd);
	if (g.ring)
		munmap(g.ring, RING_HDR_SIZE + g.ring->data_size);
	g.ctl_fd = -1;
	g.memfd = -1;
	g.ring = NULL;
	g.ring_state = RS_NONE;
	g.attached = 0;
	g.attach_count = 0;
	g.maint_busy = 0;
	g.next_check_ns = 0;
	g.epoch++;
}

/*
 * Workers that drop privileges after fork (nginx, Apache, PHP-FPM as
 * www-data) may not attach on their own. Before fork, a process that uses
 * TLS connects one socket to the agent with its own credentials; only the
 * child keeps it and attaches through it (docs/security.md). One
 * non-blocking connect per fork; nothing if the agent is absent.
 */
static int uses_tls(uint64_t now)
{
	static int yes;
	static uint64_t next_look_ns;
	if (__atomic_load_n(&g.attached, __ATOMIC_ACQUIRE) || __atomic_load_n(&yes, __ATOMIC_RELAXED))
		return 1;
	if (now < __atomic_load_n(&next_look_ns, __ATOMIC_RELAXED))
		return 0;
	static void *slot, *gslot;
	if (!sym_real(&slot, "SSL_new") && !sym_real_gnutls(&gslot, "gnutls_init", NULL) &&
	    !inl_active()) {
		/* no TLS library (yet: it may be dlopen'ed): look again in a second */
		__atomic_store_n(&next_look_ns, now + CHECK_INTERVAL_NS, __ATOMIC_RELAXED);
		return 0;
	}
	__atomic_store_n(&yes, 1, __ATOMIC_RELAXED);
	return 1;
}

/* No agent: try again at most once a second (fork-heavy servers). */
static void preconnect_prepare(void)
{
	static uint64_t retry_ns;
	if (__atomic_load_n(&g.disabled, __ATOMIC_RELAXED))
		return;
	int saved = errno;
	uint64_t now = cap_now_ns();
	if (!uses_tls(now) || now < __atomic_load_n(&retry_ns, __ATOMIC_RELAXED)) {
		errno = saved;
		return;
	}
	int fd = connect_agent();
	g.fork_fd = fd >= 0 ? fd : -1;
	if (fd < 0)
		__atomic_store_n(&retry_ns, now + CHECK_INTERVAL_NS, __ATOMIC_RELAXED);
	errno = saved;
}

static void preconnect_parent(void)
{
	if (g.fork_fd < 0)
		return;
	int saved = errno;
	cap_libc.close(g.fork_fd);
	g.fork_fd = -1;
	errno = saved;
}

/* Only this thread exists: a socket inherited from our own parent is not
 * ours to keep (it carries the credentials of two generations up). */
static void preconnect_child(void)
{
	int saved = errno;
	if (g.preconn >= 0)
		cap_libc.close(g.preconn);
	g.preconn = g.fork_fd;
	g.fork_fd = -1;
	errno = saved;
}
