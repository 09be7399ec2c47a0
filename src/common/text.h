/* Appending formatted text to a fixed buffer (stats output). */
#ifndef TLSMIRROR_TEXT_H
#define TLSMIRROR_TEXT_H

#include <stddef.h>

/* Appends printf-style text at buf[at] without overflowing len bytes (the
 * text is cut, always NUL-terminated). Returns the new length. */
size_t text_add(char *buf, size_t len, size_t at, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Copies in as one key=value token: blanks, '=' and bytes outside printable
 * ASCII become '_' (cut to len-1 bytes, NUL-terminated). */
void text_token(char *out, size_t len, const char *in);

#endif
