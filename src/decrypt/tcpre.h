/* TCP reassembly for the passive decryptor: a bounded table of connections from captured segments, each direction handed on in order, with reordering, retransmission, overlap and loss (a gap of exact size) dealt with. */
#ifndef TLSMIRROR_DECRYPT_TCPRE_H
#define TLSMIRROR_DECRYPT_TCPRE_H

#include <stddef.h>
#include <stdint.h>

/* A connection's ends: a is the client (the SYN's sender, or the sender of
 * the first segment seen); direction 0 is a to b. */
struct tcp_key {
	uint8_t family;          /* 4 or 6 */
	uint8_t a[16], b[16];    /* IPv4 in the first 4 bytes */
	uint16_t pa, pb;
};

enum tcpre_close { TCPRE_FIN = 1, TCPRE_RST, TCPRE_IDLE, TCPRE_END, TCPRE_REUSED };

struct tcpre_out {
	/* A new connection (syn: its handshake was seen). Returns what data,
	 * gap and close get as user (NULL: the connection is not followed). */
	void *(*open)(void *arg, const struct tcp_key *k, int syn, uint64_t ts);
	void (*data)(void *arg, void *user, int dir, uint64_t ts, const uint8_t *p, size_t n);
	void (*gap)(void *arg, void *user, int dir, uint64_t ts, uint64_t n);
	void (*close)(void *arg, void *user, uint64_t ts, int why);
	void *arg;
};

struct tcpre_limits {
	size_t max_flows;        /* connections followed at once (default 100000) */
	size_t ooo_per_dir;      /* out-of-order bytes held per direction (default 4 MiB) */
	size_t ooo_total;        /* all of them together (default 256 MiB) */
	uint64_t idle_ns;        /* a connection silent this long (packet time) ends (default 300 s) */
};

struct tcpre_stats {
	uint64_t flows;          /* connections seen */
	uint64_t flows_open;     /* followed now (gauge) */
	uint64_t refused;        /* not followed: over max_flows */
	uint64_t segments;
	uint64_t retransmitted;  /* bytes seen twice (ignored) */
	uint64_t reordered;      /* segments that came ahead of a hole */
	uint64_t gap_bytes;      /* bytes never captured (gaps handed on) */
	uint64_t ooo_forced;     /* holes closed early over the out-of-order caps */
	uint64_t ooo_bytes;      /* held now (gauge) */
	uint64_t idle_closed;
};

struct tcpre;

struct tcpre *tcpre_new(const struct tcpre_out *out, const struct tcpre_limits *lim);
/* Ends every connection (tcpre_flush first to hand on the ends). */
void tcpre_free(struct tcpre *r);
/* One segment: src/dst addresses (16 bytes, IPv4 in the first 4), flags
 * (TH_SYN...), payload p[0..n) of a segment that carried wire_n bytes
 * (n < wire_n: cut by the snaplen, the rest is a loss). */
void tcpre_segment(struct tcpre *r, uint64_t ts, uint8_t family, const uint8_t *src,
		   const uint8_t *dst, uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack,
		   uint8_t flags, const uint8_t *p, size_t n, size_t wire_n);
/* Ends connections idle since before now - idle_ns (packet time). */
void tcpre_expire(struct tcpre *r, uint64_t now);
/* The end of the input: every hole becomes a gap, every connection ends. */
void tcpre_flush(struct tcpre *r, uint64_t ts);
const struct tcpre_stats *tcpre_stats(const struct tcpre *r);
/* The limits in force (defaults filled in). */
const struct tcpre_limits *tcpre_limits(const struct tcpre *r);

#define TCPRE_FIN_FLAG 0x01
#define TCPRE_SYN_FLAG 0x02
#define TCPRE_RST_FLAG 0x04
#define TCPRE_ACK_FLAG 0x10

#endif
