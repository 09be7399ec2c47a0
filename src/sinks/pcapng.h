/* pcapng block encoder (draft-ietf-opsawg-pcapng): SHB, IDB, EPB with options, and the connection comment. */
#ifndef TLSMIRROR_PCAPNG_H
#define TLSMIRROR_PCAPNG_H

#include <stddef.h>
#include <stdint.h>

struct conn_meta;

/*
 * Every block is written in host byte order (readers learn the order from the
 * Section Header's byte-order magic, as libpcap writes it). Each function
 * writes one whole block into dst[0..room) and returns its length, a multiple
 * of 4; it returns 0 and writes nothing if room is too small. Strings are
 * written as they are (UTF-8, not NUL-terminated in the file), cut to
 * PCAPNG_MAX_OPT bytes.
 */

#define PCAPNG_LINKTYPE_ETHERNET 1
#define PCAPNG_MAX_OPT 4096      /* longest option value written */
#define PCAPNG_COMMENT_MAX 2560  /* pcapng_format_meta's output, NUL included */

/* Section Header Block: byte-order magic, version 1.0, section length
 * unknown (-1), options shb_hardware, shb_os, shb_userappl and opt_comment
 * (each NULL or "" is left out). */
size_t pcapng_put_shb(uint8_t *dst, size_t room, const char *hardware, const char *os,
		      const char *userappl, const char *comment);

/* Interface Description Block: link type, snaplen, if_name, if_description
 * (NULL or "": left out) and if_tsresol = 9 (nanosecond timestamps). */
size_t pcapng_put_idb(uint8_t *dst, size_t room, uint16_t linktype, uint32_t snaplen,
		      const char *name, const char *description);

/* Length of the Interface Description Block pcapng_put_idb writes. */
size_t pcapng_idb_len(const char *name, const char *description);

/* Length of the Enhanced Packet Block pcapng_put_epb writes for caplen
 * captured bytes and a comment of comment_len bytes (0: no comment). */
size_t pcapng_epb_len(uint32_t caplen, size_t comment_len);

/* Enhanced Packet Block on interface ifidx, timestamp ts_ns (nanoseconds,
 * as if_tsresol = 9 says), captured bytes a[0..alen), b[0..blen), c[0..clen),
 * original length orig_len, and an opt_comment of comment[0..comment_len)
 * (comment_len 0: no options). */
size_t pcapng_put_epb(uint8_t *dst, size_t room, uint32_t ifidx, uint64_t ts_ns,
		      const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen,
		      const uint8_t *c, uint32_t clen, uint32_t orig_len, const char *comment,
		      size_t comment_len);

/* The connection's metadata as one line, Wireshark's frame.comment:
 * "tlsmirror: process=nginx pid=123 uid=33 side=server sni=example.com
 * alpn=h2 tls=TLSv1.3 cipher=... map=fd source=capture" (unknown fields left
 * out, see docs/delivery.md). Every byte outside '!'..'~' and the backslash
 * is written \xHH, so the line has no blank inside a value. Writes at most
 * cap bytes including the NUL; returns the length without the NUL. */
size_t pcapng_format_meta(char *out, size_t cap, const struct conn_meta *m);

#endif
