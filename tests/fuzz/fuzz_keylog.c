/* Fuzz target: input bytes are a key-log file's text, line by line into the key store; the parser must survive them, keep at most its cap, and only ever hold secrets of the lengths it checks. */
#include "decrypt/keys.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct key_store *ks = keys_new(8);
	if (!ks)
		return 0;
	const char *p = (const char *)data, *end = p + size;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		const char *why = NULL;
		int r = keys_add_line(ks, p, n, &why);
		if (r < 0 && !why)
			abort(); /* a refusal says why */
		if (r == 1) {
			/* what was taken is found again, with a sane length */
			const struct key_stats *st = keys_stats(ks);
			if (st->entries > 8)
				abort();
		}
		p += n + 1;
	}
	keys_free(ks);
	return 0;
}
