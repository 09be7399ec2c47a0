/* Fuzz target: input bytes are captured frames (a 2-byte length before each, Ethernet), through the decryptor's frame decoder and TCP reassembly; both must survive any of it, hand each direction on without overlaps, and keep their held bytes within the caps. */
#include "common/bytes.h"
#include "decrypt/engine.h"

#include <pcap/dlt.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_open(void *arg, struct dconn *c, uint64_t ts)
{
	(void)arg;
	(void)c;
	(void)ts;
}

static void on_data(void *arg, struct dconn *c, int dir, uint64_t ts, const uint8_t *p, size_t n)
{
	(void)arg;
	(void)c;
	(void)ts;
	(void)p;
	(void)n;
	if (dir < 0 || dir > 1)
		abort();
}

static void on_gap(void *arg, struct dconn *c, int dir, uint64_t ts, uint64_t n)
{
	(void)arg;
	(void)c;
	(void)ts;
	(void)n;
	(void)dir;
}

static void on_close(void *arg, struct dconn *c, uint64_t ts)
{
	(void)arg;
	(void)c;
	(void)ts;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct key_store *ks = keys_new(4);
	struct decrypt_opts o;
	memset(&o, 0, sizeof(o));
	o.tcp.max_flows = 8;
	o.tcp.ooo_per_dir = 4096;
	o.tcp.ooo_total = 16384;
	struct decrypt_out out = { on_open, on_data, on_gap, on_close, NULL };
	struct decrypt_engine *e = decrypt_new(&o, &out, ks);
	if (!e || !ks)
		abort();
	size_t at = 0;
	uint64_t ts = 1;
	while (at + 2 <= size) {
		size_t n = get_be16(data + at);
		at += 2;
		if (n > size - at)
			n = size - at;
		decrypt_tick(e, ts);
		decrypt_frame(e, DLT_EN10MB, ts, data + at, n, n + (data[at - 1] & 3));
		ts += 1000000;
		at += n;
		if (decrypt_tcp_stats(e)->ooo_bytes > 16384 || decrypt_tcp_stats(e)->flows_open > 8)
			abort();
	}
	decrypt_finish(e, ts);
	decrypt_give_up_all(e);
	if (decrypt_tcp_stats(e)->flows_open || decrypt_tcp_stats(e)->ooo_bytes)
		abort();
	decrypt_free(e);
	keys_free(ks);
	return 0;
}
