/* Fuzz target: input bytes are ring records of one HTTP/2 connection; the --h2-to-h1 converter must survive them. */
#include "common/log.h"
#include "flows/flow.h"
#include "sinks/sink.h"
#include "transforms/h2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * Input layout:
 *   byte 0               bit 0: ALPN "h2" (else empty: detection by preface);
 *                        bit 1: the mirrored process is the server
 *   then records         [op: 1 byte][len: 2 bytes big-endian][len bytes]
 *                        op bit 0: direction (1 s2c); op bits 1-2: 0 DATA at
 *                        the next offset, 1 DATA after skipping 7 bytes (a
 *                        gap), 2 GAP record of len bytes (no payload), 3 the
 *                        process exits (h2_close_proc) and input ends
 * A record cut short by the end of the input carries what is left. At the
 * end the connection closes; the flow engine writes pcap to /dev/null.
 */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct sink_set *fuzz_sinks(void)
{
	static struct sink_set set;
	static int ready;
	if (!ready) {
		struct sink_opts o = {.snaplen = 65535};
		const char *msg;
		ready = 1;
		log_quiet = 1;
		(void)sink_set_add(&set, &sink_pcap_ops, "/dev/null", &o, &msg);
	}
	return &set;
}

/* Hands one record to the converter, or to the flow engine once it let go. */
static void record(struct flow_table *f, struct h2_table *t, int op, const uint8_t *p,
		   size_t n, uint64_t off[2])
{
	int dir = op & 1, kind = (op >> 1) & 3;
	if (kind == 2) {
		if (h2_gap(t, 1, 1, dir, 2, n) == -ENOENT)
			flow_gap(f, 1, 1, dir, 2, n);
		off[dir] += n;
		return;
	}
	if (kind == 1)
		off[dir] += 7;
	if (h2_data(t, 1, 1, dir, 2, off[dir], p, n, NULL) == -ENOENT)
		flow_data(f, 1, 1, dir, 2, off[dir], p, n, NULL);
	off[dir] += n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct flow_config cfg = {.mss = 1460, .sinks = fuzz_sinks()};
	struct flow_table *f = flow_table_new(&cfg);
	struct h2_table *t = f ? h2_table_new(f) : NULL;
	uint64_t off[2] = { 0, 0 };
	if (!t || !size)
		goto out;
	struct flow_open_info fi = {.proc_key = 1, .conn_id = 1, .ts_ns = 1, .family = 4,
				    .side = (data[0] >> 1) & 1, .client_port = 40000,
				    .server_port = 443};
	memcpy(fi.client_addr, "\x7f\x00\x00\x01", 4);
	memcpy(fi.server_addr, "\x7f\x00\x00\x02", 4);
	if (h2_open(t, &fi, (data[0] & 1) ? "h2" : "") != 1)
		flow_open(f, &fi);
	size_t at = 1;
	while (at < size) {
		int op = data[at++];
		if ((op >> 1 & 3) == 3) {
			h2_close_proc(t, 1, 3);
			flow_close_proc(f, 1, 3);
			goto out;
		}
		size_t n = at + 2 <= size ? (size_t)data[at] << 8 | data[at + 1] : 0;
		at = at + 2 <= size ? at + 2 : size;
		if (n > size - at)
			n = size - at;
		record(f, t, op, data + at, n, off);
		at += n;
	}
	if (h2_close(t, 1, 1, 3) == -ENOENT)
		flow_close(f, 1, 1, 3);
out:
	if (f)
		flow_close_all(f, 4);
	sink_set_flush(cfg.sinks);
	h2_table_free(t);
	flow_table_free(f);
	return 0;
}
