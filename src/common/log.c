/* Agent-side logging to stderr, with a rate limit for what can repeat. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

int log_quiet;

uint64_t log_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void vlog(const char *level, const char *fmt, va_list ap)
{
	char buf[1024];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	fprintf(stderr, "tlsmirror: %s%s\n", level, buf);
}

void log_info(const char *fmt, ...)
{
	if (log_quiet)
		return;
	va_list ap;
	va_start(ap, fmt);
	vlog("", fmt, ap);
	va_end(ap);
}

void log_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog("warning: ", fmt, ap);
	va_end(ap);
}

void log_err(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog("error: ", fmt, ap);
	va_end(ap);
}

void log_limited(struct log_limit *l, unsigned every_s, const char *fmt, ...)
{
	uint64_t now = log_now_ns();
	if (now < l->next_ns) {
		l->suppressed++;
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	char buf[1024];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (l->suppressed)
		fprintf(stderr, "tlsmirror: warning: %s (%llu similar suppressed)\n", buf,
			(unsigned long long)l->suppressed);
	else
		fprintf(stderr, "tlsmirror: warning: %s\n", buf);
	l->suppressed = 0;
	l->next_ns = now + (uint64_t)every_s * 1000000000ULL;
}
