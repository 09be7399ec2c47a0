/* Appending formatted text to a fixed buffer (stats output); checking the text of ports and file name patterns. */
#include "common/text.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

int text_port(const char *s)
{
	size_t n = strlen(s);
	if (!n || n > 5 || strspn(s, "0123456789") != n)
		return -1;
	long v = 0;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (s[i] - '0');
	return v >= 1 && v <= 65535 ? (int)v : -1;
}

int text_time_pattern_ok(const char *s)
{
	static const char conv[] = "aAbBcCdDeFgGhHIjklmMnpPrRsStTuUVwWxXyYzZ+";
	int any = 0;
	for (const char *p = strchr(s, '%'); p; p = strchr(p, '%')) {
		p++;
		if (*p == 'E' || *p == 'O')
			p++;
		if (*p == '%') {
			p++;
			continue;
		}
		if (!*p || !strchr(conv, *p))
			return 0;
		any = 1;
		p++;
	}
	return any;
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

size_t text_kv(char *buf, size_t len, size_t at, const struct kv *kv, size_t n)
{
	for (size_t i = 0; i < n; i++)
		at = text_add(buf, len, at, " %s=%llu", kv[i].key, (unsigned long long)kv[i].v);
	return at;
}

char *text_hex(char *out, const uint8_t *in, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		*out++ = hex[in[i] >> 4];
		*out++ = hex[in[i] & 15];
	}
	return out;
}
