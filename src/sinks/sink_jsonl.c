/* JSON Lines sink: HTTP records (one line each) to a file or stdout, with the capture files' rotation and loss rules. */
#include "sinks/sink.h"
#include "sinks/sink_file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * A record arrives as a struct pkt whose hdr is the whole line ('\n'
 * included; payload empty), through the sink's queue like a packet, so a
 * slow disk or a reader that does not keep up drops records (counted)
 * instead of stalling the agent. Files: sink_file.c (names, rotation by
 * size or time, a ring of files, write errors, stdout). A line whole in
 * the queue is written from there (writev at the end of the batch: no copy
 * into the file buffer, and no size limit). The queue's worker flushes when
 * it runs dry, so `--http-log - | jq` sees each record at once.
 */

static size_t no_header(void *arg, uint8_t *dst, size_t room)
{
	(void)arg;
	(void)dst;
	(void)room;
	return 0;
}

static int jsonl_write(struct sink *s, const struct pkt *pkts, size_t n)
{
	struct sink_file *f = s->priv;
	int ret = 0;
	size_t refs = 0;
	for (size_t i = 0; i < n; i++) {
		const struct pkt *k = &pkts[i];
		uint64_t len = pkt_frame_len(k);
		int r;
		if (!k->payload_len && !k->more_len && k->hdr_len) {
			/* the line in one piece (from the queue): referenced */
			r = sink_file_put_ref(f, k->ts_ns, k->hdr, k->hdr_len, len);
			refs++;
			if (r < 0 && !ret)
				ret = r;
			continue;
		}
		uint8_t *rec = sink_file_reserve(f, k->ts_ns, (size_t)len, len, &r);
		if (rec) {
			memcpy(rec, k->hdr, k->hdr_len);
			pkt_copy_payload(rec + k->hdr_len, k, (size_t)len - k->hdr_len);
			sink_file_commit(f, k->ts_ns, (size_t)len, len);
		}
		if (r < 0 && !ret)
			ret = r;
	}
	if (refs) {
		/* the queue's space goes once this returns */
		int r = sink_file_flush(f);
		if (r < 0 && !ret)
			ret = r;
	}
	return ret;
}

static int jsonl_open(struct sink *s, const char *target, const struct sink_opts *o,
		      const char **err_msg)
{
	(void)target;
	return sink_file_sink_open(s, o, no_header, UINT32_MAX, err_msg);
}

const struct sink_ops sink_jsonl_ops = {
	.name = "http-log",
	.open = jsonl_open,
	.write = jsonl_write,
	.flush = sink_file_sink_flush,
	.close = sink_file_sink_close,
	.counters = sink_record_counters,
};
