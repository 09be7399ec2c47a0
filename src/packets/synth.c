/* Builds Ethernet + IPv4/IPv6 + TCP headers with correct checksums (contract in synth.h). */
#include "packets/synth.h"

#include <string.h>

#include "common/bytes.h"

#define ETH_LEN 14
#define IP4_LEN 20
#define IP6_LEN 40
#define TCP_LEN 20
#define SYN_OPT_LEN 12 /* MSS 4, NOP NOP SACK-permitted 2, NOP wscale 3 */
#define IP_TTL 64
#define IPPROTO_TCP_NUM 6

/* GCC vectorises at -O2 only with a very cheap cost model; clang always does.
 * On x86-64 GCC also makes an AVX2 copy, picked at load time where the CPU
 * has it: twice as fast as the baseline's SSE2 (the payload sum is a twentieth
 * of a collector's CPU). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
/* (not under ThreadSanitizer: the clone's resolver runs at relocation,
 * before TSan's runtime is up, and its instrumented code crashes there) */
#define SYNTH_VECTORIZE __attribute__((optimize("tree-vectorize"), target_clones("avx2", "default")))
#elif defined(__GNUC__) && !defined(__clang__)
#define SYNTH_VECTORIZE __attribute__((optimize("tree-vectorize")))
#else
#define SYNTH_VECTORIZE
#endif

/* ---- checksum ---- */

/* Adds two partial sums with end-around carry, so chained sums never lose a bit. */
static inline uint64_t add_carry(uint64_t a, uint64_t b)
{
	uint64_t s = a + b;
	return s + (s < a);
}

/*
 * Sums n native 32-bit words into a 64-bit accumulator. The loop has no
 * carries and no dependencies but the sum, so GCC and clang vectorise it
 * (zero-extend, add 64-bit lanes). n must stay below 2^32 so nothing
 * overflows; csum_add feeds it in 1 GiB blocks.
 */
SYNTH_VECTORIZE
static uint64_t sum_words(const uint8_t *p, size_t n)
{
	uint64_t acc = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t w;
		memcpy(&w, p + 4 * i, sizeof(w));
		acc += w;
	}
	return acc;
}

/*
 * The sum is kept in native byte order (RFC 1071 section 2(B): the one's
 * complement sum does not depend on byte order); csum_fold swaps it at the
 * end. A trailing odd byte is the high byte of a zero-padded 16-bit word in
 * network order, which is what loading it into a zeroed native uint16_t
 * gives on either byte order.
 */
uint64_t csum_add(uint64_t sum, const uint8_t *p, size_t len)
{
	const size_t block = (size_t)1 << 30; /* words per block stay < 2^32 */
	if (len < 64) {
		/* a header: a few words, summed here (no call, no vector set-up) */
		uint64_t acc = 0;
		for (; len >= 4; p += 4, len -= 4) {
			uint32_t w;
			memcpy(&w, p, sizeof(w));
			acc += w;
		}
		sum = add_carry(sum, acc);
	}
	while (len >= 4) {
		size_t n = len < block ? len : block;
		n &= ~(size_t)3;
		sum = add_carry(sum, sum_words(p, n / 4));
		p += n;
		len -= n;
	}
	if (len >= 2) {
		uint16_t w;
		memcpy(&w, p, sizeof(w));
		sum = add_carry(sum, w);
		p += 2;
		len -= 2;
	}
	if (len) {
		uint16_t w = 0;
		memcpy(&w, p, 1);
		sum = add_carry(sum, w);
	}
	return sum;
}

/* The sum folded to 16 bits, not complemented. */
static inline uint16_t fold16(uint64_t s)
{
	s = (s & 0xffffffffu) + (s >> 32);
	s = (s & 0xffffffffu) + (s >> 32);
	s = (s & 0xffffu) + (s >> 16);
	s = (s & 0xffffu) + (s >> 16);
	return (uint16_t)s;
}

uint16_t csum_fold(uint64_t sum)
{
	uint16_t folded = (uint16_t)~fold16(sum);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	folded = (uint16_t)((folded >> 8) | (folded << 8));
#endif
	return folded;
}

/* ---- addresses ---- */

static uint32_t fnv1a32(const uint8_t *p, size_t len, uint32_t h)
{
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 16777619u;
	}
	return h;
}

static void end_init(struct synth_end *e, uint8_t family, const uint8_t addr[16],
		     uint16_t port)
{
	memset(e->addr, 0, sizeof(e->addr));
	memcpy(e->addr, addr, family == 6 ? 16 : 4);
	e->port = port;
	e->mac[0] = 0x02; /* locally administered, unicast */
	if (family == 6) {
		e->mac[1] = 0x06;
		put_be32(e->mac + 2, fnv1a32(addr, 16, 2166136261u));
	} else {
		e->mac[1] = 0x00;
		memcpy(e->mac + 2, addr, 4);
	}
}

void synth_conn_init(struct synth_conn *c, uint8_t family,
		     const uint8_t client_addr[16], uint16_t client_port,
		     const uint8_t server_addr[16], uint16_t server_port)
{
	memset(c, 0, sizeof(*c));
	c->family = family == 6 ? 6 : 4;
	end_init(&c->end[0], c->family, client_addr, client_port);
	end_init(&c->end[1], c->family, server_addr, server_port);
	for (int i = 0; i < 2; i++) {
		uint8_t port[2];
		put_be16(port, c->end[i].port);
		uint32_t h = fnv1a32(c->end[i].addr, 16, 2166136261u);
		c->ip_id[i] = (uint16_t)fnv1a32(port, 2, h);
	}
}

/* ---- headers ---- */

static void put_syn_opts(uint8_t *o, const struct synth_syn_opts *syn)
{
	o[0] = 2; /* MSS */
	o[1] = 4;
	put_be16(o + 2, syn->mss);
	o[4] = 1; /* NOP */
	o[5] = 1;
	if (syn->sack_ok) {
		o[6] = 4; /* SACK permitted */
		o[7] = 2;
	} else {
		o[6] = 1;
		o[7] = 1;
	}
	o[8] = 1;
	o[9] = 3; /* window scale */
	o[10] = 3;
	o[11] = syn->wscale;
}

/*
 * Header checksums are summed from the values, not read back from the bytes
 * just stored: reading a 32-bit word over two fresh 16-bit stores stalls on
 * store forwarding, which cost a packet more than building its headers. A sum
 * of 32-bit big-endian values folds to the same one's complement sum as their
 * 16-bit halves (2^16 = 1 modulo 0xffff).
 */
static inline uint64_t sum_addr(const uint8_t *a, int family)
{
	uint64_t s = get_be32(a);
	if (family == 6)
		s += (uint64_t)get_be32(a + 4) + get_be32(a + 8) + get_be32(a + 12);
	return s;
}

/* Writes the IP header; returns its length. */
static size_t put_ip(uint8_t *ip, struct synth_conn *c, int from, size_t tcp_total,
		     uint64_t addr_sum)
{
	const struct synth_end *src = &c->end[from], *dst = &c->end[!from];
	if (c->family == 6) {
		put_be32(ip, 0x60000000u); /* version 6, class 0, flow label 0 */
		put_be16(ip + 4, (uint16_t)tcp_total);
		ip[6] = IPPROTO_TCP_NUM;
		ip[7] = IP_TTL;
		memcpy(ip + 8, src->addr, 16);
		memcpy(ip + 24, dst->addr, 16);
		return IP6_LEN;
	}
	uint16_t total = (uint16_t)(IP4_LEN + tcp_total), id = c->ip_id[from]++;
	ip[0] = 0x45;
	ip[1] = 0;
	put_be16(ip + 2, total);
	put_be16(ip + 4, id);
	put_be16(ip + 6, 0x4000); /* DF */
	ip[8] = IP_TTL;
	ip[9] = IPPROTO_TCP_NUM;
	memcpy(ip + 12, src->addr, 4);
	memcpy(ip + 16, dst->addr, 4);
	uint64_t s = addr_sum + 0x4500u + total + id + 0x4000u + (IP_TTL << 8 | IPPROTO_TCP_NUM);
	put_be16(ip + 10, (uint16_t)~fold16(s));
	return IP4_LEN;
}

uint16_t synth_payload_sum(const uint8_t *p, size_t len)
{
	/* csum_fold gives the complement in host order: undone, the sum */
	return (uint16_t)~csum_fold(csum_add(0, p, len));
}

uint16_t synth_sum_join(uint16_t a, size_t alen, uint16_t b)
{
	/* after an odd length b's bytes sit one place on: its sum byte-swapped */
	if (alen & 1)
		b = (uint16_t)(b >> 8 | b << 8);
	return fold16((uint64_t)a + b);
}

size_t synth_tcp(uint8_t *hdr, struct synth_conn *c, int from, uint32_t seq,
		 uint32_t ack, uint8_t flags, uint16_t window,
		 const struct synth_syn_opts *syn, const uint8_t *payload,
		 size_t payload_len)
{
	return synth_tcp_sum(hdr, c, from, seq, ack, flags, window, syn, payload_len,
			     payload_len ? synth_payload_sum(payload, payload_len) : 0);
}

/* Returns 0 (nothing written) when the segment cannot fit in one IP packet. */
size_t synth_tcp_sum(uint8_t *hdr, struct synth_conn *c, int from, uint32_t seq,
		     uint32_t ack, uint8_t flags, uint16_t window,
		     const struct synth_syn_opts *syn, size_t payload_len, uint16_t payload_sum)
{
	from = from ? 1 : 0;
	size_t optlen = (flags & TCPF_SYN) && syn ? SYN_OPT_LEN : 0;
	size_t tcp_hlen = TCP_LEN + optlen;
	size_t iphdr = c->family == 6 ? IP6_LEN : IP4_LEN;
	if (payload_len > 65535 - tcp_hlen - (c->family == 6 ? 0 : IP4_LEN))
		return 0;
	size_t tcp_total = tcp_hlen + payload_len;
	const struct synth_end *src = &c->end[from], *dst = &c->end[!from];
	uint64_t addr_sum = sum_addr(src->addr, c->family) + sum_addr(dst->addr, c->family);

	memcpy(hdr, dst->mac, 6);
	memcpy(hdr + 6, src->mac, 6);
	put_be16(hdr + 12, c->family == 6 ? 0x86dd : 0x0800);
	uint8_t *ip = hdr + ETH_LEN;
	put_ip(ip, c, from, tcp_total, addr_sum);

	uint8_t *tcp = ip + iphdr;
	uint32_t ports = (uint32_t)src->port << 16 | dst->port;
	uint32_t offwin = (uint32_t)((tcp_hlen / 4) << 12 | flags) << 16 | window;
	put_be32(tcp, ports);
	put_be32(tcp + 4, seq);
	put_be32(tcp + 8, ack);
	put_be32(tcp + 12, offwin);
	put_be32(tcp + 16, 0); /* checksum (below), urgent pointer */
	/* pseudo-header (addresses, protocol, length), then the header's words */
	uint64_t s = addr_sum + IPPROTO_TCP_NUM + tcp_total + ports + seq + ack + offwin;
	if (optlen) {
		put_syn_opts(tcp + TCP_LEN, syn);
		s += (2u << 24 | 4u << 16 | syn->mss) +
		     (syn->sack_ok ? 0x01010402u : 0x01010101u) +
		     (1u << 24 | 3u << 16 | 3u << 8 | syn->wscale);
	}
	s += payload_sum;
	put_be16(tcp + 16, (uint16_t)~fold16(s));
	return ETH_LEN + iphdr + tcp_hlen;
}
