/* Unit tests for transport/ring.c: reserve/commit/peek/release, wrap, full, malformed records. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "transport/ring.h"
#include "unit.h"

#define DATA RING_MIN_DATA
#define REC_PAYLOAD 960 /* with the 64-byte header: 1024-byte records, 64 per lap */

static struct ring_hdr *ring_new(void)
{
	struct ring_hdr *r = aligned_alloc(4096, RING_HDR_SIZE + DATA);
	if (!r)
		return NULL;
	memset(r, 0, RING_HDR_SIZE + DATA);
	ring_init(r, DATA, 42);
	return r;
}

static int put(struct ring_hdr *r, uint16_t type, uint64_t conn, uint64_t off,
	       const void *data, uint32_t len)
{
	struct ring_reservation res;
	int ret = ring_reserve(r, len, NULL, &res);
	if (ret < 0)
		return ret;
	if (len)
		memcpy(res.data, data, len);
	ring_commit(&res, type, 0, conn, 7, off, len);
	return 0;
}

static int fill_lap(struct ring_hdr *r, struct ring_consumer *c)
{
	static uint8_t pay[REC_PAYLOAD];
	struct ring_view v;
	for (int i = 0; i < 64; i++) {
		if (put(r, RING_REC_DATA, 1, 0, pay, sizeof(pay)) < 0)
			return -1;
		if (ring_peek(c, &v) < 0)
			return -1;
		ring_release(c);
	}
	return 0;
}

TEST(ring_roundtrip_one_record)
{
	struct ring_hdr *r = ring_new();
	if (!CHECK(r))
		return;
	struct ring_consumer c;
	struct ring_view v;
	CHECK_EQ(ring_consumer_init(&c, r, RING_HDR_SIZE + DATA), 0);
	struct ring_reservation res;
	CHECK_EQ(ring_reserve(r, 5, NULL, &res), 0);
	memcpy(res.data, "hello", 5);
	ring_commit(&res, RING_REC_DATA, RING_F_DIR_S2C, 5, 1234, 100, 5);
	if (!CHECK_EQ(ring_peek(&c, &v), 0))
		goto out;
	CHECK_EQ(v.type, RING_REC_DATA);
	CHECK_EQ(v.flags, RING_F_DIR_S2C);
	CHECK_EQ(v.conn_id, 5);
	CHECK_EQ(v.ts_ns, 1234);
	CHECK_EQ(v.stream_off, 100);
	CHECK_EQ(v.data_len, 5);
	CHECK_MEM(v.data, "hello", 5);
	ring_release(&c);
	ring_publish(&c);
	CHECK_EQ(r->tail, 128);
	CHECK_EQ(ring_peek(&c, &v), -EAGAIN);
	CHECK_EQ(ring_used(r), 0);
out:
	free(r);
}

TEST(ring_reserved_but_uncommitted_is_invisible)
{
	struct ring_hdr *r = ring_new();
	if (!CHECK(r))
		return;
	struct ring_consumer c;
	struct ring_view v;
	struct ring_reservation res;
	CHECK_EQ(ring_consumer_init(&c, r, RING_HDR_SIZE + DATA), 0);
	CHECK_EQ(ring_reserve(r, 10, NULL, &res), 0);
	CHECK_EQ(ring_peek(&c, &v), -EAGAIN);
	ring_commit(&res, RING_REC_OPEN, 0, 1, 0, 0, 0);
	CHECK_EQ(ring_peek(&c, &v), 0);
	free(r);
}

TEST(ring_records_come_out_in_order)
{
	struct ring_hdr *r = ring_new();
	if (!CHECK(r))
		return;
	struct ring_consumer c;
	struct ring_view v;
	CHECK_EQ(ring_consumer_init(&c, r, RING_HDR_SIZE + DATA), 0);
	for (uint64_t i = 1; i <= 3; i++)
		put(r, RING_REC_DATA, i, 0, "x", 1);
	for (uint64_t i = 1; i <= 3; i++) {
		CHECK_EQ(ring_peek(&c, &v), 0);
		CHECK_EQ(v.conn_id, i);
		ring_release(&c);
	}
	free(r);
}

TEST(ring_wraps_with_pad)
{
	struct ring_hdr *r = ring_new();
	if (!CHECK(r))
		return;
	struct ring_consumer c;
	struct ring_view v;
	static uint8_t pay[1000];
	CHECK_EQ(ring_consumer_init(&c, r, RING_HDR_SIZE + DATA), 0);
	for (int i = 0; i < 63; i++) {
		put(r, RING_REC_DATA, 1, 0, pay, REC_PAYLOAD);
		ring_peek(&c, &v);
		ring_release(&c);
	}
	/* 1024 bytes left before the end, the next record needs 1088 */
	memset(pay, 0x5a, sizeof(pay));
	CHECK_EQ(put(r, RING_REC_DATA, 9, 0, pay, sizeof(pay)), 0);
	CHECK_EQ(r->head, DATA + 1088);
	CHECK_EQ(ring_peek(&c, &v), 0);
	CHECK_EQ(v.conn_id, 9);
	CHECK(v.data == (const uint8_t *)r + RING_HDR_SIZE + 64);
	CHECK_MEM(v.data, pay, sizeof(pay));
	ring_release(&c);
	CHECK_EQ(c.tail, DATA + 1088);
	free(r);
}

TEST(ring_full_is_eagain)
{
	struct ring_hdr *r = ring_new();
	if (!CHECK(r))
		return;
	struct ring_consumer c;
	struct ring_view v;
	static uint8_t pay[REC_PAYLOAD];
	CHECK_EQ(ring_consumer_init(&c, r, RING_HDR_SIZE + DATA), 0);
	int ok = 0;
	while (put(r, RING_REC_DATA, 1, 0, pay, sizeof(pay)) == 0 && ok < 1000)
		ok++;
	/* data stops short of the control reserve: 64 - 4 KiB / 1 KiB records */
	CHECK_EQ(ok, 64 - (int)(RING_CTRL_RESERVE / 1024));
	CHECK_EQ(put(r, RING_REC_DATA, 1, 0, pay, sizeof(pay)), -EAGAIN);
	CHECK_EQ(ring_peek(&c, &v), 0);
	ring_release(&c);
	ring_publish(&c); /* producers see freed space only once published */
	CHECK_EQ(put(r, RING_REC_DATA, 1, 0, pay, sizeof(pay)), 0);
	free(r);
}

TEST(ring_control_records_use_the_reserve)
{
	struct ring_hdr *r = ring_new();
	if (!CHECK(r))
		return;
	static uint8_t pay[REC_PAYLOAD];
	while (put(r, RING_REC_DATA, 1, 0, pay, sizeof(pay)) == 0)
		;
	/* full for data, yet a CLOSE with its final offsets still fits: each is
	 * 64 bytes of header + 16 of offsets, rounded to 128 */
	struct ring_reservation res;
	int n = 0;
	while (ring_reserve_ctrl(r, 16, &res) == 0 && n < 1000) {
		ring_commit(&res, RING_REC_CLOSE, 0, 1, 7, 0, 16);
		n++;
	}
	CHECK_EQ(n, (int)(RING_CTRL_RESERVE / 128));
	CHECK_EQ(ring_reserve_ctrl(r, 16, &res), -EAGAIN);
	free(r);
}

TEST(ring_release_publishes_tail_in_batches)
{
	struct ring_hdr *r = ring_new();
	if (!CHECK(r))
		return;
	struct ring_consumer c;
	struct ring_view v;
	static uint8_t pay[REC_PAYLOAD];
	CHECK_EQ(ring_consumer_init(&c, r, RING_HDR_SIZE + DATA), 0);
	for (int i = 0; i < 4; i++) { /* 4 KiB = 1/16 of the ring */
		put(r, RING_REC_DATA, 1, 0, pay, sizeof(pay));
		ring_peek(&c, &v);
		ring_release(&c);
		CHECK_EQ(r->tail, i < 3 ? 0 : 4096);
	}
	put(r, RING_REC_DATA, 1, 0, pay, sizeof(pay));
	ring_peek(&c, &v);
	ring_release(&c);
	CHECK_EQ(r->tail, 4096);
	ring_publish(&c);
	CHECK_EQ(r->tail, 5120);
	free(r);
}

TEST(ring_oversized_reserve_is_emsgsize)
{
	struct ring_hdr *r = ring_new();
	struct ring_reservation res;
	if (!CHECK(r))
		return;
	CHECK_EQ(ring_reserve(r, RING_MAX_CHUNK + 1, NULL, &res), -EMSGSIZE);
	free(r);
}

/* Commits one record at position 0 and returns its header for corruption. */
static struct ring_rec *first_rec(struct ring_hdr *r)
{
	put(r, RING_REC_DATA, 1, 0, "abc", 3);
	return (struct ring_rec *)((uint8_t *)r + RING_HDR_SIZE);
}

TEST(ring_bad_length_is_ebadmsg)
{
	struct ring_hdr *r = ring_new();
	if (!CHECK(r))
		return;
	struct ring_consumer c;
	struct ring_view v;
	CHECK_EQ(ring_consumer_init(&c, r, RING_HDR_SIZE + DATA), 0);
	first_rec(r)->len = 100; /* not a multiple of RING_ALIGN */
	CHECK_EQ(ring_peek(&c, &v), -EBADMSG);
	first_rec(r)->len = DATA + 64; /* beyond the end of the data area */
	CHECK_EQ(ring_peek(&c, &v), -EBADMSG);
	free(r);
}

TEST(ring_bad_payload_bounds_is_ebadmsg)
{
	struct ring_hdr *r = ring_new();
	if (!CHECK(r))
		return;
	struct ring_consumer c;
	struct ring_view v;
	CHECK_EQ(ring_consumer_init(&c, r, RING_HDR_SIZE + DATA), 0);
	struct ring_rec *rec = first_rec(r);
	rec->data_len = rec->len; /* runs past the record */
	CHECK_EQ(ring_peek(&c, &v), -EBADMSG);
	rec->data_len = 3;
	rec->data_off = 8; /* inside the header */
	CHECK_EQ(ring_peek(&c, &v), -EBADMSG);
	free(r);
}

TEST(ring_bad_type_is_ebadmsg)
{
	struct ring_hdr *r = ring_new();
	if (!CHECK(r))
		return;
	struct ring_consumer c;
	struct ring_view v;
	CHECK_EQ(ring_consumer_init(&c, r, RING_HDR_SIZE + DATA), 0);
	first_rec(r)->type = RING_REC_NTYPES;
	CHECK_EQ(ring_peek(&c, &v), -EBADMSG);
	free(r);
}

TEST(ring_pad_not_reaching_the_end_is_ebadmsg)
{
	struct ring_hdr *r = ring_new();
	if (!CHECK(r))
		return;
	struct ring_consumer c;
	struct ring_view v;
	CHECK_EQ(ring_consumer_init(&c, r, RING_HDR_SIZE + DATA), 0);
	first_rec(r)->type = RING_REC_PAD;
	CHECK_EQ(ring_peek(&c, &v), -EBADMSG);
	free(r);
}

TEST(ring_stale_commit_from_previous_lap_is_not_committed)
{
	struct ring_hdr *r = ring_new();
	if (!CHECK(r))
		return;
	struct ring_consumer c;
	struct ring_view v;
	struct ring_reservation res;
	CHECK_EQ(ring_consumer_init(&c, r, RING_HDR_SIZE + DATA), 0);
	if (!CHECK_EQ(fill_lap(r, &c), 0))
		goto out;
	/* position DATA lands on offset 0, whose commit word is lap 0's */
	CHECK_EQ(c.tail, DATA);
	CHECK_EQ(ring_peek(&c, &v), -EAGAIN);
	CHECK_EQ(ring_reserve(r, REC_PAYLOAD, NULL, &res), 0);
	CHECK_EQ(ring_peek(&c, &v), -EAGAIN); /* reserved in lap 1, old word still there */
	ring_commit(&res, RING_REC_CLOSE, 0, 77, 0, 0, 0);
	CHECK_EQ(ring_peek(&c, &v), 0);
	CHECK_EQ(v.conn_id, 77);
out:
	free(r);
}

TEST(ring_consumer_init_checks_fields)
{
	struct ring_hdr *r = ring_new();
	if (!CHECK(r))
		return;
	struct ring_consumer c;
	size_t map = RING_HDR_SIZE + DATA;
	CHECK_EQ(ring_consumer_init(&c, r, map), 0);
	CHECK_EQ(c.size, DATA);
	CHECK_EQ(ring_consumer_init(&c, r, map - 1), -EINVAL);
	r->data_size = DATA + 4096; /* not a power of two */
	CHECK_EQ(ring_consumer_init(&c, r, map + 4096), -EINVAL);
	r->data_size = 2 * DATA; /* more than the mapping holds */
	CHECK_EQ(ring_consumer_init(&c, r, map), -EINVAL);
	r->data_size = DATA;
	r->hdr_size = 64;
	CHECK_EQ(ring_consumer_init(&c, r, map), -EINVAL);
	r->hdr_size = RING_HDR_SIZE;
	r->version = RING_VERSION + 1;
	CHECK_EQ(ring_consumer_init(&c, r, map), -EINVAL);
	r->version = RING_VERSION;
	r->magic ^= 1;
	CHECK_EQ(ring_consumer_init(&c, r, map), -EINVAL);
	CHECK(c.ring == NULL);
	free(r);
}

/* The size used is the one validated: a later change of the shared field
 * (a hostile producer) does not reach the consumer. */
TEST(ring_consumer_uses_its_copy_of_data_size)
{
	struct ring_hdr *r = ring_new();
	if (!CHECK(r))
		return;
	struct ring_consumer c;
	struct ring_view v;
	CHECK_EQ(ring_consumer_init(&c, r, RING_HDR_SIZE + DATA), 0);
	r->data_size = RING_MAX_DATA;
	r->head = r->tail = 0x20000000ull; /* 512 MiB: far outside the mapping */
	c.tail = 0x20000000ull;
	CHECK_EQ(ring_peek(&c, &v), -EAGAIN); /* reads at 0x20000000 & (DATA - 1) */
	CHECK_EQ(c.size, DATA);
	free(r);
}

TEST(ring_consumer_ignores_nonsense_tail)
{
	struct ring_hdr *r = ring_new();
	if (!CHECK(r))
		return;
	struct ring_consumer c;
	put(r, RING_REC_DATA, 1, 0, "x", 1);
	r->tail = 3; /* misaligned: cannot resume there */
	CHECK_EQ(ring_consumer_init(&c, r, RING_HDR_SIZE + DATA), 0);
	CHECK_EQ(c.tail, r->head);
	free(r);
}

TEST(ring_copy_is_byte_exact_at_every_size)
{
	struct ring_hdr *r = ring_new();
	uint8_t *src = malloc(20001);
	if (!CHECK(r) || !CHECK(src))
		goto out;
	for (uint32_t i = 0; i < 20001; i++)
		src[i] = (uint8_t)(i * 131 + 7);
	/* below, at and above RING_NT_MIN; odd tails; unaligned sources */
	static const uint32_t lens[] = { 1, 63, 4095, RING_NT_MIN, 4097, 16384, 20000 };
	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		for (uint32_t skew = 0; skew < 2; skew++) {
			struct ring_consumer c;
			struct ring_view v;
			memset((uint8_t *)r + RING_HDR_SIZE, 0xee, DATA);
			ring_init(r, DATA, 42);
			CHECK_EQ(ring_consumer_init(&c, r, RING_HDR_SIZE + DATA), 0);
			struct ring_reservation res;
			if (!CHECK_EQ(ring_reserve(r, lens[k], src + skew, &res), 0))
				continue;
			ring_copy(&res, src + skew, lens[k]);
			CHECK_EQ(res.data[lens[k]], 0xee); /* nothing written past the end */
			ring_commit(&res, RING_REC_DATA, 0, 1, 0, 0, lens[k]);
			if (CHECK_EQ(ring_peek(&c, &v), 0)) {
				CHECK_EQ(v.data_len, lens[k]);
				CHECK_MEM(v.data, src + skew, lens[k]);
			}
		}
	}
out:
	free(src);
	free(r);
}
