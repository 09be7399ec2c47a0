/* The TLS follower's insides, shared by tlsdec.c (records, keys, waiting) and tlshs.c (the handshake messages). */
#ifndef TLSMIRROR_DECRYPT_TLSDEC_INT_H
#define TLSMIRROR_DECRYPT_TLSDEC_INT_H

#include "decrypt/tlsdec.h"

#include <openssl/evp.h>

#define WAIT_MARKS 256           /* pieces held per direction (then merged) */
#define RESYNC_WINDOW 64         /* sequence numbers tried after lost records */
#define RESYNC_BUF 65536         /* ciphertext searched for a record start */

enum { PH_PLAIN = 0, PH_ENC, PH_DEAD };
enum { K_NONE = 0, K_12, K_EARLY, K_HS, K_AP };

struct wmark {
	uint64_t ev;             /* order among both directions' pieces */
	uint64_t ts;
	uint64_t len;            /* bytes of wb, or the gap's length */
	uint8_t gap;
};

struct tdir {
	uint8_t *rb;             /* a record being gathered, or the resync window */
	size_t rlen, rcap;
	size_t skip;             /* bytes of a lost record still to pass */
	uint8_t phase, want, have;
	uint8_t after_switch;    /* key stage to take after this record (K_*) */
	uint8_t after_update;    /* KeyUpdate after this record */
	uint8_t desync;
	uint8_t search;          /* placed mid-stream: the sequence number is not known */
	uint8_t search_tries;
	uint64_t search_budget;  /* record bytes the search may still open (SEARCH_BUDGET) */
	uint64_t lost;           /* ciphertext lost since desync */
	uint64_t seq;
	struct rec_cipher rc;
	/* the handshake message being read */
	uint8_t hh[4], hhl, hkeep;
	uint32_t hlen, hgot;
	uint8_t *hb;
	/* held for keys */
	uint8_t *wb;
	size_t wl, wcap;
	struct wmark *wm;
	size_t nwm;
};

struct tlsd {
	struct tlsd_out out;
	struct tlsd_counters *c;
	const struct tlsd_limits *lim;
	enum tlsd_state st, before_wait;
	struct tlsd_info info;
	struct tdir d[2];
	uint8_t sr[32];
	uint8_t etm, seen_any, hrr_wait, kb_done, finished12[2], early_counted, ems;
	uint8_t sid[32], sid_len;     /* the ClientHello's session ID */
	uint8_t ssid[32], ssid_len;   /* the ServerHello's */
	uint8_t ticket_id[32], ticket_len; /* the ClientHello's session ticket (its SHA-256), if any */
	EVP_MD_CTX *th[2];            /* --rsa-key: the transcript, SHA-256 and SHA-384, to the CKE */
	uint8_t wait_dir;
	uint8_t suite_guess;     /* placed without a suite (TLS 1.3): the others of its hash are tried */
	uint8_t kb[2 * 48 + 2 * 32 + 2 * 12];
	uint64_t ev;
	uint64_t held;           /* bytes held now */
	uint64_t cipher_bytes;
};

/* tlshs.c: handshake bytes of direction d (plaintext, or opened records). */
void tlsd_hs_feed(struct tlsd *t, int d, const uint8_t *p, size_t n);
/* --rsa-key: stops hashing the transcript (and frees it). */
void tlsd_transcript_end(struct tlsd *t);

#endif
