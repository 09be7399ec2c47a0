/* Fuzz target: input bytes are HPACK header blocks decoded in turn by one decoder (RFC 7541); it must never read or write out of bounds. */
#include "transforms/hpack.h"

#include <stdlib.h>
#include <string.h>

/*
 * Input layout:
 *   byte 0      SETTINGS_HEADER_TABLE_SIZE: byte * 64 (0-16320)
 *   then blocks [len: 2 bytes big-endian][len bytes], a block cut short by the
 *               end of the input carries what is left; the first block that
 *               fails ends the input (the connection would fall back)
 * After each block every field is read back and the table's invariants checked.
 */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

volatile uint8_t fuzz_hpack_sink; /* the fields are read */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	struct hpack_dec d;
	hpack_init(&d, (size_t)data[0] * 64);
	struct h2_hdrs h = { 0 };
	size_t at = 1;
	while (at < size) {
		size_t len = size - at >= 2 ? ((size_t)data[at] << 8 | data[at + 1]) : 0;
		at += size - at >= 2 ? 2 : size - at;
		if (len > size - at)
			len = size - at;
		h2_hdrs_reset(&h);
		int err = hpack_decode(&d, data + at, len, &h);
		at += len;
		if (err)
			break;
		struct h2_field f;
		size_t pos = 0, sum = 0;
		while (h2_hdrs_next(&h, &pos, &f)) {
			if (f.nlen)
				fuzz_hpack_sink ^= f.name[f.nlen - 1];
			if (f.vlen)
				fuzz_hpack_sink ^= f.value[f.vlen - 1];
			sum += f.nlen + f.vlen + 32;
		}
		if (sum != h.list_size || d.size > d.max || d.max > d.limit)
			abort();
	}
	h2_buf_free(&h.buf);
	hpack_free(&d);
	return 0;
}
