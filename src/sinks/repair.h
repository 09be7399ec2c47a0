/* Cuts a pcap or pcapng file that ends mid-record (an agent killed while writing) to its last whole record. */
#ifndef TLSMIRROR_REPAIR_H
#define TLSMIRROR_REPAIR_H

#include <stdint.h>

struct repair_result {
	const char *format;  /* "pcap", "pcapng" */
	uint64_t size;       /* the file's size before */
	uint64_t keep;       /* bytes of whole records (with the file header) */
	uint64_t records;    /* whole records (pcapng: blocks) kept */
};

/*
 * Reads path (a classic pcap, either byte order and resolution, or pcapng)
 * record by record and, unless check_only, truncates it after the last whole
 * record when anything follows it. Returns 0 with *r filled (r->keep <
 * r->size: there was a partial record), -EINVAL with *why set when it is no
 * capture file (nothing is changed), or another negative errno.
 */
int capture_repair(const char *path, int check_only, struct repair_result *r,
		   const char **why);

#endif
