/* One attached process: validates its ring records and feeds them to the flow engine (HTTP/2 via the --h2-to-h1 converter). */
#include "agent/agent.h"
#include "common/log.h"
#include "transforms/h2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int str_ok(const char *s, size_t n)
{
	return memchr(s, 0, n) != NULL;
}

/* A bad record inside a well-formed ring: skipped and counted. */
static void bad_record(struct proc *p, const char *why)
{
	static struct log_limit lim;
	p->bad_records++;
	log_limited(&lim, 5, "pid %d (%s): ring record rejected: %s", (int)p->pid,
		    p->comm, why);
}

#define DRAIN_NEST_MAX 4   /* parents drained from within a child's drain */
static struct proc *draining[DRAIN_NEST_MAX];
static int n_draining;

/* Parent pid of pid from /proc/<pid>/stat, or -1. */
static pid_t ppid_of(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	const char *e = strrchr(buf, ')'); /* comm may hold anything */
	int pp;
	if (!e || sscanf(e + 1, " %*c %d", &pp) != 1)
		return -1;
	return (pid_t)pp;
}

/* Is pid a descendant of anc (a few generations at most)? -1: pid is gone. */
static int descends_from(pid_t pid, pid_t anc)
{
	for (int i = 0; i < 16 && pid > 1; i++) {
		pid = ppid_of(pid);
		if (pid == anc)
			return 1;
		if (pid < 0 && i == 0)
			return -1;
	}
	return 0;
}

static void expire_tick(struct agent *a, uint64_t now_ns, void *arg)
{
	flow_expire(a->flows, now_ns);
}

/* Flows released for a child (fork handover) end on time: a tick, once. */
static void start_expiry(struct agent *a)
{
	static int ticking;
	if (!ticking)
		ticking = agent_add_tick(a, (struct agent_tick){ expire_tick, NULL }) == 0;
}

/*
 * An OPEN inherited over fork: the process it names as parent, if that is
 * plausible: still attached and an ancestor of p (or of the same uid when p
 * has exited already), or gone (its orphan can't be checked). Its ring is drained first, so what it wrote before the
 * fork is placed before the child's data. Returns its key, or 0.
 */
static uint64_t inherited_from(struct agent *a, struct proc *p, uint32_t parent_pid,
			       const struct flow_open_info *fi)
{
	struct proc *q = a->procs;
	while (q && (q == p || (uint32_t)q->pid != parent_pid))
		q = q->next;
	if (!q)
		return 0;
	int busy = n_draining >= DRAIN_NEST_MAX;
	for (int i = 0; i < n_draining; i++)
		busy |= draining[i] == q;
	if (q->ring && !busy)
		proc_drain(a, q, (size_t)-1);
	/* nothing to continue: spare the /proc reads (a producer may lie) */
	if (!flow_tuple_busy(a->flows, fi->family, fi->client_addr, fi->client_port,
			     fi->server_addr, fi->server_port))
		return 0;
	if (q->state == PROC_ATTACHED) {
		int d = descends_from(p->pid, q->pid);
		if (d == 0 || (d < 0 && q->uid != p->uid))
			return 0;
	}
	return q->key;
}

static void on_open(struct agent *a, struct proc *p, const struct ring_view *v)
{
	struct ring_open o;
	if (v->data_len != sizeof(o)) {
		bad_record(p, "OPEN record of the wrong size");
		return;
	}
	memcpy(&o, v->data, sizeof(o)); /* one copy: the producer may still write */
	if ((o.family != 4 && o.family != 6) || o.side > 1 ||
	    o.map_method < RING_MAP_FD || o.map_method > RING_MAP_SYNTHETIC ||
	    !str_ok(o.sni, sizeof(o.sni)) || !str_ok(o.alpn, sizeof(o.alpn)) ||
	    !str_ok(o.cipher, sizeof(o.cipher)) || v->conn_id == 0) {
		bad_record(p, "OPEN record with invalid fields");
		return;
	}
	struct flow_open_info fi;
	memset(&fi, 0, sizeof(fi));
	fi.proc_key = p->key;
	fi.conn_id = v->conn_id;
	fi.ts_ns = v->ts_ns;
	fi.family = o.family;
	fi.side = o.side;
	fi.midstream = o.midstream;
	fi.client_port = o.client_port;
	fi.server_port = o.server_port;
	memcpy(fi.client_addr, o.client_addr, 16);
	memcpy(fi.server_addr, o.server_addr, 16);
	fi.off[0] = o.off[0];
	fi.off[1] = o.off[1];
	if (o.flags & RING_OPEN_F_INHERITED)
		fi.parent_key = inherited_from(a, p, o.parent_pid, &fi);
	int err = 0;
	if (a->cfg.h2_to_h1 && !a->h2)
		a->h2 = h2_table_new(a->flows);
	if (a->cfg.h2_to_h1 && a->h2)
		err = h2_open(a->h2, &fi, o.alpn); /* 1: the converter has it */
	if (err == 0 || err == -ENOMEM)
		err = flow_open(a->flows, &fi);
	if (err == -EEXIST)
		return; /* announced again after a re-attach: same connection */
	if (err == -ENFILE || err == -EMFILE)
		return; /* over a cap: the flow engine counted it and logged it once */
	if (err < 0) {
		static struct log_limit lim;
		log_limited(&lim, 5, "cannot track a connection of pid %d: %s",
			    (int)p->pid, strerror(-err));
		return;
	}
	p->conns++;
	p->open_conns++;
}

/*
 * Clear text to the HTTP/2 converter if it owns the connection, else to the
 * flow engine. data points into the producer's shared memory, which may
 * change while we read it: neither reader parses it in place. The flow engine
 * checksums it and the sinks copy it out; the converter copies every frame
 * header and every non-DATA frame into its own buffer before parsing it
 * (h2_frames.c collect()) and passes DATA bodies through unparsed (PADLEN,
 * one byte, is read once). Keep it so: a parser reading shared bytes twice is
 * a check-then-use bug (docs/ring.md).
 */
static int mirror_data(struct agent *a, uint64_t key, uint64_t conn_id, int dir, uint64_t ts,
		       uint64_t off, const uint8_t *data, size_t len, uint64_t *gap)
{
	if (a->h2) {
		int err = h2_data(a->h2, key, conn_id, dir, ts, off, data, len, gap);
		if (err != -ENOENT)
			return err;
	}
	return flow_data(a->flows, key, conn_id, dir, ts, off, data, len, gap);
}

static void on_data(struct agent *a, struct proc *p, const struct ring_view *v)
{
	int dir = (v->flags & RING_F_DIR_S2C) ? 1 : 0;
	uint64_t gap = 0;
	int err;
	if (v->type == RING_REC_GAP) {
		uint64_t len;
		if (v->data_len != sizeof(len)) {
			bad_record(p, "GAP record of the wrong size");
			return;
		}
		memcpy(&len, v->data, sizeof(len));
		err = a->h2 ? h2_gap(a->h2, p->key, v->conn_id, dir, v->ts_ns, len) : -ENOENT;
		if (err == -ENOENT)
			err = flow_gap(a->flows, p->key, v->conn_id, dir, v->ts_ns, len);
		if (!err)
			p->gap_bytes += len;
	} else {
		err = mirror_data(a, p->key, v->conn_id, dir, v->ts_ns,
				  v->stream_off, v->data, v->data_len, &gap);
		if (!err) {
			p->bytes[dir] += v->data_len;
			p->gap_bytes += gap;
		}
	}
	if (err == -ENOENT)
		p->orphan_records++;
	else if (err == -ERANGE)
		bad_record(p, "DATA record behind what was already mirrored");
}

static void on_close(struct agent *a, struct proc *p, const struct ring_view *v)
{
	uint64_t off[2];
	if (v->data_len == sizeof(off)) {
		/* final offsets: what was dropped at the very end is a gap */
		memcpy(off, v->data, sizeof(off));
		for (int d = 0; d < 2; d++) {
			uint64_t gap = 0;
			if (!mirror_data(a, p->key, v->conn_id, d, v->ts_ns, off[d],
					 NULL, 0, &gap))
				p->gap_bytes += gap;
		}
	} else if (v->data_len) {
		bad_record(p, "CLOSE record of the wrong size");
	}
	int err = a->h2 ? h2_close(a->h2, p->key, v->conn_id, v->ts_ns) : -ENOENT;
	if (err == -ENOENT && (v->flags & RING_F_CLOSE_HANDOVER)) {
		err = flow_release(a->flows, p->key, v->conn_id, v->ts_ns);
		start_expiry(a);
	} else if (err == -ENOENT)
		err = flow_close(a->flows, p->key, v->conn_id, v->ts_ns);
	if (err == 0 && p->open_conns)
		p->open_conns--;
}

static void on_record(struct agent *a, struct proc *p, const struct ring_view *v)
{
	if (v->conn_id & H2_CONN_ID_BIT) {
		/* the ids of synthetic flows (HTTP/2 streams): a record must never reach one */
		bad_record(p, "connection id in the range of synthetic flows");
		return;
	}
	switch (v->type) {
	case RING_REC_OPEN:
		on_open(a, p, v);
		break;
	case RING_REC_DATA:
	case RING_REC_GAP:
		on_data(a, p, v);
		break;
	case RING_REC_CLOSE:
		on_close(a, p, v);
		break;
	case RING_REC_FORK:
		flow_proc_forked(a->flows, p->key);
		start_expiry(a);
		break;
	default:
		break;
	}
}

size_t proc_drain(struct agent *a, struct proc *p, size_t budget)
{
	size_t n = 0;
	struct ring_view v;
	if (n_draining < DRAIN_NEST_MAX)
		draining[n_draining++] = p;
	while (p->ring && n < budget) {
		int err = ring_peek(&p->cons, &v);
		if (err == -EAGAIN)
			break;
		if (err < 0) {
			static struct log_limit lim;
			p->bad_records++;
			log_limited(&lim, 5, "pid %d (%s): malformed ring at position %llu: "
				    "detaching it (what came before was mirrored)", (int)p->pid,
				    p->comm, (unsigned long long)p->cons.tail);
			proc_finish(a, p, PROC_REJECTED);
			break;
		}
		on_record(a, p, &v);
		ring_release(&p->cons);
		n++;
	}
	if (p->ring) {
		ring_publish(&p->cons);
		if (n && !p->bypass_logged)
			proc_read_drops(p);
	}
	if (n_draining && draining[n_draining - 1] == p)
		n_draining--;
	return n;
}

void proc_read_drops(struct proc *p)
{
	if (!p->ring)
		return;
	for (int i = 0; i < RING_DROP_NREASONS; i++)
		p->drop_last[i] = __atomic_load_n(&p->ring->drop_bytes[i], __ATOMIC_RELAXED);
	/* counters only grow: a smaller value is the producer's lie, ignored */
	uint64_t b = __atomic_load_n(&p->ring->bypassed_conns, __ATOMIC_RELAXED);
	uint64_t u = __atomic_load_n(&p->ring->unpatched_objs, __ATOMIC_RELAXED);
	if (b > p->bypassed_last)
		p->bypassed_last = b;
	if (u > p->unpatched_last)
		p->unpatched_last = u;
	if ((p->bypassed_last || p->unpatched_last) && !p->bypass_logged) {
		p->bypass_logged = 1;
		log_warn("pid %d (%s): TLS calls bypass the capture hooks (%llu connection(s) "
			"with holes, %llu object(s) not patched): see docs/capture.md, RTLD_DEEPBIND",
			(int)p->pid, p->comm, (unsigned long long)p->bypassed_last,
			(unsigned long long)p->unpatched_last);
	}
}

void proc_finish(struct agent *a, struct proc *p, enum proc_state why)
{
	if (p->ring && why == PROC_EXITED)
		proc_drain(a, p, (size_t)-1);
	if (p->ring) {
		proc_read_drops(p);
		if (a->h2)
			h2_close_proc(a->h2, p->key, agent_now_ns());
		flow_close_proc(a->flows, p->key, agent_now_ns());
		munmap(p->ring, p->map_len);
		p->ring = NULL;
	}
	p->open_conns = 0;
	if (p->fd >= 0) {
		agent_forget_fd(a, p->fd);
		p->fd = -1;
	}
	p->state = why;
}
