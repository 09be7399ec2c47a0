/* The tunnel after the handshake: TLS 1.3 records the agent seals straight into its send buffer and the collector opens straight into its frame buffer. */
#ifndef TLSMIRROR_TUNNEL_RECORD_H
#define TLSMIRROR_TUNNEL_RECORD_H

#include <stddef.h>
#include <stdint.h>

/*
 * OpenSSL's SSL_write copies each byte into its record buffer, encrypts it
 * there, and the buffering BIO copies the record again to batch write()s:
 * two copies the agent's sender pays on every byte (a sixth of its CPU,
 * perf, bench part f). After OpenSSL has done the handshake (and verified
 * the collector), the writer seals the application-data records itself:
 * the plaintext is read once by the AEAD, which writes the ciphertext
 * straight into a 256 KiB buffer sent with one write(). The records are
 * RFC 8446 section 5.2 records with the keys of section 7.3, derived from
 * the client's application traffic secret (OpenSSL hands it to the
 * key-log callback, tls.c); the collector reads them with OpenSSL as any
 * records. After TLS13W_RECORDS_PER_KEY records the writer sends a
 * KeyUpdate (section 4.6.3, no update requested) and moves to the next
 * secret, well inside AES-GCM's limit of 2^24.5 records per key (5.5).
 * Only the sending direction is ours: the agent reads nothing after the
 * handshake, and OpenSSL's SSL object never writes again (no
 * SSL_shutdown: close_notify is sealed here).
 */
#define TLS13W_RECORDS_PER_KEY (1u << 23)
#define TLS13W_BUF (256 * 1024)
#define TLS13W_MAX_SECRET 48

struct evp_cipher_ctx_st;
/* One direction's keys: the traffic secret, its key and iv in an AEAD
 * context, the record sequence number. */
struct tls13_keys {
	struct evp_cipher_ctx_st *ctx;
	const char *md;                 /* "SHA256" or "SHA384" */
	uint8_t secret[TLS13W_MAX_SECRET];
	size_t secret_len, key_len;
	uint8_t iv[12];
	uint64_t seq;
	uint64_t key_updates;           /* secrets moved on from the first */
};

struct tls13w {
	struct tls13_keys k;
	uint64_t records_per_key, records;
	int fd;
	uint8_t *buf;
	size_t used;
};

/* Takes over ssl's sending direction on fd (ssl: a finished TLS 1.3
 * handshake with one of the tunnel's three suites, nothing written since,
 * its write buffer flushed; secret: its client application traffic secret).
 * records_per_key: TLS13W_RECORDS_PER_KEY (tests: fewer). Returns 0, or
 * -ENOTSUP (another suite: keep SSL_write) or -ENOMEM, w then empty. */
int tls13w_init(struct tls13w *w, const char *suite, const uint8_t *secret, size_t secret_len,
		int fd, uint64_t records_per_key);
/* Seals p[0..n) as application data into records of up to 16 KiB, writing
 * the buffer to fd whenever it is full. 0 or -EIO (fd failed: the
 * connection is lost). */
int tls13w_write(struct tls13w *w, const void *p, size_t n);
/* One record of inner content type `type` (21 alert, 22 handshake, 23
 * data; n <= 16 KiB), buffered: what the agent never sends otherwise, for
 * the tests of the reader. 0, -EINVAL or -EIO. */
int tls13w_seal(struct tls13w *w, uint8_t type, const void *p, size_t n);
/* Writes what is buffered. 0 or -EIO. */
int tls13w_flush(struct tls13w *w);
/* A close_notify alert, flushed (best effort). */
void tls13w_close(struct tls13w *w);
/* Frees the buffer and wipes the keys. */
void tls13w_free(struct tls13w *w);

/*
 * The collector's side: the agent's records read and opened here after
 * OpenSSL's handshake, where SSL_read copied each record out of the
 * buffering BIO into its own buffer and then the plaintext into the frame
 * buffer. The AEAD opens a record straight into the caller's buffer when
 * it has room for it (the frame buffer: almost always), else into a record
 * buffer of its own. Everything from the network is checked before use:
 * outer type application_data, version 0x0303, ciphertext length 17 ..
 * 2^14 + 256, the tag (before a byte of it is delivered), inner plaintext
 * at most 2^14 + 1 with a non-zero content type; inner types: application
 * data, a close_notify alert (the end), a KeyUpdate without a requested
 * update (the next secret); anything else ends the connection with a reason.
 */
#define TLS13R_BUF (256 * 1024)

struct tls13r {
	struct tls13_keys k;
	uint64_t records;
	int fd, closed;
	const char *why;                /* the reason of the last error (static) */
	uint8_t *raw;                   /* ciphertext from the socket: [lo, hi) */
	size_t lo, hi;
	uint8_t *plain;                 /* an opened record not yet delivered: [plo, phi) */
	size_t plo, phi;
};

/* Takes over ssl's reading direction on fd (ssl: a finished TLS 1.3
 * handshake, nothing read since, no record pending in it; secret: the
 * client's application traffic secret). Bytes read from fd before (what
 * the handshake's buffering BIO read ahead: the first records) go into
 * raw[hi..TLS13R_BUF) with hi moved past them, before the first read.
 * 0, -ENOTSUP or -ENOMEM (r then empty). */
int tls13r_init(struct tls13r *r, const char *suite, const uint8_t *secret, size_t secret_len,
		int fd);
/* Up to n bytes of clear text into out: > 0 bytes; 0 the end (close_notify,
 * or the peer closed between records: why says which); -EAGAIN nothing
 * yet (fd would block); -EPROTO or -EIO: the connection is bad or lost
 * (why says why). */
long tls13r_read(struct tls13r *r, void *out, size_t n);
/* 1 if tls13r_read can deliver without waiting for fd (an opened record,
 * or a whole one buffered). */
int tls13r_pending(const struct tls13r *r);
void tls13r_free(struct tls13r *r);

#endif
