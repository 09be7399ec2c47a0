/* Appending formatted text to a fixed buffer (stats output); checking the text of ports and file name patterns. */
#ifndef TLSMIRROR_TEXT_H
#define TLSMIRROR_TEXT_H

#include <stddef.h>

/* Appends printf-style text at buf[at] without overflowing len bytes (the
 * text is cut, always NUL-terminated). Returns the new length. */
size_t text_add(char *buf, size_t len, size_t at, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* A port number as given on the command line: decimal digits only, 1..65535
 * (not 99999 taken modulo 65536, not 0 for "any"). Returns it, or -1. */
int text_port(const char *s);

/* Does an strftime(3) file name pattern hold at least one conversion and
 * only valid ones (a lone or trailing '%' is not a pattern)? 1 yes, 0 no. */
int text_time_pattern_ok(const char *s);

/* Copies in as one key=value token: blanks, '=' and bytes outside printable
 * ASCII become '_' (cut to len-1 bytes, NUL-terminated). */
void text_token(char *out, size_t len, const char *in);

#endif
