/* Unit tests of the passive decryptor's parts (src/decrypt/): the key-log parser and store, the key derivations checked against OpenSSL's own KDFs, TCP reassembly, and the TLS follower's handling of lost records (exact skip, resynchronisation, never a wrong byte). */
#include "unit.h"
#include "common/bytes.h"
#include "decrypt/keys.h"
#include "decrypt/tcpre.h"
#include "decrypt/tlsdec.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *CR = "0101010101010101010101010101010101010101010101010101010101010101";

static int add(struct key_store *ks, const char *line)
{
	const char *why = NULL;
	return keys_add_line(ks, line, strlen(line), &why);
}

TEST(keys_lines)
{
	struct key_store *ks = keys_new(4);
	char l[512];
	snprintf(l, sizeof(l), "CLIENT_RANDOM %s %096d", CR, 7);
	CHECK_EQ(add(ks, l), 1);
	snprintf(l, sizeof(l), "CLIENT_TRAFFIC_SECRET_0 %s %064d\r", CR, 3);
	CHECK_EQ(add(ks, l), 1);
	CHECK_EQ(add(ks, "# TUPLE 127.0.0.1:1 127.0.0.1:2"), 0); /* the ends alone: for the next key */
	CHECK_EQ(add(ks, "   "), 0);
	snprintf(l, sizeof(l), "EXPORTER_SECRET %s %064d", CR, 3);
	CHECK_EQ(add(ks, l), 0); /* known, not used */
	CHECK_EQ(add(ks, "CLIENT_RANDOM 0101 00"), -EINVAL);
	snprintf(l, sizeof(l), "CLIENT_RANDOM %s %064d", CR, 1); /* a master secret is 48 bytes */
	CHECK_EQ(add(ks, l), -EINVAL);
	snprintf(l, sizeof(l), "SERVER_TRAFFIC_SECRET_0 %.63sg %064d", CR, 1);
	CHECK_EQ(add(ks, l), -EINVAL);
	snprintf(l, sizeof(l), "NOT_A_LABEL %s %064d", CR, 1);
	CHECK_EQ(add(ks, l), -EINVAL);
	snprintf(l, sizeof(l), "SERVER_TRAFFIC_SECRET_0 %s %040d", CR, 1); /* 20 bytes: no hash's */
	CHECK_EQ(add(ks, l), -EINVAL);
	snprintf(l, sizeof(l), "SERVER_TRAFFIC_SECRET_0 %s %0300d", CR, 1); /* longer than any */
	CHECK_EQ(add(ks, l), -EINVAL);
	snprintf(l, sizeof(l), "CLIENT_TRAFFIC_SECRET_1 %s %064d", CR, 1); /* after a KeyUpdate */
	CHECK_EQ(add(ks, l), 0);
	snprintf(l, sizeof(l), "CLIENT_TRAFFIC_SECRET_0 %s %064d extra", CR, 3);
	CHECK_EQ(add(ks, l), -EINVAL);
	uint8_t cr[32];
	memset(cr, 1, 32);
	const struct key_entry *e = keys_find(ks, cr);
	if (!CHECK(e))
		goto out;
	CHECK_EQ(e->have, (1u << KEY_MASTER) | (1u << KEY_CLIENT_AP));
	CHECK_EQ(e->len[KEY_CLIENT_AP], 32);
	CHECK_EQ(e->secret[KEY_MASTER][47], 0x07);
	/* the latest line for a client random wins */
	snprintf(l, sizeof(l), "CLIENT_RANDOM %s %096d", CR, 9);
	CHECK_EQ(add(ks, l), 1);
	CHECK_EQ(keys_find(ks, cr)->secret[KEY_MASTER][47], 0x09);
	CHECK_EQ(keys_stats(ks)->replaced, 1);
	CHECK_EQ(keys_stats(ks)->bad_lines, 7);
	/* over the cap the oldest client random goes */
	for (int i = 2; i <= 5; i++) {
		snprintf(l, sizeof(l), "CLIENT_RANDOM %062d%02d %096d", 0, i, 1);
		CHECK_EQ(add(ks, l), 1);
	}
	CHECK(!keys_find(ks, cr));
	CHECK_EQ(keys_stats(ks)->evicted, 1);
	CHECK_EQ(keys_stats(ks)->entries, 4);
out:
	keys_free(ks);
}

TEST(keys_file_followed)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/keys.log", unit_tmpdir());
	struct key_store *ks = keys_new(0);
	struct key_file kf;
	const char *why = NULL;
	CHECK_EQ(key_file_open(&kf, path, &why), 0);
	CHECK_EQ(key_file_poll(&kf, ks), 0); /* not there yet */
	FILE *f = fopen(path, "w");
	fprintf(f, "CLIENT_RANDOM %s %096d\nCLIENT_TRAFFIC_SECRET_0 %s 00", CR, 1, CR);
	fflush(f);
	CHECK_EQ(key_file_poll(&kf, ks), 1); /* the partial line waits */
	fprintf(f, "%062d\n", 2);
	fflush(f);
	CHECK_EQ(key_file_poll(&kf, ks), 1);
	fclose(f);
	CHECK_EQ(kf.lines, 2);
	key_file_close(&kf);
	keys_free(ks);
}

/* OpenSSL's TLS1-PRF and HKDF give the same bytes as ours */
TEST(tls_kdfs_match_openssl)
{
	uint8_t secret[48], seed[64], ours[128], theirs[128];
	for (int i = 0; i < 48; i++)
		secret[i] = (uint8_t)(i * 7 + 1);
	for (int i = 0; i < 64; i++)
		seed[i] = (uint8_t)(255 - i);
	for (int sha384 = 0; sha384 < 2; sha384++) {
		CHECK_EQ(tls12_prf(sha384, secret, 48, "key expansion", seed, 64, ours, 104), 0);
		EVP_KDF *k = EVP_KDF_fetch(NULL, "TLS1-PRF", NULL);
		EVP_KDF_CTX *kc = EVP_KDF_CTX_new(k);
		OSSL_PARAM p[] = {
			OSSL_PARAM_utf8_string(OSSL_KDF_PARAM_DIGEST, sha384 ? "SHA384" : "SHA256", 0),
			OSSL_PARAM_octet_string(OSSL_KDF_PARAM_SECRET, secret, 48),
			OSSL_PARAM_octet_string(OSSL_KDF_PARAM_SEED, "key expansion", 13),
			OSSL_PARAM_octet_string(OSSL_KDF_PARAM_SEED, seed, 64),
			OSSL_PARAM_END,
		};
		CHECK(EVP_KDF_derive(kc, theirs, 104, p) > 0);
		CHECK_MEM(ours, theirs, 104);
		EVP_KDF_CTX_free(kc);
		EVP_KDF_free(k);
		/* HKDF-Expand-Label(secret, "key", "", 32): info = 0020 09 "tls13 key" 00 */
		size_t hl = sha384 ? 48 : 32;
		CHECK_EQ(tls13_expand_label(sha384, secret, hl, "key", ours, 32), 0);
		uint8_t info[] = { 0, 32, 9, 't', 'l', 's', '1', '3', ' ', 'k', 'e', 'y', 0 };
		int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
		k = EVP_KDF_fetch(NULL, "HKDF", NULL);
		kc = EVP_KDF_CTX_new(k);
		OSSL_PARAM q[] = {
			OSSL_PARAM_utf8_string(OSSL_KDF_PARAM_DIGEST, sha384 ? "SHA384" : "SHA256", 0),
			OSSL_PARAM_octet_string(OSSL_KDF_PARAM_KEY, secret, hl),
			OSSL_PARAM_octet_string(OSSL_KDF_PARAM_INFO, info, sizeof(info)),
			OSSL_PARAM_int(OSSL_KDF_PARAM_MODE, &mode),
			OSSL_PARAM_END,
		};
		CHECK(EVP_KDF_derive(kc, theirs, 32, q) > 0);
		CHECK_MEM(ours, theirs, 32);
		EVP_KDF_CTX_free(kc);
		EVP_KDF_free(k);
	}
}

/* ---- TCP reassembly ---- */

struct tcap {
	uint8_t out[2][4096];
	size_t n[2];
	uint64_t gaps[2];
	int opens, closes;
};

static void *t_open(void *arg, const struct tcp_key *k, int syn, uint64_t ts)
{
	(void)k;
	(void)syn;
	(void)ts;
	((struct tcap *)arg)->opens++;
	return arg;
}

static void t_data(void *arg, void *user, int dir, uint64_t ts, const uint8_t *p, size_t n)
{
	struct tcap *c = user;
	(void)arg;
	(void)ts;
	memcpy(c->out[dir] + c->n[dir], p, n);
	c->n[dir] += n;
}

static void t_gap(void *arg, void *user, int dir, uint64_t ts, uint64_t n)
{
	struct tcap *c = user;
	(void)arg;
	(void)ts;
	memset(c->out[dir] + c->n[dir], '#', n); /* what the gap stands for */
	c->n[dir] += n;
	c->gaps[dir] += n;
}

static void t_close(void *arg, void *user, uint64_t ts, int why)
{
	(void)arg;
	(void)ts;
	(void)why;
	((struct tcap *)user)->closes++;
}

static const uint8_t A[16] = { 10, 0, 0, 1 }, B[16] = { 10, 0, 0, 2 };

static void seg(struct tcpre *r, int from_b, uint32_t seq, uint32_t ack, uint8_t fl, const char *s)
{
	size_t n = s ? strlen(s) : 0;
	tcpre_segment(r, 1, 4, from_b ? B : A, from_b ? A : B, from_b ? 443 : 5000,
		      from_b ? 5000 : 443, seq, ack, fl, (const uint8_t *)s, n, n);
}

/* A reassembler handing its output to c (cleared); ooo_per_dir 0: the default. */
static struct tcpre *tcp_fixture(struct tcap *c, size_t ooo_per_dir)
{
	memset(c, 0, sizeof(*c));
	struct tcpre_out o = { t_open, t_data, t_gap, t_close, c };
	struct tcpre_limits lim = { .ooo_per_dir = ooo_per_dir };
	return tcpre_new(&o, &lim);
}

TEST(tcp_reorder_retransmit_overlap)
{
	static struct tcap c;
	struct tcpre *r = tcp_fixture(&c, 0);
	seg(r, 0, 99, 0, TCPRE_SYN_FLAG, NULL);
	seg(r, 1, 999, 100, TCPRE_SYN_FLAG | TCPRE_ACK_FLAG, NULL);
	seg(r, 0, 100, 1000, TCPRE_ACK_FLAG, "hello ");
	seg(r, 0, 112, 1000, TCPRE_ACK_FLAG, "third");      /* ahead of a hole */
	seg(r, 0, 104, 1000, TCPRE_ACK_FLAG, "XX wXXld ");  /* overlaps both sides */
	seg(r, 0, 100, 1000, TCPRE_ACK_FLAG, "HELLO ");     /* a retransmission that differs */
	seg(r, 1, 1000, 117, TCPRE_ACK_FLAG | TCPRE_FIN_FLAG, "bye");
	seg(r, 0, 117, 1004, TCPRE_ACK_FLAG | TCPRE_FIN_FLAG, NULL);
	CHECK_EQ(c.opens, 1);
	CHECK_EQ(c.closes, 1);
	CHECK_EQ(c.n[0], 17);
	CHECK_MEM(c.out[0], "hello  wXXldthird", 17); /* the first copy of each byte wins */
	CHECK_EQ(c.gaps[0], 0);
	CHECK_MEM(c.out[1], "bye", 3);
	tcpre_free(r);
}

TEST(tcp_loss_by_ack_and_at_end)
{
	static struct tcap c;
	struct tcpre *r = tcp_fixture(&c, 0);
	seg(r, 0, 99, 0, TCPRE_SYN_FLAG, NULL);
	seg(r, 1, 999, 100, TCPRE_SYN_FLAG | TCPRE_ACK_FLAG, NULL);
	seg(r, 0, 100, 1000, TCPRE_ACK_FLAG, "aaaa");
	/* bbbb (104..108) never captured; the server acknowledges it */
	seg(r, 1, 1000, 108, TCPRE_ACK_FLAG, NULL);
	CHECK_EQ(c.gaps[0], 4);
	seg(r, 0, 108, 1000, TCPRE_ACK_FLAG, "cccc");
	seg(r, 0, 116, 1000, TCPRE_ACK_FLAG, "eeee"); /* dddd lost, nobody says so */
	CHECK_EQ(c.n[0], 12);
	tcpre_flush(r, 2);
	CHECK_EQ(c.n[0], 20);
	CHECK_MEM(c.out[0], "aaaa####cccc####eeee", 20);
	CHECK_EQ(c.closes, 1);
	CHECK_EQ(tcpre_stats(r)->gap_bytes, 8);
	tcpre_free(r);
}

TEST(tcp_ooo_cap_forces_the_hole)
{
	static struct tcap c;
	struct tcpre *r = tcp_fixture(&c, 8);
	seg(r, 0, 99, 0, TCPRE_SYN_FLAG, NULL);
	seg(r, 0, 104, 0, 0, "bbbb");
	seg(r, 0, 108, 0, 0, "cccc");
	CHECK_EQ(c.n[0], 0);
	seg(r, 0, 112, 0, 0, "dddd"); /* over the cap: the hole 100..104 is given up */
	CHECK_EQ(c.n[0], 16);
	CHECK_MEM(c.out[0], "####bbbbccccdddd", 16);
	CHECK_EQ(tcpre_stats(r)->ooo_forced, 1);
	tcpre_free(r);
}

/* ---- the TLS follower, with records made here (TLS 1.3, AES-128-GCM) ---- */

struct ccap {
	uint8_t out[2][65536];
	size_t n[2];
	uint64_t gap[2];
	int inexact;
};

static void c_data(void *arg, int dir, uint64_t ts, const uint8_t *p, size_t n)
{
	struct ccap *c = arg;
	(void)ts;
	memcpy(c->out[dir] + c->n[dir], p, n);
	c->n[dir] += n;
}

static void c_gap(void *arg, int dir, uint64_t ts, uint64_t n, int exact)
{
	struct ccap *c = arg;
	(void)ts;
	memset(c->out[dir] + c->n[dir], '#', n);
	c->n[dir] += n;
	c->gap[dir] += n;
	c->inexact += !exact;
}

static const uint8_t SECRET[32] = { 5, 4, 3, 2, 1 };

/* A TLS 1.3 record of inner type carrying p[0..n) at seq, AES-128-GCM, key SECRET. */
static size_t seal13t(uint8_t *out, uint64_t seq, const uint8_t *p, size_t n, uint8_t type)
{
	uint8_t key[16], iv[12];
	tls13_expand_label(0, SECRET, 32, "key", key, 16);
	tls13_expand_label(0, SECRET, 32, "iv", iv, 12);
	for (int i = 0; i < 8; i++)
		iv[4 + i] ^= (uint8_t)(seq >> (56 - 8 * i));
	size_t l = n + 1 + 16;
	out[0] = 23;
	out[1] = 3;
	out[2] = 3;
	put_be16(out + 3, (uint16_t)l);
	uint8_t in[20000];
	memcpy(in, p, n);
	in[n] = type;
	EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
	int ol;
	EVP_EncryptInit_ex(x, EVP_aes_128_gcm(), NULL, key, iv);
	EVP_EncryptUpdate(x, NULL, &ol, out, 5);
	EVP_EncryptUpdate(x, out + 5, &ol, in, (int)n + 1);
	EVP_EncryptFinal_ex(x, out + 5 + n + 1, &ol);
	EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, 16, out + 5 + n + 1);
	EVP_CIPHER_CTX_free(x);
	return 5 + l;
}

static size_t seal13(uint8_t *out, uint64_t seq, const uint8_t *p, size_t n)
{
	return seal13t(out, seq, p, n, 23);
}

static void add_keys13(struct key_store *ks, int which)
{
	char l[256];
	snprintf(l, sizeof(l), "%s %s 0504030201%054d",
		 which ? "SERVER_TRAFFIC_SECRET_0" : "SERVER_HANDSHAKE_TRAFFIC_SECRET", CR, 0);
	CHECK_EQ(add(ks, l), 1);
}

/* A ClientHello and a ServerHello (TLS 1.3, 0x1301), then the server's
 * Finished under its handshake keys (SECRET, as its application keys). */
static struct tlsd *hello13(struct ccap *c, struct key_store *ks, struct tlsd_counters *tc,
			    const struct tlsd_limits *lim)
{
	struct tlsd_out o = { c_data, c_gap, c };
	struct tlsd *t = tlsd_new(&o, tc, lim);
	static const uint8_t ch_head[] = { 22, 3, 1, 0, 43, 1, 0, 0, 39, 3, 3 };
	uint8_t ch[5 + 43];
	memcpy(ch, ch_head, sizeof(ch_head));
	memset(ch + 11, 1, 32);                            /* client random */
	memcpy(ch + 43, (uint8_t[]){ 0, 0, 2, 0x13, 0x01 }, 5); /* no session id, one suite */
	/* (no compression list: the parser stops there, the random is what it needs) */
	tlsd_feed(t, 0, 1, ch, sizeof(ch), ks);
	uint8_t sh[5 + 4 + 2 + 32 + 1 + 2 + 1 + 2 + 6] = { 22, 3, 3, 0, 50, 2, 0, 0, 46, 3, 3 };
	uint8_t *q = sh + 11 + 32;
	*q++ = 0;                                          /* session id */
	*q++ = 0x13, *q++ = 0x01;                          /* the suite */
	*q++ = 0;                                          /* compression */
	*q++ = 0, *q++ = 6;                                /* extensions */
	*q++ = 0, *q++ = 43, *q++ = 0, *q++ = 2, *q++ = 3, *q++ = 4; /* supported_versions: 1.3 */
	tlsd_feed(t, 1, 1, sh, sizeof(sh), ks);
	/* the server's Finished under the handshake keys */
	uint8_t fin[4 + 32] = { 20, 0, 0, 32 }, rec[128];
	size_t rl = seal13t(rec, 0, fin, sizeof(fin), 22);
	tlsd_feed(t, 1, 1, rec, rl, ks);
	return t;
}

TEST(tls13_lost_records_exact_and_resync)
{
	struct key_store *ks = keys_new(0);
	struct tlsd_counters tc;
	memset(&tc, 0, sizeof(tc));
	struct tlsd_limits lim = { 1 << 20, 1 << 24, NULL, NULL, 0 };
	static struct ccap c;
	memset(&c, 0, sizeof(c));
	add_keys13(ks, 0);
	add_keys13(ks, 1);
	struct tlsd *t = hello13(&c, ks, &tc, &lim);
	CHECK_EQ(tc.records, 1);
	static uint8_t stream[8][2100];
	size_t len[8];
	uint8_t msg[2000];
	for (int i = 0; i < 8; i++) {
		memset(msg, 'a' + i, sizeof(msg));
		len[i] = seal13(stream[i], (uint64_t)i, msg, sizeof(msg));
	}
	tlsd_feed(t, 1, 2, stream[0], len[0], ks);
	/* record 1: its first 100 bytes arrive, the rest is lost: an exact skip */
	tlsd_feed(t, 1, 2, stream[1], 100, ks);
	tlsd_gap(t, 1, 2, len[1] - 100, ks);
	tlsd_feed(t, 1, 2, stream[2], len[2], ks);
	CHECK_EQ(c.gap[1], 2000);
	CHECK_EQ(c.n[1], 6000);
	/* records 3, 4 and 5 (its header) lost: found again at 6 */
	tlsd_feed(t, 1, 2, stream[3], 10, ks);
	tlsd_gap(t, 1, 2, len[3] - 10 + len[4] + 7, ks);
	tlsd_feed(t, 1, 2, stream[5] + 7, len[5] - 7, ks);
	tlsd_feed(t, 1, 2, stream[6], len[6], ks);
	tlsd_feed(t, 1, 2, stream[7], len[7], ks);
	CHECK_EQ(tc.resyncs, 1);
	CHECK(tc.auth_failures == 0);
	/* never a wrong byte: every byte is its record's letter or a gap */
	size_t at = 0;
	for (int i = 0; i < 8 && at < c.n[1]; i++) {
		for (size_t k = 0; k < 2000 && at < c.n[1]; k++, at++)
			if (c.out[1][at] != '#' && c.out[1][at] != 'a' + i)
				break;
	}
	CHECK_MEM(c.out[1], (uint8_t[2000]){ [0 ... 1999] = 'a' }, 2000);
	CHECK_EQ(c.out[1][c.n[1] - 1], 'h');
	CHECK_EQ(c.out[1][c.n[1] - 4001], '#'); /* records 6 and 7 whole at the end, after the gap */
	for (size_t i = 0; i < 2000; i++)
		if (!CHECK(c.out[1][c.n[1] - 2000 - 1 - i] == 'g'))
			break;
	CHECK(c.inexact >= 1);
	tlsd_free(t);
	keys_free(ks);
}

TEST(tls13_keys_after_ciphertext)
{
	struct key_store *ks = keys_new(0);
	struct tlsd_counters tc;
	memset(&tc, 0, sizeof(tc));
	struct tlsd_limits lim = { 1 << 20, 1 << 24, NULL, NULL, 0 };
	static struct ccap c;
	memset(&c, 0, sizeof(c));
	/* the same hello, but its keys come only after the records */
	struct tlsd *t = hello13(&c, ks, &tc, &lim);
	CHECK_EQ(tlsd_state(t), TLSD_WAITING);
	uint8_t rec[2100], msg[1000];
	memset(msg, 'z', sizeof(msg));
	size_t l = seal13(rec, 0, msg, sizeof(msg));
	tlsd_feed(t, 1, 3, rec, l, ks);
	CHECK_EQ(c.n[1], 0);
	CHECK(tc.waiting_bytes > 0);
	add_keys13(ks, 0);
	CHECK_EQ(tlsd_retry(t, ks), TLSD_WAITING); /* the application secret is still missing */
	add_keys13(ks, 1);
	CHECK_EQ(tlsd_retry(t, ks), TLSD_OPEN);
	CHECK_EQ(c.n[1], 1000);
	CHECK_EQ(c.out[1][999], 'z');
	CHECK_EQ(tc.waiting_bytes, 0);
	tlsd_free(t);
	keys_free(ks);
}

TEST(keys_tuple_lines)
{
	struct key_store *ks = keys_new(4);
	char l[512];
	uint8_t a[16] = { 10, 0, 0, 1 }, b[16] = { 10, 0, 0, 2 }, cr[32];
	memset(cr, 1, 32);
	int ac = -1;
	/* the full form: both randoms, version and suite */
	snprintf(l, sizeof(l), "# TUPLE 10.0.0.1:40000 10.0.0.2:443 %s %064d 0303 c02f", CR, 5);
	CHECK_EQ(add(ks, l), 1);
	const struct key_entry *e = keys_find_tuple(ks, 4, b, 443, a, 40000, &ac);
	if (CHECK(e)) {
		CHECK_EQ(ac, 0); /* asked the other way round: b is the server */
		CHECK_MEM(e->cr, cr, 32);
		CHECK_EQ(e->version, 0x0303);
		CHECK_EQ(e->suite, 0xc02f);
		CHECK_EQ(e->sr[31], 5);
	}
	CHECK(keys_find_tuple(ks, 4, a, 40000, b, 443, &ac) && ac == 1);
	CHECK(!keys_find_tuple(ks, 4, a, 40001, b, 443, &ac));
	CHECK(!keys_find_tuple(ks, 6, a, 40000, b, 443, &ac));
	/* the same ends for a new connection (the port used again): the latest line wins */
	snprintf(l, sizeof(l), "# TUPLE 10.0.0.1:40000 10.0.0.2:443 %062d02 - 0304 -", 0);
	CHECK_EQ(add(ks, l), 1);
	e = keys_find_tuple(ks, 4, a, 40000, b, 443, &ac);
	CHECK(e && e->cr[31] == 2 && e->version == 0x0304 && e->suite == 0);
	/* IPv6, and the ends alone: for the key line that follows */
	CHECK_EQ(add(ks, "# TUPLE [2001:db8::1]:5000 [2001:db8::2]:8443"), 0);
	snprintf(l, sizeof(l), "CLIENT_TRAFFIC_SECRET_0 %062d03 %064d", 0, 3);
	CHECK_EQ(add(ks, l), 1);
	uint8_t a6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 }, b6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 2 };
	e = keys_find_tuple(ks, 6, a6, 5000, b6, 8443, &ac);
	CHECK(e && e->cr[31] == 3 && ac == 1 && e->version == 0x0304);
	/* the short form names the very next line only: a comment between, and it is gone */
	CHECK_EQ(add(ks, "# TUPLE 10.9.9.1:1000 10.9.9.2:443"), 0);
	CHECK_EQ(add(ks, "# something else"), 0);
	snprintf(l, sizeof(l), "CLIENT_TRAFFIC_SECRET_0 %062d0a %064d", 0, 3);
	CHECK_EQ(add(ks, l), 1);
	uint8_t a9[16] = { 10, 9, 9, 1 }, b9[16] = { 10, 9, 9, 2 };
	CHECK(!keys_find_tuple(ks, 4, a9, 1000, b9, 443, &ac));
	/* malformed lines are bad lines, and place nothing */
	static const char *const bad[] = {
		"# TUPLE 10.0.0.1:40000",                             /* one end */
		"# TUPLE 10.0.0.1 10.0.0.2:443",                      /* no port */
		"# TUPLE 10.0.0.1:0 10.0.0.2:443",                    /* port 0 */
		"# TUPLE 10.0.0.1:70000 10.0.0.2:443",                /* port too big */
		"# TUPLE 10.0.0.1:1 [2001:db8::2]:443",               /* two families */
		"# TUPLE [2001:db8::1:1 [2001:db8::2]:443",           /* no bracket */
		"# TUPLE 999.0.0.1:1 10.0.0.2:443",                   /* no address */
		"# TUPLE 10.0.0.1:1 10.0.0.2:443 0101",               /* short random */
		"# TUPLE 10.0.0.1:1 10.0.0.2:443 " "zz01010101010101010101010101010101010101010101010101010101010101",
	};
	uint64_t bl = keys_stats(ks)->bad_lines;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_EQ(add(ks, bad[i]), -EINVAL);
	snprintf(l, sizeof(l), "# TUPLE 10.0.0.1:1 10.0.0.2:443 %s %064d 303 c02f", CR, 5);
	CHECK_EQ(add(ks, l), -EINVAL); /* 3 digits */
	snprintf(l, sizeof(l), "# TUPLE 10.0.0.1:1 10.0.0.2:443 %s %064d 0303 c02f more", CR, 5);
	CHECK_EQ(add(ks, l), -EINVAL);
	CHECK_EQ(keys_stats(ks)->bad_lines, bl + sizeof(bad) / sizeof(bad[0]) + 2);
	CHECK_EQ(keys_stats(ks)->tuples, 3);
	CHECK_EQ(keys_stats(ks)->entries, 4);
	/* over the cap the oldest client random goes, with its tuple */
	for (int i = 4; i <= 7; i++) {
		snprintf(l, sizeof(l), "CLIENT_RANDOM %062d%02d %096d", 0, i, 1);
		CHECK_EQ(add(ks, l), 1);
	}
	CHECK(!keys_find_tuple(ks, 4, a, 40000, b, 443, &ac));
	CHECK(!keys_find_tuple(ks, 6, a6, 5000, b6, 8443, &ac));
	keys_free(ks);
}

/* A connection placed mid-stream: its first bytes are the end of a record,
 * then whole records from sequence number 40 on; the search finds 40 and
 * hands on exactly those records, nothing of the partial one. */
TEST(tls13_placed_midstream_finds_the_sequence)
{
	struct key_store *ks = keys_new(0);
	struct tlsd_counters tc;
	memset(&tc, 0, sizeof(tc));
	struct tlsd_limits lim = { 1 << 20, 1 << 24, NULL, NULL, 0 };
	static struct ccap c;
	memset(&c, 0, sizeof(c));
	add_keys13(ks, 1);
	char l[256];
	snprintf(l, sizeof(l), "# TUPLE 10.0.0.1:40000 10.0.0.2:443 %s - 0304 1301", CR);
	CHECK_EQ(add(ks, l), 1);
	int ac;
	uint8_t a[16] = { 10, 0, 0, 1 }, b[16] = { 10, 0, 0, 2 };
	const struct key_entry *e = keys_find_tuple(ks, 4, b, 443, a, 40000, &ac);
	if (!CHECK(e))
		goto out;
	struct tlsd_out o = { c_data, c_gap, &c };
	struct tlsd *t = tlsd_new(&o, &tc, &lim);
	/* the capture's first segment is the server's: as fed, direction 0 */
	CHECK_EQ(tlsd_place(t, ac ? 0 : 1, e), 0);
	static uint8_t stream[5][2100];
	size_t len[5];
	uint8_t msg[1500];
	for (int i = 0; i < 5; i++) {
		memset(msg, 'a' + i, sizeof(msg));
		len[i] = seal13(stream[i], 39 + (uint64_t)i, msg, sizeof(msg) - (size_t)i * 100);
	}
	tlsd_feed(t, 0, 1, stream[0] + 700, len[0] - 700, ks); /* record 39, cut */
	for (int i = 1; i < 5; i++)
		tlsd_feed(t, 0, 1, stream[i], len[i], ks);
	CHECK_EQ(tc.placed_dirs, 1);
	CHECK_EQ(tc.auth_failures, 0);
	CHECK_EQ(c.gap[1], 0);
	/* records 40..43 (server to client: clear-text direction 1), nothing of 39 */
	CHECK_EQ(c.n[1], 1400 + 1300 + 1200 + 1100);
	CHECK_EQ(c.out[1][0], 'b');
	CHECK_EQ(c.out[1][c.n[1] - 1], 'e');
	CHECK_EQ(tlsd_info(t)->client_dir, 1);
	tlsd_free(t);
	/* placed before its keys are in the store (the line read first): the
	 * search waits for them instead of giving the direction up */
	struct key_store *late = keys_new(0);
	snprintf(l, sizeof(l), "# TUPLE 10.0.0.1:40000 10.0.0.2:443 %s - 0304 1301", CR);
	CHECK_EQ(add(late, l), 1);
	const struct key_entry *le = keys_find_tuple(late, 4, b, 443, a, 40000, &ac);
	memset(&c, 0, sizeof(c));
	memset(&tc, 0, sizeof(tc));
	t = tlsd_new(&o, &tc, &lim);
	CHECK(le && tlsd_place(t, 1, le) == 0);
	tlsd_feed(t, 0, 1, stream[0] + 700, len[0] - 700, late);
	tlsd_feed(t, 0, 1, stream[1], len[1], late);
	tlsd_feed(t, 0, 1, stream[2], len[2], late);
	CHECK_EQ(c.n[1], 0);
	CHECK_EQ(tc.place_failures, 0);
	add_keys13(late, 1);
	tlsd_feed(t, 0, 1, stream[3], len[3], late);
	tlsd_feed(t, 0, 1, stream[4], len[4], late);
	CHECK_EQ(tc.placed_dirs, 1);
	CHECK_EQ(c.n[1], 1400 + 1300 + 1200 + 1100);
	tlsd_free(t);
	keys_free(late);
	/* a TLS 1.2 line without its suite or server random cannot place */
	snprintf(l, sizeof(l), "# TUPLE 10.0.0.1:40001 10.0.0.2:443 %062d09 - 0303 c02f", 0);
	CHECK_EQ(add(ks, l), 1);
	e = keys_find_tuple(ks, 4, a, 40001, b, 443, &ac);
	t = tlsd_new(&o, &tc, &lim);
	CHECK(e && tlsd_place(t, 0, e) == -EINVAL);
	tlsd_free(t);
out:
	keys_free(ks);
}
