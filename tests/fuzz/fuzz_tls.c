/* Fuzz target: input bytes are a TLS connection's two directions, interleaved in chunks (a header byte per chunk: direction, gap or data, length), fed to the passive TLS follower with keys known for the client random 01..01; it must survive any of it, keep its held bytes within the caps, and hand on clear text only from records that authenticated. A first byte of 0xC0-0xC3 places the connection mid-stream first (# TUPLE: TLS 1.3 or 1.2, with its sequence search). */
#include "decrypt/tlsdec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t out_bytes;

static void on_data(void *arg, int dir, uint64_t ts, const uint8_t *p, size_t n)
{
	(void)arg;
	(void)ts;
	if (dir < 0 || dir > 1 || n > TLS_MAX_PLAIN + 256)
		abort();
	for (size_t i = 0; i < n; i++)
		out_bytes += p[i] & 1; /* touch every byte (ASan checks the buffer) */
}

static void on_gap(void *arg, int dir, uint64_t ts, uint64_t n, int exact)
{
	(void)arg;
	(void)ts;
	(void)n;
	(void)exact;
	if (dir < 0 || dir > 1)
		abort();
}

static struct key_store *keys(void)
{
	static struct key_store *ks;
	if (ks)
		return ks;
	ks = keys_new(16);
	static const char *labels[] = { "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
					"CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0",
					"CLIENT_EARLY_TRAFFIC_SECRET" };
	char l[256];
	const char *cr = "0101010101010101010101010101010101010101010101010101010101010101";
	for (size_t i = 0; i < 5; i++) {
		snprintf(l, sizeof(l), "%s %s %064d", labels[i], cr, (int)i);
		keys_add_line(ks, l, strlen(l), &(const char *){ NULL });
	}
	snprintf(l, sizeof(l), "CLIENT_RANDOM %s %096d", cr, 5);
	keys_add_line(ks, l, strlen(l), &(const char *){ NULL });
	return ks;
}

/* A placement of client random 01..01: TLS 1.3 (v13) or TLS 1.2, GCM or CBC. */
static struct key_entry placement(int v13, int cbc)
{
	const struct key_entry *e = keys_find(keys(), (const uint8_t[32]){ [0 ... 31] = 1 });
	struct key_entry p = *e;
	p.placed = 1;
	p.version = v13 ? 0x0304 : 0x0303;
	p.suite = v13 ? (cbc ? 0 : 0x1301) : (cbc ? 0xc028 : 0xc02f);
	memset(p.sr, 2, 32);
	return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tlsd_counters c;
	memset(&c, 0, sizeof(c));
	struct tlsd_limits lim = { 1 << 16, 1 << 17, NULL, NULL, 64 };
	struct tlsd_out o = { on_data, on_gap, NULL };
	struct tlsd *t = tlsd_new(&o, &c, &lim);
	struct key_store *none = keys_new(1), *ks = keys();
	if (!t || !none)
		abort();
	size_t at = 0;
	if (size && (data[0] & 0xfc) == 0xc0) {
		struct key_entry p = placement(data[0] & 1, data[0] & 2);
		if (tlsd_place(t, 0, &p) < 0)
			abort();
		at = 1;
	}
	while (at < size) {
		uint8_t h = data[at++];
		size_t n = (size_t)(h >> 3) * 37 + 1;
		if (n > size - at)
			n = size - at;
		/* bit 2: keys not known yet (they come with the next chunk that has it clear) */
		const struct key_store *k = (h & 4) ? none : ks;
		if (h & 2)
			tlsd_gap(t, h & 1, 1, n, k);
		else
			tlsd_feed(t, h & 1, 1, data + at, n, k);
		if (!(h & 4))
			tlsd_retry(t, ks);
		if (c.waiting_bytes > lim.wait_total)
			abort();
		at += (h & 2) ? 0 : n;
	}
	tlsd_give_up(t);
	if (c.waiting_bytes)
		abort();
	tlsd_free(t);
	keys_free(none);
	return 0;
}
