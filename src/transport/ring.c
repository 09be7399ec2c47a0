/* Multi-producer, single-consumer byte ring in shared memory (format in ring.h). */
#include "transport/ring.h"

#include <errno.h>
#include <string.h>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

static inline uint64_t load_acq(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

void ring_init(struct ring_hdr *ring, uint64_t data_size, uint32_t pid)
{
	ring->version = RING_VERSION;
	ring->hdr_size = RING_HDR_SIZE;
	ring->data_size = data_size;
	ring->pid = pid;
	ring->head = 0;
	ring->tail = 0;
	__atomic_store_n(&ring->magic, RING_MAGIC, __ATOMIC_RELEASE);
}

uint64_t ring_used(const struct ring_hdr *ring)
{
	uint64_t t = load_acq(&ring->tail);
	uint64_t h = load_acq(&ring->head);
	return h - t;
}

void ring_count_drop(struct ring_hdr *ring, enum ring_drop_reason why,
		     uint64_t bytes)
{
	__atomic_fetch_add(&ring->drop_bytes[why], bytes, __ATOMIC_RELAXED);
	__atomic_fetch_add(&ring->drop_records[why], 1, __ATOMIC_RELAXED);
}

/*
 * Payload placement: a memcpy whose destination sits a little after its
 * source modulo 4096 runs many times slower (4 KiB aliasing). Records are
 * 64-byte aligned; for large copies, shift the payload by 384 bytes when the
 * distance falls in the bad window.
 */
static uint32_t payload_offset(uint64_t rec_addr, const void *src,
			       uint32_t data_len)
{
	uint32_t off = 64; /* header rounded up to a cache line */
	if (src && data_len >= 1024) {
		uint64_t delta = (rec_addr + off - (uint64_t)(uintptr_t)src) & 4095;
		if (delta < 320)
			off += 384;
	}
	return off;
}

static int reserve(struct ring_hdr *ring, uint32_t data_len, const void *src,
		   uint64_t keep, struct ring_reservation *res)
{
	if (data_len > RING_MAX_CHUNK)
		return -EMSGSIZE;
	uint64_t size = ring->data_size;
	uint8_t *base = (uint8_t *)ring + RING_HDR_SIZE;
	uint64_t head = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);

	for (int tries = 0; tries < RING_RESERVE_TRIES; tries++) {
		uint64_t at = head & (size - 1);
		uint32_t off = payload_offset((uint64_t)(uintptr_t)(base + at), src, data_len);
		uint32_t len = ring_rec_size(off, data_len);
		uint64_t pad = 0;
		if (at + len > size) {
			/* does not fit before the end: pad, start over at 0 */
			pad = size - at;
			off = payload_offset((uint64_t)(uintptr_t)base, src, data_len);
			len = ring_rec_size(off, data_len);
		}
		uint64_t tail = load_acq(&ring->tail);
		if (head + pad + len - tail > size - keep)
			return -EAGAIN;
		if (!__atomic_compare_exchange_n(&ring->head, &head, head + pad + len,
						 1, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			continue; /* head reloaded by the failed CAS */
		if (pad) {
			struct ring_rec *p = (struct ring_rec *)(base + at);
			p->len = (uint32_t)pad;
			p->type = RING_REC_PAD;
			p->flags = 0;
			p->conn_id = 0;
			p->data_off = sizeof(*p);
			p->data_len = 0;
			__atomic_store_n(&p->commit, ring_commit_word(head),
					 __ATOMIC_RELEASE);
			head += pad;
		}
		struct ring_rec *r = (struct ring_rec *)(base + (head & (size - 1)));
		r->len = len;
		r->data_off = off;
		res->rec = r;
		res->data = (uint8_t *)r + off;
		res->pos = head;
		return 0;
	}
	return -EBUSY;
}

int ring_reserve(struct ring_hdr *ring, uint32_t data_len, const void *src,
		 struct ring_reservation *res)
{
	return reserve(ring, data_len, src, RING_CTRL_RESERVE, res);
}

int ring_reserve_ctrl(struct ring_hdr *ring, uint32_t data_len,
		      struct ring_reservation *res)
{
	return reserve(ring, data_len, NULL, 0, res);
}

void ring_copy(struct ring_reservation *res, const void *src, uint32_t n)
{
	uint8_t *d = res->data;
	const uint8_t *s = src;
#if defined(__x86_64__)
	/* res->data is 64-byte aligned (records and payload offsets are) */
	if (n >= RING_NT_MIN && !((uintptr_t)d & 15)) {
		uint32_t i = 0;
		for (; i + 64 <= n; i += 64) {
			__m128i a = _mm_loadu_si128((const __m128i *)(s + i));
			__m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
			__m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
			__m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
			_mm_stream_si128((__m128i *)(d + i), a);
			_mm_stream_si128((__m128i *)(d + i + 16), b);
			_mm_stream_si128((__m128i *)(d + i + 32), c);
			_mm_stream_si128((__m128i *)(d + i + 48), e);
		}
		memcpy(d + i, s + i, n - i);
		_mm_sfence();
		return;
	}
#endif
	memcpy(d, s, n);
}

void ring_commit(struct ring_reservation *res, uint16_t type, uint16_t flags,
		 uint64_t conn_id, uint64_t ts_ns, uint64_t stream_off,
		 uint32_t data_len)
{
	struct ring_rec *r = res->rec;
	r->type = type;
	r->flags = flags;
	r->conn_id = conn_id;
	r->ts_ns = ts_ns;
	r->stream_off = stream_off;
	r->data_len = data_len;
	__atomic_store_n(&r->commit, ring_commit_word(res->pos), __ATOMIC_RELEASE);
}

/* The fixed fields of a header, each read from shared memory exactly once. */
struct hdr_copy {
	uint64_t magic;
	uint32_t version;
	uint32_t hdr_size;
	uint64_t data_size;
};

static int hdr_check(const struct hdr_copy *h, size_t map_len)
{
	if (map_len < RING_HDR_SIZE + RING_MIN_DATA)
		return -EINVAL;
	if (h->magic != RING_MAGIC || h->version != RING_VERSION ||
	    h->hdr_size != RING_HDR_SIZE)
		return -EINVAL;
	uint64_t size = h->data_size;
	if (size < RING_MIN_DATA || size > RING_MAX_DATA || (size & (size - 1)))
		return -EINVAL;
	if (size + RING_HDR_SIZE > map_len)
		return -EINVAL;
	return 0;
}

int ring_consumer_init(struct ring_consumer *c, struct ring_hdr *ring, size_t map_len)
{
	struct hdr_copy h = {
		.magic = __atomic_load_n(&ring->magic, __ATOMIC_ACQUIRE),
		.version = __atomic_load_n(&ring->version, __ATOMIC_RELAXED),
		.hdr_size = __atomic_load_n(&ring->hdr_size, __ATOMIC_RELAXED),
		.data_size = __atomic_load_n(&ring->data_size, __ATOMIC_RELAXED),
	};
	memset(c, 0, sizeof(*c));
	if (hdr_check(&h, map_len) < 0)
		return -EINVAL;
	c->ring = ring;
	c->base = (uint8_t *)ring + RING_HDR_SIZE;
	c->size = h.data_size; /* the validated copy; never read again */
	/* Start where the last consumer stopped (records survive an agent
	 * restart); a nonsense value means we cannot resume: start at head. */
	uint64_t tail = load_acq(&ring->tail);
	uint64_t head = load_acq(&ring->head);
	c->tail = tail;
	if ((tail & (RING_ALIGN - 1)) || head - tail > c->size) {
		c->tail = head & ~(uint64_t)(RING_ALIGN - 1);
		__atomic_store_n(&ring->tail, c->tail, __ATOMIC_RELEASE);
	}
	c->published = c->tail;
	return 0;
}

/* The record at *pos (PADs before it skipped: *pos moves past them), each
 * field copied once and validated; *len is its whole length. */
static int peek_at(const struct ring_consumer *c, uint64_t *pos, struct ring_view *v,
		   uint32_t *reclen)
{
	for (;;) {
		uint64_t at = *pos & (c->size - 1);
		const struct ring_rec *r = (const struct ring_rec *)(c->base + at);
		uint64_t commit = __atomic_load_n(&r->commit, __ATOMIC_ACQUIRE);
		if (commit != ring_commit_word(*pos))
			return -EAGAIN;
		/* Copy every field once: the producer may still scribble on it. */
		uint32_t len = __atomic_load_n(&r->len, __ATOMIC_RELAXED);
		uint16_t type = __atomic_load_n(&r->type, __ATOMIC_RELAXED);
		uint32_t doff = __atomic_load_n(&r->data_off, __ATOMIC_RELAXED);
		uint32_t dlen = __atomic_load_n(&r->data_len, __ATOMIC_RELAXED);
		if (len < RING_ALIGN || (len & (RING_ALIGN - 1)) || len > c->size - at)
			return -EBADMSG;
		if (type == RING_REC_PAD) {
			if (at + len != c->size)
				return -EBADMSG;
			*pos += len;
			continue;
		}
		if (type >= RING_REC_NTYPES || doff < sizeof(*r) || doff > len ||
		    dlen > len - doff || dlen > RING_MAX_CHUNK)
			return -EBADMSG;
		v->type = type;
		v->flags = __atomic_load_n(&r->flags, __ATOMIC_RELAXED);
		v->conn_id = __atomic_load_n(&r->conn_id, __ATOMIC_RELAXED);
		v->ts_ns = __atomic_load_n(&r->ts_ns, __ATOMIC_RELAXED);
		v->stream_off = __atomic_load_n(&r->stream_off, __ATOMIC_RELAXED);
		v->data = (const uint8_t *)r + doff;
		v->data_len = dlen;
		*reclen = len;
		return 0;
	}
}

int ring_peek(struct ring_consumer *c, struct ring_view *v)
{
	uint32_t len = 0;
	int err = peek_at(c, &c->tail, v, &len);
	if (!err)
		c->pending = len;
	return err;
}

int ring_peek_at(const struct ring_consumer *c, uint64_t pos, struct ring_view *v,
		 uint64_t *next)
{
	uint32_t len = 0;
	if (pos < c->tail || pos - c->tail >= c->size || (pos & (RING_ALIGN - 1)))
		return -EINVAL;
	int err = peek_at(c, &pos, v, &len);
	if (!err)
		*next = pos + len;
	return err;
}

void ring_release(struct ring_consumer *c)
{
	c->tail += c->pending;
	c->pending = 0;
	/* Publishing tail costs producers a cache miss: do it in batches of
	 * 1/16 of the ring, and in ring_publish when the consumer pauses. */
	if (c->tail - c->published >= c->size / 16)
		ring_publish(c);
}

void ring_publish(struct ring_consumer *c)
{
	if (c->published == c->tail)
		return;
	c->published = c->tail;
	__atomic_store_n(&c->ring->tail, c->tail, __ATOMIC_RELEASE);
}
