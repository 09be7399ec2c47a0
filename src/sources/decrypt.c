/*
 * The decrypt source (tlsmirror decrypt): ciphertext from pcap/pcapng files
 * (-r, in order) or a live interface (-i, libpcap), keys from NSS key-log
 * files (--keys, followed as they grow), the passive decryptor
 * (decrypt/engine.c) in between; each decrypted connection enters the chain
 * with its real 4-tuple, packet timestamps and the handshake's metadata
 * (SNI, ALPN, version, suite). With files only, the source stops the agent
 * once every file is read and no connection waits for keys any more.
 */
#include "agent/agent.h"
#include "common/log.h"
#include "decrypt/engine.h"
#include "decrypt/pcapmap.h"
#include "decrypt/rsakx.h"
#include "sources/source.h"

#include <errno.h>
#include <pcap/pcap.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#define KEY_POLL_WAITING_NS (20ULL * 1000000)   /* key files looked at while a connection waits */
#define KEY_POLL_IDLE_NS (250ULL * 1000000)     /* otherwise */

struct dsrc {
	struct agent *a;
	uint64_t origin;
	struct key_store *ks;
	struct rsa_kx *rsa;      /* --rsa-key */
	struct key_file kf[AGENT_MAX_OUTPUTS];
	size_t nkf;
	struct decrypt_engine *e;
	pcap_t *file;            /* the file being read (pcapng: libpcap) */
	struct pcap_map map;     /* or (classic pcap) mapped in place */
	int mapped;
	int file_dlt;
	size_t next_file;        /* cfg.dec_read[] index of the next to open */
	int files_done, finished;
	pcap_t *live;
	int live_dlt;
	struct agent_watch w;
	uint64_t last_ts;
	uint64_t out_ts;         /* the latest timestamp handed on */
	uint64_t next_key_poll;
	uint64_t files_read;
	uint64_t refused;        /* connections the chain refused (caps) */
	uint64_t dsb_keys;       /* keys from pcapng decryption secrets blocks */
	uint64_t tunnel_keys;    /* keys agents sent over the tunnel (-C) */
	char err[PCAP_ERRBUF_SIZE + 512];
};

/* per decrypted connection: the stream offsets handed on */
struct dconn_state {
	uint64_t off[2];
	int open;
};

/* Timestamps handed on never go back: a capture's own may, by a microsecond,
 * where CPUs stamp packets of one connection in turn (dumpcap on lo). */
static uint64_t mono(struct dsrc *d, uint64_t ts)
{
	if (ts < d->out_ts)
		return d->out_ts;
	return d->out_ts = ts;
}

static void on_open(void *arg, struct dconn *c, uint64_t ts)
{
	struct dsrc *d = arg;
	ts = mono(d, ts);
	struct dconn_state *cs = calloc(1, sizeof(*cs));
	c->user = cs;
	if (!cs)
		return;
	struct conn_meta *m = conn_meta_new();
	if (!m)
		return;
	m->kind = CONN_KIND_DECRYPT;
	m->side = 1;
	if (c->midstream)
		m->flags |= CONN_META_MIDSTREAM;
	m->tls_version = c->tls->version;
	m->real_server_port = c->sport;
	_Static_assert(sizeof(m->sni) >= sizeof(c->tls->sni) && sizeof(m->alpn) >= sizeof(c->tls->alpn),
		       "metadata fields too small");
	memcpy(m->sni, c->tls->sni, sizeof(c->tls->sni));
	memcpy(m->alpn, c->tls->alpn, sizeof(c->tls->alpn));
	if (c->tls->suite)
		snprintf(m->cipher, sizeof(m->cipher), "%s", c->tls->suite->name);
	struct conn_open o;
	memset(&o, 0, sizeof(o));
	o.id = (struct conn_id){ d->origin, c->id };
	o.ts_ns = ts;
	o.family = c->family;
	o.side = 1;
	o.client_port = c->cport;
	o.server_port = c->sport;
	memcpy(o.client_addr, c->client, 16);
	memcpy(o.server_addr, c->server, 16);
	o.meta = m;
	int err = pipeline_open(d->a->pl, &o);
	conn_meta_unref(m);
	if (err < 0)
		d->refused++;
	else
		cs->open = 1;
}

/* The state of a connection the chain took (NULL: refused, nothing to hand on). */
static struct dconn_state *taken(const struct dconn *c)
{
	struct dconn_state *cs = c->user;
	return cs && cs->open ? cs : NULL;
}

static void on_data(void *arg, struct dconn *c, int dir, uint64_t ts, const uint8_t *p, size_t n)
{
	struct dsrc *d = arg;
	struct dconn_state *cs = taken(c);
	if (!cs)
		return;
	struct conn_id id = { d->origin, c->id };
	uint64_t gap = 0;
	pipeline_data(d->a->pl, &id, dir, mono(d, ts), cs->off[dir], p, n, &gap);
	cs->off[dir] += n;
}

static void on_gap(void *arg, struct dconn *c, int dir, uint64_t ts, uint64_t n)
{
	struct dsrc *d = arg;
	struct dconn_state *cs = taken(c);
	if (!cs)
		return;
	struct conn_id id = { d->origin, c->id };
	pipeline_gap(d->a->pl, &id, dir, mono(d, ts), n);
	cs->off[dir] += n;
}

static void on_close(void *arg, struct dconn *c, uint64_t ts)
{
	struct dsrc *d = arg;
	ts = mono(d, ts);
	struct dconn_state *cs = c->user;
	if (cs && cs->open) {
		struct conn_id id = { d->origin, c->id };
		pipeline_close(d->a->pl, &id, ts, 0);
	}
	free(cs);
	c->user = NULL;
}

static void on_live_event(struct agent *a, struct agent_watch *w, uint32_t events)
{
	(void)a;
	(void)w;
	(void)events; /* the loop polls the source next */
}

static int open_live(struct dsrc *d, const struct agent_config *cfg, const char **why)
{
	char eb[PCAP_ERRBUF_SIZE] = "";
	d->live = pcap_create(cfg->dec_iface, eb);
	if (!d->live) {
		snprintf(d->err, sizeof(d->err), "-i %s: %s", cfg->dec_iface, eb);
		*why = d->err;
		return -EINVAL;
	}
	/* Not immediate mode: libpcap then uses TPACKET_V2, whose ring has a
	 * slot of the snaplen (256 KiB: GRO frames) per frame, 256 frames in
	 * 64 MiB, under 2 ms of 1500-byte frames at 2 Gbit/s. TPACKET_V3 packs
	 * frames by their length into blocks, handed over when full or after the
	 * timeout (the latency, nothing else waits for it). */
	pcap_set_snaplen(d->live, 262144);
	pcap_set_timeout(d->live, 10);
	pcap_set_buffer_size(d->live, 64 << 20);
	pcap_set_tstamp_precision(d->live, PCAP_TSTAMP_PRECISION_NANO);
	int r = pcap_activate(d->live);
	if (r < 0) {
		snprintf(d->err, sizeof(d->err), "-i %s: %s", cfg->dec_iface,
			 r == PCAP_ERROR_NO_SUCH_DEVICE ? "no such interface (see 'ip link')" :
			 pcap_geterr(d->live));
		*why = d->err;
		return -EINVAL;
	}
	d->live_dlt = pcap_datalink(d->live);
	if (!decrypt_dlt_ok(d->live_dlt)) {
		snprintf(d->err, sizeof(d->err), "-i %s: link type %s is not one we read", cfg->dec_iface,
			 pcap_datalink_val_to_name(d->live_dlt));
		*why = d->err;
		return -EINVAL;
	}
	char filter[2048];
	struct bpf_program bp;
	if (cfg->dec_filter)
		snprintf(filter, sizeof(filter), "tcp and (%s)", cfg->dec_filter);
	else
		snprintf(filter, sizeof(filter), "tcp");
	if (pcap_compile(d->live, &bp, filter, 1, PCAP_NETMASK_UNKNOWN) < 0 ||
	    pcap_setfilter(d->live, &bp) < 0) {
		snprintf(d->err, sizeof(d->err), "--filter '%s': %s", cfg->dec_filter ? cfg->dec_filter : "",
			 pcap_geterr(d->live));
		*why = d->err;
		return -EINVAL;
	}
	pcap_freecode(&bp);
	if (pcap_setnonblock(d->live, 1, eb) < 0) {
		snprintf(d->err, sizeof(d->err), "-i %s: %s", cfg->dec_iface, eb);
		*why = d->err;
		return -EINVAL;
	}
	d->w.fd = pcap_get_selectable_fd(d->live);
	d->w.on_event = on_live_event;
	d->w.arg = d;
	if (d->w.fd >= 0 && agent_watch_fd(d->a, &d->w, EPOLLIN) < 0)
		d->w.fd = -1;
	log_info("decrypting live from %s%s%s", cfg->dec_iface, cfg->dec_filter ? " with filter " : "",
		 cfg->dec_filter ? cfg->dec_filter : "");
	return 0;
}

/* Opens the next -r file. 0, 1 when there is none, -errno (d->err says why). */
static int next_file(struct dsrc *d)
{
	const struct agent_config *cfg = &d->a->cfg;
	char eb[PCAP_ERRBUF_SIZE] = "";
	if (d->next_file >= cfg->n_dec_read)
		return 1;
	const char *path = cfg->dec_read[d->next_file++];
	const char *why = NULL;
	int r = pcap_map_open(&d->map, path, &why);
	if (r < 0) {
		snprintf(d->err, sizeof(d->err), "-r %s: %s", path, why);
		return r;
	}
	if (r == 0) {
		d->file_dlt = d->map.dlt;
		d->mapped = 1;
		if (decrypt_dlt_ok(d->file_dlt))
			return 0;
		snprintf(d->err, sizeof(d->err), "-r %s: link type %s is not one we read", path,
			 pcap_datalink_val_to_name(d->file_dlt));
		pcap_map_close(&d->map);
		d->mapped = 0;
		return -EINVAL;
	}
	d->file = pcap_open_offline_with_tstamp_precision(path, PCAP_TSTAMP_PRECISION_NANO, eb);
	if (!d->file) {
		snprintf(d->err, sizeof(d->err), "-r %s: %s", path, eb);
		return -EINVAL;
	}
	d->file_dlt = pcap_datalink(d->file);
	if (!decrypt_dlt_ok(d->file_dlt)) {
		snprintf(d->err, sizeof(d->err), "-r %s: link type %s is not one we read", path,
			 pcap_datalink_val_to_name(d->file_dlt));
		pcap_close(d->file);
		d->file = NULL;
		return -EINVAL;
	}
	return 0;
}

struct dsb_ctx {
	struct key_store *ks;
	uint64_t taken, bad;
};

static void dsb_line(void *arg, const char *s, size_t n)
{
	struct dsb_ctx *c = arg;
	const char *why = NULL;
	int r = keys_add_line(c->ks, s, n, &why);
	c->taken += r > 0;
	c->bad += r < 0;
}

/* A secret an agent sent (tlsmirror decrypt -C; agent.h key_consumer). */
static void tunnel_key(void *arg, const char *line, size_t n)
{
	struct dsrc *d = arg;
	const char *why = NULL;
	if (keys_add_line(d->ks, line, n, &why) > 0) {
		d->tunnel_keys++;
		decrypt_keys_added(d->e);
	}
}

static int dsrc_open(struct source *s, struct agent *a, const char *arg, const char **why)
{
	const struct agent_config *cfg = &a->cfg;
	(void)arg;
	struct dsrc *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	s->priv = d;
	d->a = a;
	d->w.fd = -1;
	d->origin = pipeline_origin_new(a->pl);
	d->ks = keys_new(cfg->max_keys);
	/* --key-wait 0: no wait (1 ns; decrypt_new takes 0 for its default) */
	struct decrypt_opts o = { .key_wait_ns = !cfg->dec_key_wait_set ? 5ULL * 1000000000ULL :
						 cfg->dec_key_wait_ms ? cfg->dec_key_wait_ms * 1000000ULL : 1,
				  .max_keys = cfg->max_keys };
	o.tcp.max_flows = cfg->max_conns;
	if (cfg->dec_rsa_key) {
		const char *rwhy = NULL;
		if (!(d->rsa = rsa_kx_load(cfg->dec_rsa_key, &rwhy))) {
			snprintf(d->err, sizeof(d->err), "--rsa-key %s: %s", cfg->dec_rsa_key, rwhy);
			*why = d->err;
			return -EINVAL;
		}
		o.wait.rsa = d->rsa;
	}
	struct decrypt_out out = { on_open, on_data, on_gap, on_close, d };
	if (!d->ks || !(d->e = decrypt_new(&o, &out, d->ks)))
		return -ENOMEM;
	decrypt_tick(d->e, agent_now_ns());
	a->key_consumer = tunnel_key; /* -C: the keys agents send (--send-keys) */
	a->key_consumer_arg = d;
	for (size_t i = 0; i < cfg->n_dec_keys; i++) {
		int err = key_file_open(&d->kf[d->nkf], cfg->dec_keys[i], why);
		if (err < 0) {
			snprintf(d->err, sizeof(d->err), "--keys %s: %s", cfg->dec_keys[i], *why);
			*why = d->err;
			return err;
		}
		key_file_poll(&d->kf[d->nkf++], d->ks);
	}
	if (cfg->dec_iface) {
		int err = open_live(d, cfg, why);
		if (err < 0)
			return err;
	}
	/* every file is checked before anything is decrypted: a typo fails at once */
	for (size_t i = 0; i < cfg->n_dec_read; i++) {
		char eb[PCAP_ERRBUF_SIZE] = "";
		pcap_t *p = pcap_open_offline(cfg->dec_read[i], eb);
		if (!p) {
			snprintf(d->err, sizeof(d->err), "-r %s: %s", cfg->dec_read[i], eb);
			*why = d->err;
			return -EINVAL;
		}
		pcap_close(p);
		/* pcapng Decryption Secrets Blocks: keys the file brings itself */
		struct dsb_ctx dc = { d->ks, 0, 0 };
		const char *dwhy = NULL;
		int nb = pcapng_secrets(cfg->dec_read[i], dsb_line, &dc, &dwhy);
		if (nb < 0)
			log_warn("-r %s: %s (its secrets blocks after it are not read)", cfg->dec_read[i], dwhy);
		if (nb > 0)
			log_info("-r %s: %llu keys from %d decryption secrets block%s%s", cfg->dec_read[i],
				 (unsigned long long)dc.taken, nb, nb == 1 ? "" : "s",
				 dc.bad ? " (some lines malformed: key_bad_lines)" : "");
		d->dsb_keys += dc.taken;
	}
	if (!cfg->n_dec_read)
		d->files_done = 1;
	return 0;
}

static void poll_keys(struct dsrc *d, uint64_t now)
{
	if (now < d->next_key_poll)
		return;
	d->next_key_poll = now + (decrypt_waiting(d->e) ? KEY_POLL_WAITING_NS : KEY_POLL_IDLE_NS);
	int taken = 0;
	for (size_t i = 0; i < d->nkf; i++) {
		int r = key_file_poll(&d->kf[i], d->ks);
		if (r > 0)
			taken += r;
	}
	if (taken)
		decrypt_keys_added(d->e);
}

static void frame(struct dsrc *d, int dlt, uint64_t ts, const uint8_t *p, size_t caplen,
		  size_t wirelen)
{
	d->last_ts = ts;
	decrypt_frame(d->e, dlt, ts, p, caplen, wirelen);
}

/* libpcap's header: nanoseconds in tv_usec (PCAP_TSTAMP_PRECISION_NANO) */
static uint64_t pcap_ts(const struct pcap_pkthdr *h)
{
	return (uint64_t)h->ts.tv_sec * 1000000000ULL + (uint64_t)h->ts.tv_usec;
}

static void on_frame(u_char *user, const struct pcap_pkthdr *h, const u_char *p)
{
	struct dsrc *d = (struct dsrc *)user;
	frame(d, d->live_dlt, pcap_ts(h), p, h->caplen, h->len);
}

static size_t read_files(struct dsrc *d, size_t budget)
{
	size_t work = 0;
	while (work < budget && !d->files_done) {
		if (d->mapped) {
			uint64_t ts;
			const uint8_t *p;
			size_t cl, wl;
			const char *why = NULL;
			int r;
			while (work < budget && (r = pcap_map_next(&d->map, &ts, &p, &cl, &wl, &why)) == 1) {
				frame(d, d->file_dlt, ts, p, cl, wl);
				work++;
			}
			if (work >= budget)
				break;
			if (r < 0)
				log_warn("-r %s: %s (the rest of the file is skipped)",
					 d->a->cfg.dec_read[d->next_file - 1], why);
			pcap_map_close(&d->map);
			d->mapped = 0;
			d->files_read++;
			continue;
		}
		if (!d->file) {
			int r = next_file(d);
			if (r == 1) {
				d->files_done = 1;
				break;
			}
			if (r < 0) {
				log_err("%s", d->err);
				continue;
			}
			if (d->mapped)
				continue;
		}
		struct pcap_pkthdr *h;
		const u_char *p;
		int r = pcap_next_ex(d->file, &h, &p);
		if (r == 1) {
			frame(d, d->file_dlt, pcap_ts(h), p, h->caplen, h->len);
			work++;
			continue;
		}
		if (r == -1) {
			static struct log_limit lim;
			log_limited(&lim, 10, "-r %s: %s (the rest of the file is skipped)",
				    d->a->cfg.dec_read[d->next_file - 1], pcap_geterr(d->file));
		}
		pcap_close(d->file);
		d->file = NULL;
		d->files_read++;
	}
	return work;
}

static size_t dsrc_poll(struct source *s, size_t budget)
{
	struct dsrc *d = s->priv;
	uint64_t now = agent_now_ns();
	size_t work = 0;
	poll_keys(d, now);
	decrypt_tick(d->e, now);
	if (d->live) {
		int r = pcap_dispatch(d->live, (int)budget, on_frame, (u_char *)d);
		if (r > 0)
			work += (size_t)r;
	}
	work += read_files(d, budget);
	if (d->files_done && !d->live && !d->finished) {
		d->finished = 1;
		decrypt_finish(d->e, d->last_ts);
		work++;
	}
	if (d->finished && !decrypt_waiting(d->e))
		d->a->stop = 1; /* everything read, nothing waits for keys */
	return work;
}

static int dsrc_prepare_sleep(struct source *s)
{
	struct dsrc *d = s->priv;
	return !d->files_done || (d->files_done && !d->live && !d->finished);
}

static void dsrc_drain(struct source *s)
{
	struct dsrc *d = s->priv;
	if (!d || !d->e)
		return;
	poll_keys(d, UINT64_MAX);
	decrypt_finish(d->e, d->last_ts);
	decrypt_give_up_all(d->e);
}

static size_t dsrc_format_stats(const struct source *s, char *buf, size_t len, size_t at)
{
	const struct dsrc *d = s->priv;
	if (!d || !d->e)
		return at;
	const struct decrypt_stats *st = decrypt_stats(d->e);
	const struct tlsd_counters *tc = decrypt_tls_counters(d->e);
	const struct tcpre_stats *ts = decrypt_tcp_stats(d->e);
	const struct key_stats *ks = keys_stats(d->ks);
	struct pcap_stat ps = { 0 };
	if (d->live)
		pcap_stats(d->live, &ps); /* the kernel's drops: the capture's own loss */
	struct kv kv[] = {
		{ "files", d->files_read, 0 },
		{ "frames", st->frames, 0 },
		{ "live_drops", (uint64_t)ps.ps_drop + ps.ps_ifdrop, 0 },
		{ "tcp_conns", ts->flows, 0 },
		{ "tls_conns", st->tls_conns, 0 },
		{ "decrypted_conns", st->decrypted_conns, 0 },
		{ "nokey_conns", st->nokey_conns, 0 },
		{ "nokey_bytes", st->nokey_bytes, 0 },
		{ "waiting_conns", st->waiting_conns, 1 },
		{ "waiting_bytes", tc->waiting_bytes, 1 },
		{ "wait_dropped", tc->wait_dropped, 0 },
		{ "clear_bytes", st->clear_bytes, 0 },
		{ "gap_bytes", st->gap_bytes, 0 },
		{ "inexact_gaps", tc->inexact_gaps, 0 },
		{ "records", tc->records, 0 },
		{ "auth_failures", tc->auth_failures, 0 },
		{ "bad_records", tc->bad_records, 0 },
		{ "lost_records", tc->lost_records, 0 },
		{ "resyncs", tc->resyncs, 0 },
		{ "key_updates", tc->key_updates, 0 },
		{ "hrr", tc->hrr, 0 },
		{ "early_data", tc->early_data, 0 },
		{ "renegotiations", tc->renegotiations, 0 },
		{ "not_tls_conns", st->not_tls_conns, 0 },
		{ "midstream_conns", st->midstream_conns, 0 },
		{ "placed_conns", st->placed_conns, 0 },
		{ "placed_dirs", tc->placed_dirs, 0 },
		{ "place_failures", tc->place_failures, 0 },
		{ "unplaceable_conns", st->unplaceable_conns, 0 },
		{ "unsupported_conns", st->unsupported_conns, 0 },
		{ "failed_conns", st->failed_conns, 0 },
		{ "handshake_lost", tc->handshake_lost, 0 },
		{ "refused_conns", d->refused + ts->refused, 0 },
		{ "tcp_gap_bytes", ts->gap_bytes, 0 },
		{ "tcp_reordered", ts->reordered, 0 },
		{ "tcp_retransmitted", ts->retransmitted, 0 },
		{ "tcp_ooo_forced", ts->ooo_forced, 0 },
		{ "fragments", st->fragments, 0 },
		{ "bad_frames", st->bad_frames, 0 },
		{ "truncated", st->truncated, 0 },
		{ "keys", ks->lines, 0 },
		{ "key_tuples", ks->tuples, 0 },
		{ "dsb_keys", d->dsb_keys, 0 },
		{ "tunnel_keys", d->tunnel_keys, 0 },
		{ "rsa_masters", tc->rsa_masters, 0 },
		{ "rsa_failures", tc->rsa_failures, 0 },
		{ "key_bad_lines", ks->bad_lines, 0 },
		{ "key_replaced", ks->replaced, 0 },
		{ "keys_evicted", ks->evicted, 0 },
		{ "keys_unused", keys_unused(d->ks), 1 },
	};
	at = text_add(buf, len, at, "source decrypt");
	at = stats_kv_format(kv, sizeof(kv) / sizeof(kv[0]), buf, len, at);
	/* the limits in force, on a line of their own (gauges: they do not count) */
	const struct decrypt_opts *o = decrypt_limits(d->e);
	const struct tcpre_limits *tl = decrypt_tcp_limits(d->e);
	struct kv lim[] = {
		{ "key_wait_ms", o->key_wait_ns / 1000000, 1 },
		{ "max_keys", keys_capacity(d->ks), 1 },
		{ "wait_per_conn", o->wait.wait_per_conn, 1 },
		{ "wait_total", o->wait.wait_total, 1 },
		{ "max_conns", tl->max_flows, 1 },
		{ "ooo_per_dir", tl->ooo_per_dir, 1 },
		{ "ooo_total", tl->ooo_total, 1 },
		{ "idle_s", tl->idle_ns / 1000000000ULL, 1 },
		{ "seq_search", o->wait.seq_search ? o->wait.seq_search : TLSD_SEQ_SEARCH, 1 },
	};
	at = text_add(buf, len, at, "source_limits decrypt");
	return stats_kv_format(lim, sizeof(lim) / sizeof(lim[0]), buf, len, at);
}

static void dsrc_close(struct source *s)
{
	struct dsrc *d = s->priv;
	if (!d)
		return;
	if (d->a->key_consumer_arg == d)
		d->a->key_consumer = NULL;
	if (d->w.fd >= 0)
		agent_unwatch_fd(d->a, &d->w);
	if (d->live)
		pcap_close(d->live);
	if (d->file)
		pcap_close(d->file);
	if (d->mapped)
		pcap_map_close(&d->map);
	decrypt_free(d->e);
	for (size_t i = 0; i < d->nkf; i++)
		key_file_close(&d->kf[i]);
	keys_free(d->ks);
	rsa_kx_free(d->rsa);
	free(d);
	s->priv = NULL;
}

const struct source_ops decrypt_source_ops = {
	.name = "decrypt",
	.open = dsrc_open,
	.poll = dsrc_poll,
	.prepare_sleep = dsrc_prepare_sleep,
	.drain = dsrc_drain,
	.format_stats = dsrc_format_stats,
	.close = dsrc_close,
};
