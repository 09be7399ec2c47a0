/* The tunnel between agents and a collector: the -t sink, the -C collector and their TLS setup. */
#ifndef TLSMIRROR_TUNNEL_H
#define TLSMIRROR_TUNNEL_H

#include <stddef.h>
#include <stdint.h>

#include "sinks/sink.h"

struct agent;
struct ssl_ctx_st;

/* -t HOST:PORT: an event sink (sink.h) that sends connection events to a
 * collector from its own thread (SINK_F_OWN_QUEUE). */
extern const struct sink_ops sink_tunnel_ops;

/* -C is a source (collector_source_ops, sources/source.h): it listens on
 * cfg.listen_addr (default TUNNEL_DEFAULT_LISTEN) and hands every
 * authenticated agent's connection events to the chain. */
#define TUNNEL_DEFAULT_LISTEN "127.0.0.1:7443"

/* sink_tunnel.c: appends one `tunnel ...` counters line per -t sink. */
size_t tunnel_sink_stats(char *buf, size_t len, size_t at);

/* tls.c: TLS 1.3 contexts with mutual authentication against o->ca, the
 * suites in this order of preference (the collector's order decides).
 * Return NULL with *why set (a static string or tls_last_error()). */
#define TUNNEL_CIPHERSUITES \
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
struct ssl_ctx_st *tls_client_ctx(const struct sink_opts *o, const char **why);
struct ssl_ctx_st *tls_server_ctx(const struct sink_opts *o, const char **why);
/* ssl on fd, one direction through a buffer of TLS_BIO_BUF bytes: reads
 * (writes 0; a server end: no read-ahead), one read() filling it for many
 * records, or writes (writes 1), many records in one write() once the
 * buffer is full or BIO_flush(SSL_get_wbio(ssl)) is called; the other
 * direction goes to fd directly. Returns 0 or -ENOMEM. */
#define TLS_BIO_BUF (256 * 1024)
struct ssl_st;
int tls_set_buffered_fd(struct ssl_st *ssl, int fd, int writes);
/* For a record layer of our own after ssl's finished handshake
 * (tunnel/record.h; ssl of a context of tls_client_ctx or tls_server_ctx,
 * which keep the secret with each SSL): its client application traffic
 * secret, taken once (wiped where it was kept), and its suite's standard
 * name, when ssl runs TLS 1.3. 0, -ENOENT or -ENOTSUP (secret then wiped). */
int tls_record_keys(struct ssl_st *ssl, uint8_t *secret, size_t cap, size_t *len,
		    const char **suite);
/* Bytes of ssl to be read without waiting for the socket: in a record or in the buffer. */
int tls_pending(struct ssl_st *ssl);
/* The last OpenSSL error as text (thread-local buffer), clears the queue. */
const char *tls_last_error(void);

/* Splits HOST:PORT or [V6]:PORT. Returns 0 or -EINVAL. */
int tunnel_split_addr(const char *s, char *host, size_t host_len, char *port, size_t port_len);

#endif
