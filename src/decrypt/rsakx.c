/* TLS 1.2 RSA key exchange with the server's key (rsakx.h), on libcrypto's EVP_PKEY_decrypt. */
#include "decrypt/rsakx.h"
#include "decrypt/tlscrypt.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rsa_sess {
	uint8_t sid[32];
	uint8_t sl;
	uint8_t master[48];
};

struct rsa_kx {
	EVP_PKEY *key;
	struct rsa_sess s[RSA_KX_SESSIONS];
	size_t n, next;
};

struct rsa_kx *rsa_kx_load(const char *path, const char **why)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		*why = "cannot open it";
		return NULL;
	}
	EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!k) {
		*why = "not a PEM private key (without a passphrase)";
		return NULL;
	}
	if (EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA) {
		EVP_PKEY_free(k);
		*why = "not an RSA key (only RSA key exchange can be opened with a server key)";
		return NULL;
	}
	struct rsa_kx *r = calloc(1, sizeof(*r));
	if (!r) {
		EVP_PKEY_free(k);
		*why = "out of memory";
		return NULL;
	}
	r->key = k;
	return r;
}

void rsa_kx_free(struct rsa_kx *r)
{
	if (!r)
		return;
	EVP_PKEY_free(r->key);
	free(r);
}

int rsa_kx_master(struct rsa_kx *r, const uint8_t *enc, size_t n, int sha384, const uint8_t cr[32],
		  const uint8_t sr[32], int ems, const uint8_t *hash, size_t hl, uint8_t master[48])
{
	uint8_t pms[1024];
	size_t pl = sizeof(pms);
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(r->key, NULL);
	int ok = c && EVP_PKEY_decrypt_init(c) > 0 &&
		 EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) > 0 &&
		 EVP_PKEY_decrypt(c, pms, &pl, enc, n) > 0 && pl == 48;
	EVP_PKEY_CTX_free(c);
	if (!ok)
		return -1;
	if (ems)
		return tls12_prf(sha384, pms, 48, "extended master secret", hash, hl, master, 48);
	uint8_t seed[64];
	memcpy(seed, cr, 32);
	memcpy(seed + 32, sr, 32);
	return tls12_prf(sha384, pms, 48, "master secret", seed, 64, master, 48);
}

void rsa_kx_remember(struct rsa_kx *r, const uint8_t *sid, size_t sl, const uint8_t master[48])
{
	if (!sl || sl > 32)
		return;
	struct rsa_sess *s = &r->s[r->next];
	r->next = (r->next + 1) % RSA_KX_SESSIONS;
	if (r->n < RSA_KX_SESSIONS)
		r->n++;
	memcpy(s->sid, sid, sl);
	s->sl = (uint8_t)sl;
	memcpy(s->master, master, 48);
}

const uint8_t *rsa_kx_recall(const struct rsa_kx *r, const uint8_t *sid, size_t sl)
{
	if (!sl || sl > 32)
		return NULL;
	for (size_t i = 0; i < r->n; i++)
		if (r->s[i].sl == sl && !memcmp(r->s[i].sid, sid, sl))
			return r->s[i].master;
	return NULL;
}

void rsa_kx_ticket_id(const uint8_t *ticket, size_t n, uint8_t id[32])
{
	unsigned l;
	EVP_Digest(ticket, n, id, &l, EVP_sha256(), NULL);
}
