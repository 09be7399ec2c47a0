/* The ring source: each attached process's ring records, validated, become connection events for the chain. */
#include "agent/agent.h"
#include "common/log.h"
#include "common/text.h"
#include "pipeline/pipeline.h"
#include "sources/source.h"

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

/* The child and the parent it names, for the check the flow engine asks
 * for only when there is a flow to continue (a producer may lie: no /proc
 * reads for every OPEN it sends). */
struct lineage {
	struct proc *child, *parent;
};

/* Plausible: the parent is still attached and an ancestor of the child (or
 * of the same uid when the child has exited already), or gone. */
static int parent_plausible(const struct conn_open *o, void *arg)
{
	const struct lineage *l = arg;
	if (l->parent->state != PROC_ATTACHED)
		return 1;
	int d = descends_from(l->child->pid, l->parent->pid);
	return d > 0 || (d < 0 && l->parent->uid == l->child->uid);
}

/*
 * An OPEN inherited over fork: the process it names as parent, if still
 * known. Its ring is drained first, so what it wrote before the fork is
 * placed before the child's data. Returns it, or NULL.
 */
static struct proc *inherited_from(struct agent *a, struct proc *p, uint32_t parent_pid)
{
	struct proc *q = a->procs;
	while (q && (q == p || (uint32_t)q->pid != parent_pid))
		q = q->next;
	if (!q)
		return NULL;
	int busy = n_draining >= DRAIN_NEST_MAX;
	for (int i = 0; i < n_draining; i++)
		busy |= draining[i] == q;
	if (q->ring && !busy)
		proc_drain(a, q, (size_t)-1);
	return q;
}

/* Copies a validated string of the ring into the metadata: control and
 * non-ASCII bytes become '?', so sinks may print it as it is. */
static void meta_str(char *dst, size_t cap, const char *src)
{
	size_t i = 0;
	for (; i + 1 < cap && src[i]; i++)
		dst[i] = (src[i] < 0x20 || src[i] > 0x7e) ? '?' : src[i];
	dst[i] = 0;
}

/* Who saw it: one block per connection, shared by every stage and sink. The
 * block of an OPEN nobody kept (refused over a cap, announced again) is
 * reused for the next: a flood of refused OPENs allocates nothing. */
static struct conn_meta *make_meta(struct proc *p, const struct ring_open *o)
{
	struct conn_meta *m = p->spare_meta;
	p->spare_meta = NULL;
	if (m) {
		memset(m, 0, sizeof(*m));
		m->refs = 1;
	} else if (!(m = conn_meta_new())) {
		return NULL;
	}
	m->kind = CONN_KIND_CAPTURE;
	m->side = o->side;
	m->map_method = o->map_method;
	m->tls_version = o->tls_version;
	m->real_server_port = o->server_port;
	m->pid = (uint32_t)p->pid;
	m->uid = (uint32_t)p->uid;
	memcpy(m->comm, p->comm, sizeof(m->comm)); /* sanitized at attach */
	meta_str(m->sni, sizeof(m->sni), o->sni);
	meta_str(m->alpn, sizeof(m->alpn), o->alpn);
	meta_str(m->cipher, sizeof(m->cipher), o->cipher);
	m->flags = o->midstream ? CONN_META_MIDSTREAM : 0;
	return m;
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
	struct conn_open fi;
	memset(&fi, 0, sizeof(fi));
	fi.id.origin = p->key;
	fi.id.conn = v->conn_id;
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
	struct lineage lin = { p, NULL };
	if ((o.flags & RING_OPEN_F_INHERITED) && (lin.parent = inherited_from(a, p, o.parent_pid))) {
		fi.parent_origin = lin.parent->key;
		fi.parent_ok = parent_plausible;
		fi.parent_arg = &lin;
	}
	struct conn_meta *m = make_meta(p, &o);
	if (!m) {
		bad_record(p, "no memory for the connection's metadata");
		return;
	}
	fi.meta = m;
	int err = pipeline_open(a->pl, &fi);
	if (conn_meta_sole(m))
		p->spare_meta = m;
	else
		conn_meta_unref(m); /* the stages took their references */
	if (err == -EEXIST)
		return; /* announced again after a re-attach: same connection */
	if (err == -ENFILE || err == -EMFILE) {
		p->refused_conns++; /* over a cap: the flow engine logged it once */
		return;
	}
	if (err < 0) {
		static struct log_limit lim;
		log_limited(&lim, 5, "cannot track a connection of pid %d: %s",
			    (int)p->pid, strerror(-err));
		return;
	}
	p->conns++;
	p->open_conns++;
	const char *owner = pipeline_owner(a->pl, &fi.id);
	if (owner && !strcmp(owner, "dedup"))
		p->duplicate_conns++; /* the other end's producer shows it */
	p->synthetic_conns += o.map_method == RING_MAP_SYNTHETIC;
	p->midstream_conns += o.midstream != 0;
}

/*
 * Clear text to the connection's owner in the chain. data points into the
 * producer's shared memory, which may change while we read it: no stage
 * parses it in place. The flow engine checksums it and the sinks copy it
 * out; the HTTP/2 stage copies every frame header and every non-DATA frame
 * into its own buffer before parsing it (h2_frames.c collect()) and passes
 * DATA bodies through unparsed (PADLEN, one byte, is read once). Keep it
 * so: a stage reading shared bytes twice is a check-then-use bug
 * (docs/ring.md, docs/pipeline.md).
 */
static int mirror_data(struct agent *a, struct proc *p, const struct conn_id *id, int dir,
		       uint64_t ts, uint64_t off, const uint8_t *data, size_t len, uint64_t *gap)
{
	int err = pipeline_data(a->pl, id, dir, ts, off, data, len, gap);
	if (err == -ENOENT)
		p->orphan_bytes += len;
	return err;
}

static void on_data(struct agent *a, struct proc *p, const struct ring_view *v)
{
	struct conn_id id = { p->key, v->conn_id };
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
		err = pipeline_gap(a->pl, &id, dir, v->ts_ns, len);
		if (!err)
			p->gap_bytes += len;
	} else {
		err = mirror_data(a, p, &id, dir, v->ts_ns, v->stream_off, v->data, v->data_len,
				  &gap);
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
	struct conn_id id = { p->key, v->conn_id };
	uint64_t off[2];
	if (v->data_len == sizeof(off)) {
		/* final offsets: what was dropped at the very end is a gap */
		memcpy(off, v->data, sizeof(off));
		for (int d = 0; d < 2; d++) {
			uint64_t gap = 0;
			if (!mirror_data(a, p, &id, d, v->ts_ns, off[d], NULL, 0, &gap))
				p->gap_bytes += gap;
		}
	} else if (v->data_len) {
		bad_record(p, "CLOSE record of the wrong size");
	}
	unsigned flags = (v->flags & RING_F_CLOSE_HANDOVER) ? CONN_CLOSE_HANDOVER : 0;
	int err = pipeline_close(a->pl, &id, v->ts_ns, flags); /* -ENOENT: the chain counts it */
	if (err == 0 && p->open_conns)
		p->open_conns--;
}

static void on_record(struct agent *a, struct proc *p, const struct ring_view *v)
{
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
		pipeline_origin(a->pl, p->key, ORIGIN_FORKED, v->ts_ns);
		break;
	case RING_REC_KEY: {
		const char *why = NULL;
		if (keylog_record(a, v, &why) < 0)
			bad_record(p, why);
		break;
	}
	case RING_REC_TUPLE: {
		const char *why = NULL;
		if (keylog_tuple(a, v, &why) < 0)
			bad_record(p, why);
		break;
	}
	default:
		break;
	}
}

/*
 * Record timestamps are the producer's word: kept within TS_PAST_NS before
 * and TS_FUTURE_NS after the agent's clock (now: the drain's start), the
 * ones outside moved to the nearest edge and counted (clamped_ts), the
 * first of each process logged. Records older than an hour can be genuine
 * (a ring that waited for an agent that long): they are shown at the edge.
 */
#define TS_PAST_NS (3600ull * 1000000000)
#define TS_FUTURE_NS (2ull * 1000000000)

static uint64_t clamp_ts(struct proc *p, uint64_t ts, uint64_t now, int count)
{
	uint64_t lo = now > TS_PAST_NS ? now - TS_PAST_NS : 0, hi = now + TS_FUTURE_NS;
	if (ts >= lo && ts <= hi)
		return ts;
	if (count && !p->clamped_ts++)
		log_warn("pid %d (%s): a ring record's timestamp is %.0f s %s the agent's clock: "
			 "shown at the edge of the window (1 h before, 2 s after), counted as "
			 "clamped_ts", (int)p->pid, p->comm,
			 ts < lo ? ((double)now - (double)ts) / 1e9 : ((double)ts - (double)now) / 1e9,
			 ts < lo ? "behind" : "ahead of");
	return ts < lo ? lo : hi;
}

/*
 * Agent restarts. The library notices that its agent is gone at its next
 * check (at most a second later) and only then announces every connection
 * again (a midstream OPEN with its stream offsets); what it wrote between
 * the old agent's last read and that moment comes first in the ring, ahead
 * of the OPEN. Those records are not orphans: the drain of a ring attached
 * before looks ahead for the connection's OPEN and opens the connection at
 * the first offset of its records before it, so they are delivered. While
 * the OPEN may still come (REANNOUNCE_WAIT_NS after the attach, the ring
 * less than half full, the process still attached) the drain waits for it
 * rather than count the records as orphans.
 */
#define REANNOUNCE_WAIT_NS (2500ull * 1000000)  /* the library checks once a second */
#define REANNOUNCE_SCAN_NS (30ull * 1000000000)  /* look-aheads only this long after attach */
#define LOOKAHEAD_RECORDS (1u << 20)             /* records read ahead per attachment */

void proc_reattached(struct proc *p, uint64_t now_ns)
{
	p->reannounce_wait_ns = now_ns + REANNOUNCE_WAIT_NS;
	p->reannounce_scan_ns = now_ns + REANNOUNCE_SCAN_NS;
	p->lookahead_left = LOOKAHEAD_RECORDS;
}

/* v (DATA, GAP or CLOSE, the record at the tail) belongs to a connection the
 * chain does not know: finds its OPEN further on, before end. Returns 1 when
 * the connection was opened from it, 0 when not (v is an orphan), -EAGAIN
 * when the drain should wait for it (p->waiting: a later call goes on where
 * this one stopped, no record is read ahead twice). */
static int reannounce_ahead(struct agent *a, struct proc *p, const struct ring_view *v,
			    uint64_t end, uint64_t now)
{
	int resume = p->waiting;
	p->waiting = 0;
	if (now >= p->reannounce_scan_ns || !p->lookahead_left) {
		p->reannounce_scan_ns = 0;
		return 0;
	}
	struct conn_id id = { p->key, v->conn_id };
	if (pipeline_owner(a->pl, &id))
		return 0; /* known: the usual case */
	uint64_t first[2] = { UINT64_MAX, UINT64_MAX };
	struct ring_view w = *v;
	uint64_t pos = p->cons.tail, next = p->cons.tail + p->cons.pending;
	if (resume) {
		first[0] = p->wait_first[0];
		first[1] = p->wait_first[1];
		next = p->wait_pos;
		w.conn_id = 0; /* seen already */
	}
	for (;;) {
		if (w.conn_id == v->conn_id && (w.type == RING_REC_DATA || w.type == RING_REC_GAP)) {
			int d = (w.flags & RING_F_DIR_S2C) ? 1 : 0;
			if (w.stream_off < first[d])
				first[d] = w.stream_off;
		}
		if (w.conn_id == v->conn_id && w.type == RING_REC_CLOSE)
			return 0; /* closed before it was announced again */
		pos = next;
		if (pos >= end || !p->lookahead_left)
			break;
		if (ring_peek_at(&p->cons, pos, &w, &next) < 0)
			break; /* not committed yet, or bad: the drain meets it in turn */
		p->lookahead_left--;
		if (w.conn_id != v->conn_id || w.type != RING_REC_OPEN)
			continue;
		struct ring_open o;
		if (w.data_len != sizeof(o))
			return 0;
		memcpy(&o, w.data, sizeof(o)); /* one copy: on_open checks it */
		w.ts_ns = clamp_ts(p, w.ts_ns, now, 0); /* counted when the drain gets there */
		for (int d = 0; d < 2; d++) {
			if (first[d] < o.off[d]) {
				o.off[d] = first[d];
				o.midstream = 1;
			}
		}
		w.data = (const uint8_t *)&o;
		uint64_t before = p->conns;
		on_open(a, p, &w);
		if (!pipeline_owner(a->pl, &id))
			return 0;
		p->continued_conns += p->conns > before;
		return 1;
	}
	if (now < p->reannounce_wait_ns && p->state == PROC_ATTACHED && !p->closing &&
	    end - p->cons.tail < p->cons.size / 2 && p->lookahead_left) {
		p->waiting = 1;
		p->wait_pos = pos;
		p->wait_first[0] = first[0];
		p->wait_first[1] = first[1];
		return -EAGAIN;
	}
	return 0;
}

#define DRAIN_BYTES (4u << 20) /* payload bytes per ring per turn (a budgeted drain): fairness */

/* Where a drain stops: what was committed when it began (a producer that
 * feeds as fast as we read cannot hold us), for a ring whose process closed
 * its socket what was there at the close. At most one ring ahead of us,
 * whatever the producer wrote into head. */
static uint64_t drain_end(const struct proc *p)
{
	if (p->closing)
		return p->stop_at;
	uint64_t head = __atomic_load_n(&p->ring->head, __ATOMIC_ACQUIRE);
	uint64_t tail = p->cons.tail;
	return head >= tail && head - tail <= p->cons.size ? head : tail + p->cons.size;
}

size_t proc_drain(struct agent *a, struct proc *p, size_t budget)
{
	size_t n = 0;
	uint64_t bytes = 0;
	struct ring_view v;
	int idle = 0;
	if (!p->ring)
		return 0;
	uint64_t end = drain_end(p), now = agent_now_ns();
	if (n_draining < DRAIN_NEST_MAX)
		draining[n_draining++] = p;
	while (p->ring && n < budget) {
		if (p->cons.tail >= end || (budget != (size_t)-1 && bytes >= DRAIN_BYTES)) {
			idle = p->cons.tail >= end;
			break;
		}
		int err = ring_peek(&p->cons, &v);
		if (err == -EAGAIN) {
			idle = 1;
			break;
		}
		if (err < 0) {
			static struct log_limit lim;
			p->bad_records++;
			log_limited(&lim, 5, "pid %d (%s): malformed ring at position %llu: "
				    "detaching it (what came before was mirrored)", (int)p->pid,
				    p->comm, (unsigned long long)p->cons.tail);
			proc_finish(a, p, PROC_REJECTED);
			break;
		}
		v.ts_ns = clamp_ts(p, v.ts_ns, now, 1);
		if (p->reannounce_scan_ns && v.type != RING_REC_OPEN && v.type != RING_REC_FORK &&
		    reannounce_ahead(a, p, &v, end, now) == -EAGAIN) {
			idle = 0; /* its OPEN may still come: wait, records stay in the ring */
			break;
		}
		on_record(a, p, &v);
		bytes += v.data_len;
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
	if (p->ring && p->closing && idle)
		proc_finish(a, p, PROC_EXITED); /* all it wrote before closing is mirrored */
	return n;
}

void proc_closing(struct agent *a, struct proc *p)
{
	if (p->fd >= 0) {
		agent_forget_fd(a, p->fd);
		p->fd = -1;
	}
	if (!p->ring) {
		p->state = PROC_EXITED;
		return;
	}
	p->stop_at = drain_end(p);
	p->closing = 1;
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
	p->tls_last |= __atomic_load_n(&p->ring->tls_backends, __ATOMIC_RELAXED) &
		       (RING_TLS_OPENSSL | RING_TLS_GNUTLS | RING_TLS_OPENSSL_STATIC);
	uint64_t ih = __atomic_load_n(&p->ring->inline_hooks, __ATOMIC_RELAXED);
	uint64_t ir = __atomic_load_n(&p->ring->inline_refused, __ATOMIC_RELAXED);
	if (ih > p->inline_hooks_last)
		p->inline_hooks_last = ih;
	if (ir > p->inline_refused_last)
		p->inline_refused_last = ir;
	if ((p->inline_hooks_last || p->inline_refused_last) && !p->inline_logged) {
		/* the producer's text: a private copy, cut, printable only */
		char why[RING_INLINE_WHY];
		memcpy(why, (const void *)p->ring->inline_why, sizeof(why));
		why[sizeof(why) - 1] = 0;
		for (char *c = why; *c; c++)
			if (*c < 0x20 || *c > 0x7e)
				*c = '?';
		p->inline_logged = 1;
		if (p->inline_refused_last)
			log_warn("pid %d (%s): OpenSSL linked into the program NOT hooked "
				 "(%llu function(s) left alone): %s", (int)p->pid, p->comm,
				 (unsigned long long)p->inline_refused_last, why[0] ? why : "no reason given");
		else
			log_info("pid %d (%s): OpenSSL linked into the program hooked in place "
				 "(%llu functions)", (int)p->pid, p->comm,
				 (unsigned long long)p->inline_hooks_last);
	}
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
	if (p->ring && why == PROC_EXITED && !p->closing)
		proc_drain(a, p, (size_t)-1);
	p->closing = 0;
	if (p->ring) {
		proc_read_drops(p);
		pipeline_origin(a->pl, p->key, ORIGIN_CLOSED, agent_now_ns());
		munmap(p->ring, p->map_len);
		p->ring = NULL;
	}
	p->open_conns = 0;
	conn_meta_unref(p->spare_meta);
	p->spare_meta = NULL;
	if (p->fd >= 0) {
		agent_forget_fd(a, p->fd);
		p->fd = -1;
	}
	p->state = why;
	p->exited_ns = agent_now_ns();
}

/* ---- the source ---- */

#define DRAIN_BUDGET 4096     /* records per process per turn: fairness */

static int rs_open(struct source *s, struct agent *a, const char *arg, const char **why)
{
	s->priv = a;
	return 0;
}

static size_t rs_poll(struct source *s, size_t budget)
{
	struct agent *a = s->priv;
	size_t work = 0;
	for (struct proc *p = a->procs; p; p = p->next) {
		if (!p->ring)
			continue;
		/* awake again: producers need not ring the doorbell */
		if (__atomic_load_n(&p->ring->consumer_sleeping, __ATOMIC_RELAXED))
			__atomic_store_n(&p->ring->consumer_sleeping, 0, __ATOMIC_RELAXED);
		work += proc_drain(a, p, budget < DRAIN_BUDGET ? budget : DRAIN_BUDGET);
	}
	return work;
}

/* Tells producers we sleep, then checks once more so no wake-up is lost. */
static int rs_prepare_sleep(struct source *s)
{
	struct agent *a = s->priv;
	int work = 0;
	for (struct proc *p = a->procs; p; p = p->next) {
		if (!p->ring)
			continue;
		__atomic_store_n(&p->ring->consumer_sleeping, 1, __ATOMIC_SEQ_CST);
		struct ring_view v;
		if (!p->waiting && ring_peek(&p->cons, &v) != -EAGAIN)
			work = 1; /* (a ring waiting for a re-announcement sleeps) */
	}
	return work;
}

static void rs_drain(struct source *s)
{
	struct agent *a = s->priv;
	for (struct proc *p = a->procs; p; p = p->next) {
		if (p->ring) {
			proc_drain(a, p, (size_t)-1);
			proc_read_drops(p);
		}
	}
}

const char *proc_state_name(enum proc_state st)
{
	switch (st) {
	case PROC_ATTACHED: return "attached";
	case PROC_EXITED: return "exited";
	case PROC_REJECTED: return "rejected";
	}
	return "?";
}

/* ring_hdr.tls_backends as text: "openssl", "openssl,gnutls", "-" for none yet. */
static const char *tls_names(uint32_t bits)
{
	static const char *const names[] = { "-", "openssl", "gnutls", "openssl,gnutls",
					     "static-openssl", "openssl,static-openssl",
					     "gnutls,static-openssl", "openssl,gnutls,static-openssl" };
	return names[bits & 7];
}

/* One line per process: its identity, then its counters (proc_fields, the
 * same table the metrics read). comm is the process's own claim: blanks and
 * '=' are shown as '_' so that the line stays key=value tokens. */
static size_t rs_format(const struct source *s, char *buf, size_t len, size_t at)
{
	const struct agent *a = s->priv;
	for (struct proc *p = a->procs; p; p = p->next) {
		proc_read_drops(p);
		char comm[sizeof(p->comm)];
		text_token(comm, sizeof(comm), p->comm[0] ? p->comm : "?");
		at = text_add(buf, len, at, "pid=%d uid=%u auth_pid=%d auth_uid=%u comm=%s state=%s tls=%s",
			      (int)p->pid, (unsigned)p->uid, (int)p->auth_pid, (unsigned)p->auth_uid,
			      comm, proc_state_name(p->state), tls_names(p->tls_last));
		struct kv kv[STATS_MAX_KV];
		at = stats_kv_format(kv, proc_fields(p, kv), buf, len, at);
	}
	return at;
}

const struct source_ops ring_source_ops = {
	.name = "ring",
	.open = rs_open,
	.poll = rs_poll,
	.prepare_sleep = rs_prepare_sleep,
	.drain = rs_drain,
	.format_stats = rs_format,
};
