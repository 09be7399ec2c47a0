/* The agent's event loop: accepts capture libraries, polls the sources, feeds the chain and the sinks. */
#include "agent/agent.h"
#include "agent/reach.h"
#include "agent/metrics.h"
#include "common/log.h"
#include "sinks/sink_queue.h"
#include "transport/ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <net/if.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define TAG_LISTEN 1ULL
#define TAG_SIGNAL 2ULL
#define TAG_PENDING 3ULL
#define TAG_PROC 4ULL
#define POLL_BUDGET 4096      /* work per source per turn (the ring source: per process) */
#define MAX_EXITED_KEPT 1024  /* exited processes kept for the counters */

static uint64_t ev_data(uint64_t tag, int fd)
{
	return (tag << 56) | (uint32_t)fd;
}

uint64_t agent_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void agent_forget_fd(struct agent *a, int fd)
{
	epoll_ctl(a->epfd, EPOLL_CTL_DEL, fd, NULL);
	close(fd);
}

/* Watchers registered by other modules carry a pointer in the event data:
 * user-space pointers have a zero top byte, our own tags do not. */
int agent_watch_fd(struct agent *a, struct agent_watch *w, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };
	return epoll_ctl(a->epfd, EPOLL_CTL_ADD, w->fd, &ev) < 0 ? -errno : 0;
}

void agent_unwatch_fd(struct agent *a, struct agent_watch *w)
{
	epoll_ctl(a->epfd, EPOLL_CTL_DEL, w->fd, NULL);
}

int agent_add_tick(struct agent *a, struct agent_tick t)
{
	if (a->n_ticks >= AGENT_MAX_TICKS)
		return -ENOSPC;
	a->ticks[a->n_ticks++] = t;
	return 0;
}

static int watch(struct agent *a, int fd, uint64_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = ev_data(tag, fd) };
	return epoll_ctl(a->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

/* Binds the control socket; refuses to steal one a live agent listens on. */
static int listen_on(const struct access_policy *ap, const char *path, const char **why)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path)) {
		*why = "path too long for a Unix socket";
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	/* the packaged units' RuntimeDirectory, made here when no systemd did */
	if (!strncmp(path, CTL_SERVICE_DIR "/", sizeof(CTL_SERVICE_DIR)) &&
	    mkdir(CTL_SERVICE_DIR, 0755) == 0)
		log_info("created %s", CTL_SERVICE_DIR);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (lstat(path, &st) == 0) {
		/* something is there: replace only a socket nobody listens on */
		if (!S_ISSOCK(st.st_mode)) {
			close(fd);
			*why = "a file that is not a socket is there: refusing to replace it "
			       "(remove it, or give another --socket)";
			return -EEXIST;
		}
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno != ECONNREFUSED) {
			int e = errno;
			close(fd);
			*why = e == EAGAIN || !e || e == EINPROGRESS ?
			       "another agent is listening there (stop it, or use --socket)" :
			       "a socket is there that cannot be checked: refusing to replace it";
			return -EADDRINUSE;
		}
		unlink(path); /* the stale socket of an agent that died */
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = -errno;
		close(fd);
		*why = strerror(-err);
		return err;
	}
	access_secure_path(ap, path);
	if (listen(fd, 128) < 0) {
		int err = -errno;
		close(fd);
		*why = strerror(-err);
		return err;
	}
	return fd;
}

/* The abstract name that goes with the path, for chrooted applications (no
 * file permissions there: SO_PEERCRED alone decides). A name already taken
 * is logged, not fatal: the library talks only to a root or same-user agent. */
static int listen_abstract(const char *path)
{
	struct sockaddr_un sa;
	socklen_t len;
	if (ctl_abstract_addr(path, &sa, &len) < 0) {
		log_warn("%s: too long for the abstract socket name: chrooted applications "
			 "cannot reach this agent", path);
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, 128) < 0) {
		log_warn("cannot listen on the abstract name @%s%s: %s; chrooted applications "
			 "cannot reach this agent", CTL_ABSTRACT_PREFIX, path,
			 errno == EADDRINUSE ? "another process holds it" : strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static struct proc *proc_by_fd(struct agent *a, int fd)
{
	for (struct proc *p = a->procs; p; p = p->next)
		if (p->fd == fd)
			return p;
	return NULL;
}

/* One rate limiter per reason (reasons are static strings): a flood of one
 * kind of bad attach must not hide the others. */
static struct log_limit *limit_for(const char *why)
{
	static struct {
		const char *why;
		struct log_limit lim;
	} tab[24];
	static struct log_limit other;
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		if (tab[i].why == why)
			return &tab[i].lim;
		if (!tab[i].why) {
			tab[i].why = why;
			return &tab[i].lim;
		}
	}
	return &other;
}

static void reject(struct agent *a, int fd, const char *who, const char *why)
{
	a->rejected_attach++;
	log_limited(limit_for(why), 5, "rejected attach from %s: %s", who, why);
	agent_forget_fd(a, fd);
}

/* Maps the ring memfd of an attaching process after checking it can't hurt us. */
static int map_ring(int memfd, struct proc *p, uint64_t max_data, const char **why)
{
	struct stat st;
	if (fstat(memfd, &st) < 0 || !S_ISREG(st.st_mode)) {
		*why = "ring is not a memory file";
		return -EINVAL;
	}
	int seals = fcntl(memfd, F_GET_SEALS);
	if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
		*why = "ring memory is not sealed against shrinking";
		return -EPERM;
	}
	if (st.st_size < (off_t)(RING_HDR_SIZE + RING_MIN_DATA) ||
	    st.st_size > (off_t)(RING_HDR_SIZE + (uint64_t)RING_MAX_DATA)) {
		*why = "ring size out of range";
		return -EINVAL;
	}
	if ((uint64_t)st.st_size - RING_HDR_SIZE > max_data) {
		*why = "ring larger than --max-ring-size";
		return -EFBIG;
	}
	void *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (m == MAP_FAILED) {
		*why = "cannot map the ring";
		return -errno;
	}
	/* the header is read once, there, into p->cons: only that copy is used */
	if (ring_consumer_init(&p->cons, m, (size_t)st.st_size) < 0) {
		munmap(m, (size_t)st.st_size);
		*why = "ring header invalid (magic, version or size)";
		return -EINVAL;
	}
	p->ring = m;
	p->map_len = (size_t)st.st_size;
	p->ring_dev = st.st_dev;
	p->ring_ino = st.st_ino;
	return 0;
}

/* Forgets the oldest exited processes beyond the bound. */
static void trim_exited(struct agent *a)
{
	size_t kept = 0;
	for (struct proc **pp = &a->procs; *pp;) {
		struct proc *p = *pp;
		if (p->state != PROC_ATTACHED && ++kept > MAX_EXITED_KEPT) {
			*pp = p->next;
			pipeline_origin(a->pl, p->key, ORIGIN_FORGOTTEN, 0);
			free(p);
			continue;
		}
		pp = &p->next;
	}
}

/* sent: the kernel-checked SCM_CREDENTIALS of the attach message (the
 * process that sent it), or NULL; SO_PEERCRED names who connected. */
static void attach(struct agent *a, int fd, const struct ctl_hello *h, int memfd,
		   const struct ucred *sent)
{
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	char who[64];
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
		reject(a, fd, "unknown peer", "no credentials");
		return;
	}
	snprintf(who, sizeof(who), "pid %d", (int)(sent ? sent->pid : cred.pid));
	size_t attached = 0, of_uid = 0;
	for (struct proc *q = a->procs; q; q = q->next) {
		attached += q->state == PROC_ATTACHED;
		of_uid += q->state == PROC_ATTACHED && q->auth_uid == cred.uid;
	}
	if (attached >= a->cfg.max_procs) {
		reject(a, fd, who, "too many attached processes (--max-procs)");
		return;
	}
	if (cred.uid != 0 && of_uid >= agent_procs_per_uid(a)) {
		reject(a, fd, who, "too many attached processes of one uid (a quarter of --max-procs "
		       "per uid other than root)");
		return;
	}
	struct proc *p = calloc(1, sizeof(*p));
	if (!p) {
		reject(a, fd, who, "out of memory");
		return;
	}
	const char *why = NULL;
	if (map_ring(memfd, p, a->cfg.max_ring_size, &why) < 0) {
		free(p);
		reject(a, fd, who, why);
		return;
	}
	/* what it asks of the producers: keys for --keylog, nothing otherwise */
	__atomic_store_n(&p->ring->consumer_flags, keylog_ring_flags(a), __ATOMIC_RELEASE);
	/* The same ring attached again (the app closed our socket): one consumer only. */
	for (struct proc *q = a->procs; q; q = q->next) {
		if (q->ring && q->ring_dev == p->ring_dev && q->ring_ino == p->ring_ino) {
			munmap(p->ring, p->map_len);
			free(p);
			if (q->fd >= 0)
				agent_forget_fd(a, q->fd);
			q->fd = fd;
			q->closing = 0; /* attached again before its ring was drained */
			epoll_ctl(a->epfd, EPOLL_CTL_DEL, fd, NULL);
			watch(a, fd, TAG_PROC);
			return;
		}
	}
	p->key = pipeline_origin_new(a->pl);
	p->pid = sent ? sent->pid : cred.pid;
	p->uid = sent ? sent->uid : cred.uid;
	p->auth_pid = cred.pid;
	p->auth_uid = cred.uid;
	memcpy(p->comm, h->comm, sizeof(p->comm));
	p->comm[sizeof(p->comm) - 1] = 0;
	memcpy(p->exe, h->exe, sizeof(p->exe));
	p->exe[sizeof(p->exe) - 1] = 0;
	for (char *c = p->comm; *c; c++)
		if (*c < 0x20 || *c > 0x7e)
			*c = '?';
	p->fd = fd;
	p->state = PROC_ATTACHED;
	if (h->attach_gen > 0)
		proc_reattached(p, agent_now_ns());
	epoll_ctl(a->epfd, EPOLL_CTL_DEL, fd, NULL);
	if (watch(a, fd, TAG_PROC) < 0) {
		munmap(p->ring, p->map_len);
		free(p);
		reject(a, fd, who, "event loop full");
		return;
	}
	p->next = a->procs;
	a->procs = p;
	if (p->pid != p->auth_pid)
		log_info("attached pid %d uid %u (%s) through the socket of pid %d uid %u, "
			 "ring %zu KiB", (int)p->pid, (unsigned)p->uid, p->comm, (int)p->auth_pid,
			 (unsigned)p->auth_uid, (p->map_len - RING_HDR_SIZE) / 1024);
	else
		log_info("attached pid %d uid %u (%s), ring %zu KiB", (int)p->pid,
			 (unsigned)p->uid, p->comm, (p->map_len - RING_HDR_SIZE) / 1024);
	char hooks[1024];
	proc_read_drops(p); /* the ring's inline_* fields: set before it was shared */
	scan_summary(p->pid, p->inline_hooks_last > 0, hooks, sizeof(hooks));
	log_info("pid %d (%s): %s", (int)p->pid, p->comm, hooks);
	trim_exited(a);
}

static void reply_stats(struct agent *a, int fd)
{
	char *buf = malloc(CTL_STATS_MAX);
	if (buf) {
		size_t n = stats_format(a, buf, CTL_STATS_MAX);
		send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		free(buf);
	}
	agent_forget_fd(a, fd);
}

size_t agent_procs_per_uid(const struct agent *a)
{
	return a->cfg.max_procs / 4 ? a->cfg.max_procs / 4 : 1;
}

/* tlsmirror stats --json: one message, the socket's buffer raised to hold it
 * (SO_SNDBUFFORCE as root, else up to wmem_max); never waits. */
static void reply_json(struct agent *a, int fd)
{
	struct metric_set set;
	size_t n = 0;
	char *buf = NULL;
	if (!metrics_collect(a, &set)) {
		buf = metrics_json(&set, &n);
		metrics_free(&set);
	}
	if (buf && n <= CTL_STATS_JSON_MAX) {
		int sz = (int)n + 4096;
		if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) < 0)
			setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
		if (send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
			static const char e[] = "{\"error\":\"the answer does not fit the socket buffer\"}\n";
			send(fd, e, sizeof(e) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
		}
	}
	free(buf);
	agent_forget_fd(a, fd);
}

static int pending_has(const struct agent *a, int fd)
{
	for (size_t i = 0; i < a->n_pending; i++)
		if (a->pending[i].fd == fd)
			return 1;
	return 0;
}

static void pending_del(struct agent *a, int fd)
{
	for (size_t i = 0; i < a->n_pending; i++) {
		if (a->pending[i].fd == fd) {
			memmove(&a->pending[i], &a->pending[i + 1],
				(a->n_pending - i - 1) * sizeof(a->pending[0]));
			a->n_pending--;
			return;
		}
	}
}

/* Closes pending entry i (no hello yet), counted. */
static void pending_drop(struct agent *a, size_t i)
{
	int fd = a->pending[i].fd;
	pending_del(a, fd);
	agent_forget_fd(a, fd);
	a->pending_dropped++;
}

/*
 * A new control connection waits for its hello. Silent connections cannot
 * keep others out: over AGENT_PENDING_PER_UID of one uid, that uid's oldest
 * is closed; over AGENT_MAX_PENDING in all, the oldest; and each is closed
 * after AGENT_PENDING_TIMEOUT_NS (pending_expire). All counted.
 */
static void pending_add(struct agent *a, int fd, uid_t uid)
{
	static struct log_limit lim_uid, lim_all;
	size_t of_uid = 0, oldest = 0;
	for (size_t i = a->n_pending; i-- > 0;) {
		if (a->pending[i].uid == uid) {
			of_uid++;
			oldest = i;
		}
	}
	if (of_uid >= AGENT_PENDING_PER_UID) {
		pending_drop(a, oldest);
		log_limited(&lim_uid, 10, "more than %d control connections without a hello "
			    "from uid %u (per uid): closing its oldest", AGENT_PENDING_PER_UID,
			    (unsigned)uid);
	} else if (a->n_pending == AGENT_MAX_PENDING) {
		pending_drop(a, 0);
		log_limited(&lim_all, 10, "more than %d control connections without a hello: "
			    "closing the oldest", AGENT_MAX_PENDING);
	}
	a->pending[a->n_pending++] = (struct pending){ .fd = fd, .uid = uid,
						       .since_ns = agent_now_ns() };
}

/* Closes the control connections silent for longer than the timeout. */
static void pending_expire(struct agent *a, uint64_t now)
{
	static struct log_limit lim;
	while (a->n_pending && now - a->pending[0].since_ns > AGENT_PENDING_TIMEOUT_NS &&
	       now > a->pending[0].since_ns) {
		log_limited(&lim, 10, "closed a control connection of uid %u: no hello within "
			    "%llu s", (unsigned)a->pending[0].uid,
			    (unsigned long long)(AGENT_PENDING_TIMEOUT_NS / 1000000000ULL));
		pending_drop(a, 0);
	}
}

#define HELLO_MAX_FDS 4

/*
 * The descriptors a successful recvmsg delivered, all of them: walks only
 * the msg_controllen bytes the kernel filled, never trusts a cmsg_len beyond
 * them, and closes at once any beyond max (the caller closes the others).
 */
static int take_fds(struct msghdr *msg, int *fds, int max, struct ucred *sent)
{
	int nfd = 0;
	const uint8_t *end = (const uint8_t *)msg->msg_control + msg->msg_controllen;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_len < CMSG_LEN(0) || c->cmsg_len > (size_t)(end - (const uint8_t *)c))
			break;
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS &&
		    c->cmsg_len >= CMSG_LEN(sizeof(*sent)))
			memcpy(sent, CMSG_DATA(c), sizeof(*sent));
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (nfd < max)
				fds[nfd++] = fd;
			else
				close(fd);
		}
	}
	return nfd;
}

/* First message on a new control connection: an attach or a stats request.
 * over_budget: the descriptor budget is spent: a stats request is answered,
 * anything else (an attach, nothing yet) is closed at once. */
static void on_pending(struct agent *a, int fd, int over_budget)
{
	struct ctl_hello h;
	union {
		char buf[CMSG_SPACE(HELLO_MAX_FDS * sizeof(int)) + CMSG_SPACE(sizeof(struct ucred))];
		struct cmsghdr align;
	} cm;
	memset(&cm, 0, sizeof(cm));
	struct iovec iov = { .iov_base = &h, .iov_len = sizeof(h) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf) };
	ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0) {
		/* nothing was received: msg_control holds no descriptors */
		if (over_budget) {
			a->pending_dropped++;
			agent_forget_fd(a, fd);
		} else if (errno != EAGAIN && errno != EINTR) {
			pending_del(a, fd);
			agent_forget_fd(a, fd);
		}
		return;
	}
	pending_del(a, fd); /* from here on fd is attached, answered or closed */
	int fds[HELLO_MAX_FDS];
	struct ucred sent = { 0 };
	int nfd = take_fds(&msg, fds, HELLO_MAX_FDS, &sent);
	const char *why = NULL;
	if (n <= 0)
		why = "closed before saying hello";
	else if (msg.msg_flags & MSG_CTRUNC)
		why = "too many descriptors (control data truncated)";
	else if ((size_t)n != sizeof(h) || (msg.msg_flags & MSG_TRUNC))
		why = "hello of the wrong size";
	else if (h.magic != CTL_MAGIC || h.version != CTL_VERSION)
		why = "bad magic or version (a different tlsmirror version?)";
	else if (h.type == CTL_STATS && nfd == 0) {
		reply_stats(a, fd);
		return;
	} else if (h.type == CTL_STATS_JSON && nfd == 0) {
		reply_json(a, fd);
		return;
	} else if (h.type != CTL_ATTACH)
		why = "unknown message type";
	else if (nfd != 1)
		why = "attach without exactly one ring descriptor";
	else if (over_budget)
		why = "descriptor limit reached (RLIMIT_NOFILE less the reserve for outputs and "
		      "stats): raise it (ulimit -n, LimitNOFILE=) or lower --max-procs";
	if (why) {
		for (int i = 0; i < nfd; i++)
			close(fds[i]);
		if (n <= 0)
			agent_forget_fd(a, fd);
		else
			reject(a, fd, "a local process", why);
		return;
	}
	attach(a, fd, &h, fds[0], sent.pid > 0 ? &sent : NULL);
	close(fds[0]);
}

/* Out of descriptors with connections waiting: accept each with the spare
 * descriptor and close it at once, so the listening socket stops firing
 * (else the loop would spin on it). */
static void shed_backlog(struct agent *a, int lfd)
{
	static struct log_limit lim;
	if (a->spare_fd < 0)
		return;
	close(a->spare_fd);
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		a->fd_refused++;
	}
	a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	log_limited(&lim, 10, "out of file descriptors (limit %d): closed a control connection "
		    "unread", a->fd_limit);
}

#define ACCEPTS_PER_TURN 64    /* then the rings get their turn */

/* A refused peer's connection is closed before anything of it is read. */
static void on_accept(struct agent *a, int lfd)
{
	for (int k = 0; k < ACCEPTS_PER_TURN; k++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				shed_backlog(a, lfd);
			return;
		}
		uid_t uid;
		pid_t pid;
		if (!access_check(&a->access, fd, &uid, &pid)) {
			close(fd);
			continue;
		}
		/* the sender's own credentials on its attach (a child using a
		 * socket its parent connected) */
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
		if (fd >= a->fd_limit - AGENT_FD_RESERVE) {
			static struct log_limit lim;
			/* descriptors are numbered lowest first: fd is about how many are open */
			a->fd_refused++;
			log_limited(&lim, 10, "%d file descriptors open, limit %d less %d kept for "
				    "outputs and stats: only stats requests are answered (raise "
				    "ulimit -n / LimitNOFILE=)", fd, a->fd_limit, AGENT_FD_RESERVE);
			if (watch(a, fd, TAG_PENDING) < 0)
				close(fd);
			else
				on_pending(a, fd, 1);
			continue;
		}
		if (watch(a, fd, TAG_PENDING) < 0) {
			close(fd);
			continue;
		}
		pending_add(a, fd, uid);
		on_pending(a, fd, 0); /* the hello is usually there already */
	}
}

/* EOF or a doorbell on a process's control socket. */
static void on_proc(struct agent *a, int fd)
{
	struct proc *p = proc_by_fd(a, fd);
	if (!p) {
		agent_forget_fd(a, fd);
		return;
	}
	char buf[64];
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0)
			continue; /* doorbells: the drain loop does the work */
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		log_info("pid %d (%s) detached", (int)p->pid, p->comm);
		proc_closing(a, p);
		return;
	}
}

static void handle_events(struct agent *a, int timeout_ms)
{
	struct epoll_event evs[64];
	int n = epoll_wait(a->epfd, evs, 64, timeout_ms);
	for (int i = 0; i < n; i++) {
		uint64_t tag = evs[i].data.u64 >> 56;
		int fd = (int)(uint32_t)evs[i].data.u64;
		if (tag == 0) {
			struct agent_watch *w = evs[i].data.ptr;
			w->on_event(a, w, evs[i].events);
		} else if (tag == TAG_LISTEN) {
			on_accept(a, fd);
		} else if (tag == TAG_SIGNAL) {
			struct signalfd_siginfo si;
			if (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
				a->stop = 1;
		} else if (tag == TAG_PENDING) {
			if (pending_has(a, fd)) /* not closed as the oldest in this batch */
				on_pending(a, fd, 0);
		} else if (tag == TAG_PROC) {
			on_proc(a, fd);
		}
	}
}

static size_t poll_all(struct agent *a)
{
	size_t work = 0;
	for (size_t i = 0; i < a->n_src; i++)
		work += a->src[i].ops->poll(&a->src[i], POLL_BUDGET);
	return work;
}

/* Every source arms its wake-ups; 0 if one found work meanwhile. */
static int ready_to_sleep(struct agent *a)
{
	int work = 0;
	for (size_t i = 0; i < a->n_src; i++)
		work |= a->src[i].ops->prepare_sleep(&a->src[i]);
	return !work;
}

/* Every sink's output is gone for good (`-w - | head` after head exits):
 * there is nothing left to do, as tcpdump does on a broken pipe. */
static int outputs_gone(const struct agent *a)
{
	for (size_t i = 0; i < a->sinks.n; i++)
		if (!__atomic_load_n(&a->sinks.v[i]->ctr.broken, __ATOMIC_RELAXED))
			return 0;
	return (a->sinks.n || a->records.n) && records_gone(a);
}

static void loop(struct agent *a)
{
	while (!a->stop) {
		if (outputs_gone(a)) {
			log_warn("the output is closed (broken pipe): stopping");
			break;
		}
		uint64_t now = agent_now_ns();
		pending_expire(a, now);
		for (size_t i = 0; i < a->n_ticks; i++)
			a->ticks[i].run(a, now, a->ticks[i].arg);
		pipeline_tick(a->pl, now);
		size_t work = poll_all(a);
		if (work) {
			handle_events(a, 0);
			continue;
		}
		sink_set_flush(&a->sinks); /* record sinks: their workers flush by themselves (lazy) */
		if (ready_to_sleep(a))
			handle_events(a, (int)a->cfg.idle_ms);
		else
			handle_events(a, 0);
	}
}

/* Segments fit the smallest output MTU (IPv4: MTU-40; IPv6 MTU-60, as the
 * flow engine uses mss-20); -I IFACE lends its MAC to the host's end;
 * --dst-mac addresses every frame. */
static int delivery_config(struct agent *a, struct flow_config *fc)
{
	uint32_t mtu = sink_set_mtu(&a->sinks);
	if (mtu && mtu >= 40 + 64 && fc->mss > mtu - 40) {
		log_info("segments sized for the output MTU %u: MSS %u", mtu, mtu - 40);
		fc->mss = (uint16_t)(mtu - 40 > 65000 ? 65000 : mtu - 40);
	}
	memcpy(fc->dst_mac, a->cfg.sink.dst_mac, 6);
	fc->has_dst_mac = a->cfg.sink.has_dst_mac;
	const char *ifn = a->cfg.sink.src_iface;
	if (!ifn)
		return 0;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (strlen(ifn) >= IFNAMSIZ || fd < 0) {
		if (fd >= 0)
			close(fd);
		log_err("-I %s: not an interface name", ifn);
		return -EINVAL;
	}
	memcpy(ifr.ifr_name, ifn, strlen(ifn));
	int r = ioctl(fd, SIOCGIFHWADDR, &ifr);
	int e = errno;
	close(fd);
	if (r < 0) {
		log_err("-I %s: %s", ifn, e == ENODEV ? "no such interface (see 'ip link')" : strerror(e));
		return -e;
	}
	memcpy(fc->host_mac, ifr.ifr_hwaddr.sa_data, 6);
	fc->has_host_mac = 1;
	return 0;
}

/* Every attached process holds a control socket and, while idle, a socket a
 * parent connected for its child: the usual soft limit of 1024 descriptors
 * would refuse attaches well below --max-procs. Raised to the hard limit;
 * control connections may use all but AGENT_FD_RESERVE of it (on_accept). */
static int raise_fd_limit(const struct agent *a)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		struct rlimit want = { .rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max };
		if (setrlimit(RLIMIT_NOFILE, &want) == 0)
			rl = want;
		else
			log_warn("cannot raise the descriptor limit to %llu: %s",
				 (unsigned long long)rl.rlim_max, strerror(errno));
	}
	int lim = rl.rlim_cur > (1u << 30) ? (1 << 30) : (int)rl.rlim_cur;
	if ((size_t)lim < a->cfg.max_procs + AGENT_MAX_PENDING + 2 * AGENT_FD_RESERVE)
		log_warn("descriptor limit %d (ulimit -n): about %d control connections fit "
			 "besides the %d kept for outputs and stats, fewer than --max-procs %zu; "
			 "raise it (LimitNOFILE=) for that many processes", lim,
			 lim > 2 * AGENT_FD_RESERVE ? lim - 2 * AGENT_FD_RESERVE : 0,
			 AGENT_FD_RESERVE, a->cfg.max_procs);
	return lim;
}

/* The stage chain the options ask for, then the sources that feed it. */
static int chain_setup(struct agent *a)
{
	const struct agent_config *cfg = &a->cfg;
	struct pipeline_opts po = { .flow = { .mss = cfg->mss, .sinks = &a->sinks } };
	int err = delivery_config(a, &po.flow);
	if (err < 0)
		return err;
	po.flow.max_flows = cfg->max_conns;
	po.flow.max_flows_per_origin = cfg->max_conns_per_proc;
	po.max_h2_conns = cfg->max_h2_conns;
	po.max_h2_streams = cfg->max_h2_streams;
	po.records = a->rec;
	po.max_http_conns = cfg->max_http_conns;
	memcpy(po.arg, cfg->stage_arg, sizeof(po.arg));
	const char *why = NULL;
	a->pl = pipeline_new(&po, &why);
	if (!a->pl) {
		log_err("cannot set up the stages: %s", why ? why : "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < source_table_len && a->n_src < AGENT_MAX_SOURCES; i++) {
		struct source *s = &a->src[a->n_src];
		s->ops = source_table[i].ops;
		s->a = a;
		why = NULL;
		if (source_table[i].option && !source_table[i].enabled(cfg))
			continue;
		if ((err = s->ops->open(s, a, "", &why)) < 0) {
			if (why)
				log_err("cannot open the %s source: %s", s->ops->name, why);
			return err;
		}
		a->n_src++;
	}
	return 0;
}

static int setup(struct agent *a, const struct agent_config *cfg)
{
	const char *why = NULL;
	a->cfg = *cfg;
	if (!a->cfg.max_procs)
		a->cfg.max_procs = AGENT_DEFAULT_MAX_PROCS;
	if (!a->cfg.max_ring_size)
		a->cfg.max_ring_size = AGENT_DEFAULT_MAX_RING;
	a->started_ns = agent_now_ns();
	a->fd_limit = raise_fd_limit(a);
	a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	a->listen_fd = -1;
	a->abstract_fd = -1;
	a->sig_fd = -1;
	a->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (a->epfd < 0) {
		int e = errno; /* logging may change errno */
		log_err("cannot create the event loop: %s", strerror(e));
		return -e;
	}
	int err = outputs_open(a);
	if (err < 0)
		return err;
	/* several outputs, or a pipe: each behind its own bounded queue (sink.c), of
	 * --queue-size but at least the default: a small --queue-size is meant
	 * for the tunnel's buffer and must not starve a local file */
	struct sink_opts qo = cfg->sink;
	if (qo.queue_bytes < SINK_QUEUE_DEFAULT)
		qo.queue_bytes = SINK_QUEUE_DEFAULT;
	if ((a->sinks.n > 1 || sink_set_blocks(&a->sinks)) &&
	    (err = sink_set_start_queues(&a->sinks, &qo)) < 0) {
		log_err("cannot start the output queues: %s", strerror(-err));
		return err;
	}
	if ((err = records_open(a)) < 0)
		return err;
	if ((err = keylog_open(a)) < 0)
		return err;
	if ((err = chain_setup(a)) < 0)
		return err;
	if (cfg->metrics_addr && (err = metrics_open(a, cfg->metrics_addr)) < 0)
		return err;
	a->access = cfg->access;
	access_init(&a->access);
	/* tlsmirror decrypt without --socket: no control socket (nothing attaches) */
	if (cfg->socket_path) {
		a->listen_fd = listen_on(&a->access, cfg->socket_path, &why);
		if (a->listen_fd < 0) {
			log_err("cannot listen on %s: %s", cfg->socket_path, why ? why : "");
			return a->listen_fd;
		}
		struct stat st;
		if (lstat(cfg->socket_path, &st) == 0) {
			a->listen_dev = st.st_dev;
			a->listen_ino = st.st_ino;
		}
		a->abstract_fd = listen_abstract(cfg->socket_path);
		if (a->abstract_fd >= 0 && watch(a, a->abstract_fd, TAG_LISTEN) < 0) {
			close(a->abstract_fd);
			a->abstract_fd = -1;
		}
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	a->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (a->sig_fd < 0 || (a->listen_fd >= 0 && watch(a, a->listen_fd, TAG_LISTEN) < 0) ||
	    watch(a, a->sig_fd, TAG_SIGNAL) < 0) {
		int e = errno;
		log_err("cannot set up the event loop: %s", strerror(e));
		return -e;
	}
	return 0;
}

/* Everything the applications handed over is written before we exit. */
static void teardown(struct agent *a, int ran)
{
	for (size_t i = 0; i < a->n_src; i++)
		a->src[i].ops->drain(&a->src[i]);
	if (a->pl)
		pipeline_close_all(a->pl, agent_now_ns());
	sink_set_drain(&a->sinks);
	records_drain(a);
	char *buf = ran ? malloc(CTL_STATS_MAX) : NULL;
	if (buf) {
		size_t n = stats_format(a, buf, CTL_STATS_MAX);
		fwrite(buf, 1, n, stderr);
		free(buf);
	}
	metrics_close(a);
	sink_set_close(&a->sinks);
	if (a->listen_fd >= 0) {
		/* ours only: not what another agent (or anyone) put there since */
		struct stat st;
		close(a->listen_fd);
		if (lstat(a->cfg.socket_path, &st) == 0 && S_ISSOCK(st.st_mode) &&
		    st.st_dev == a->listen_dev && st.st_ino == a->listen_ino)
			unlink(a->cfg.socket_path);
	}
	if (a->abstract_fd >= 0)
		close(a->abstract_fd);
	while (a->procs) {
		struct proc *p = a->procs;
		a->procs = p->next;
		if (p->ring)
			munmap(p->ring, p->map_len);
		if (p->fd >= 0)
			close(p->fd);
		conn_meta_unref(p->spare_meta);
		free(p);
	}
	for (size_t i = 0; i < a->n_src; i++)
		if (a->src[i].ops->close)
			a->src[i].ops->close(&a->src[i]);
	pipeline_free(a->pl);
	records_close(a); /* after the chain: a stage's last exchanges end there */
	keylog_close(a);
	if (a->sig_fd >= 0)
		close(a->sig_fd);
	if (a->spare_fd >= 0)
		close(a->spare_fd);
	if (a->epfd >= 0)
		close(a->epfd);
}

int agent_run(const struct agent_config *cfg)
{
	struct agent a;
	memset(&a, 0, sizeof(a));
	a.epfd = -1;
	a.spare_fd = -1;
	int err = setup(&a, cfg);
	if (!err) {
		if (cfg->decrypt)
			log_info("decrypting, %zu output%s%s", a.sinks.n, a.sinks.n == 1 ? "" : "s",
				 a.records.n ? " and HTTP records" : "");
		else if (a.records.n)
			log_info("listening on %s, %zu output%s, %zu for HTTP records", cfg->socket_path,
				 a.sinks.n, a.sinks.n == 1 ? "" : "s", a.records.n);
		else
			log_info("listening on %s, %zu output%s", cfg->socket_path, a.sinks.n,
				 a.sinks.n == 1 ? "" : "s");
		loop(&a);
	}
	teardown(&a, !err);
	return err;
}
