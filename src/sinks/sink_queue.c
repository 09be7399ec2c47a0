/* Bounded single-producer queue per sink with a worker thread: a slow sink drops, never stalls. */
#include "sinks/sink_queue.h"
#include "common/log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/*
 * A byte ring of `cap` bytes. The agent's main thread (the only producer)
 * appends records; the sink's worker thread (the only consumer) hands them
 * to the sink's write in batches, then releases their space. A record is
 * [u32 frame length][u32 0][u64 timestamp][frame], padded to 8 bytes, and
 * never wraps: when fewer than REC_HDR bytes are left before the end, or the
 * record does not fit there, the producer writes WRAP (if a header fits) and
 * continues at the start; the consumer skips to the start alike.
 * head and tail only grow; positions are taken modulo cap.
 *
 * Tags (conn.h): the queue holds one reference per run of consecutive
 * packets of one connection in one push (REC_REF on the run's last record),
 * taken before the record is published and dropped by the worker after the
 * write that covered it: one atomic per connection per batch, not per packet.
 * A conn_begin/conn_end record (REC_BEGIN/REC_END, no frame) holds its own
 * reference. Packets leave CONN_RESERVE bytes free for those records, so a
 * full queue drops packets, not the announcements (only a queue with
 * thousands of them unconsumed would, counted in queue_drops).
 *
 * Drops are counted in packets and frame bytes (queue_drops,
 * queue_drop_bytes) and logged once per episode: when the first packet is
 * dropped, and when one fits again, with what the episode dropped.
 *
 * Exit (sink_queue_drain): a worker that makes no progress for
 * SINK_DRAIN_STALL_MS (a pipe whose reader stopped) is cancelled: s->cancel
 * is set and CANCEL_SIG (a no-op handler without SA_RESTART, unblocked in
 * the workers only) interrupts its write; the sink then counts the rest
 * lost, quickly, and the agent exits in bounded time.
 */

#define REC_HDR 24u
#define REC_BEGIN 1u
#define REC_END 2u
#define REC_REF 4u               /* the record holds a reference to its tag */
#define CONN_RESERVE (16u << 10)
#define HOT_SPAN (1u << 20)      /* an empty queue goes back to its start past this */
#define LAZY_WAKE (1u << 20)     /* a lazy sink's worker is woken with this much pending */
#define WRAP 0xffffffffu
#define BATCH 64
#define IDLE_FLUSH_NS 50000000L /* the worker flushes (and a server accepts) this often */
#define CANCEL_SIG SIGURG        /* ignored by default: a stray one harms nothing */
#define CANCEL_POKE_NS 20000000L /* the signal is sent again this often until the worker is done */

struct sink_queue {
	struct sink *s;
	uint8_t *buf;
	uint64_t cap;
	uint64_t head;           /* producer: written up to (atomic store-release) */
	uint64_t tail;           /* consumer: released up to (atomic) */
	uint64_t done_pos;       /* tail at the worker's last flush (under mu) */
	int sleeping;            /* the worker waits on wake (atomic) */
	int stop;
	int kick;
	pthread_mutex_t mu;
	pthread_cond_t wake;
	pthread_cond_t done;
	pthread_t thread;
	/* the current episode of drops (producer only) */
	int dropping;
	int stuck;               /* cancelled and still not done: never joined */
	uint64_t ep_pkts, ep_bytes, ep_start_ns;
};

/*
 * The queue's memory: anonymous pages, as transparent huge pages where the
 * kernel allows (madvise mode too). Each page is touched first by the
 * producer, in the agent's thread: with 4 KiB pages the first pass through
 * a 64 MiB queue takes 16384 page faults there, with huge pages 32.
 */
static uint8_t *queue_mem(uint64_t cap)
{
	void *p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
#ifdef MADV_HUGEPAGE
	madvise(p, cap, MADV_HUGEPAGE); /* a hint: without THP the queue works as well */
#endif
	return p;
}

static void queue_mem_free(uint8_t *p, uint64_t cap)
{
	if (p)
		munmap(p, cap);
}

static const char *queue_name(const struct sink_queue *q)
{
	return strcmp(q->s->target, "-") ? q->s->target : "stdout";
}

static uint64_t ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static const struct conn_tag *get_tag(const uint8_t *p)
{
	const struct conn_tag *t;
	memcpy(&t, p, sizeof(t));
	return t;
}

/* Writes the packets collected so far, then drops the references of the
 * records they came from. */
static void write_batch(struct sink_queue *q, struct pkt *pk, size_t n,
			const struct conn_tag **refs, size_t nrefs)
{
	if (n)
		q->s->ops->write(q->s, pk, n);
	for (size_t i = 0; i < nrefs; i++)
		conn_tag_unref(refs[i]);
}

/* A connection announcement: the packets before it are written first. */
static void conn_record(struct sink_queue *q, uint32_t kind, uint64_t ts,
			const struct conn_tag *t)
{
	void (*fn)(struct sink *, const struct conn_tag *, uint64_t) =
		(kind & REC_END) ? q->s->ops->conn_end : q->s->ops->conn_begin;
	if (fn)
		fn(q->s, t, ts);
	conn_tag_unref(t);
}

/* Hands up to BATCH records to the sink; returns 0 when none was there. */
static int consume(struct sink_queue *q)
{
	struct pkt pk[BATCH];
	const struct conn_tag *refs[BATCH];
	size_t n = 0, nrefs = 0;
	uint64_t head = ld(&q->head), t = q->tail;
	while (t != head && n < BATCH) {
		uint64_t at = t % q->cap;
		if (q->cap - at < REC_HDR || get32(q->buf + at) == WRAP) {
			t += q->cap - at;
			continue;
		}
		const uint8_t *r = q->buf + at;
		uint32_t len = get32(r), kind = get32(r + 4);
		uint64_t ts;
		memcpy(&ts, r + 8, 8);
		t += (REC_HDR + len + 7) & ~7ull;
		if (kind & (REC_BEGIN | REC_END)) {
			write_batch(q, pk, n, refs, nrefs);
			n = nrefs = 0;
			conn_record(q, kind, ts, get_tag(r + 16));
			continue;
		}
		pk[n].ts_ns = ts;
		pk[n].conn = get_tag(r + 16);
		pk[n].hdr = r + REC_HDR;
		pk[n].hdr_len = len;
		pk[n].payload = NULL;
		pk[n].payload_len = 0;
		pk[n].more = NULL;
		pk[n].more_len = 0;
		if (kind & REC_REF)
			refs[nrefs++] = pk[n].conn;
		n++;
	}
	write_batch(q, pk, n, refs, nrefs);
	int any = t != q->tail;
	__atomic_store_n(&q->tail, t, __ATOMIC_RELEASE);
	return any;
}

static void flush_and_report(struct sink_queue *q)
{
	if (q->s->ops->flush)
		q->s->ops->flush(q->s);
	pthread_mutex_lock(&q->mu);
	q->done_pos = q->tail;
	pthread_cond_broadcast(&q->done);
	pthread_mutex_unlock(&q->mu);
}

static void wait_for_work(struct sink_queue *q)
{
	struct timespec ts;
	pthread_mutex_lock(&q->mu);
	__atomic_store_n(&q->sleeping, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&q->head, __ATOMIC_SEQ_CST) == q->tail && !q->stop && !q->kick) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += IDLE_FLUSH_NS;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&q->wake, &q->mu, &ts);
	}
	q->kick = 0;
	__atomic_store_n(&q->sleeping, 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&q->mu);
}

static void *worker(void *arg)
{
	struct sink_queue *q = arg;
	for (;;) {
		if (consume(q))
			continue;
		flush_and_report(q);
		pthread_mutex_lock(&q->mu);
		int stop = q->stop && ld(&q->head) == q->tail;
		pthread_mutex_unlock(&q->mu);
		if (stop)
			break;
		wait_for_work(q);
	}
	return NULL;
}

static void wake(struct sink_queue *q, int kick)
{
	if (!kick && !__atomic_load_n(&q->sleeping, __ATOMIC_SEQ_CST))
		return;
	pthread_mutex_lock(&q->mu);
	if (kick)
		q->kick = 1;
	pthread_cond_signal(&q->wake);
	pthread_mutex_unlock(&q->mu);
}

static void on_cancel_sig(int sig)
{
	(void)sig; /* only interrupts the worker's write (no SA_RESTART) */
}

int sink_queue_start(struct sink *s, uint64_t bytes)
{
	int ret = -ENOMEM;
	struct sink_queue *q = calloc(1, sizeof(*q));
	if (!q)
		goto out;
	q->s = s;
	q->cap = bytes ? bytes : SINK_QUEUE_DEFAULT;
	if (q->cap < SINK_QUEUE_MIN)
		q->cap = SINK_QUEUE_MIN;
	q->cap &= ~7ull;
	q->buf = queue_mem(q->cap);
	if (!q->buf)
		goto out;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->wake, NULL);
	pthread_cond_init(&q->done, NULL);
	/* the worker takes no signal but CANCEL_SIG: the agent reads the
	 * others from its signalfd */
	static const struct sigaction no_op = { .sa_handler = on_cancel_sig };
	sigaction(CANCEL_SIG, &no_op, NULL);
	sigset_t all, old;
	sigfillset(&all);
	sigdelset(&all, CANCEL_SIG);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(&q->thread, NULL, worker, q);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret < 0) {
		pthread_mutex_destroy(&q->mu);
		pthread_cond_destroy(&q->wake);
		pthread_cond_destroy(&q->done);
		goto out;
	}
	s->queue = q;
	q = NULL;
	ret = 0;
out:
	if (q)
		queue_mem_free(q->buf, q->cap);
	free(q);
	return ret;
}

/* Room for a record of rec bytes at head (after skipping to the start if
 * needed) leaving keep bytes free: returns the skip, or -1 if it does not fit. */
static int64_t room(const struct sink_queue *q, uint64_t head, uint64_t tail, uint64_t rec,
		    uint64_t keep)
{
	uint64_t at = head % q->cap, skip = 0;
	if (q->cap - at < rec)
		skip = q->cap - at;
	if (rec + keep > q->cap || q->cap - (head - tail) < skip + rec + keep)
		return -1;
	return (int64_t)skip;
}

/* A packet does not fit: counted, and an episode of drops starts (logged). */
static void drop(struct sink_queue *q, uint32_t len)
{
	struct sink_counters *c = &q->s->ctr;
	if (!q->dropping) {
		q->dropping = 1;
		q->ep_pkts = c->queue_drops;
		q->ep_bytes = c->queue_drop_bytes;
		q->ep_start_ns = log_now_ns();
		log_warn("%s: the output's queue is full (%llu KiB not written yet): dropping "
			 "packets until it has room (counted in the stats: queue_drops, "
			 "queue_drop_bytes)", queue_name(q), (unsigned long long)(q->cap >> 10));
	}
	sink_ctr_add(&c->queue_drops, 1);
	sink_ctr_add(&c->queue_drop_bytes, len);
}

/* A packet fits again: the episode's end, with what it dropped. */
static void drops_end(struct sink_queue *q)
{
	const struct sink_counters *c = &q->s->ctr;
	q->dropping = 0;
	log_warn("%s: the output's queue has room again after dropping %llu packets (%llu bytes) "
		 "in %.1f s", queue_name(q), (unsigned long long)(c->queue_drops - q->ep_pkts),
		 (unsigned long long)(c->queue_drop_bytes - q->ep_bytes),
		 (double)(log_now_ns() - q->ep_start_ns) / 1e9);
}

/* Reserves a record of len frame bytes at *head; NULL (counted) if full. */
static uint8_t *reserve(struct sink_queue *q, uint64_t *head, uint64_t *tail,
			uint32_t len, uint64_t keep)
{
	uint64_t rec = (REC_HDR + len + 7) & ~7ull;
	uint64_t at = *head % q->cap;
	if (*head == *tail && at > HOT_SPAN && q->cap - at >= REC_HDR) {
		/* empty (the worker keeps up): back to the start, as at the end of
		 * the buffer, so the memory in use stays the little the caches hold
		 * instead of the whole queue going cold through them */
		uint32_t w = WRAP;
		memcpy(q->buf + at, &w, 4);
		*head += q->cap - at; /* free until the worker passes the mark: at bytes */
	}
	int64_t skip = room(q, *head, *tail, rec, keep);
	if (skip < 0) {
		*tail = ld(&q->tail); /* the worker may have made room since */
		skip = room(q, *head, *tail, rec, keep);
	}
	if (skip < 0) {
		drop(q, len);
		return NULL;
	}
	if (q->dropping)
		drops_end(q);
	if (skip >= REC_HDR) {
		uint32_t w = WRAP;
		memcpy(q->buf + *head % q->cap, &w, 4);
	}
	*head += (uint64_t)skip;
	uint8_t *r = q->buf + *head % q->cap;
	*head += rec;
	return r;
}

static void put_hdr(uint8_t *r, uint32_t len, uint32_t kind, uint64_t ts,
		    const struct conn_tag *t)
{
	memcpy(r, &len, 4);
	memcpy(r + 4, &kind, 4);
	memcpy(r + 8, &ts, 8);
	memcpy(r + 16, &t, sizeof(t));
}

/* The last record of a run of one connection's packets holds its reference. */
static void end_run(uint8_t *last, const struct conn_tag *t)
{
	if (!last || !t)
		return;
	uint32_t kind = REC_REF;
	memcpy(last + 4, &kind, 4);
	conn_tag_ref(t);
}

void sink_queue_push(struct sink *s, const struct pkt *pkts, size_t n)
{
	struct sink_queue *q = s->queue;
	uint64_t head = q->head, tail = ld(&q->tail);
	uint8_t *last = NULL;
	const struct conn_tag *run = NULL;
	for (size_t i = 0; i < n; i++) {
		const struct pkt *p = &pkts[i];
		if (p->conn != run) {
			end_run(last, run);
			last = NULL;
			run = p->conn;
		}
		uint32_t len = (uint32_t)pkt_frame_len(p);
		uint8_t *r = reserve(q, &head, &tail, len, CONN_RESERVE);
		if (!r)
			continue;
		put_hdr(r, len, 0, p->ts_ns, p->conn);
		memcpy(r + REC_HDR, p->hdr, p->hdr_len);
		pkt_copy_payload(r + REC_HDR + p->hdr_len, p, p->payload_len + p->more_len);
		last = r;
	}
	end_run(last, run);
	if (q->s->lazy) {
		/* a lazy sink's worker comes by itself (every IDLE_FLUSH_NS) unless
		 * the queue fills up: no wake-up, no context switch, per record; and
		 * a release store, no fence: a fence waits for every store of the
		 * record just copied to reach the cache (a wake-up it would have
		 * made sure of is at most IDLE_FLUSH_NS late; the next push past
		 * the mark tries again) */
		__atomic_store_n(&q->head, head, __ATOMIC_RELEASE);
		if (head - tail > (q->cap / 8 < LAZY_WAKE ? q->cap / 8 : LAZY_WAKE))
			wake(q, 0);
		return;
	}
	__atomic_store_n(&q->head, head, __ATOMIC_SEQ_CST);
	wake(q, 0);
}

void sink_queue_push_conn(struct sink *s, const struct conn_tag *t, uint64_t ts_ns, int end)
{
	struct sink_queue *q = s->queue;
	uint64_t head = q->head, tail = ld(&q->tail);
	uint8_t *r = reserve(q, &head, &tail, 0, 0);
	if (!r)
		return;
	put_hdr(r, 0, end ? REC_END : REC_BEGIN, ts_ns, conn_tag_ref(t));
	__atomic_store_n(&q->head, head, __ATOMIC_SEQ_CST);
	wake(q, 0);
}

void sink_queue_kick(struct sink *s)
{
	wake(s->queue, 1);
}

static void deadline_in(struct timespec *ts, long ns)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_nsec += ns;
	while (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

int sink_queue_drain(struct sink *s)
{
	struct sink_queue *q = s->queue;
	uint64_t target = q->head, seen = ld(&q->tail), idle_ns = 0, pokes = 0;
	int ret = 0;
	wake(q, 1);
	pthread_mutex_lock(&q->mu);
	while (q->done_pos < target) {
		struct timespec ts;
		int cancel = __atomic_load_n(&s->cancel, __ATOMIC_RELAXED);
		deadline_in(&ts, cancel ? CANCEL_POKE_NS : 100000000L);
		if (pthread_cond_timedwait(&q->done, &q->mu, &ts) != ETIMEDOUT)
			continue;
		if (cancel && ++pokes * CANCEL_POKE_NS > SINK_DRAIN_STALL_MS * 1000000ull) {
			q->stuck = 1; /* a write the signal does not end: leave the worker */
			break;
		}
		if (cancel) {
			pthread_kill(q->thread, CANCEL_SIG); /* again: it may have been between writes */
			continue;
		}
		uint64_t t = ld(&q->tail);
		idle_ns = t == seen ? idle_ns + 100000000L : 0;
		seen = t;
		if (idle_ns >= SINK_DRAIN_STALL_MS * 1000000ull) {
			/* stalled: the rest is counted lost by the sink */
			__atomic_store_n(&s->cancel, 1, __ATOMIC_RELAXED);
			pthread_kill(q->thread, CANCEL_SIG);
			ret = -ETIMEDOUT;
		}
	}
	pthread_mutex_unlock(&q->mu);
	if (ret < 0)
		log_warn("%s: no progress in %u ms at exit (a reader that stopped?): gave up, the "
			 "rest is counted lost", queue_name(q), (unsigned)SINK_DRAIN_STALL_MS);
	return ret;
}

void sink_queue_stop(struct sink *s)
{
	struct sink_queue *q = s->queue;
	if (!q)
		return;
	pthread_mutex_lock(&q->mu);
	q->stop = 1;
	pthread_cond_signal(&q->wake);
	pthread_mutex_unlock(&q->mu);
	if (q->stuck) {
		/* its memory stays: the worker may still use it until the exit */
		pthread_detach(q->thread);
		s->queue = NULL;
		return;
	}
	pthread_join(q->thread, NULL);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->wake);
	pthread_cond_destroy(&q->done);
	queue_mem_free(q->buf, q->cap);
	free(q);
	s->queue = NULL;
}

uint64_t sink_queue_pending_bytes(const struct sink *s)
{
	const struct sink_queue *q = s->queue;
	return q ? ld(&q->head) - ld(&q->tail) : 0;
}
