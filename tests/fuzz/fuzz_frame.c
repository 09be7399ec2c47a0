/* Fuzz target: input bytes are what a collector reads from a tunnel; frame parsing must reject or accept them safely. */
#include "tunnel/frame.h"

#include <stdlib.h>
#include <string.h>

/*
 * The input is a byte stream of frames, as the collector sees it once TLS is
 * off: each header is checked, its payload decompressed (zstd, LZ4) to
 * exactly raw_len and parsed per type; every event of an accepted EVENTS
 * payload is read again, as the collector does before using it (OPEN's
 * strings, DATA's bytes). The first rejected frame ends the stream, as it
 * ends a connection.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink_byte;

static void walk_events(const uint8_t *p, size_t n)
{
	const char *why;
	int count = frame_events_check(p, n, &why);
	if (count < 0)
		return;
	size_t off = 4;
	struct frame_open o;
	struct frame_event ev = { .open = &o };
	int seen = 0;
	while (frame_event_next(p, n, &off, &ev, &why) == 1) {
		seen++;
		if (ev.type == FRAME_EV_DATA)
			sink_byte ^= ev.data[0] ^ ev.data[ev.len - 1];
		else if (ev.type == FRAME_EV_OPEN)
			sink_byte ^= (uint8_t)(strlen(o.comm) + strlen(o.sni) + strlen(o.alpn) +
					       strlen(o.cipher));
	}
	if (seen != count || off != n)
		abort(); /* the check and the walk disagree: a parser bug */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off < size) {
		struct frame_hdr h;
		const char *why = NULL;
		if (frame_hdr_parse(data + off, size - off, &h, &why) < 0)
			break;
		if (size - off - FRAME_HDR_SIZE < h.len)
			break;
		const uint8_t *pl = data + off + FRAME_HDR_SIZE;
		off += FRAME_HDR_SIZE + h.len;
		struct frame_hello hello;
		struct frame_heartbeat hb;
		if (h.type == FRAME_HELLO) {
			if (frame_hello_parse(pl, h.len, &hello, &why) < 0)
				break;
		} else if (h.type == FRAME_HEARTBEAT) {
			frame_heartbeat_parse(pl, h.len, &hb, &why);
		} else if (h.type == FRAME_EVENTS && h.flags) {
			uint8_t *raw = malloc(h.raw_len ? h.raw_len : 1);
			if (raw && frame_decompress(&h, pl, raw, &why) == 0)
				walk_events(raw, h.raw_len);
			free(raw);
		} else if (h.type == FRAME_EVENTS) {
			walk_events(pl, h.len);
		}
	}
	frame_zstd_release();
	return 0;
}
