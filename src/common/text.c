/* Appending formatted text to a fixed buffer (stats output). */
#include "common/text.h"

#include <stdarg.h>
#include <stdio.h>

size_t text_add(char *buf, size_t len, size_t at, const char *fmt, ...)
{
	if (at >= len)
		return at;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf + at, len - at, fmt, ap);
	va_end(ap);
	if (n < 0)
		return at;
	return at + (size_t)n >= len ? len - 1 : at + (size_t)n;
}

void text_token(char *out, size_t len, const char *in)
{
	size_t k = 0;
	if (!len)
		return;
	for (; *in && k + 1 < len; in++)
		out[k++] = (*in <= ' ' || *in == '=' || *in > '~') ? '_' : *in;
	out[k] = 0;
}
