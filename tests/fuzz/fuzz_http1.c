/* Fuzz target: input bytes are both directions of one HTTP/1.x connection; the parser and the records must survive them, and every record is one line without a control byte. */
#include "http/h1.h"
#include "http/records.h"
#include "pipeline/conn.h"

#include <stdlib.h>
#include <string.h>

/*
 * Input layout:
 *   byte 0     --http-body-max: 0, 16, 4096 or 64K (bits 0-1); bit 2 Akto's format
 *   then       [op: 1 byte][len: 2 bytes big-endian][len bytes]
 *              op bit 0: direction (1 server); op bits 1-2: 0 bytes, 1 a gap,
 *              2 the connection closes (input ends)
 * A record cut short by the end of the input carries what is left.
 */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A record is one line: JSON text escapes every control byte, so the only
 * one is its final newline (a byte from the wire never starts a new record). */
static void check_line(void *arg, const uint8_t *line, size_t n, uint64_t ts)
{
	(void)arg;
	(void)ts;
	if (!n || line[n - 1] != '\n' || line[0] != '{')
		abort();
	for (size_t i = 0; i + 1 < n; i++)
		if (line[i] < 0x20)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t caps[4] = { 0, 16, 4096, 65536 };
	if (!size)
		return 0;
	struct rec_config rc = { .body_max = caps[data[0] & 3], .emit = check_line,
				 .format = data[0] & 4 ? REC_FORMAT_AKTO : REC_FORMAT_TLSMIRROR,
				 .headers_only = { "image/" }, .n_headers_only = 1 };
	struct rec_builder *b = rec_new(&rc);
	struct conn_meta *m = conn_meta_new();
	struct conn_open o = { .id = { 1, 1 }, .family = 4, .client_port = 40000,
			       .server_port = 443, .meta = m };
	struct http_conn_info ci = { .open = &o };
	struct h1_counters ctr = { 0 };
	if (!b || !m) {
		rec_free(b);
		conn_meta_unref(m);
		return 0;
	}
	struct http_consumer cons = rec_consumer(b, 0);
	struct h1_conn *c = h1_new(&ci, &cons, 1, &ctr);
	size_t at = 1;
	uint64_t ts = 1;
	while (c && at < size) {
		int op = data[at++];
		int dir = op & 1, kind = (op >> 1) & 3;
		size_t n = at + 2 <= size ? (size_t)data[at] << 8 | data[at + 1] : 0;
		at = at + 2 <= size ? at + 2 : size;
		if (n > size - at)
			n = size - at;
		if (kind == 2)
			break;
		if (kind == 1)
			h1_gap(c, dir, ts);
		else
			h1_feed(c, dir, ts, data + at, n);
		at += n;
		ts++;
	}
	if (c) {
		h1_close(c, ts);
		h1_free(c, ts);
	}
	rec_free(b);
	conn_meta_unref(m);
	return 0;
}
