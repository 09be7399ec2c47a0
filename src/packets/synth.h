/* Ethernet + IPv4/IPv6 + TCP frame synthesis with correct checksums. */
#ifndef TLSMIRROR_SYNTH_H
#define TLSMIRROR_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#define SYNTH_HDR_MAX 96 /* Ethernet 14 + IPv6 40 + TCP 20 + options 20, rounded */

#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_PSH 0x08
#define TCPF_ACK 0x10

/* One end of a connection. */
struct synth_end {
	uint8_t mac[6];
	uint8_t addr[16];  /* IPv4 in the first 4 bytes */
	uint16_t port;     /* host order */
};

/* The two ends and the family; filled once per flow. */
struct synth_conn {
	uint8_t family;    /* 4 or 6 */
	struct synth_end end[2]; /* [0] client, [1] server */
	uint16_t ip_id[2]; /* next IPv4 id per sender */
};

/*
 * Fills c for one connection: family, addresses, ports, and a locally
 * administered MAC per end derived from its address (02:00:a.b.c.d for IPv4,
 * 02:06:<4 bytes of a hash> for IPv6) so a host keeps one MAC everywhere.
 * IPv4 ids start from a value derived from the sender's address and port.
 */
void synth_conn_init(struct synth_conn *c, uint8_t family,
		     const uint8_t client_addr[16], uint16_t client_port,
		     const uint8_t server_addr[16], uint16_t server_port);

/* SYN options written when flags has TCPF_SYN. */
struct synth_syn_opts {
	uint16_t mss;
	uint8_t wscale;
	uint8_t sack_ok;
};

/*
 * Writes the headers of a TCP segment sent by end `from` (0 client, 1 server)
 * into hdr (SYNTH_HDR_MAX bytes), with IP and TCP checksums covering payload.
 * syn may be NULL unless flags has TCPF_SYN. Returns the header length.
 */
size_t synth_tcp(uint8_t *hdr, struct synth_conn *c, int from, uint32_t seq,
		 uint32_t ack, uint8_t flags, uint16_t window,
		 const struct synth_syn_opts *syn, const uint8_t *payload,
		 size_t payload_len);

/*
 * The same with the payload's sum given (synth_payload_sum, joined with
 * synth_sum_join when the payload is in two parts): for a segment whose bytes
 * are not in one piece of memory.
 */
size_t synth_tcp_sum(uint8_t *hdr, struct synth_conn *c, int from, uint32_t seq,
		     uint32_t ack, uint8_t flags, uint16_t window,
		     const struct synth_syn_opts *syn, size_t payload_len, uint16_t payload_sum);

/* The one's complement sum of p[0..len) as big-endian 16-bit words (not
 * complemented); synth_sum_join: the sum of a[0..alen) followed by b's bytes. */
uint16_t synth_payload_sum(const uint8_t *p, size_t len);
uint16_t synth_sum_join(uint16_t a, size_t alen, uint16_t b);

/*
 * Internet checksum helpers (RFC 1071), exposed for tests.
 * csum_add adds len bytes to a running sum; when a buffer is summed in
 * pieces, every piece but the last must have an even length. csum_fold
 * returns the checksum (the complement of the folded sum) as a number to
 * store with put_be16; over data that contains a correct checksum it is 0.
 */
uint64_t csum_add(uint64_t sum, const uint8_t *p, size_t len);
uint16_t csum_fold(uint64_t sum);

#endif
