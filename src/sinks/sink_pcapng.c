/* pcapng sink: one interface per capture origin, nanosecond packets, each connection's metadata as a comment. */
#include "sinks/sink.h"
#include "common/text.h"
#include "common/version.h"
#include "sinks/pcapng.h"
#include "sinks/sink_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

/*
 * File format (docs/delivery.md "pcapng"): every file (and every new section
 * after a lost buffer, see sink_file.c) starts with a Section Header Block
 * (shb_hardware, shb_os, shb_userappl "tlsmirror VERSION", a comment naming
 * this host) and one Interface Description Block per capture origin known so
 * far: interface 0 is this host (if_name: its host name), then one per agent
 * host a collector receives from (if_name: the agent's identity), in the
 * order they appeared; a new origin's IDB is written just before its first
 * packet. Packets are Enhanced Packet Blocks with nanosecond timestamps
 * (if_tsresol 9). Buffering, stdout, rotation and errors: sink_file.c.
 *
 * Comments: the first packet of a connection in each section carries its
 * metadata (pcapng_format_meta) as opt_comment, Wireshark's frame.comment;
 * so a connection still open when a new file starts is announced again
 * there. The sink remembers the open connections it was told of
 * (conn_begin, a reference to the tag until conn_end) in one table of at
 * most PNG_MAX_CONNS; a connection beyond that, or a packet without a tag,
 * gets no comment (counted: comments_untracked).
 */

#define PNG_DEFAULT_SNAPLEN 262144u
#define PNG_MAX_IFACES 1024          /* the last one collects every origin beyond */
#define PNG_MAX_CONNS 65536          /* open connections remembered */
#define PNG_SLOTS (2 * PNG_MAX_CONNS) /* hash slots (a power of two) */
#define PNG_TOMB ((const struct conn_tag *)1)

struct png_iface {
	char host[64];               /* the origin's conn_meta.host; "" for this host */
};

struct png_conn {
	const struct conn_tag *t;    /* NULL: free, PNG_TOMB: removed */
	uint32_t gen;                /* the section it was announced in (0: not yet) */
	uint32_t ifidx;
};

struct png_sink {
	struct sink_file f;
	struct utsname un;
	char userappl[64];
	char shb_comment[128];
	size_t n_ifs;
	size_t ifs_in_section;       /* IDBs written in the current section */
	struct png_iface *ifs;
	struct png_conn *slots;
	size_t n_conns, n_used;      /* live entries; live + removed */
	uint32_t gen;                /* current section, from 1 */
	/* stats, written by the sink's thread, read by the stats (relaxed atomics) */
	uint64_t untracked;          /* packets that would have carried a comment */
	uint64_t comments;           /* comments written */
	uint64_t ifaces;             /* n_ifs */
};

static uint64_t hash_ptr(const void *p)
{
	uint64_t x = (uint64_t)(uintptr_t)p;
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

/* The slot of t, or (insert) the first free or removed slot of its chain. */
static struct png_conn *conn_slot(struct png_sink *p, const struct conn_tag *t, int insert)
{
	struct png_conn *tomb = NULL;
	for (size_t i = hash_ptr(t) & (PNG_SLOTS - 1), n = 0; n < PNG_SLOTS;
	     i = (i + 1) & (PNG_SLOTS - 1), n++) {
		struct png_conn *c = &p->slots[i];
		if (c->t == t)
			return c;
		if (c->t == PNG_TOMB && !tomb)
			tomb = c;
		if (!c->t)
			return insert ? (tomb ? tomb : c) : NULL;
	}
	return insert ? tomb : NULL;
}

/* Too many removed slots make chains long: rebuild the table in place. */
static void conn_rehash(struct png_sink *p)
{
	struct png_conn *old = p->slots;
	struct png_conn *fresh = calloc(PNG_SLOTS, sizeof(*fresh));
	if (!fresh)
		return;
	p->slots = fresh;
	p->n_used = p->n_conns;
	for (size_t i = 0; i < PNG_SLOTS; i++)
		if (old[i].t && old[i].t != PNG_TOMB)
			*conn_slot(p, old[i].t, 1) = old[i];
	free(old);
}

/* Interface i's if_name and if_description (into desc). */
static const char *iface_text(const struct png_sink *p, size_t i, char *desc, size_t len)
{
	const char *host = p->ifs[i].host;
	if (!i)
		snprintf(desc, len, "tlsmirror on %s: TLS clear text", p->un.nodename);
	else if (i == PNG_MAX_IFACES - 1)
		snprintf(desc, len, "tlsmirror: every further agent (over %d)", PNG_MAX_IFACES - 2);
	else
		snprintf(desc, len, "tlsmirror agent %s, received by the collector on %s",
			 host, p->un.nodename);
	return i ? host : p->un.nodename;
}

/* Writes the IDB of interface i at dst; returns its length (0: no room). */
static size_t put_idb(const struct png_sink *p, size_t i, uint8_t *dst, size_t room)
{
	char desc[192];
	const char *name = iface_text(p, i, desc, sizeof(desc));
	return pcapng_put_idb(dst, room, PCAPNG_LINKTYPE_ETHERNET, p->f.o.snaplen, name, desc);
}

/* Bytes of the IDBs still missing in this section for a packet on interface
 * ifidx: every interface up to it (they are numbered by their position). */
static size_t idbs_len(const struct png_sink *p, uint32_t ifidx)
{
	size_t n = 0;
	char desc[192];
	for (size_t i = p->ifs_in_section; i <= ifidx; i++)
		n += pcapng_idb_len(iface_text(p, i, desc, sizeof(desc)), desc);
	return n;
}

/* sink_file's header: a new section, SHB and every known IDB. */
static size_t put_header(void *arg, uint8_t *dst, size_t room)
{
	struct png_sink *p = arg;
	char os[2 * sizeof(p->un.release) + 2];
	snprintf(os, sizeof(os), "%s %s", p->un.sysname, p->un.release);
	size_t at = pcapng_put_shb(dst, room, p->un.machine, os, p->userappl, p->shb_comment);
	size_t i = 0;
	for (; i < p->n_ifs; i++) {
		size_t n = at ? put_idb(p, i, dst + at, room - at) : 0;
		if (!n)
			break;
		at += n;
	}
	p->ifs_in_section = i;
	p->gen++; /* every open connection is announced again */
	return at;
}

/* The interface of an origin (conn_meta.host), added if new. */
static uint32_t iface_of(struct png_sink *p, const char *host)
{
	for (size_t i = 0; i < p->n_ifs; i++)
		if (!strcmp(p->ifs[i].host, host))
			return (uint32_t)i;
	if (p->n_ifs == PNG_MAX_IFACES)
		return PNG_MAX_IFACES - 1;
	struct png_iface *f = &p->ifs[p->n_ifs];
	snprintf(f->host, sizeof(f->host), "%s",
		 p->n_ifs == PNG_MAX_IFACES - 1 ? "tlsmirror-other-agents" : host);
	sink_ctr_add(&p->ifaces, 1);
	return (uint32_t)p->n_ifs++;
}

static void png_conn_begin(struct sink *s, const struct conn_tag *t, uint64_t ts_ns)
{
	struct png_sink *p = s->priv;
	if (p->n_conns >= PNG_MAX_CONNS)
		return; /* its packets count in comments_untracked */
	if (p->n_used >= PNG_SLOTS * 3 / 4)
		conn_rehash(p);
	struct png_conn *c = conn_slot(p, t, 1);
	if (!c || c->t == t)
		return;
	if (!c->t)
		p->n_used++;
	c->t = conn_tag_ref(t);
	c->gen = 0;
	c->ifidx = iface_of(p, t->meta->host);
	p->n_conns++;
}

static void png_conn_end(struct sink *s, const struct conn_tag *t, uint64_t ts_ns)
{
	struct png_sink *p = s->priv;
	struct png_conn *c = conn_slot(p, t, 0);
	if (!c)
		return;
	conn_tag_unref(c->t);
	c->t = PNG_TOMB;
	p->n_conns--;
}

/* A tracked connection with metadata not yet announced in this section. */
static int wants_comment(const struct png_sink *p, const struct png_conn *c,
			 const struct conn_meta *m)
{
	return c && m->kind && c->gen != p->gen;
}

/* Writes one packet (after the IDB of a new interface); 0 or -errno. */
static int put_pkt(struct png_sink *p, const struct pkt *k)
{
	uint64_t frame = pkt_frame_len(k);
	uint32_t cap = frame < p->f.o.snaplen ? (uint32_t)frame : p->f.o.snaplen;
	struct png_conn *c = k->conn ? conn_slot(p, k->conn, 0) : NULL;
	const struct conn_meta *m = k->conn ? k->conn->meta : NULL;
	uint32_t ifidx = c ? c->ifidx : 0;
	char comment[PCAPNG_COMMENT_MAX];
	size_t clen = 0;
	if (m && m->kind && !c)
		sink_ctr_add(&p->untracked, 1);
	if (wants_comment(p, c, m))
		clen = pcapng_format_meta(comment, sizeof(comment), m);
	size_t ilen = idbs_len(p, ifidx);
	int err;
	uint8_t *dst = sink_file_reserve(&p->f, k->ts_ns, ilen + pcapng_epb_len(cap, clen), frame,
					 &err);
	if (!dst)
		return err;
	if (!clen && wants_comment(p, c, m)) /* a new section began in reserve */
		clen = pcapng_format_meta(comment, sizeof(comment), m);
	ilen = idbs_len(p, ifidx); /* 0 if a new section began in reserve */
	size_t room = SINK_FILE_BUF_SIZE - p->f.used;
	if (ilen + pcapng_epb_len(cap, clen) > room) {
		sink_ctr_add(&p->f.ctr->lost_packets, 1);
		sink_ctr_add(&p->f.ctr->lost_bytes, frame);
		return -EMSGSIZE;
	}
	for (ilen = 0; p->ifs_in_section <= ifidx; p->ifs_in_section++)
		ilen += put_idb(p, p->ifs_in_section, dst + ilen, room - ilen);
	uint32_t h = k->hdr_len < cap ? k->hdr_len : cap, rest = cap - h;
	uint32_t a = rest < k->payload_len ? rest : k->payload_len;
	size_t n = pcapng_put_epb(dst + ilen, room - ilen, ifidx, k->ts_ns, k->hdr, h,
				  k->payload, a, k->more, rest - a, frame > UINT32_MAX ? UINT32_MAX : (uint32_t)frame,
				  comment, clen);
	sink_file_commit(&p->f, k->ts_ns, ilen + n, frame);
	if (clen) {
		c->gen = p->gen;
		sink_ctr_add(&p->comments, 1);
	}
	return err;
}

static int png_write(struct sink *s, const struct pkt *pkts, size_t n)
{
	int ret = 0;
	for (size_t i = 0; i < n; i++) {
		int r = put_pkt(s->priv, &pkts[i]);
		if (r < 0 && !ret)
			ret = r;
	}
	return ret;
}

static int png_flush(struct sink *s)
{
	struct png_sink *p = s->priv;
	return sink_file_flush(&p->f);
}

static size_t png_counters(const struct sink *s, struct kv *out, size_t max)
{
	const struct png_sink *p = s->priv;
	size_t n = sink_common_counters(s, out, max);
	n = kv_put(out, max, n, "interfaces", __atomic_load_n(&p->ifaces, __ATOMIC_RELAXED), 0);
	n = kv_put(out, max, n, "comments", __atomic_load_n(&p->comments, __ATOMIC_RELAXED), 0);
	return kv_put(out, max, n, "comments_untracked",
		      __atomic_load_n(&p->untracked, __ATOMIC_RELAXED), 0);
}

static void png_close(struct sink *s)
{
	struct png_sink *p = s->priv;
	if (!p)
		return;
	sink_file_close(&p->f);
	for (size_t i = 0; p->slots && i < PNG_SLOTS; i++)
		if (p->slots[i].t && p->slots[i].t != PNG_TOMB)
			conn_tag_unref(p->slots[i].t);
	free(p->slots);
	free(p->ifs);
	free(p);
	s->priv = NULL;
}

static int png_open(struct sink *s, const char *target, const struct sink_opts *o,
		    const char **err_msg)
{
	struct png_sink *p = calloc(1, sizeof(*p));
	*err_msg = "out of memory";
	if (!p)
		return -ENOMEM;
	s->priv = p;
	p->f.fd = -1;
	p->ifs = calloc(PNG_MAX_IFACES, sizeof(*p->ifs));
	p->slots = calloc(PNG_SLOTS, sizeof(*p->slots));
	if (!p->ifs || !p->slots) {
		png_close(s);
		return -ENOMEM;
	}
	if (uname(&p->un) < 0)
		snprintf(p->un.sysname, sizeof(p->un.sysname), "Linux");
	snprintf(p->userappl, sizeof(p->userappl), "tlsmirror %s", TLSMIRROR_VERSION);
	snprintf(p->shb_comment, sizeof(p->shb_comment), "tlsmirror on host %s", p->un.nodename);
	p->n_ifs = p->ifaces = 1; /* this host */
	p->f.ctr = &s->ctr;
	p->f.cancel = &s->cancel;
	p->f.header = put_header;
	p->f.arg = p;
	p->f.rehead = 1;
	struct sink_opts so = *o;
	if (!so.snaplen || so.snaplen > PNG_DEFAULT_SNAPLEN)
		so.snaplen = PNG_DEFAULT_SNAPLEN;
	int ret = sink_file_open(&p->f, s->target, &so, err_msg);
	if (ret < 0)
		png_close(s);
	else
		s->blocks = (uint8_t)p->f.pipe;
	return ret;
}

const struct sink_ops sink_pcapng_ops = {
	.name = "pcapng",
	.open = png_open,
	.write = png_write,
	.flush = png_flush,
	.close = png_close,
	.conn_begin = png_conn_begin,
	.conn_end = png_conn_end,
	.counters = png_counters,
};
