/* HTTP transaction records: a consumer of message events (msg.h) that writes one JSON object per exchange (docs/http.md). */
#ifndef TLSMIRROR_HTTP_RECORDS_H
#define TLSMIRROR_HTTP_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#include "http/msg.h"

#define REC_DEFAULT_BODY_MAX (64u * 1024) /* --http-body-max */
#define REC_MAX_BODY_MAX (256u * 1024) /* a record fits a file buffer (sink_file.h) */
#define REC_MAX_LINE (64u << 20)           /* a record is never larger */
#define REC_MAX_TYPES 16                   /* --http-headers-only types */

enum rec_format {
	REC_FORMAT_TLSMIRROR = 0, /* our own, field by field in docs/http.md */
	REC_FORMAT_AKTO           /* the fields of Akto's traffic pipeline (akto.api.logs) */
};

struct rec_config {
	size_t body_max;          /* body bytes kept per direction (0: headers only) */
	enum rec_format format;
	/* content types whose bodies are never kept ("application/x-www-form",
	 * "image/": a prefix, case-insensitive) */
	const char *headers_only[REC_MAX_TYPES];
	size_t n_headers_only;
	uint64_t akto_account, akto_vxlan; /* Akto's akto_account_id, akto_vxlan_id */
	/* A finished record (one line, '\n' included): valid during the call. */
	void (*emit)(void *arg, const uint8_t *line, size_t n, uint64_t ts_ns);
	void *emit_arg;
};

struct rec_counters {
	uint64_t records;         /* written */
	uint64_t complete;        /* of those: request and response complete */
	uint64_t incomplete;      /* of those: ended early (reset, closed, gap, error) */
	uint64_t truncated;       /* of those: a body longer than the cap */
	uint64_t nomem;           /* exchanges not recorded (no memory) */
};

struct rec_builder;

struct rec_builder *rec_new(const struct rec_config *cfg);
void rec_free(struct rec_builder *b);
/* Its consumer, for slot (its index in the connection's consumer list). */
struct http_consumer rec_consumer(struct rec_builder *b, unsigned slot);
const struct rec_counters *rec_counters(const struct rec_builder *b);

/* Checks --http-format NAME; -EINVAL if unknown. */
int rec_parse_format(const char *name, enum rec_format *out);

#endif
