/* The TLS record protection a passive decryptor undoes: cipher suites, the TLS 1.2 PRF, TLS 1.3's HKDF-Expand-Label, and opening one record. */
#ifndef TLSMIRROR_DECRYPT_TLSCRYPT_H
#define TLSMIRROR_DECRYPT_TLSCRYPT_H

#include <stddef.h>
#include <stdint.h>

enum suite_kind { SK_GCM = 1, SK_CHACHA, SK_CCM, SK_CCM8, SK_CBC };

struct tls_suite {
	uint16_t id;
	const char *name;        /* OpenSSL's name (what the capture library reports) */
	uint8_t kind;            /* enum suite_kind */
	uint8_t key_len;
	uint8_t fixed_iv;        /* TLS 1.2 implicit IV bytes from the key block */
	uint8_t mac_len;         /* CBC: the HMAC's length (20, 32, 48); 0 for AEAD */
	uint8_t tls13;
	uint8_t sha384;          /* the PRF / HKDF hash is SHA-384 (else SHA-256) */
	uint8_t rsa_kx;          /* TLS 1.2 RSA key exchange (a server key can open it) */
};

/* The suite of id, NULL if we cannot decrypt it. */
const struct tls_suite *tls_suite_find(uint16_t id);

/* TLS 1.2 PRF(secret, label, seed) into out[0..n). 0 or -1. */
int tls12_prf(int sha384, const uint8_t *secret, size_t slen, const char *label,
	      const uint8_t *seed, size_t seedlen, uint8_t *out, size_t n);
/* TLS 1.3 HKDF-Expand-Label(secret, label, "", n). 0 or -1. */
int tls13_expand_label(int sha384, const uint8_t *secret, size_t slen, const char *label,
		       uint8_t *out, size_t n);

#define TLS_MAX_PLAIN 16384
#define TLS_MAX_CIPHER (16384 + 2048)

/* One direction's record protection. */
struct rec_cipher {
	const struct tls_suite *s;
	void *ctx;               /* EVP_CIPHER_CTX, keyed once */
	uint8_t key[32];
	uint8_t iv[12];
	uint8_t mac_key[48];
	uint8_t secret[64];      /* TLS 1.3: the traffic secret (KeyUpdate derives the next) */
	uint8_t secret_len;
	uint8_t etm;             /* TLS 1.2 CBC: encrypt-then-MAC negotiated */
	uint8_t ready;
};

/* Keys a direction from the TLS 1.2 key block parts. 0 or -1 (no cipher). */
int rc_init12(struct rec_cipher *c, const struct tls_suite *s, const uint8_t *key,
	      const uint8_t *iv, const uint8_t *mac_key, int etm);
/* Keys a direction from a TLS 1.3 traffic secret. 0 or -1. */
int rc_init13(struct rec_cipher *c, const struct tls_suite *s, const uint8_t *secret, size_t len);
/* TLS 1.3 KeyUpdate: the next generation of the secret. 0 or -1. */
int rc_key_update(struct rec_cipher *c);
void rc_free(struct rec_cipher *c);

/*
 * Opens the record hdr (5 bytes) + body[0..len) protected with sequence
 * number seq, into out (room for len bytes). TLS 1.3: *type becomes the
 * inner content type (padding removed). Returns the plaintext length, or
 * -1 if the record does not authenticate (nothing in out may be used).
 */
long rc_open(struct rec_cipher *c, uint64_t seq, const uint8_t hdr[5], const uint8_t *body,
	     size_t len, uint8_t *out, uint8_t *type);
/* The plaintext length a record of len body bytes carries, as far as it is
 * known without opening it; *exact 0 when padding makes it an estimate. */
size_t rc_plain_len(const struct rec_cipher *c, size_t len, int *exact);

#endif
