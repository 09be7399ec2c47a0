/* The duplicate stage's counters (dedup.c; docs/pipeline.md "Duplicates"). */
#ifndef TLSMIRROR_DEDUP_H
#define TLSMIRROR_DEDUP_H

#include <stdint.h>

struct dedup_counters {
	uint64_t duplicates;     /* opens that were the other end of a connection shown */
	uint64_t dup_open;       /* of those, open now (they count against --max-conns) */
	uint64_t dup_bytes;      /* clear text of duplicates (shown once, from the other end) */
	uint64_t stale;          /* the same end of a 4-tuple again in one producer: old one gone */
	uint64_t refused;        /* duplicates over the cap (--max-conns) */
	uint64_t tracked;        /* connections the stage knows now */
	uint64_t evicted;        /* unused announcements of another producer that gave way */
	uint64_t expired;        /* unused announcements forgotten after 10 s */
};

/* The counters of the stage whose private data is priv (pipeline_stage_priv(pl, "dedup")). */
const struct dedup_counters *dedup_counters(const void *priv);

#endif
