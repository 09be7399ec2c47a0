/* Fuzz target: input bytes are one line of a record file given to tlsmirror har; the parser and the converter must survive them, and an entry they make is one JSON object of printable text. */
#include "http/har.h"
#include "transforms/h2_h1.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct h2_buf out = { 0 };
	const char *why = NULL;
	size_t at = 0;
	if (!har_entry((const char *)data, size, &out, 0, &why, &at)) {
		/* JSON text escapes every control byte: an entry never spans lines */
		if (!out.len || out.p[0] != '{' || out.p[out.len - 1] != '}')
			abort();
		for (size_t i = 0; i < out.len; i++)
			if (out.p[i] < 0x20)
				abort();
	} else if (!why || at > size) {
		abort(); /* a refusal always says why and where */
	}
	h2_buf_free(&out);
	return 0;
}
