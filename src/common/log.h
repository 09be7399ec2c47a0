/* Agent-side logging to stderr, with a rate limit for what can repeat. */
#ifndef TLSMIRROR_LOG_H
#define TLSMIRROR_LOG_H

#include <stdint.h>

extern int log_quiet;   /* -q: only errors */

void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A warning that can repeat: printed at most once per `every_s` seconds per
 * limiter, with the number suppressed in between. */
struct log_limit {
	uint64_t next_ns;
	uint64_t suppressed;
};
void log_limited(struct log_limit *l, unsigned every_s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

uint64_t log_now_ns(void);

#endif
