/* Writes the seed inputs of the ring fuzz target (tests/fuzz/corpus/ring/seed-*). */
/*
 * Built and run by tests/fuzz/run.sh --seeds:
 *   cc -std=gnu11 -Isrc -D_GNU_SOURCE tests/fuzz/mkseeds.c src/transport/ring.c
 * Each seed is laid out as fuzz_ring.c expects: the 4 KiB header, then the
 * data area from the consumer's start position up to head, wrapping.
 */
#include "transport/ring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAP_LEN (RING_HDR_SIZE + RING_MIN_DATA)

static uint8_t *mem;

static struct ring_hdr *fresh(uint64_t start)
{
	memset(mem, 0, MAP_LEN);
	struct ring_hdr *r = (struct ring_hdr *)mem;
	ring_init(r, RING_MIN_DATA, 4242);
	r->head = r->tail = start;
	return r;
}

static void put(struct ring_hdr *r, uint16_t type, uint16_t flags, uint64_t conn,
		uint64_t off, const void *data, uint32_t len)
{
	struct ring_reservation res;
	if (ring_reserve(r, len, NULL, &res)) {
		fprintf(stderr, "mkseeds: ring full\n");
		exit(1);
	}
	if (len)
		memcpy(res.data, data, len);
	ring_commit(&res, type, flags, conn, 1700000000000000000ull + off, off, len);
}

static void put_open(struct ring_hdr *r, uint64_t conn, int family, int midstream,
		     uint64_t off0, uint64_t off1)
{
	struct ring_open op;
	memset(&op, 0, sizeof(op));
	op.family = (uint8_t)family;
	op.side = RING_SIDE_SERVER;
	op.map_method = RING_MAP_FD;
	op.midstream = (uint8_t)midstream;
	op.client_port = 40000;
	op.server_port = 443;
	if (family == 4) {
		memcpy(op.client_addr, "\x7f\x00\x00\x01", 4);
		memcpy(op.server_addr, "\x7f\x00\x00\x01", 4);
	} else {
		op.client_addr[15] = 1;
		op.server_addr[15] = 1;
	}
	op.off[0] = off0;
	op.off[1] = off1;
	op.tls_version = 0x0304;
	strcpy(op.sni, "seed.test");
	strcpy(op.alpn, "h2");
	strcpy(op.cipher, "TLS_AES_128_GCM_SHA256");
	put(r, RING_REC_OPEN, 0, conn, 0, &op, sizeof(op));
}

static int dump(const char *dir, const char *name, struct ring_hdr *r, uint64_t start)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f)
		return -errno;
	uint8_t *base = mem + RING_HDR_SIZE;
	fwrite(mem, 1, RING_HDR_SIZE, f);
	for (uint64_t p = start; p < r->head; p++)
		fputc(base[p & (RING_MIN_DATA - 1)], f);
	fclose(f);
	printf("mkseeds: %s\n", path);
	return 0;
}

int main(int argc, char **argv)
{
	static const char req[] = "POST /api HTTP/1.1\r\nHost: seed.test\r\nContent-Length: 5\r\n\r\nhello";
	static uint8_t big[5000];
	uint64_t gap = 3000;
	if (argc != 2 || !(mem = aligned_alloc(4096, MAP_LEN)))
		return 2;
	memset(big, 'x', sizeof(big));

	struct ring_hdr *r = fresh(0); /* a whole connection, both directions */
	put_open(r, 1, 4, 0, 0, 0);
	put(r, RING_REC_DATA, 0, 1, 0, req, sizeof(req) - 1);
	put(r, RING_REC_DATA, RING_F_DIR_S2C, 1, 0, big, sizeof(big));
	put(r, RING_REC_CLOSE, 0, 1, 0, NULL, 0);
	dump(argv[1], "seed-basic", r, 0);

	uint64_t s = RING_MIN_DATA - 128; /* OPEN does not fit: PAD, then wrap */
	r = fresh(s);
	put_open(r, 2, 6, 0, 0, 0);
	put(r, RING_REC_DATA, 0, 2, 0, big, 3000);
	dump(argv[1], "seed-wrap-ipv6", r, s);

	r = fresh(0); /* midstream attach, a gap, a GAP record, a second conn */
	put_open(r, 3, 4, 1, 1000, 2000);
	put(r, RING_REC_DATA, 0, 3, 1500, req, sizeof(req) - 1);
	put(r, RING_REC_GAP, RING_F_DIR_S2C, 3, 2000, &gap, sizeof(gap));
	put(r, RING_REC_DATA, RING_F_DIR_S2C, 3, 5000, big, 100);
	put_open(r, 4, 4, 0, 0, 0);
	put(r, RING_REC_DATA, 0, 4, 0, req, 10);
	put(r, RING_REC_DATA, 0, 3, 0, req, 10); /* behind: -ERANGE */
	put(r, RING_REC_CLOSE, 0, 3, 0, NULL, 0);
	dump(argv[1], "seed-midstream-gap", r, 0);

	r = fresh(0); /* reopen of a live id, data after close, bad record last */
	put_open(r, 5, 4, 0, 0, 0);
	put_open(r, 5, 4, 0, 0, 0);
	put(r, RING_REC_CLOSE, 0, 5, 0, NULL, 0);
	put(r, RING_REC_DATA, 0, 5, 0, req, 4);
	put(r, RING_REC_DATA, 0, 6, 0, req, 4);
	struct ring_reservation res;
	ring_reserve(r, 8, NULL, &res);
	ring_commit(&res, 99, 0, 5, 0, 0, 8);
	dump(argv[1], "seed-misuse", r, 0);
	return 0;
}
