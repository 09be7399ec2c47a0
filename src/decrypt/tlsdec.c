/*
 * A TLS connection followed passively (tlsdec.h). Each direction frames
 * records from its in-order bytes (whole records in the caller's buffer are
 * opened where they are; a record split over segments is gathered first),
 * reads the handshake messages it needs (ClientHello, ServerHello,
 * EncryptedExtensions, Finished, KeyUpdate, EndOfEarlyData), and keys itself
 * lazily, when its first protected record comes, from the key store by
 * client random. Without keys the connection holds its ciphertext (bounded)
 * and replays it when they come, in the order both directions arrived.
 * After lost ciphertext a direction skips the rest of a record whose length
 * it knows (an exact gap), or looks for the next record that opens with the
 * following sequence numbers (a gap of estimated length).
 */
#include "decrypt/tlsdec_int.h"
#include "common/bytes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static __thread uint8_t plain[TLS_MAX_CIPHER];

static void feed_dir(struct tlsd *t, int d, uint64_t ts, const uint8_t *p, size_t n,
		     const struct key_store *ks);

struct tlsd *tlsd_new(const struct tlsd_out *out, struct tlsd_counters *c,
		      const struct tlsd_limits *lim)
{
	struct tlsd *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->out = *out;
	t->c = c;
	t->lim = lim;
	if (lim->rsa) {
		t->th[0] = EVP_MD_CTX_new();
		t->th[1] = EVP_MD_CTX_new();
		if (!t->th[0] || !t->th[1] || !EVP_DigestInit_ex(t->th[0], EVP_sha256(), NULL) ||
		    !EVP_DigestInit_ex(t->th[1], EVP_sha384(), NULL)) {
			tlsd_free(t);
			return NULL;
		}
	}
	return t;
}

static void drop_held(struct tlsd *t)
{
	for (int d = 0; d < 2; d++) {
		free(t->d[d].wb);
		free(t->d[d].wm);
		t->d[d].wb = NULL;
		t->d[d].wm = NULL;
		t->d[d].wl = t->d[d].wcap = t->d[d].nwm = 0;
	}
	t->c->waiting_bytes -= t->held;
	t->held = 0;
}

void tlsd_free(struct tlsd *t)
{
	if (!t)
		return;
	drop_held(t);
	tlsd_transcript_end(t);
	for (int d = 0; d < 2; d++) {
		free(t->d[d].rb);
		free(t->d[d].hb);
		rc_free(&t->d[d].rc);
	}
	free(t);
}

enum tlsd_state tlsd_state(const struct tlsd *t)
{
	return t->st;
}

const struct tlsd_info *tlsd_info(const struct tlsd *t)
{
	return &t->info;
}

uint64_t tlsd_cipher_bytes(const struct tlsd *t)
{
	return t->cipher_bytes;
}

const char *tlsd_state_name(enum tlsd_state s)
{
	static const char *const names[] = { "handshake", "open", "waiting", "not_tls",
					     "midstream", "unsupported", "failed" };
	return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

/* The caller's direction as the clear text names it: 0 client to server. */
static int cdir(const struct tlsd *t, int d)
{
	return d == t->info.client_dir ? 0 : 1;
}

static void emit_gap(struct tlsd *t, int d, uint64_t ts, uint64_t n, int exact)
{
	if (!exact)
		t->c->inexact_gaps++;
	if (n)
		t->out.gap(t->out.arg, cdir(t, d), ts, n, exact);
}

/* ---- holding ciphertext for its keys ---- */

/* Holding failed (a cap, memory): what was held and add are dropped, the connection gives up. */
static int hold_failed(struct tlsd *t, uint64_t add, int err)
{
	t->c->wait_dropped += t->held + add;
	drop_held(t);
	t->st = TLSD_FAILED;
	return err;
}

static int hold(struct tlsd *t, int d, uint64_t ts, const uint8_t *p, uint64_t n, int gap)
{
	struct tdir *x = &t->d[d];
	uint64_t add = gap ? 0 : n;
	if (t->held + add > t->lim->wait_per_conn ||
	    t->c->waiting_bytes + add > t->lim->wait_total)
		return hold_failed(t, add, -ENOSPC);
	if (add && x->wl + add > x->wcap) {
		size_t nc = x->wcap ? x->wcap : 16384;
		while (nc < x->wl + add)
			nc *= 2;
		uint8_t *nb = realloc(x->wb, nc);
		if (!nb)
			return hold_failed(t, add, -ENOMEM);
		x->wb = nb;
		x->wcap = nc;
	}
	if (!x->wm && !(x->wm = malloc(sizeof(*x->wm) * WAIT_MARKS)))
		return hold_failed(t, add, -ENOMEM);
	if (add)
		memcpy(x->wb + x->wl, p, add);
	x->wl += add;
	struct wmark *m = x->nwm ? &x->wm[x->nwm - 1] : NULL;
	if (m && !gap && !m->gap && (x->nwm == WAIT_MARKS || m->ev + 1 == t->ev)) {
		m->len += n; /* the same run (or no room: it keeps its place in the order) */
		m->ts = ts;
	} else if (x->nwm < WAIT_MARKS) {
		x->wm[x->nwm++] = (struct wmark){ t->ev++, ts, n, (uint8_t)gap };
	} else {
		return hold_failed(t, add, -ENOSPC); /* gaps beyond the marks */
	}
	t->held += add;
	t->c->waiting_bytes += add;
	return 0;
}

static void start_wait(struct tlsd *t, int d)
{
	t->before_wait = t->st;
	t->st = TLSD_WAITING;
	t->wait_dir = (uint8_t)d;
}

/* ---- keys ---- */

static int label_of(const struct tlsd *t, int d, int want)
{
	int client = d == t->info.client_dir;
	switch (want) {
	case K_12:
		return KEY_MASTER;
	case K_EARLY:
		return client ? KEY_CLIENT_EARLY : -1;
	case K_HS:
		return client ? KEY_CLIENT_HS : KEY_SERVER_HS;
	case K_AP:
		return client ? KEY_CLIENT_AP : KEY_SERVER_AP;
	}
	return -1;
}

static int have_key(const struct tlsd *t, int d, const struct key_store *ks)
{
	int l = label_of(t, d, t->d[d].want);
	const struct key_entry *e = keys_find(ks, t->info.client_random);
	return l >= 0 && e && (e->have & (1u << l));
}

/* Keys direction d for its wanted stage: 0, -EAGAIN (not in the store yet), -EINVAL. */
static int key_dir(struct tlsd *t, int d, const struct key_store *ks)
{
	struct tdir *x = &t->d[d];
	const struct tls_suite *s = t->info.suite;
	int l = label_of(t, d, x->want);
	const struct key_entry *e = keys_find(ks, t->info.client_random);
	if (l < 0)
		return -EINVAL;
	if (!e || !(e->have & (1u << l)))
		return -EAGAIN;
	int r;
	if (x->want == K_12) {
		size_t ml = s->mac_len, kl = s->key_len, il = s->fixed_iv;
		if (!t->kb_done) {
			uint8_t seed[64];
			memcpy(seed, t->sr, 32);
			memcpy(seed + 32, t->info.client_random, 32);
			if (tls12_prf(s->sha384, e->secret[KEY_MASTER], 48, "key expansion", seed, 64,
				      t->kb, 2 * (ml + kl + il)) < 0)
				return -EINVAL;
			t->kb_done = 1;
		}
		int c = d == t->info.client_dir ? 0 : 1;
		r = rc_init12(&x->rc, s, t->kb + 2 * ml + c * kl, t->kb + 2 * (ml + kl) + c * il,
			      t->kb + c * ml, t->etm);
	} else if (s) {
		r = rc_init13(&x->rc, s, e->secret[l], e->len[l]);
	} else {
		/* 0-RTT before the ServerHello: the suite of the resumed session,
		 * found by the first record that opens (early_trial) */
		r = -EINVAL;
		for (uint16_t id = 0x1301; id <= 0x1305 && r < 0; id++) {
			const struct tls_suite *cs = tls_suite_find(id);
			if ((cs->sha384 ? 48 : 32) == e->len[l])
				r = rc_init13(&x->rc, cs, e->secret[l], e->len[l]);
		}
	}
	if (r < 0)
		return -EINVAL;
	x->have = x->want;
	x->seq = 0;
	return 0;
}

/* ---- records ---- */

static int plausible(const struct tlsd *t, const uint8_t h[5])
{
	uint16_t l = get_be16(h + 3);
	if (h[0] < 20 || h[0] > 24 || h[1] != 3 || h[2] > 4)
		return 0;
	return l <= (t->info.version == 0x0304 ? 16384 + 256 : TLS_MAX_CIPHER);
}

/* The first 0-RTT record before the ServerHello: each TLS 1.3 suite of the
 * secret's hash length is tried; the one that opens it stays. */
static long early_trial(struct tlsd *t, int d, const uint8_t *rec, size_t l,
			const struct key_store *ks, uint8_t *type)
{
	struct tdir *x = &t->d[d];
	const struct key_entry *e = keys_find(ks, t->info.client_random);
	if (!e || !(e->have & (1u << KEY_CLIENT_EARLY)))
		return -1;
	for (uint16_t id = 0x1301; id <= 0x1305; id++) {
		const struct tls_suite *cs = tls_suite_find(id);
		if ((cs->sha384 ? 48 : 32) != e->len[KEY_CLIENT_EARLY] ||
		    rc_init13(&x->rc, cs, e->secret[KEY_CLIENT_EARLY], e->len[KEY_CLIENT_EARLY]) < 0)
			continue;
		*type = rec[0];
		long pl = rc_open(&x->rc, x->seq, rec, rec + 5, l, plain, type);
		if (pl >= 0)
			return pl;
	}
	return -1;
}

/* A protected record of direction d: opened and handed on. 0, or -EAGAIN
 * when its keys are not known yet (nothing consumed). */
static int open_record(struct tlsd *t, int d, uint64_t ts, const uint8_t *rec, size_t l,
		       const struct key_store *ks)
{
	struct tdir *x = &t->d[d];
	if (x->have != x->want) {
		int r = key_dir(t, d, ks);
		if (r == -EAGAIN)
			return -EAGAIN;
		if (r < 0) {
			t->st = TLSD_UNSUPPORTED;
			return 0;
		}
	}
	uint8_t type = rec[0];
	long pl = rc_open(&x->rc, x->seq, rec, rec + 5, l, plain, &type);
	if (pl < 0 && x->have == K_EARLY && !t->info.suite)
		pl = early_trial(t, d, rec, l, ks, &type);
	if (pl < 0 && x->have == K_EARLY && t->info.have_sh) {
		/* 0-RTT the server refused: the client moved on to its handshake keys */
		x->want = K_HS;
		int r = key_dir(t, d, ks);
		if (r == -EAGAIN)
			return -EAGAIN;
		if (r == 0)
			pl = rc_open(&x->rc, x->seq, rec, rec + 5, l, plain, &type);
	}
	if (pl < 0) {
		int exact;
		uint64_t gl = rc_plain_len(&x->rc, l, &exact);
		t->c->auth_failures++;
		emit_gap(t, d, ts, gl, exact);
		x->seq++;
		return 0;
	}
	x->seq++;
	t->c->records++;
	switch (type) {
	case 23:
		if (x->have == K_EARLY && !t->early_counted) {
			t->early_counted = 1;
			t->c->early_data++;
		}
		if (t->st == TLSD_HANDSHAKE)
			t->st = TLSD_OPEN;
		if (pl)
			t->out.data(t->out.arg, cdir(t, d), ts, plain, (size_t)pl);
		break;
	case 22:
		tlsd_hs_feed(t, d, plain, (size_t)pl);
		break;
	case 20:
		t->c->renegotiations++; /* a protected ChangeCipherSpec: new keys we do not have */
		x->phase = PH_DEAD;
		break;
	}
	if (x->after_switch) {
		x->want = x->after_switch;
		x->after_switch = 0;
		if (x->want == K_AP && t->st == TLSD_HANDSHAKE)
			t->st = TLSD_OPEN;
	}
	if (x->after_update) {
		x->after_update = 0;
		t->c->key_updates++;
		if (rc_key_update(&x->rc) == 0)
			x->seq = 0;
		else
			x->phase = PH_DEAD;
	}
	return 0;
}

/* One whole record (header and body). 0, or -EAGAIN: hold it for keys. */
static int record(struct tlsd *t, int d, uint64_t ts, const uint8_t *rec, size_t l,
		  const struct key_store *ks)
{
	struct tdir *x = &t->d[d];
	uint8_t type = rec[0];
	if (!t->seen_any) {
		t->seen_any = 1;
		if (type != 22 || l < 4 || rec[5] != 1) {
			t->st = TLSD_MIDSTREAM;
			return 0;
		}
	}
	int v13 = t->info.version == 0x0304;
	if (x->phase == PH_PLAIN || (v13 && type != 23)) {
		switch (type) {
		case 22:
			tlsd_hs_feed(t, d, rec + 5, l);
			break;
		case 20:
			if (t->info.have_sh && !v13) {
				x->phase = PH_ENC;
				x->want = K_12;
			}
			break;
		case 23:
			if (d == t->info.client_dir && t->info.early && !t->info.have_sh) {
				x->phase = PH_ENC; /* 0-RTT data */
				x->want = K_EARLY;
				return open_record(t, d, ts, rec, l, ks);
			}
			t->c->bad_records++;
			break;
		}
		return 0;
	}
	return open_record(t, d, ts, rec, l, ks);
}

static void go_desync(struct tlsd *t, int d, uint64_t lost)
{
	struct tdir *x = &t->d[d];
	x->desync = 1;
	x->lost += lost;
	x->rlen = 0;
}

/* ---- mid-stream, placed by a # TUPLE line ---- */

#define SEARCH_CHAIN 8           /* whole records looked at for the shortest to try */
#define SEARCH_TRIES 3           /* record boundaries tried before a direction gives up */
/* record bytes one direction's search may open in all (tries and variants
 * together): ~0.1 s of AES-GCM; 16 KiB records get 16384 sequence numbers */
#define SEARCH_BUDGET (256ull << 20)

/* Sequence numbers s0 .. s0 + n - 1 (and hint first, if any) on record r
 * of body length l: 0 and the one that opened it in *seq, or -1. */
static int try_seqs(struct tdir *x, const uint8_t *r, size_t l, uint64_t s0, uint64_t n,
		    const uint64_t *hint, uint64_t *seq)
{
	uint8_t type;
	if (hint && *hint >= s0 && x->search_budget >= l + 5) {
		x->search_budget -= l + 5;
		type = r[0];
		if (rc_open(&x->rc, *hint, r, r + 5, l, plain, &type) >= 0) {
			*seq = *hint;
			return 0;
		}
	}
	for (uint64_t k = s0; k < s0 + n; k++) {
		if (x->search_budget < l + 5)
			return -1; /* spent: the caller gives the direction up */
		x->search_budget -= l + 5;
		type = r[0];
		if (rc_open(&x->rc, k, r, r + 5, l, plain, &type) >= 0) {
			*seq = k;
			return 0;
		}
	}
	return -1;
}

/*
 * The sequence number of the record at h (whole records chained in
 * h[0..n)): the shortest of the first SEARCH_CHAIN is opened with each
 * candidate (TLS 1.2 AEAD suites carry it as their explicit nonce, which
 * is tried first). Where the line did not say, encrypt-then-MAC (CBC) and
 * the TLS 1.3 suites of the secret's hash are tried too. 0, -1, or -EAGAIN
 * (the keys are not in the store yet: nothing tried). On failure the
 * direction's keys are as before (the next boundary tries every variant).
 */
static int find_seq(struct tlsd *t, int d, const uint8_t *h, size_t n, uint64_t *seq,
		    const struct key_store *ks)
{
	struct tdir *x = &t->d[d];
	size_t at = 0, best = 0, bestl = (size_t)-1;
	uint64_t idx = 0, bidx = 0;
	while (idx < SEARCH_CHAIN && at + 5 <= n && plausible(t, h + at)) {
		size_t l = get_be16(h + at + 3);
		if (at + 5 + l > n)
			break;
		if (l < bestl) {
			bestl = l;
			best = at;
			bidx = idx;
		}
		at += 5 + l;
		idx++;
	}
	if (bestl == (size_t)-1)
		return -1;
	if (x->have != x->want) {
		int r = key_dir(t, d, ks);
		if (r < 0)
			return r == -EAGAIN ? -EAGAIN : -1;
	}
	const uint8_t *r = h + best;
	uint64_t max = t->lim->seq_search ? t->lim->seq_search : TLSD_SEQ_SEARCH, hint = 0, found;
	const struct tls_suite *s = x->rc.s;
	int explicit = !s->tls13 && s->kind != SK_CHACHA && s->kind != SK_CBC && bestl >= 8;
	if (explicit)
		hint = get_be64(r + 5);
	/* the variants: as keyed; CBC also with encrypt-then-MAC; a TLS 1.3
	 * line without its suite (keyed as AES-128-GCM) also as ChaCha20. They
	 * take turns in blocks of sequence numbers, so that the budget covers the
	 * low numbers of each before the high ones of any. */
	const struct key_entry *e = keys_find(ks, t->info.client_random);
	int l = label_of(t, d, K_AP);
	int nv = 1, chacha = 0;
	if (s->kind == SK_CBC)
		nv = 2;
	else if (t->suite_guess && s->id == 0x1301 && e && l >= 0)
		nv = 2, chacha = 1;
	const uint64_t block = 4096;
	for (uint64_t b0 = 0; b0 < max; b0 += block) {
		for (int v = 0; v < nv; v++) {
			if (nv > 1 && chacha &&
			    rc_init13(&x->rc, tls_suite_find(v ? 0x1303 : 0x1301), e->secret[l],
				      e->len[l]) < 0)
				continue;
			if (nv > 1 && !chacha)
				x->rc.etm = (uint8_t)v;
			uint64_t cnt = max - b0 < block ? max - b0 : block;
			if (try_seqs(x, r, bestl, bidx + b0, cnt, explicit && !b0 ? &hint : NULL,
				     &found) == 0) {
				*seq = found - bidx;
				if (x->rc.etm)
					t->etm = 1;
				if (x->rc.s != t->info.suite) {
					t->info.suite = x->rc.s;
					t->info.suite_id = x->rc.s->id;
				}
				return 0;
			}
			if (x->search_budget < bestl + 5)
				goto spent;
		}
	}
spent:
	x->have = K_NONE; /* keyed again, as the line says, for the next boundary */
	return -1;
}

int tlsd_place(struct tlsd *t, int client_dir, const struct key_entry *e)
{
	int v13 = e->version == 0x0304;
	const struct tls_suite *s = e->suite ? tls_suite_find(e->suite) : NULL;
	static const uint8_t zero[32];
	if (e->version != 0x0303 && !v13)
		return -EINVAL;
	if (s && (s->tls13 != v13))
		return -EINVAL;
	if (!v13 && (!s || !memcmp(e->sr, zero, 32)))
		return -EINVAL; /* the key block needs both randoms and the suite */
	if (v13 && !s) {
		int l = (e->have & (1u << KEY_CLIENT_AP)) ? KEY_CLIENT_AP : KEY_SERVER_AP;
		s = tls_suite_find(e->len[l] == 48 ? 0x1302 : 0x1301);
		t->suite_guess = 1;
	}
	t->info.version = e->version;
	t->info.suite = s;
	t->info.suite_id = s->id;
	memcpy(t->info.client_random, e->cr, 32);
	memcpy(t->sr, e->sr, 32);
	t->info.have_ch = t->info.have_sh = 1;
	t->info.client_dir = (uint8_t)(client_dir & 1);
	t->seen_any = 1;
	tlsd_transcript_end(t);
	for (int d = 0; d < 2; d++) {
		struct tdir *x = &t->d[d];
		x->phase = PH_ENC;
		x->want = v13 ? K_AP : K_12;
		x->desync = 1;
		x->search = 1;
		x->search_budget = SEARCH_BUDGET;
	}
	return 0;
}

/* After lost ciphertext: the first place in the window where a record
 * opens with one of the next sequence numbers. Consumes p[0..n). */
static void resync(struct tlsd *t, int d, uint64_t ts, const uint8_t *p, size_t n,
		   const struct key_store *ks)
{
	struct tdir *x = &t->d[d];
	size_t need = x->rlen + n;
	if (need > x->rcap) {
		size_t nc = need < RESYNC_BUF + TLS_MAX_CIPHER + 5 ? RESYNC_BUF + TLS_MAX_CIPHER + 5 : need;
		uint8_t *nb = realloc(x->rb, nc);
		if (!nb) {
			x->phase = PH_DEAD;
			return;
		}
		x->rb = nb;
		x->rcap = nc;
	}
	memcpy(x->rb + x->rlen, p, n);
	x->rlen += n;
	size_t i = 0;
	for (; i + 5 <= x->rlen; i++) {
		const uint8_t *h = x->rb + i;
		if (!plausible(t, h))
			continue;
		size_t l = get_be16(h + 3);
		if (i + 5 + l > x->rlen) {
			if (x->rlen - i <= RESYNC_BUF)
				break; /* wait for the rest of this one */
			continue;
		}
		if (i + 10 + l <= x->rlen && !plausible(t, h + 5 + l))
			continue;
		uint8_t type = h[0];
		if (x->search) {
			uint64_t seq;
			int r = find_seq(t, d, h, x->rlen - i, &seq, ks);
			if (r == -EAGAIN && x->rlen - i <= RESYNC_BUF)
				break; /* the keys after their # TUPLE line: looked at again with the next bytes */
			if (r < 0) {
				if (++x->search_tries >= SEARCH_TRIES || x->search_budget < 5 + 16384) {
					t->c->place_failures++;
					x->phase = PH_DEAD;
					return;
				}
				continue;
			}
			/* found: what came before the first record is no gap (the
			 * connection's clear text starts here) */
			t->c->placed_dirs++;
			x->search = 0;
			x->seq = seq;
			x->desync = 0;
			x->lost = 0;
			goto refeed;
		}
		for (uint64_t k = 0; k < RESYNC_WINDOW; k++) {
			if (rc_open(&x->rc, x->seq + k, h, h + 5, l, plain, &type) < 0)
				continue;
			/* the lost records' headers and protection: this suite's own */
			int ex;
			uint64_t per = 5 + 1000 - rc_plain_len(&x->rc, 1000, &ex);
			uint64_t lost = x->lost + i, over = k * per;
			t->c->resyncs++;
			t->c->lost_records += k;
			emit_gap(t, d, ts, lost > over ? lost - over : 0, 0);
			x->seq += k;
			x->desync = 0;
			x->lost = 0;
			goto refeed;
		}
		continue;
	refeed:;
		size_t rest = x->rlen - i;
		uint8_t *tmp = malloc(rest);
		if (!tmp) {
			x->phase = PH_DEAD;
			return;
		}
		memcpy(tmp, h, rest);
		x->rlen = 0;
		feed_dir(t, d, ts, tmp, rest, ks);
		free(tmp);
		return;
	}
	if (i) {
		x->lost += i;
		t->c->resync_dropped += i;
		memmove(x->rb, x->rb + i, x->rlen - i);
		x->rlen -= i;
	}
}

static int grow_rb(struct tdir *x, size_t need)
{
	if (need <= x->rcap)
		return 0;
	size_t nc = need < 2048 ? 2048 : need < TLS_MAX_CIPHER + 5 ? TLS_MAX_CIPHER + 5 : need;
	uint8_t *nb = realloc(x->rb, nc);
	if (!nb)
		return -ENOMEM;
	x->rb = nb;
	x->rcap = nc;
	return 0;
}

static void feed_dir(struct tlsd *t, int d, uint64_t ts, const uint8_t *p, size_t n,
		     const struct key_store *ks)
{
	struct tdir *x = &t->d[d];
	while (n) {
		if (t->st == TLSD_WAITING) {
			hold(t, d, ts, p, n, 0);
			return;
		}
		if (t->st >= TLSD_NOT_TLS || x->phase == PH_DEAD)
			return;
		if (x->skip) {
			size_t k = x->skip < n ? x->skip : n;
			x->skip -= k;
			p += k;
			n -= k;
			continue;
		}
		if (x->desync) {
			resync(t, d, ts, p, n, ks);
			return;
		}
		const uint8_t *h = p;
		if (x->rlen || n < 5) {
			if (x->rlen < 5) {
				size_t k = 5 - x->rlen < n ? 5 - x->rlen : n;
				if (grow_rb(x, 5) < 0)
					return;
				memcpy(x->rb + x->rlen, p, k);
				x->rlen += k;
				p += k;
				n -= k;
				if (x->rlen < 5)
					return;
			}
			h = x->rb;
		}
		if (!plausible(t, h)) {
			if (!t->seen_any) {
				t->st = TLSD_NOT_TLS; /* not TLS at all: no bad record of it */
				return;
			}
			t->c->bad_records++;
			size_t had = x->rlen;
			go_desync(t, d, 0);
			if (had) {
				uint8_t tmp[5];
				memcpy(tmp, h, 5);
				resync(t, d, ts, tmp, 5, ks);
			}
			continue;
		}
		size_t l = get_be16(h + 3), whole = 5 + l;
		if (!x->rlen && n >= whole) {
			if (record(t, d, ts, p, l, ks) == -EAGAIN) {
				start_wait(t, d);
				continue; /* held from p on */
			}
			p += whole;
			n -= whole;
			continue;
		}
		if (grow_rb(x, whole) < 0)
			return;
		size_t k = whole - x->rlen < n ? whole - x->rlen : n;
		memcpy(x->rb + x->rlen, p, k);
		x->rlen += k;
		p += k;
		n -= k;
		if (x->rlen < whole)
			return;
		if (record(t, d, ts, x->rb, l, ks) == -EAGAIN) {
			start_wait(t, d);
			x->rlen = 0;
			hold(t, d, ts, x->rb, whole, 0);
			continue;
		}
		x->rlen = 0;
	}
}

enum tlsd_state tlsd_feed(struct tlsd *t, int dir, uint64_t ts_ns, const uint8_t *p, size_t n,
			  const struct key_store *ks)
{
	t->cipher_bytes += n;
	feed_dir(t, dir & 1, ts_ns, p, n, ks);
	return t->st;
}

static void gap_dir(struct tlsd *t, int d, uint64_t ts, uint64_t n)
{
	struct tdir *x = &t->d[d];
	if (t->st >= TLSD_NOT_TLS || x->phase == PH_DEAD || !n)
		return;
	if (x->phase == PH_PLAIN || (t->info.version == 0x0304 && x->want != K_AP)) {
		/* the handshake itself: no knowing where its keys change */
		t->c->handshake_lost++;
		t->st = TLSD_FAILED;
		return;
	}
	if (x->desync) {
		x->lost += n;
		return;
	}
	if (x->skip) {
		if (n <= x->skip) {
			x->skip -= n;
			return;
		}
		n -= x->skip;
		x->skip = 0;
		go_desync(t, d, n);
		return;
	}
	if (x->rlen >= 5) {
		size_t l = get_be16(x->rb + 3), left = 5 + l - x->rlen;
		int exact;
		uint64_t pl = rc_plain_len(&x->rc, l, &exact);
		t->c->lost_records++;
		emit_gap(t, d, ts, pl, exact);
		x->seq++;
		x->rlen = 0;
		if (n < left) {
			x->skip = left - (size_t)n;
			return;
		}
		n -= left;
		if (n)
			go_desync(t, d, n);
		return;
	}
	go_desync(t, d, n);
}

enum tlsd_state tlsd_gap(struct tlsd *t, int dir, uint64_t ts_ns, uint64_t n,
			 const struct key_store *ks)
{
	(void)ks;
	if (t->st == TLSD_WAITING)
		hold(t, dir & 1, ts_ns, NULL, n, 1);
	else
		gap_dir(t, dir & 1, ts_ns, n);
	return t->st;
}

enum tlsd_state tlsd_retry(struct tlsd *t, const struct key_store *ks)
{
	if (t->st != TLSD_WAITING || !have_key(t, t->wait_dir, ks))
		return t->st;
	struct tdir h[2];
	for (int d = 0; d < 2; d++) {
		h[d] = t->d[d];
		t->d[d].wb = NULL;
		t->d[d].wm = NULL;
		t->d[d].wl = t->d[d].wcap = t->d[d].nwm = 0;
	}
	t->c->waiting_bytes -= t->held;
	t->held = 0;
	t->st = t->before_wait;
	size_t at[2] = { 0, 0 }, off[2] = { 0, 0 };
	for (;;) {
		int d = at[0] < h[0].nwm ? 0 : 1;
		if (at[0] < h[0].nwm && at[1] < h[1].nwm)
			d = h[0].wm[at[0]].ev < h[1].wm[at[1]].ev ? 0 : 1;
		if (at[d] >= h[d].nwm)
			break;
		const struct wmark *m = &h[d].wm[at[d]++];
		if (m->gap) {
			tlsd_gap(t, d, m->ts, m->len, ks);
		} else {
			feed_dir(t, d, m->ts, h[d].wb + off[d], m->len, ks);
			off[d] += m->len;
		}
	}
	for (int d = 0; d < 2; d++) {
		free(h[d].wb);
		free(h[d].wm);
	}
	return t->st;
}

uint64_t tlsd_give_up(struct tlsd *t)
{
	uint64_t n = t->held;
	drop_held(t);
	if (t->st == TLSD_WAITING)
		t->st = TLSD_FAILED;
	return n;
}
