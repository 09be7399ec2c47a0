/*
 * TCP reassembly (tcpre.h). Segments in order go on at once from the
 * caller's buffer; a segment ahead of a hole is copied into the direction's
 * sorted list until the hole fills. A hole is declared lost (a gap of its
 * exact size) when the peer acknowledges beyond it (the receiver had those
 * bytes: the capture missed them), when the out-of-order caps are reached,
 * or at the connection's end. Bytes already handed on are never handed on
 * again (the first copy wins over a retransmission that differs).
 */
#include "decrypt/tcpre.h"

#include <stdlib.h>
#include <string.h>

#define AHEAD_MAX (64u << 20)    /* a segment further ahead than this is not believed */

struct seg {
	struct seg *next;
	uint32_t seq, len;
	uint8_t data[];
};

struct rdir {
	uint8_t init, fin, done;
	uint32_t next;           /* the next sequence number to hand on */
	uint32_t fin_seq;
	struct seg *ooo;         /* sorted by seq, not overlapping */
	size_t ooo_bytes;
};

struct flow {
	struct flow *hnext;
	struct flow *prev, *next; /* by last activity, oldest first */
	struct tcp_key k;
	uint64_t last_ts;
	void *user;
	struct rdir d[2];
	uint8_t rst;
};

struct tcpre {
	struct tcpre_out out;
	struct tcpre_limits lim;
	struct flow **bucket;
	size_t nbuckets;
	struct flow *oldest, *newest;
	struct tcpre_stats st;
};

struct tcpre *tcpre_new(const struct tcpre_out *out, const struct tcpre_limits *lim)
{
	struct tcpre *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->out = *out;
	r->lim = *lim;
	if (!r->lim.max_flows)
		r->lim.max_flows = 100000;
	if (!r->lim.ooo_per_dir)
		r->lim.ooo_per_dir = 4u << 20;
	if (!r->lim.ooo_total)
		r->lim.ooo_total = 256u << 20;
	if (!r->lim.idle_ns)
		r->lim.idle_ns = 300ULL * 1000000000ULL;
	r->nbuckets = 1024;
	while (r->nbuckets < r->lim.max_flows)
		r->nbuckets <<= 1;
	r->bucket = calloc(r->nbuckets, sizeof(*r->bucket));
	if (!r->bucket) {
		free(r);
		return NULL;
	}
	return r;
}

static size_t hash_ends(const struct tcpre *r, uint8_t family, const uint8_t *x, uint16_t px,
			const uint8_t *y, uint16_t py)
{
	/* the same for both directions: the two ends combined in an order-free way */
	size_t al = family == 4 ? 4 : 16;
	uint64_t hx = 1469598103934665603ULL, hy = hx;
	for (size_t i = 0; i < al; i++) {
		hx = (hx ^ x[i]) * 1099511628211ULL;
		hy = (hy ^ y[i]) * 1099511628211ULL;
	}
	hx = (hx ^ px) * 1099511628211ULL;
	hy = (hy ^ py) * 1099511628211ULL;
	uint64_t h = hx + hy;
	h ^= h >> 31;
	return (size_t)(h * 0x9e3779b97f4a7c15ULL >> 20) & (r->nbuckets - 1);
}

/* The flow of these ends and the direction of src, or NULL. */
static struct flow *find(struct tcpre *r, uint8_t family, const uint8_t *src, uint16_t sport,
			 const uint8_t *dst, uint16_t dport, int *dir, struct flow ***slot)
{
	size_t al = family == 4 ? 4 : 16;
	struct flow **pp = &r->bucket[hash_ends(r, family, src, sport, dst, dport)];
	*slot = pp;
	for (struct flow *f = *pp; f; f = f->hnext) {
		if (f->k.family != family)
			continue;
		if (f->k.pa == sport && f->k.pb == dport && !memcmp(f->k.a, src, al) &&
		    !memcmp(f->k.b, dst, al)) {
			*dir = 0;
			return f;
		}
		if (f->k.pa == dport && f->k.pb == sport && !memcmp(f->k.a, dst, al) &&
		    !memcmp(f->k.b, src, al)) {
			*dir = 1;
			return f;
		}
	}
	return NULL;
}

static void lru_unlink(struct tcpre *r, struct flow *f)
{
	if (f->prev)
		f->prev->next = f->next;
	else
		r->oldest = f->next;
	if (f->next)
		f->next->prev = f->prev;
	else
		r->newest = f->prev;
	f->prev = f->next = NULL;
}

static void lru_touch(struct tcpre *r, struct flow *f)
{
	if (r->newest == f)
		return;
	if (f->prev || f->next || r->oldest == f)
		lru_unlink(r, f);
	f->prev = r->newest;
	if (r->newest)
		r->newest->next = f;
	else
		r->oldest = f;
	r->newest = f;
}

static void free_ooo(struct tcpre *r, struct rdir *d)
{
	while (d->ooo) {
		struct seg *s = d->ooo;
		d->ooo = s->next;
		free(s);
	}
	r->st.ooo_bytes -= d->ooo_bytes;
	d->ooo_bytes = 0;
}

/* Hands on what the list holds from d->next on. */
static void drain(struct tcpre *r, struct flow *f, int dir, uint64_t ts)
{
	struct rdir *d = &f->d[dir];
	while (d->ooo && (int32_t)(d->ooo->seq - d->next) <= 0) {
		struct seg *s = d->ooo;
		d->ooo = s->next;
		d->ooo_bytes -= s->len;
		r->st.ooo_bytes -= s->len;
		uint32_t skip = d->next - s->seq;
		if (skip < s->len) {
			if (f->user)
				r->out.data(r->out.arg, f->user, dir, ts, s->data + skip, s->len - skip);
			d->next = s->seq + s->len;
		}
		free(s);
	}
}

/* The hole before the first held segment (or up to upto) is lost. */
static void lose_to(struct tcpre *r, struct flow *f, int dir, uint64_t ts, uint32_t upto)
{
	struct rdir *d = &f->d[dir];
	int32_t n = (int32_t)(upto - d->next);
	if (n <= 0)
		return;
	r->st.gap_bytes += (uint32_t)n;
	if (f->user)
		r->out.gap(r->out.arg, f->user, dir, ts, (uint32_t)n);
	d->next = upto;
	drain(r, f, dir, ts);
}

static int insert_piece(struct tcpre *r, struct rdir *d, struct seg **pp, uint32_t seq,
			const uint8_t *p, size_t n)
{
	struct seg *s = malloc(sizeof(*s) + n);
	if (!s)
		return -1;
	s->seq = seq;
	s->len = (uint32_t)n;
	memcpy(s->data, p, n);
	s->next = *pp;
	*pp = s;
	d->ooo_bytes += n;
	r->st.ooo_bytes += n;
	return 0;
}

/* In order from d->next: handed on at once. 1 if it was, 0 if still ahead. */
static int in_order(struct tcpre *r, struct flow *f, int dir, uint32_t seq, const uint8_t *p,
		    size_t n, uint64_t ts)
{
	struct rdir *d = &f->d[dir];
	int32_t off = (int32_t)(seq - d->next);
	if ((int64_t)off + (int64_t)n <= 0) {
		r->st.retransmitted += n;
		return 1;
	}
	if (off > 0)
		return 0;
	uint32_t end = seq + (uint32_t)n;
	r->st.retransmitted += (uint32_t)-off;
	/* up to the first held segment, which wins over this copy of its bytes;
	 * then what was held, then the rest of this one */
	while ((int32_t)(end - d->next) > 0) {
		uint32_t at = d->next, upto = end;
		if (d->ooo && (int32_t)(d->ooo->seq - upto) < 0)
			upto = d->ooo->seq;
		if ((int32_t)(upto - d->next) > 0) {
			if (f->user)
				r->out.data(r->out.arg, f->user, dir, ts, p + (d->next - seq), upto - d->next);
			d->next = upto;
		}
		drain(r, f, dir, ts);
		if (d->next == at)
			break; /* no progress: cannot happen, but never loop */
	}
	return 1;
}

/* A segment ahead of a hole: its new bytes are held in order (what is held
 * already wins over a different copy). */
static void hold_seg(struct tcpre *r, struct flow *f, int dir, uint32_t seq, const uint8_t *p,
		     size_t n, uint64_t ts)
{
	struct rdir *d = &f->d[dir];
	if (d->ooo_bytes + n > r->lim.ooo_per_dir || r->st.ooo_bytes + n > r->lim.ooo_total) {
		/* over the caps: the first hole is lost, then this is looked at again */
		r->st.ooo_forced++;
		lose_to(r, f, dir, ts, d->ooo ? d->ooo->seq : seq);
		if (in_order(r, f, dir, seq, p, n, ts))
			return;
		if (d->ooo_bytes + n > r->lim.ooo_per_dir || r->st.ooo_bytes + n > r->lim.ooo_total) {
			lose_to(r, f, dir, ts, seq);
			in_order(r, f, dir, seq, p, n, ts);
			return;
		}
	}
	r->st.reordered++;
	struct seg **pp = &d->ooo;
	while (n) {
		struct seg *s = *pp;
		if (!s) {
			insert_piece(r, d, pp, seq, p, n);
			return;
		}
		int32_t before = (int32_t)(s->seq - seq);
		if (before > 0) {
			size_t k = (size_t)before < n ? (size_t)before : n;
			if (insert_piece(r, d, pp, seq, p, k) < 0)
				return;
			pp = &(*pp)->next;
			seq += (uint32_t)k;
			p += k;
			n -= k;
			continue;
		}
		int32_t over = (int32_t)(s->seq + s->len - seq);
		if (over > 0) {
			size_t k = (size_t)over < n ? (size_t)over : n;
			r->st.retransmitted += k;
			seq += (uint32_t)k;
			p += k;
			n -= k;
		}
		pp = &s->next;
	}
}

static void unhash(struct tcpre *r, struct flow *f)
{
	struct flow **pp = &r->bucket[hash_ends(r, f->k.family, f->k.a, f->k.pa, f->k.b, f->k.pb)];
	while (*pp && *pp != f)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = f->hnext;
}

/* Ends f: holes become gaps, then close. */
static void end_flow(struct tcpre *r, struct flow *f, uint64_t ts, int why)
{
	for (int dir = 0; dir < 2; dir++) {
		struct rdir *d = &f->d[dir];
		while (d->ooo)
			lose_to(r, f, dir, ts, d->ooo->seq);
		if (d->fin && (int32_t)(d->fin_seq - d->next) > 0 && why != TCPRE_RST)
			lose_to(r, f, dir, ts, d->fin_seq);
	}
	if (f->user)
		r->out.close(r->out.arg, f->user, ts, why);
	for (int dir = 0; dir < 2; dir++)
		free_ooo(r, &f->d[dir]);
	unhash(r, f);
	lru_unlink(r, f);
	r->st.flows_open--;
	free(f);
}

static struct flow *new_flow(struct tcpre *r, struct flow **slot, uint8_t family,
			     const uint8_t *src, uint16_t sport, const uint8_t *dst, uint16_t dport,
			     int syn, uint64_t ts)
{
	if (r->st.flows_open >= r->lim.max_flows) {
		r->st.refused++;
		return NULL;
	}
	struct flow *f = calloc(1, sizeof(*f));
	if (!f) {
		r->st.refused++;
		return NULL;
	}
	size_t al = family == 4 ? 4 : 16;
	f->k.family = family;
	memcpy(f->k.a, src, al);
	memcpy(f->k.b, dst, al);
	f->k.pa = sport;
	f->k.pb = dport;
	f->last_ts = ts;
	f->hnext = *slot;
	*slot = f;
	lru_touch(r, f);
	r->st.flows++;
	r->st.flows_open++;
	f->user = r->out.open(r->out.arg, &f->k, syn, ts);
	return f;
}

void tcpre_segment(struct tcpre *r, uint64_t ts, uint8_t family, const uint8_t *src,
		   const uint8_t *dst, uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack,
		   uint8_t flags, const uint8_t *p, size_t n, size_t wire_n)
{
	struct flow **slot;
	int dir = 0;
	r->st.segments++;
	struct flow *f = find(r, family, src, sport, dst, dport, &dir, &slot);
	int syn = flags & TCPRE_SYN_FLAG, pure_syn = syn && !(flags & TCPRE_ACK_FLAG);
	if (f && pure_syn && dir == 0 && f->d[0].init && f->d[0].next != seq + 1) {
		end_flow(r, f, ts, TCPRE_REUSED); /* the ports used again for a new connection */
		f = NULL;
	}
	if (!f) {
		/* a new connection starts with a SYN or with data: the last ACK or
		 * a late RST of one that ended is not one */
		if ((flags & TCPRE_RST_FLAG) || (!syn && !n))
			return;
		/* a SYN-ACK first: its receiver is the client */
		if (syn && !pure_syn)
			f = new_flow(r, slot, family, dst, dport, src, sport, 1, ts), dir = 1;
		else
			f = new_flow(r, slot, family, src, sport, dst, dport, syn, ts), dir = 0;
		if (!f)
			return;
	}
	f->last_ts = ts;
	lru_touch(r, f);
	struct rdir *d = &f->d[dir], *o = &f->d[!dir];
	if (syn) {
		if (!d->init) {
			d->init = 1;
			d->next = seq + 1;
		}
		seq++; /* a SYN with data: its data starts after it */
	} else if (!d->init) {
		d->init = 1;
		d->next = seq;
	}
	/* the peer acknowledges bytes of the other direction we never saw */
	if ((flags & TCPRE_ACK_FLAG) && o->init && !o->done) {
		int32_t ahead = (int32_t)(ack - o->next);
		uint32_t upto = ack;
		if (o->fin && (int32_t)(upto - o->fin_seq) > 0)
			upto = o->fin_seq;
		if (ahead > 0 && (o->ooo || ahead > 1) && (uint32_t)ahead < AHEAD_MAX) {
			if (o->ooo && (int32_t)(o->ooo->seq - upto) < 0)
				upto = o->ooo->seq;
			lose_to(r, f, !dir, ts, upto);
		}
	}
	/* a segment cut by the snaplen: its missing part is a hole the peer's
	 * acknowledgement or the end declares lost */
	if (n && !in_order(r, f, dir, seq, p, n, ts) && (uint32_t)(seq - d->next) < AHEAD_MAX)
		hold_seg(r, f, dir, seq, p, n, ts);
	if (flags & TCPRE_FIN_FLAG) {
		d->fin = 1;
		d->fin_seq = seq + (uint32_t)wire_n;
	}
	if (d->fin && d->next == d->fin_seq && !d->ooo)
		d->done = 1;
	if ((flags & TCPRE_RST_FLAG) || (f->d[0].done && f->d[1].done))
		end_flow(r, f, ts, (flags & TCPRE_RST_FLAG) ? TCPRE_RST : TCPRE_FIN);
}

void tcpre_expire(struct tcpre *r, uint64_t now)
{
	while (r->oldest && r->oldest->last_ts + r->lim.idle_ns < now) {
		r->st.idle_closed++;
		end_flow(r, r->oldest, now, TCPRE_IDLE);
	}
}

void tcpre_flush(struct tcpre *r, uint64_t ts)
{
	while (r->oldest)
		end_flow(r, r->oldest, ts, TCPRE_END);
}

void tcpre_free(struct tcpre *r)
{
	if (!r)
		return;
	while (r->oldest) {
		struct flow *f = r->oldest;
		f->user = NULL;
		end_flow(r, f, 0, TCPRE_END);
	}
	free(r->bucket);
	free(r);
}

const struct tcpre_limits *tcpre_limits(const struct tcpre *r)
{
	return &r->lim;
}

const struct tcpre_stats *tcpre_stats(const struct tcpre *r)
{
	return &r->st;
}
