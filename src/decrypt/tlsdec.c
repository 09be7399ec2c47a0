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
#include "decrypt/tlsdec.h"
#include "common/bytes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define WAIT_MARKS 256           /* pieces held per direction (then merged) */
#define RESYNC_WINDOW 64         /* sequence numbers tried after lost records */
#define RESYNC_BUF 65536         /* ciphertext searched for a record start */
#define HS_KEEP_MAX 65536        /* largest ClientHello/ServerHello/EE kept */

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
	uint8_t etm, seen_any, hrr_wait, kb_done, finished12[2], early_counted;
	uint8_t wait_dir;
	uint8_t kb[2 * 48 + 2 * 32 + 2 * 12];
	uint64_t ev;
	uint64_t held;           /* bytes held now */
	uint64_t cipher_bytes;
};

static const uint8_t hrr_random[32] = {
	0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
	0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
};

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

static int hold(struct tlsd *t, int d, uint64_t ts, const uint8_t *p, uint64_t n, int gap)
{
	struct tdir *x = &t->d[d];
	uint64_t add = gap ? 0 : n;
	if (t->held + add > t->lim->wait_per_conn ||
	    t->c->waiting_bytes + add > t->lim->wait_total) {
		t->c->wait_dropped += t->held + add;
		drop_held(t);
		t->st = TLSD_FAILED;
		return -ENOSPC;
	}
	if (add && x->wl + add > x->wcap) {
		size_t nc = x->wcap ? x->wcap : 16384;
		while (nc < x->wl + add)
			nc *= 2;
		uint8_t *nb = realloc(x->wb, nc);
		if (!nb)
			goto nomem;
		x->wb = nb;
		x->wcap = nc;
	}
	if (!x->wm && !(x->wm = malloc(sizeof(*x->wm) * WAIT_MARKS)))
		goto nomem;
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
		t->c->wait_dropped += t->held + add; /* gaps beyond the marks: give up */
		drop_held(t);
		t->st = TLSD_FAILED;
		return -ENOSPC;
	}
	t->held += add;
	t->c->waiting_bytes += add;
	return 0;
nomem:
	t->c->wait_dropped += t->held + add;
	drop_held(t);
	t->st = TLSD_FAILED;
	return -ENOMEM;
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

/* ---- the handshake ---- */

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

static void parse_ch(struct tlsd *t, struct reader r)
{
	uint16_t l, ver;
	uint8_t b;
	if (rd_be16(&r, &ver) < 0 || r.left < 32)
		return;
	memcpy(t->info.client_random, r.p, 32);
	t->info.have_ch = 1;
	if (rd_skip(&r, 32) < 0 || rd_u8(&r, &b) < 0 || rd_skip(&r, b) < 0 ||
	    rd_be16(&r, &l) < 0 || rd_skip(&r, l) < 0 || rd_u8(&r, &b) < 0 ||
	    rd_skip(&r, b) < 0 || rd_be16(&r, &l) < 0 || l > r.left)
		return;
	r.left = l;
	while (r.left >= 4) {
		uint16_t type, el;
		rd_be16(&r, &type);
		rd_be16(&r, &el);
		if (el > r.left)
			return;
		struct reader e = { r.p, el };
		rd_skip(&r, el);
		if (type == 0) { /* server_name: list(2) type(1) name(2+n) */
			uint16_t ll, nl;
			uint8_t nt;
			if (rd_be16(&e, &ll) == 0 && rd_u8(&e, &nt) == 0 && nt == 0 &&
			    rd_be16(&e, &nl) == 0 && nl <= e.left)
				copy_name(t->info.sni, sizeof(t->info.sni), e.p, nl);
		} else if (type == 42) {
			t->info.early = 1;
		}
	}
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
	if (rd_skip(&r, 32) < 0 || rd_u8(&r, &b) < 0 || rd_skip(&r, b) < 0 ||
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
		while (r.left >= 4) {
			uint16_t type, el;
			rd_be16(&r, &type);
			rd_be16(&r, &el);
			if (el > r.left)
				break;
			struct reader e = { r.p, el };
			rd_skip(&r, el);
			if (type == 43 && el == 2)
				t->info.version = get_be16(e.p);
			else if (type == 22)
				t->etm = 1;
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
	while (r.left >= 4) {
		uint16_t type, el;
		rd_be16(&r, &type);
		rd_be16(&r, &el);
		if (el > r.left)
			return;
		struct reader e = { r.p, el };
		rd_skip(&r, el);
		if (type == 16)
			take_alpn(t, e);
	}
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
	return type == 1 || type == 2 || type == 8;
}

static void hs_feed(struct tlsd *t, int d, const uint8_t *p, size_t n)
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
		hs_feed(t, d, plain, (size_t)pl);
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
			hs_feed(t, d, rec + 5, l);
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
		for (uint64_t k = 0; k < RESYNC_WINDOW; k++) {
			if (rc_open(&x->rc, x->seq + k, h, h + 5, l, plain, &type) < 0)
				continue;
			uint64_t lost = x->lost + i, over = k * (5 + 17);
			t->c->resyncs++;
			t->c->lost_records += k;
			emit_gap(t, d, ts, lost > over ? lost - over : 0, 0);
			x->seq += k;
			x->desync = 0;
			x->lost = 0;
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
			t->c->bad_records++;
			if (!t->seen_any) {
				t->st = TLSD_NOT_TLS;
				return;
			}
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
