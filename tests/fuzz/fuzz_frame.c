/* Fuzz target: input bytes are what a collector reads from a tunnel; frame parsing must reject or accept them safely. */
#include "tunnel/frame.h"

#include <stdlib.h>
#include <string.h>

/*
 * The input is a byte stream of frames, as the collector sees it once TLS is
 * off: each header is checked, its payload decompressed (zstd) to exactly
 * raw_len and parsed per type; every packet of an accepted PACKETS payload
 * is walked and read. The first rejected frame ends the stream, as it ends
 * a connection.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink_byte;

static void walk_packets(const uint8_t *p, size_t n)
{
	const char *why;
	if (frame_packets_check(p, n, &why) < 0)
		return;
	size_t off = 4;
	struct frame_pkt pk;
	while (frame_packets_next(p, n, &off, &pk))
		sink_byte ^= pk.data[0] ^ pk.data[pk.len - 1] ^ (uint8_t)pk.ts_ns;
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
		} else if (h.type == FRAME_PACKETS && h.flags) {
			uint8_t *raw = malloc(h.raw_len ? h.raw_len : 1);
			if (raw && frame_decompress(&h, pl, raw, &why) == 0)
				walk_packets(raw, h.raw_len);
			free(raw);
		} else if (h.type == FRAME_PACKETS) {
			walk_packets(pl, h.len);
		}
	}
	frame_zstd_release();
	return 0;
}
