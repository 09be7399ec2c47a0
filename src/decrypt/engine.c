/* The passive decryptor (engine.h): frames decoded with bounds-checked reads, TCP reassembly (tcpre.c) feeding one TLS follower (tlsdec.c) per connection, and the connections waiting for keys. */
#include "decrypt/engine.h"
#include "common/bytes.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <pcap/dlt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef DLT_LINUX_SLL2
#define DLT_LINUX_SLL2 276
#endif
#ifndef DLT_IPV4
#define DLT_IPV4 228
#endif
#ifndef DLT_IPV6
#define DLT_IPV6 229
#endif

struct econn {
	struct dconn dc;
	struct decrypt_engine *e;
	struct tlsd *t;
	struct tcp_key k;
	struct tlsd_out tout;
	uint8_t opened, tcp_closed, tls_counted, in_wait, syn, placed, unplaceable;
	uint64_t place_gen;      /* the key store's generation last looked at for a # TUPLE */
	uint64_t deadline;
	uint64_t close_ts;
	struct econn *wprev, *wnext;
};

struct decrypt_engine {
	struct decrypt_opts o;
	struct decrypt_out out;
	struct key_store *ks;
	struct tcpre *tcp;
	struct tlsd_counters tc;
	struct decrypt_stats st;
	struct econn *waiting;   /* connections waiting for keys */
	uint64_t now;            /* the wall clock of the last frame or tick */
	uint64_t next_expire;    /* packet time of the next idle check */
	uint64_t next_id;
};

static void conn_open_out(struct econn *c, uint64_t ts)
{
	struct decrypt_engine *e = c->e;
	const struct tlsd_info *ti = tlsd_info(c->t);
	int swap = ti->client_dir == 1; /* the ClientHello came from TCP's b */
	size_t al = c->k.family == 4 ? 4 : 16;
	c->dc.family = c->k.family;
	memset(c->dc.client, 0, 16);
	memset(c->dc.server, 0, 16);
	memcpy(c->dc.client, swap ? c->k.b : c->k.a, al);
	memcpy(c->dc.server, swap ? c->k.a : c->k.b, al);
	c->dc.cport = swap ? c->k.pb : c->k.pa;
	c->dc.sport = swap ? c->k.pa : c->k.pb;
	c->dc.tls = ti;
	c->dc.midstream = c->placed;
	c->opened = 1;
	keys_mark_used(e->ks, ti->client_random);
	e->st.decrypted_conns++;
	e->out.open(e->out.arg, &c->dc, ts);
}

static void tls_data(void *arg, int dir, uint64_t ts, const uint8_t *p, size_t n)
{
	struct econn *c = arg;
	if (!c->opened)
		conn_open_out(c, ts);
	c->e->st.clear_bytes += n;
	c->e->out.data(c->e->out.arg, &c->dc, dir, ts, p, n);
}

static void tls_gap(void *arg, int dir, uint64_t ts, uint64_t n, int exact)
{
	struct econn *c = arg;
	(void)exact;
	if (!c->opened)
		conn_open_out(c, ts);
	c->e->st.gap_bytes += n;
	c->e->out.gap(c->e->out.arg, &c->dc, dir, ts, n);
}

static void wait_unlink(struct decrypt_engine *e, struct econn *c)
{
	if (!c->in_wait)
		return;
	if (c->wprev)
		c->wprev->wnext = c->wnext;
	else
		e->waiting = c->wnext;
	if (c->wnext)
		c->wnext->wprev = c->wprev;
	c->wprev = c->wnext = NULL;
	c->in_wait = 0;
	e->st.waiting_conns--;
}

/* After a call into the TLS follower: counts what it found, files a wait. */
static void after(struct econn *c)
{
	struct decrypt_engine *e = c->e;
	enum tlsd_state s = tlsd_state(c->t);
	if (!c->tls_counted && tlsd_info(c->t)->have_ch) {
		c->tls_counted = 1;
		e->st.tls_conns++;
	}
	if (s == TLSD_WAITING && !c->in_wait) {
		c->in_wait = 1;
		c->deadline = e->now + e->o.key_wait_ns;
		c->wprev = NULL;
		c->wnext = e->waiting;
		if (e->waiting)
			e->waiting->wprev = c;
		e->waiting = c;
		e->st.waiting_conns++;
	} else if (s != TLSD_WAITING && c->in_wait) {
		wait_unlink(e, c);
	}
}

static void conn_end(struct econn *c, uint64_t ts)
{
	struct decrypt_engine *e = c->e;
	wait_unlink(e, c);
	switch (tlsd_state(c->t)) {
	case TLSD_NOT_TLS:
		/* first seen without its SYN: it may be TLS caught mid-record */
		if (c->syn)
			e->st.not_tls_conns++;
		else
			e->st.midstream_conns++;
		break;
	case TLSD_MIDSTREAM:
		e->st.midstream_conns++;
		break;
	case TLSD_HANDSHAKE:
		if (c->placed && !c->opened)
			e->st.midstream_conns++; /* placed, but no record opened */
		break;
	case TLSD_UNSUPPORTED:
		e->st.unsupported_conns++;
		break;
	case TLSD_FAILED:
		e->st.failed_conns++;
		break;
	default:
		break;
	}
	if (c->opened)
		e->out.close(e->out.arg, &c->dc, ts);
	tlsd_free(c->t);
	free(c);
}

static void *tcp_open(void *arg, const struct tcp_key *k, int syn, uint64_t ts)
{
	struct decrypt_engine *e = arg;
	static const struct tlsd_out to = { tls_data, tls_gap, NULL };
	(void)ts;
	struct econn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->tout = to;
	c->tout.arg = c;
	c->t = tlsd_new(&c->tout, &e->tc, &e->o.wait);
	if (!c->t) {
		free(c);
		return NULL;
	}
	c->e = e;
	c->k = *k;
	c->syn = (uint8_t)syn;
	c->dc.id = ++e->next_id;
	return c;
}

/*
 * A connection first seen without its SYN whose first bytes are no
 * ClientHello (the follower says midstream or not TLS): a # TUPLE line of
 * the key log may place it (keys_find_tuple), now or when the store has
 * changed since it was last looked for (a line read later). A new follower
 * takes it from the segment at hand on. 1 if placed. A line places at most
 * PLACE_MAX connections (the capture cut twice; more are segments replayed
 * on its 4-tuple, each of which would cost a sequence search).
 */
#define PLACE_MAX 2
static int try_place(struct econn *c)
{
	struct decrypt_engine *e = c->e;
	enum tlsd_state s = tlsd_state(c->t);
	if (c->syn || c->placed || c->unplaceable || c->place_gen == keys_generation(e->ks) + 1 ||
	    (s != TLSD_MIDSTREAM && s != TLSD_NOT_TLS))
		return 0;
	c->place_gen = keys_generation(e->ks) + 1;
	int a_client;
	const struct key_entry *ke = keys_find_tuple(e->ks, c->k.family, c->k.a, c->k.pa, c->k.b,
						     c->k.pb, &a_client);
	if (!ke)
		return 0;
	struct tlsd *nt = ke->placements < PLACE_MAX ? tlsd_new(&c->tout, &e->tc, &e->o.wait) : NULL;
	if (!nt || tlsd_place(nt, a_client ? 0 : 1, ke) < 0) {
		tlsd_free(nt);
		c->unplaceable = 1; /* counted once */
		e->st.unplaceable_conns++;
		return 0;
	}
	keys_note_placement(e->ks, ke);
	tlsd_free(c->t);
	c->t = nt;
	c->placed = 1;
	e->st.placed_conns++;
	return 1;
}

static void tcp_data(void *arg, void *user, int dir, uint64_t ts, const uint8_t *p, size_t n)
{
	struct econn *c = user;
	(void)arg;
	tlsd_feed(c->t, dir, ts, p, n, c->e->ks);
	if (try_place(c))
		tlsd_feed(c->t, dir, ts, p, n, c->e->ks);
	after(c);
}

static void tcp_gap(void *arg, void *user, int dir, uint64_t ts, uint64_t n)
{
	struct econn *c = user;
	(void)arg;
	tlsd_gap(c->t, dir, ts, n, c->e->ks);
	after(c);
}

static void tcp_close(void *arg, void *user, uint64_t ts, int why)
{
	struct econn *c = user;
	(void)arg;
	(void)why;
	c->tcp_closed = 1;
	c->close_ts = ts;
	if (tlsd_state(c->t) != TLSD_WAITING)
		conn_end(c, ts);
}

struct decrypt_engine *decrypt_new(const struct decrypt_opts *o, const struct decrypt_out *out,
				   struct key_store *ks)
{
	struct decrypt_engine *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->o = *o;
	if (!e->o.wait.wait_per_conn)
		e->o.wait.wait_per_conn = 16u << 20;
	if (!e->o.wait.wait_total)
		e->o.wait.wait_total = 256u << 20;
	if (!e->o.key_wait_ns)
		e->o.key_wait_ns = 5ULL * 1000000000ULL;
	e->out = *out;
	e->ks = ks;
	e->o.wait.learn = ks; /* master secrets found with --rsa-key */
	struct tcpre_out to = { tcp_open, tcp_data, tcp_gap, tcp_close, e };
	e->tcp = tcpre_new(&to, &e->o.tcp);
	if (!e->tcp) {
		free(e);
		return NULL;
	}
	return e;
}

/* A connection whose keys did not come in time: counted, logged, its ciphertext dropped. */
static void give_up(struct decrypt_engine *e, struct econn *c)
{
	static struct log_limit lim;
	const struct tlsd_info *ti = tlsd_info(c->t);
	char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
	int af = c->k.family == 4 ? AF_INET : AF_INET6;
	inet_ntop(af, c->k.a, a, sizeof(a));
	inet_ntop(af, c->k.b, b, sizeof(b));
	e->st.nokey_conns++;
	e->st.nokey_bytes += tlsd_cipher_bytes(c->t);
	log_limited(&lim, 10, "no keys for %s:%u -> %s:%u%s%s (%s, %s): %llu bytes of ciphertext "
		    "not decrypted", a, c->k.pa, b, c->k.pb, *ti->sni ? " SNI " : "", ti->sni,
		    ti->version == 0x0304 ? "TLSv1.3" : "TLSv1.2", ti->suite ? ti->suite->name : "?",
		    (unsigned long long)tlsd_cipher_bytes(c->t));
	tlsd_give_up(c->t);
	wait_unlink(e, c);
	if (c->tcp_closed) {
		if (c->opened)
			e->out.close(e->out.arg, &c->dc, c->close_ts);
		tlsd_free(c->t);
		free(c);
	}
}

void decrypt_give_up_all(struct decrypt_engine *e)
{
	while (e->waiting)
		give_up(e, e->waiting);
}

void decrypt_free(struct decrypt_engine *e)
{
	if (!e)
		return;
	decrypt_give_up_all(e);
	tcpre_free(e->tcp); /* its connections end without output */
	free(e);
}

void decrypt_keys_added(struct decrypt_engine *e)
{
	for (struct econn *c = e->waiting, *nx; c; c = nx) {
		nx = c->wnext;
		tlsd_retry(c->t, e->ks);
		after(c);
		if (!c->in_wait && c->tcp_closed)
			conn_end(c, c->close_ts);
	}
}

void decrypt_tick(struct decrypt_engine *e, uint64_t now_ns)
{
	e->now = now_ns;
	for (struct econn *c = e->waiting, *nx; c; c = nx) {
		nx = c->wnext;
		if (c->deadline <= now_ns)
			give_up(e, c);
	}
}

void decrypt_finish(struct decrypt_engine *e, uint64_t ts_ns)
{
	tcpre_flush(e->tcp, ts_ns);
}

size_t decrypt_waiting(const struct decrypt_engine *e)
{
	return (size_t)e->st.waiting_conns;
}

int decrypt_dlt_ok(int dlt)
{
	return dlt == DLT_EN10MB || dlt == DLT_RAW || dlt == DLT_IPV4 || dlt == DLT_IPV6 ||
	       dlt == DLT_LINUX_SLL || dlt == DLT_LINUX_SLL2 || dlt == DLT_NULL || dlt == DLT_LOOP ||
	       dlt == 101 /* LINKTYPE_RAW as some files carry it */;
}

/* The layer-3 protocol and where it starts; -1: not one we read. */
static int link_layer(int dlt, const uint8_t *p, size_t n, size_t *at)
{
	uint16_t et;
	switch (dlt) {
	case DLT_EN10MB:
		if (n < 14)
			return -1;
		*at = 14;
		et = get_be16(p + 12);
		while ((et == 0x8100 || et == 0x88a8) && n >= *at + 4) {
			et = get_be16(p + *at + 2);
			*at += 4;
		}
		return et;
	case DLT_LINUX_SLL:
		if (n < 16)
			return -1;
		*at = 16;
		return get_be16(p + 14);
	case DLT_LINUX_SLL2:
		if (n < 20)
			return -1;
		*at = 20;
		return get_be16(p);
	case DLT_NULL:
	case DLT_LOOP: {
		if (n < 4)
			return -1;
		uint32_t af;
		memcpy(&af, p, 4);
		if (dlt == DLT_LOOP)
			af = ntohl(af);
		*at = 4;
		return af == 2 ? 0x0800 : (af == 24 || af == 28 || af == 30) ? 0x86dd : -1;
	}
	case DLT_RAW:
	case 101:
	case DLT_IPV4:
	case DLT_IPV6:
		if (n < 1)
			return -1;
		*at = 0;
		return (p[0] >> 4) == 4 ? 0x0800 : (p[0] >> 4) == 6 ? 0x86dd : -1;
	}
	return -1;
}

void decrypt_frame(struct decrypt_engine *e, int dlt, uint64_t ts, const uint8_t *p,
		   size_t caplen, size_t wirelen)
{
	size_t at = 0;
	e->st.frames++;
	if (ts >= e->next_expire) {
		tcpre_expire(e->tcp, ts);
		e->next_expire = ts + 1000000000ULL;
	}
	int et = link_layer(dlt, p, caplen, &at);
	if (et != 0x0800 && et != 0x86dd) {
		e->st.not_ip++;
		return;
	}
	const uint8_t *ip = p + at;
	size_t cap = caplen - at, wire = wirelen > at ? wirelen - at : 0, hl, total;
	uint8_t src[16] = { 0 }, dst[16] = { 0 }, family;
	if (et == 0x0800) {
		if (cap < 20 || (ip[0] >> 4) != 4 || (hl = (size_t)(ip[0] & 15) * 4) < 20 || cap < hl) {
			e->st.bad_frames++;
			return;
		}
		if (ip[9] != 6) {
			e->st.not_ip++;
			return;
		}
		if (get_be16(ip + 6) & 0x3fff) {
			e->st.fragments++;
			return;
		}
		total = get_be16(ip + 2);
		memcpy(src, ip + 12, 4);
		memcpy(dst, ip + 16, 4);
		family = 4;
	} else {
		if (cap < 40 || (ip[0] >> 4) != 6) {
			e->st.bad_frames++;
			return;
		}
		uint8_t nh = ip[6];
		total = 40 + (size_t)get_be16(ip + 4);
		hl = 40;
		memcpy(src, ip + 8, 16);
		memcpy(dst, ip + 24, 16);
		family = 6;
		while (nh == 0 || nh == 43 || nh == 60 || nh == 44) {
			if (nh == 44) {
				e->st.fragments++;
				return;
			}
			if (cap < hl + 8) {
				e->st.bad_frames++;
				return;
			}
			nh = ip[hl];
			hl += ((size_t)ip[hl + 1] + 1) * 8;
		}
		if (nh != 6) {
			e->st.not_ip++;
			return;
		}
	}
	if (total > wire && wire)
		total = wire; /* a frame shorter than its IP length says: what it has */
	if (total < hl + 20 || cap < hl + 20) {
		e->st.bad_frames++;
		return;
	}
	const uint8_t *tcp = ip + hl;
	size_t doff = (size_t)(tcp[12] >> 4) * 4;
	if (doff < 20 || total < hl + doff || cap < hl + doff) {
		e->st.bad_frames++;
		return;
	}
	size_t plen = total - hl - doff, have = cap - hl - doff;
	if (have > plen)
		have = plen; /* Ethernet padding */
	if (have < plen)
		e->st.truncated++;
	tcpre_segment(e->tcp, ts, family, src, dst, get_be16(tcp), get_be16(tcp + 2),
		      get_be32(tcp + 4), get_be32(tcp + 8), tcp[13], tcp + doff, have, plen);
}

const struct decrypt_opts *decrypt_limits(const struct decrypt_engine *e)
{
	return &e->o;
}

const struct decrypt_stats *decrypt_stats(const struct decrypt_engine *e)
{
	return &e->st;
}

const struct tlsd_counters *decrypt_tls_counters(const struct decrypt_engine *e)
{
	return &e->tc;
}

const struct tcpre_limits *decrypt_tcp_limits(const struct decrypt_engine *e)
{
	return tcpre_limits(e->tcp);
}

const struct tcpre_stats *decrypt_tcp_stats(const struct decrypt_engine *e)
{
	return tcpre_stats(e->tcp);
}
