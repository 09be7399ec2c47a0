/* tlsmirror har: HTTP records (JSON Lines, our format) as one HAR 1.2 document (har.c, docs/http.md). */
#ifndef TLSMIRROR_HTTP_HAR_H
#define TLSMIRROR_HTTP_HAR_H

#include <stddef.h>

/* The command: tlsmirror har [FILE...]. 0, 1 (the document could not be
 * written), 2 (a line or a file was left out, said on stderr). */
int har_main(int argc, char **argv);

/* Its JSON parser (strict RFC 8259, nesting bounded), for the tests: 0 and
 * *out, or -EINVAL with *why and *at (the byte offset) saying where. */
struct jv;
int har_parse(const char *text, size_t n, struct jv **out, const char **why, size_t *at);
void har_value_free(struct jv *v);

/* One line (a record) as a HAR entry in out (",\n" first if comma): 0, or
 * -EINVAL (not a record: *why, *at) / -E2BIG, -ENOMEM. */
struct h2_buf;
int har_entry(const char *line, size_t n, struct h2_buf *out, int comma, const char **why,
	      size_t *at);

#endif
