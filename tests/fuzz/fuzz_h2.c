/* Fuzz target: input bytes are ring records of one HTTP/2 connection; the chain with the --h2-to-h1 stage must survive them. */
#include "common/log.h"
#include "http/records.h"
#include "pipeline/pipeline.h"
#include "sinks/sink.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * Input layout:
 *   byte 0               bit 0: ALPN "h2" (else empty: detection by preface);
 *                        bit 1: the mirrored process is the server;
 *                        bit 2: HTTP records too (--http-log, 16-byte bodies);
 *                        bit 3: no --h2-to-h1 (the stage only taps, for the records)
 *   then records         [op: 1 byte][len: 2 bytes big-endian][len bytes]
 *                        op bit 0: direction (1 s2c); op bits 1-2: 0 DATA at
 *                        the next offset, 1 DATA after skipping 7 bytes (a
 *                        gap), 2 GAP record of len bytes (no payload), 3 the
 *                        process exits (ORIGIN_CLOSED) and input ends
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

/* One record through the chain (h2 then flows), as the ring source hands it. */
static void record(struct pipeline *pl, int op, const uint8_t *p, size_t n, uint64_t off[2])
{
	static const struct conn_id id = { 1, 1 };
	int dir = op & 1, kind = (op >> 1) & 3;
	if (kind == 2) {
		pipeline_gap(pl, &id, dir, 2, n);
		off[dir] += n;
		return;
	}
	if (kind == 1)
		off[dir] += 7;
	pipeline_data(pl, &id, dir, 2, off[dir], p, n, NULL);
	off[dir] += n;
}

/* A record is one line without a control byte but its newline. */
static void check_line(void *arg, const uint8_t *line, size_t n, uint64_t ts)
{
	(void)arg;
	(void)ts;
	if (!n || line[n - 1] != '\n')
		abort();
	for (size_t i = 0; i + 1 < n; i++)
		if (line[i] < 0x20)
			abort();
}

/* A chain of the http stage and the flow engine, writing to sinks. */
static struct pipeline *h2_chain(struct sink_set *sinks, struct rec_builder *rec, int convert)
{
	struct pipeline_opts po = { .flow = { .mss = 1460, .sinks = sinks }, .records = rec };
	for (size_t i = 0; i < stage_table_len; i++)
		if (!strcmp(stage_table[i].name, "http") && convert)
			po.arg[i] = "";
	const char *why;
	struct pipeline *pl = pipeline_new(&po, &why);
	if (pl)
		pipeline_origin_new(pl); /* origin 1: the process */
	return pl;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sink_set *sinks = fuzz_sinks();
	struct rec_config rc = { .body_max = 16, .emit = check_line };
	struct rec_builder *rec = size && (data[0] & 4) ? rec_new(&rc) : NULL;
	struct pipeline *pl = h2_chain(sinks, rec, !size || !(data[0] & 8));
	struct conn_meta *m = conn_meta_new();
	uint64_t off[2] = { 0, 0 };
	if (!pl || !m || !size)
		goto out;
	struct conn_open fi = {.id = { 1, 1 }, .ts_ns = 1, .family = 4,
			       .side = (data[0] >> 1) & 1, .client_port = 40000,
			       .server_port = 443, .meta = m};
	memcpy(fi.client_addr, "\x7f\x00\x00\x01", 4);
	memcpy(fi.server_addr, "\x7f\x00\x00\x02", 4);
	if (data[0] & 1)
		strcpy(m->alpn, "h2");
	pipeline_open(pl, &fi);
	size_t at = 1;
	while (at < size) {
		int op = data[at++];
		if ((op >> 1 & 3) == 3) {
			pipeline_origin(pl, 1, ORIGIN_CLOSED, 3);
			goto out;
		}
		size_t n = at + 2 <= size ? (size_t)data[at] << 8 | data[at + 1] : 0;
		at = at + 2 <= size ? at + 2 : size;
		if (n > size - at)
			n = size - at;
		record(pl, op, data + at, n, off);
		at += n;
	}
	pipeline_close(pl, &fi.id, 3, 0);
out:
	if (pl)
		pipeline_close_all(pl, 4);
	sink_set_flush(sinks);
	conn_meta_unref(m);
	pipeline_free(pl);
	rec_free(rec);
	return 0;
}
