/* TLS 1.2 RSA key exchange opened with the server's private key (--rsa-key): the premaster from the ClientKeyExchange, the master secret (with or without extended master secret), and a bounded memory of session IDs for abbreviated handshakes. */
#ifndef TLSMIRROR_DECRYPT_RSAKX_H
#define TLSMIRROR_DECRYPT_RSAKX_H

#include <stddef.h>
#include <stdint.h>

#define RSA_KX_SESSIONS 4096     /* session IDs remembered (the oldest go first) */

struct rsa_kx;

/* Loads a PEM private key (RSA). NULL on error (*why says what). */
struct rsa_kx *rsa_kx_load(const char *path, const char **why);
void rsa_kx_free(struct rsa_kx *r);
/* The master secret from the ClientKeyExchange's encrypted premaster enc[0..n):
 * ems: from the session hash (hash[0..hl)), else from the randoms. 0, or -1
 * when the key does not open it (another server's key, damage). */
int rsa_kx_master(struct rsa_kx *r, const uint8_t *enc, size_t n, int sha384, const uint8_t cr[32],
		  const uint8_t sr[32], int ems, const uint8_t *hash, size_t hl, uint8_t master[48]);
/* A session ID's master secret, for a resumption of it later. */
void rsa_kx_remember(struct rsa_kx *r, const uint8_t *sid, size_t sl, const uint8_t master[48]);
/* A session ticket's name in the session memory (its SHA-256). */
void rsa_kx_ticket_id(const uint8_t *ticket, size_t n, uint8_t id[32]);
/* The master secret of a session ID (or ticket name) seen before, or NULL. */
const uint8_t *rsa_kx_recall(const struct rsa_kx *r, const uint8_t *sid, size_t sl);

#endif
