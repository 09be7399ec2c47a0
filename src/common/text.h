/* Appending formatted text to a fixed buffer (stats output); checking the text of ports and file name patterns. */
#ifndef TLSMIRROR_TEXT_H
#define TLSMIRROR_TEXT_H

#include <stddef.h>
#include <stdint.h>

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

/* in[0..n) as 2n lowercase hex digits at out (no NUL); returns out + 2n. */
char *text_hex(char *out, const uint8_t *in, size_t n);

/* Copies in as one key=value token: blanks, '=' and bytes outside printable
 * ASCII become '_' (cut to len-1 bytes, NUL-terminated). */
void text_token(char *out, size_t len, const char *in);

/*
 * One counter of a component: its rows are what the component reports
 * (sink_ops.counters, stage_ops.counters, the processes' and the total's
 * lines). The stats text shows each as " key=value"; the metrics and
 * `tlsmirror stats --json` (agent/metrics.c) make it a sample named
 * tlsmirror_KIND_key_total, or tlsmirror_KIND_key for a gauge (a level
 * that goes down: open connections, queued bytes), with the line's labels.
 * A new counter is one row, and appears in all three.
 */
struct kv {
	const char *key;         /* [a-z0-9_]: a word of the text and of a metric's name */
	uint64_t v;
	unsigned char gauge;     /* 1: a level (no _total), 0: a count */
};

/* Sets out[n] if n < max; returns the rows there are then (n+1, or n when full). */
static inline size_t kv_put(struct kv *out, size_t max, size_t n, const char *key, uint64_t v,
			    int gauge)
{
	if (n >= max)
		return n;
	out[n] = (struct kv){ key, v, (unsigned char)gauge };
	return n + 1;
}

/* Appends " key=value" for each of the n rows at buf[at] (as text_add). */
size_t text_kv(char *buf, size_t len, size_t at, const struct kv *kv, size_t n);

#endif
