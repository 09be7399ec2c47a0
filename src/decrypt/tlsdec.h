/* One TLS connection followed passively: records framed from each direction's in-order bytes, the handshake read for randoms, suite, SNI and ALPN, the keys found by client random, the application data opened. */
#ifndef TLSMIRROR_DECRYPT_TLSDEC_H
#define TLSMIRROR_DECRYPT_TLSDEC_H

#include <stddef.h>
#include <stdint.h>

#include "decrypt/keys.h"
#include "decrypt/tlscrypt.h"

/* What the connection hands on: clear text and what was lost of it. dir 0
 * is the client's direction (the one that sent the ClientHello). */
struct tlsd_out {
	void (*data)(void *arg, int dir, uint64_t ts_ns, const uint8_t *p, size_t n);
	void (*gap)(void *arg, int dir, uint64_t ts_ns, uint64_t n, int exact);
	void *arg;
};

enum tlsd_state {
	TLSD_HANDSHAKE = 0,      /* following the handshake */
	TLSD_OPEN,               /* keys found: clear text flows */
	TLSD_WAITING,            /* ciphertext held until its keys come (tlsd_retry) */
	TLSD_NOT_TLS,            /* its first bytes are not a TLS handshake */
	TLSD_MIDSTREAM,          /* first seen after its handshake: no client random */
	TLSD_UNSUPPORTED,        /* a suite or version we cannot open */
	TLSD_FAILED              /* handshake lost, keys never came, or given up */
};

/* Counters shared by every connection of one decryptor. */
struct tlsd_counters {
	uint64_t records;        /* records opened */
	uint64_t auth_failures;  /* records that did not authenticate (wrong keys, damage) */
	uint64_t bad_records;    /* record headers that are not TLS (the direction resynchronises) */
	uint64_t lost_records;   /* records lost to missing ciphertext */
	uint64_t resyncs;        /* directions found again after lost ciphertext */
	uint64_t resync_dropped; /* ciphertext bytes skipped looking for the next record */
	uint64_t inexact_gaps;   /* clear-text gaps whose length is an estimate */
	uint64_t key_updates;    /* TLS 1.3 KeyUpdates followed */
	uint64_t hrr;            /* HelloRetryRequests */
	uint64_t early_data;     /* connections with 0-RTT data */
	uint64_t renegotiations; /* TLS 1.2 renegotiations (the direction is left there) */
	uint64_t handshake_lost; /* handshakes with ciphertext missing (no keys can help) */
	uint64_t waiting_bytes;  /* ciphertext held for keys now, all connections (gauge) */
	uint64_t wait_dropped;   /* ciphertext over the wait caps (the connection gives up) */
	uint64_t rsa_masters;    /* master secrets found with --rsa-key (and resumptions of them) */
	uint64_t rsa_failures;   /* RSA key exchanges the key did not open */
	uint64_t placed_dirs;    /* directions of mid-stream connections whose sequence number was found */
	uint64_t place_failures; /* directions of placed connections no sequence number opened */
};

struct rsa_kx;

struct tlsd_limits {
	size_t wait_per_conn;    /* ciphertext one connection may hold for its keys */
	size_t wait_total;       /* all connections together (counters->waiting_bytes) */
	/* --rsa-key: TLS 1.2 RSA key exchanges are opened with it, their master
	 * secrets added to learn (NULL: none) */
	struct rsa_kx *rsa;
	struct key_store *learn;
	/* a connection placed mid-stream: sequence numbers tried for its first
	 * record (0: TLSD_SEQ_SEARCH) */
	uint64_t seq_search;
};

#define TLSD_SEQ_SEARCH 65536

struct tlsd_info {
	uint16_t version;        /* 0x0303, 0x0304 (0: no ServerHello yet) */
	uint16_t suite_id;
	const struct tls_suite *suite; /* NULL: unknown or not yet */
	uint8_t client_random[32];
	uint8_t have_ch, have_sh;
	uint8_t client_dir;      /* the direction index (as fed) of the ClientHello */
	uint8_t early;           /* 0-RTT data offered */
	char sni[256];           /* printable ASCII only ("" if none) */
	char alpn[64];
};

struct tlsd;

/* A connection; NULL on ENOMEM. c and lim must outlive it. */
struct tlsd *tlsd_new(const struct tlsd_out *out, struct tlsd_counters *c,
		      const struct tlsd_limits *lim);
void tlsd_free(struct tlsd *t);
/* A connection first seen mid-stream, placed by the # TUPLE line of e
 * (keys_find_tuple): direction client_dir is the client's. Each direction
 * finds its first record boundary and then its sequence number by trial.
 * 0, or -EINVAL (a version or suite that cannot be opened this way). */
int tlsd_place(struct tlsd *t, int client_dir, const struct key_entry *e);
/* In-order bytes of direction dir (0, 1: as the caller names them; the
 * ClientHello says which is the client). Returns the state after. */
enum tlsd_state tlsd_feed(struct tlsd *t, int dir, uint64_t ts_ns, const uint8_t *p, size_t n,
			  const struct key_store *ks);
/* n bytes of direction dir were not captured. */
enum tlsd_state tlsd_gap(struct tlsd *t, int dir, uint64_t ts_ns, uint64_t n,
			 const struct key_store *ks);
/* TLSD_WAITING: looks for the keys again; on success replays what was held. */
enum tlsd_state tlsd_retry(struct tlsd *t, const struct key_store *ks);
/* Gives up waiting: what was held is dropped (its size returned). */
uint64_t tlsd_give_up(struct tlsd *t);
enum tlsd_state tlsd_state(const struct tlsd *t);
const struct tlsd_info *tlsd_info(const struct tlsd *t);
/* Ciphertext seen in both directions (for connections that stay closed). */
uint64_t tlsd_cipher_bytes(const struct tlsd *t);
const char *tlsd_state_name(enum tlsd_state s);

#endif
