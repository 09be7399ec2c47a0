/* The passive decryptor: captured frames in (any link type libpcap gives), TCP reassembled, TLS found by its handshake and opened with the key store, connections of clear text out. */
#ifndef TLSMIRROR_DECRYPT_ENGINE_H
#define TLSMIRROR_DECRYPT_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "decrypt/keys.h"
#include "decrypt/tcpre.h"
#include "decrypt/tlsdec.h"

/* One connection as the decryptor hands it on: the client's end first. */
struct dconn {
	uint64_t id;             /* unique in this engine, never 0 */
	uint8_t family;
	uint8_t client[16], server[16];
	uint16_t cport, sport;
	uint8_t midstream;       /* first seen mid-stream, placed by a # TUPLE line */
	const struct tlsd_info *tls;
	void *user;              /* the receiver's */
};

/* Receives the connections with clear text (open before the first data or
 * gap; close once). Connections that never decrypt are never opened. */
struct decrypt_out {
	void (*open)(void *arg, struct dconn *c, uint64_t ts_ns);
	void (*data)(void *arg, struct dconn *c, int dir, uint64_t ts_ns, const uint8_t *p, size_t n);
	void (*gap)(void *arg, struct dconn *c, int dir, uint64_t ts_ns, uint64_t n);
	void (*close)(void *arg, struct dconn *c, uint64_t ts_ns);
	void *arg;
};

struct decrypt_opts {
	struct tcpre_limits tcp;
	struct tlsd_limits wait;  /* ciphertext held for keys (defaults: 16 MiB, 256 MiB) */
	uint64_t key_wait_ns;     /* how long (wall clock) a connection waits for its keys */
	size_t max_keys;          /* client randoms kept (keys.h) */
};

struct decrypt_stats {
	uint64_t frames;          /* frames read */
	uint64_t not_ip;          /* frames that are not IPv4/IPv6 TCP (ignored) */
	uint64_t fragments;       /* IP fragments (not reassembled) */
	uint64_t bad_frames;      /* truncated or malformed headers */
	uint64_t truncated;       /* segments cut by the snaplen */
	uint64_t tls_conns;       /* connections with a TLS handshake */
	uint64_t decrypted_conns; /* of them, with clear text handed on */
	uint64_t nokey_conns;     /* keys never came within --key-wait */
	uint64_t nokey_bytes;     /* their ciphertext */
	uint64_t not_tls_conns;   /* TCP connections that are not TLS */
	uint64_t midstream_conns; /* TLS first seen after its handshake, not decrypted */
	uint64_t placed_conns;    /* first seen mid-stream, placed by a # TUPLE line */
	uint64_t unplaceable_conns; /* of those with a line, ones it cannot place (TLS 1.2 without suite or server random) */
	uint64_t unsupported_conns; /* a version or suite we cannot open */
	uint64_t failed_conns;    /* handshake lost, or over the wait caps */
	uint64_t waiting_conns;   /* waiting for keys now (gauge) */
	uint64_t clear_bytes;     /* clear text handed on */
	uint64_t gap_bytes;       /* clear text lost (gaps handed on) */
};

struct decrypt_engine;

/* out and ks must outlive the engine. NULL on ENOMEM. */
struct decrypt_engine *decrypt_new(const struct decrypt_opts *o, const struct decrypt_out *out,
				   struct key_store *ks);
void decrypt_free(struct decrypt_engine *e);
/* One captured frame of link type dlt (DLT_EN10MB, DLT_LINUX_SLL...):
 * caplen bytes captured of wirelen. Key waits are timed by the wall clock
 * of the last decrypt_tick. */
void decrypt_frame(struct decrypt_engine *e, int dlt, uint64_t ts_ns, const uint8_t *p,
		   size_t caplen, size_t wirelen);
/* Keys were added: connections waiting for them go on. */
void decrypt_keys_added(struct decrypt_engine *e);
/* Time passes (wall clock, CLOCK_REALTIME ns): connections waiting longer
 * than the key wait give up. Call it before the first frame too. */
void decrypt_tick(struct decrypt_engine *e, uint64_t now_ns);
/* The end of the input: every connection ends (those waiting for keys wait on). */
void decrypt_finish(struct decrypt_engine *e, uint64_t ts_ns);
/* Connections waiting for keys now. */
size_t decrypt_waiting(const struct decrypt_engine *e);
/* Gives up every wait now (the exit). */
void decrypt_give_up_all(struct decrypt_engine *e);
/* 1 if dlt is a link type decrypt_frame reads. */
int decrypt_dlt_ok(int dlt);
const struct decrypt_stats *decrypt_stats(const struct decrypt_engine *e);
/* The limits in force (defaults filled in), for the stats. */
const struct decrypt_opts *decrypt_limits(const struct decrypt_engine *e);
const struct tlsd_counters *decrypt_tls_counters(const struct decrypt_engine *e);
const struct tcpre_stats *decrypt_tcp_stats(const struct decrypt_engine *e);
const struct tcpre_limits *decrypt_tcp_limits(const struct decrypt_engine *e);

#endif
