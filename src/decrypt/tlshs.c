/* The handshake as a passive follower reads it (tlsdec_int.h): ClientHello (client random, SNI, 0-RTT, session ID and ticket), ServerHello or HelloRetryRequest (version, suite, encrypt-then-MAC, extended master secret, ALPN), EncryptedExtensions (ALPN), the messages that change keys (Finished, KeyUpdate, EndOfEarlyData), and for --rsa-key the transcript, the ClientKeyExchange and session tickets. */
#include "decrypt/tlsdec_int.h"
#include "common/bytes.h"
#include "decrypt/rsakx.h"

#include <stdlib.h>
#include <string.h>

#define HS_KEEP_MAX 65536        /* largest message whose body is read */

static const uint8_t hrr_random[32] = {
	0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
	0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
};

void tlsd_transcript_end(struct tlsd *t)
{
	for (int i = 0; i < 2; i++) {
		EVP_MD_CTX_free(t->th[i]);
		t->th[i] = NULL;
	}
}

static void transcript(struct tlsd *t, const uint8_t *p, size_t n)
{
	if (t->th[0] && (!EVP_DigestUpdate(t->th[0], p, n) || !EVP_DigestUpdate(t->th[1], p, n)))
		tlsd_transcript_end(t);
}

static void copy_name(char *out, size_t len, const uint8_t *p, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < n && k + 1 < len; i++)
		out[k++] = p[i] > 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
	out[k] = 0;
}

/* ALPN extension data: the first protocol name. */
static void take_alpn(struct tlsd *t, struct reader r)
{
	uint16_t l;
	uint8_t pl;
	if (rd_be16(&r, &l) == 0 && rd_u8(&r, &pl) == 0 && pl && pl <= r.left)
		copy_name(t->info.alpn, sizeof(t->info.alpn), r.p, pl);
}

/* The next extension of a list: 1 (its type and data in *e), 0 at the end or
 * at one that runs past the list. */
static int ext_next(struct reader *r, uint16_t *type, struct reader *e)
{
	uint16_t el;
	if (r->left < 4)
		return 0;
	rd_be16(r, type);
	rd_be16(r, &el);
	if (el > r->left)
		return 0;
	*e = (struct reader){ r->p, el };
	rd_skip(r, el);
	return 1;
}

static void parse_ch(struct tlsd *t, struct reader r)
{
	uint16_t l, ver;
	uint8_t b;
	if (rd_be16(&r, &ver) < 0 || r.left < 32)
		return;
	memcpy(t->info.client_random, r.p, 32);
	t->info.have_ch = 1;
	if (rd_skip(&r, 32) < 0 || rd_u8(&r, &b) < 0 || b > 32 || r.left < b)
		return;
	memcpy(t->sid, r.p, b);
	t->sid_len = b;
	if (rd_skip(&r, b) < 0 ||
	    rd_be16(&r, &l) < 0 || rd_skip(&r, l) < 0 || rd_u8(&r, &b) < 0 ||
	    rd_skip(&r, b) < 0 || rd_be16(&r, &l) < 0 || l > r.left)
		return;
	r.left = l;
	uint16_t type;
	struct reader e;
	while (ext_next(&r, &type, &e)) {
		if (type == 0) { /* server_name: list(2) type(1) name(2+n) */
			uint16_t ll, nl;
			uint8_t nt;
			if (rd_be16(&e, &ll) == 0 && rd_u8(&e, &nt) == 0 && nt == 0 &&
			    rd_be16(&e, &nl) == 0 && nl <= e.left)
				copy_name(t->info.sni, sizeof(t->info.sni), e.p, nl);
		} else if (type == 42) {
			t->info.early = 1;
		} else if (type == 35 && e.left && t->lim->rsa) {
			rsa_kx_ticket_id(e.p, e.left, t->ticket_id);
			t->ticket_len = 1;
		}
	}
}

/* --rsa-key, an abbreviated handshake (the server took the client's session
 * ID): the master secret of the session it resumes, if we opened that one. */
static void rsa_resumed(struct tlsd *t)
{
	const uint8_t *m = NULL;
	if (t->ticket_len)
		m = rsa_kx_recall(t->lim->rsa, t->ticket_id, 32);
	if (!m && t->sid_len && t->sid_len == t->ssid_len && !memcmp(t->sid, t->ssid, t->sid_len))
		m = rsa_kx_recall(t->lim->rsa, t->sid, t->sid_len);
	if (m && t->lim->learn) {
		/* a full handshake instead (the server refused) brings its own
		 * ClientKeyExchange, whose master replaces this one */
		keys_add_secret(t->lim->learn, t->info.client_random, KEY_MASTER, m, 48);
		t->c->rsa_masters++;
	}
}

/* --rsa-key: a NewSessionTicket (TLS 1.2) after a full handshake we opened:
 * a later resumption with that ticket has the same master secret. */
static void rsa_ticket(struct tlsd *t, struct reader r)
{
	uint16_t l;
	uint8_t id[32];
	const struct key_entry *e = t->lim->learn ? keys_find(t->lim->learn, t->info.client_random) : NULL;
	if (!e || !(e->have & (1u << KEY_MASTER)) || rd_skip(&r, 4) < 0 || rd_be16(&r, &l) < 0 ||
	    !l || l > r.left)
		return;
	rsa_kx_ticket_id(r.p, l, id);
	rsa_kx_remember(t->lim->rsa, id, 32, e->secret[KEY_MASTER]);
}

/* --rsa-key: the ClientKeyExchange of an RSA key exchange gives the master secret. */
static void rsa_cke(struct tlsd *t, struct reader r)
{
	uint16_t l;
	uint8_t hash[48], master[48];
	unsigned hl = 0;
	int big = t->info.suite->sha384;
	if (!t->th[0] || rd_be16(&r, &l) < 0 || l != r.left) {
		t->c->rsa_failures++;
		tlsd_transcript_end(t);
		return;
	}
	if (!EVP_DigestFinal_ex(t->th[big], hash, &hl) ||
	    rsa_kx_master(t->lim->rsa, r.p, l, big, t->info.client_random, t->sr, t->ems, hash, hl,
			  master) < 0) {
		t->c->rsa_failures++;
	} else {
		t->c->rsa_masters++;
		if (t->lim->learn)
			keys_add_secret(t->lim->learn, t->info.client_random, KEY_MASTER, master, 48);
		rsa_kx_remember(t->lim->rsa, t->ssid, t->ssid_len, master);
	}
	tlsd_transcript_end(t);
}

/* ServerHello (and HelloRetryRequest, the same message). */
static void parse_sh(struct tlsd *t, struct reader r)
{
	uint16_t ver, suite, l;
	uint8_t b;
	if (rd_be16(&r, &ver) < 0 || r.left < 32)
		return;
	int hrr = !memcmp(r.p, hrr_random, 32);
	memcpy(t->sr, r.p, 32);
	if (rd_skip(&r, 32) < 0 || rd_u8(&r, &b) < 0 || b > 32 || r.left < b)
		return;
	memcpy(t->ssid, r.p, b);
	t->ssid_len = b;
	if (rd_skip(&r, b) < 0 ||
	    rd_be16(&r, &suite) < 0 || rd_u8(&r, &b) < 0)
		return;
	if (hrr) {
		t->c->hrr++;
		t->hrr_wait = 1;
		t->info.early = 0; /* 0-RTT is rejected with a retry */
		return;
	}
	t->hrr_wait = 0;
	t->info.have_sh = 1;
	t->info.version = ver;
	t->info.suite_id = suite;
	if (rd_be16(&r, &l) == 0 && l <= r.left) {
		r.left = l;
		uint16_t type;
		struct reader e;
		while (ext_next(&r, &type, &e)) {
			if (type == 43 && e.left == 2)
				t->info.version = get_be16(e.p);
			else if (type == 22)
				t->etm = 1;
			else if (type == 23)
				t->ems = 1;
			else if (type == 16)
				take_alpn(t, e);
		}
	}
	t->info.suite = tls_suite_find(suite);
	if (!t->info.suite || (t->info.version != 0x0303 && t->info.version != 0x0304) ||
	    (t->info.suite->tls13 != (t->info.version == 0x0304))) {
		t->st = TLSD_UNSUPPORTED;
		return;
	}
	if (t->info.version != 0x0303 || !t->info.suite->rsa_kx)
		tlsd_transcript_end(t);
	else if (t->lim->rsa)
		rsa_resumed(t);
	if (t->info.version == 0x0304) {
		int s = !t->info.client_dir;
		t->d[s].phase = PH_ENC;
		t->d[s].want = K_HS;
		struct tdir *c = &t->d[t->info.client_dir];
		if (c->phase == PH_PLAIN) {
			c->phase = PH_ENC;
			c->want = K_HS;
		}
	}
}

static void parse_ee(struct tlsd *t, struct reader r)
{
	uint16_t l;
	if (rd_be16(&r, &l) < 0 || l > r.left)
		return;
	r.left = l;
	uint16_t type;
	struct reader e;
	while (ext_next(&r, &type, &e))
		if (type == 16)
			take_alpn(t, e);
}

static void hs_msg(struct tlsd *t, int d, uint8_t type, const uint8_t *b, size_t n)
{
	struct tdir *x = &t->d[d];
	struct reader r = { b, n };
	int v13 = t->info.version == 0x0304;
	switch (type) {
	case 1:
		if (t->info.have_sh) {
			t->c->renegotiations++;
		} else if (!t->info.have_ch || t->hrr_wait) {
			if (!t->info.have_ch)
				t->info.client_dir = (uint8_t)d;
			parse_ch(t, r);
		}
		break;
	case 2:
		if (d != t->info.client_dir && t->info.have_ch && !t->info.have_sh)
			parse_sh(t, r);
		break;
	case 8:
		parse_ee(t, r);
		break;
	case 16:
		if (d == t->info.client_dir && t->th[0] && t->info.suite && t->info.suite->rsa_kx)
			rsa_cke(t, r);
		break;
	case 4:
		if (d != t->info.client_dir && !v13 && t->lim->rsa)
			rsa_ticket(t, r);
		break;
	case 20:
		if (v13)
			x->after_switch = K_AP;
		else
			t->finished12[d] = 1;
		break;
	case 24:
		if (v13 && x->have == K_AP)
			x->after_update = 1;
		break;
	case 5:
		if (v13 && x->have == K_EARLY)
			x->after_switch = K_HS;
		break;
	case 0:
		if (!v13 && t->finished12[d])
			t->c->renegotiations++;
		break;
	}
}

static int hs_keep(uint8_t type)
{
	return type == 1 || type == 2 || type == 8 || type == 16 || type == 4;
}

void tlsd_hs_feed(struct tlsd *t, int d, const uint8_t *p, size_t n)
{
	struct tdir *x = &t->d[d];
	while (n) {
		if (x->hhl < 4) {
			size_t k = (size_t)(4 - x->hhl) < n ? (size_t)(4 - x->hhl) : n;
			memcpy(x->hh + x->hhl, p, k);
			x->hhl = (uint8_t)(x->hhl + k);
			p += k;
			n -= k;
			if (x->hhl < 4)
				return;
			x->hlen = (uint32_t)x->hh[1] << 16 | (uint32_t)x->hh[2] << 8 | x->hh[3];
			x->hgot = 0;
			transcript(t, x->hh, 4);
			x->hkeep = hs_keep(x->hh[0]) && x->hlen <= HS_KEEP_MAX;
			if (x->hkeep) {
				uint8_t *nb = realloc(x->hb, x->hlen ? x->hlen : 1);
				if (!nb) {
					x->hkeep = 0;
				} else {
					x->hb = nb;
				}
			}
		}
		size_t k = x->hlen - x->hgot < n ? x->hlen - x->hgot : n;
		if (x->hkeep)
			memcpy(x->hb + x->hgot, p, k);
		transcript(t, p, k);
		x->hgot += (uint32_t)k;
		p += k;
		n -= k;
		if (x->hgot == x->hlen) {
			if (x->hkeep || !hs_keep(x->hh[0]))
				hs_msg(t, d, x->hh[0], x->hb, x->hlen);
			x->hhl = 0;
		}
	}
}
