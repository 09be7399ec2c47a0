/* Classic pcap files read in place (mmap): the decryptor's fast path for -r; pcapng and anything else goes through libpcap. */
#ifndef TLSMIRROR_DECRYPT_PCAPMAP_H
#define TLSMIRROR_DECRYPT_PCAPMAP_H

#include <stddef.h>
#include <stdint.h>

struct pcap_map {
	const uint8_t *p;
	size_t len, at;
	int swap;                /* written on a host of the other byte order */
	int nsec;                /* nanosecond timestamps (magic a1b23c4d) */
	int dlt;                 /* the link type */
	uint32_t snaplen;
};

/* 0: mapped; 1: not a classic pcap file (read it with libpcap); -errno (*why). */
int pcap_map_open(struct pcap_map *m, const char *path, const char **why);
/* The next frame: 1, 0 at the end, -1 for a damaged record (*why; the rest
 * of the file is not read). */
int pcap_map_next(struct pcap_map *m, uint64_t *ts_ns, const uint8_t **frame, size_t *caplen,
		  size_t *wirelen, const char **why);
void pcap_map_close(struct pcap_map *m);

/*
 * The TLS key logs a pcapng file carries in Decryption Secrets Blocks
 * (secrets type TLSK: NSS key-log text, as editcap --inject-secrets writes
 * them), fed line by line to line(arg, text, len). Returns the number of
 * such blocks, 0 for a file that is not pcapng or has none, -1 for a
 * damaged block structure (*why; blocks before it were read).
 */
int pcapng_secrets(const char *path, void (*line)(void *arg, const char *s, size_t n), void *arg,
		   const char **why);

#endif
