/* flowreplay: runs a text script of connection events through the stage chain (the flow engine last) into a pcap. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flows/flow.h"
#include "pipeline/pipeline.h"
#include "transforms/dedup.h"
#include "sinks/sink.h"

/*
 * Script: one event per line, '#' starts a comment line. Each event is a
 * command and key=value pairs; values may be "quoted" with C escapes
 * (\r \n \t \\ \" \xHH).
 *
 *   open  proc=1 conn=1 side=server client=10.0.0.1:40000 server=10.0.0.2:443
 *         [midstream=1 off_c2s=N off_s2c=N] [ts=SEC.FRAC]
 *         (IPv6: client=[2001:db8::1]:40000; side is client|server|0|1)
 *   data  proc=1 conn=1 dir=c2s|s2c off=N (text="..." | hex=0a0b.. | fill=N) [ts=..]
 *   gap   proc=1 conn=1 dir=c2s|s2c len=N [ts=..]
 *   close proc=1 conn=1 [ts=..]
 *   close_proc proc=1 [ts=..]
 *   close_all [ts=..]
 *
 * ts defaults to the previous event's. fill=N is N bytes of a repeating
 * printable pattern. proc is the origin (1..REPLAY_ORIGINS); an open may
 * carry alpn="h2" (its metadata; the h2 stage reads it). Events go through
 * the chain (pipeline.h) as a source's would: --stage NAME[=ARG] enables a
 * stage of stage_table (--stage h2, --stage portmap=443:80). Each event whose call fails is reported on stderr as
 * "line N: CMD: error"; at the end one line of engine and sink counters.
 *
 * flowreplay --bench BYTES [--record-size N] OUT.pcap measures the
 * per-byte path instead: BYTES of clear text as N-byte records (default
 * 16384) on 16 connections, taken from a 16 MiB source buffer like records
 * from a ring, through pipeline_data into the pcap sink; prints bytes per CPU
 * second (user + system, so the write() calls count).
 */

#define MAX_KV 16
#define REPLAY_ORIGINS 64 /* origins reserved for the script's proc= values */

struct field_kv {
	char key[32];
	uint8_t *val; /* decoded, NUL-terminated */
	size_t len;
};

struct event {
	char cmd[32];
	struct field_kv kv[MAX_KV];
	int n;
};

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes a quoted value starting after the opening quote; returns the end. */
static const char *unquote(const char *p, uint8_t *out, size_t *len)
{
	size_t n = 0;
	while (*p && *p != '"') {
		int c = (unsigned char)*p++;
		if (c == '\\' && *p) {
			c = (unsigned char)*p++;
			switch (c) {
			case 'r': c = '\r'; break;
			case 'n': c = '\n'; break;
			case 't': c = '\t'; break;
			case '0': c = 0; break;
			case 'x':
				if (hexval(p[0]) >= 0 && hexval(p[1]) >= 0) {
					c = hexval(p[0]) * 16 + hexval(p[1]);
					p += 2;
				}
				break;
			default: break; /* \\ and \" */
			}
		}
		out[n++] = (uint8_t)c;
	}
	out[n] = 0;
	*len = n;
	return *p == '"' ? p + 1 : NULL;
}

static void event_free(struct event *e)
{
	for (int i = 0; i < e->n; i++)
		free(e->kv[i].val);
	e->n = 0;
}

/* Splits a line into command and pairs. Returns 0, 1 for a blank line, -EINVAL. */
static int parse_line(const char *line, struct event *e)
{
	const char *p = line + strspn(line, " \t\r\n");
	memset(e, 0, sizeof(*e));
	if (!*p || *p == '#')
		return 1;
	size_t n = strcspn(p, " \t\r\n");
	if (n >= sizeof(e->cmd))
		return -EINVAL;
	memcpy(e->cmd, p, n);
	p += n;
	for (;;) {
		p += strspn(p, " \t\r\n");
		if (!*p)
			return 0;
		const char *eq = strchr(p, '=');
		if (!eq || eq - p >= (long)sizeof(e->kv[0].key) || e->n == MAX_KV)
			return -EINVAL;
		struct field_kv *kv = &e->kv[e->n++];
		memcpy(kv->key, p, (size_t)(eq - p));
		p = eq + 1;
		kv->val = malloc(strlen(p) + 1);
		if (!kv->val)
			return -ENOMEM;
		if (*p == '"') {
			p = unquote(p + 1, kv->val, &kv->len);
			if (!p)
				return -EINVAL;
		} else {
			n = strcspn(p, " \t\r\n");
			memcpy(kv->val, p, n);
			kv->val[n] = 0;
			kv->len = n;
			p += n;
		}
	}
}

static const struct field_kv *get(const struct event *e, const char *key)
{
	for (int i = 0; i < e->n; i++)
		if (!strcmp(e->kv[i].key, key))
			return &e->kv[i];
	return NULL;
}

static int get_u64(const struct event *e, const char *key, uint64_t *v)
{
	const struct field_kv *kv = get(e, key);
	char *end;
	if (!kv)
		return -ENOENT;
	errno = 0;
	*v = strtoull((const char *)kv->val, &end, 0);
	return errno || *end || !kv->len ? -EINVAL : 0;
}

/* ts=SEC or SEC.FRAC (up to 9 digits) into nanoseconds. */
static int get_ts(const struct event *e, uint64_t *ts)
{
	const struct field_kv *kv = get(e, "ts");
	if (!kv)
		return 0;
	const char *s = (const char *)kv->val;
	char *end;
	uint64_t sec = strtoull(s, &end, 10), ns = 0;
	if (*end == '.') {
		int digits = 0;
		for (end++; *end >= '0' && *end <= '9'; end++, digits++)
			if (digits < 9)
				ns = ns * 10 + (uint64_t)(*end - '0');
		for (; digits < 9; digits++)
			ns *= 10;
	}
	if (*end)
		return -EINVAL;
	*ts = sec * 1000000000ull + ns;
	return 0;
}

/* "1.2.3.4:80" or "[2001:db8::1]:80" */
static int get_endpoint(const struct event *e, const char *key, uint8_t addr[16],
			uint16_t *port, uint8_t *family)
{
	const struct field_kv *kv = get(e, key);
	char host[64];
	if (!kv)
		return -ENOENT;
	const char *s = (const char *)kv->val, *colon;
	int v6 = s[0] == '[';
	if (v6) {
		const char *rb = strchr(s, ']');
		if (!rb || rb[1] != ':' || (size_t)(rb - s - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, (size_t)(rb - s - 1));
		host[rb - s - 1] = 0;
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = 0;
	}
	memset(addr, 0, 16);
	if (inet_pton(v6 ? AF_INET6 : AF_INET, host, addr) != 1)
		return -EINVAL;
	*port = (uint16_t)strtoul(colon + 1, NULL, 10);
	*family = v6 ? 6 : 4;
	return 0;
}

static int get_dir(const struct event *e, int *dir)
{
	const struct field_kv *kv = get(e, "dir");
	if (!kv)
		return -EINVAL;
	if (!strcmp((const char *)kv->val, "c2s"))
		*dir = 0;
	else if (!strcmp((const char *)kv->val, "s2c"))
		*dir = 1;
	else
		return -EINVAL;
	return 0;
}

static int do_open(struct pipeline *t, const struct event *e, uint64_t ts)
{
	struct conn_open in = { .ts_ns = ts };
	uint8_t fam2;
	uint64_t v = 0;
	const struct field_kv *side = get(e, "side"), *alpn = get(e, "alpn");
	if (get_u64(e, "proc", &in.id.origin) || get_u64(e, "conn", &in.id.conn) ||
	    !in.id.origin || in.id.origin > REPLAY_ORIGINS ||
	    get_endpoint(e, "client", in.client_addr, &in.client_port, &in.family) ||
	    get_endpoint(e, "server", in.server_addr, &in.server_port, &fam2) ||
	    fam2 != in.family || !side)
		return -EINVAL;
	in.side = !strcmp((const char *)side->val, "server") ||
		  !strcmp((const char *)side->val, "1");
	if (!get_u64(e, "midstream", &v))
		in.midstream = v != 0;
	get_u64(e, "off_c2s", &in.off[0]);
	get_u64(e, "off_s2c", &in.off[1]);
	struct conn_meta *m = conn_meta_new();
	if (!m)
		return -ENOMEM;
	m->kind = CONN_KIND_CAPTURE;
	m->side = in.side;
	m->real_server_port = in.server_port;
	if (alpn)
		snprintf(m->alpn, sizeof(m->alpn), "%s", (const char *)alpn->val);
	in.meta = m;
	int ret = pipeline_open(t, &in);
	conn_meta_unref(m);
	return ret;
}

/* The bytes of a data event: text=, hex= or fill=. */
static int payload(const struct event *e, uint8_t **buf, size_t *len)
{
	static const char pat[] = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ\n";
	const struct field_kv *kv;
	uint64_t n;
	*buf = NULL;
	if ((kv = get(e, "text"))) {
		*buf = malloc(kv->len + 1);
		if (*buf)
			memcpy(*buf, kv->val, kv->len);
		*len = kv->len;
	} else if ((kv = get(e, "hex"))) {
		*len = kv->len / 2;
		*buf = malloc(*len + 1);
		for (size_t i = 0; *buf && i < *len; i++) {
			int hi = hexval(kv->val[2 * i]), lo = hexval(kv->val[2 * i + 1]);
			if (hi < 0 || lo < 0 || (kv->len & 1)) {
				free(*buf);
				return -EINVAL;
			}
			(*buf)[i] = (uint8_t)(hi * 16 + lo);
		}
	} else if (!get_u64(e, "fill", &n) && n < (1u << 30)) {
		*len = (size_t)n;
		*buf = malloc(*len + 1);
		for (size_t i = 0; *buf && i < *len; i++)
			(*buf)[i] = (uint8_t)pat[i % (sizeof(pat) - 1)];
	} else {
		return -EINVAL;
	}
	return *buf ? 0 : -ENOMEM;
}

static int do_data(struct pipeline *t, const struct event *e, uint64_t ts)
{
	uint64_t proc, conn, off;
	int dir;
	uint8_t *buf;
	size_t len;
	if (get_u64(e, "proc", &proc) || get_u64(e, "conn", &conn) ||
	    get_dir(e, &dir) || get_u64(e, "off", &off))
		return -EINVAL;
	int ret = payload(e, &buf, &len);
	if (ret < 0)
		return ret;
	ret = pipeline_data(t, &(struct conn_id){ proc, conn }, dir, ts, off, buf, len, NULL);
	free(buf);
	return ret;
}

static int run_event(struct pipeline *t, const struct event *e, uint64_t *ts)
{
	uint64_t proc, conn, len;
	int dir;
	if (get_ts(e, ts) < 0)
		return -EINVAL;
	if (!strcmp(e->cmd, "open"))
		return do_open(t, e, *ts);
	if (!strcmp(e->cmd, "data"))
		return do_data(t, e, *ts);
	if (!strcmp(e->cmd, "gap")) {
		if (get_u64(e, "proc", &proc) || get_u64(e, "conn", &conn) ||
		    get_dir(e, &dir) || get_u64(e, "len", &len))
			return -EINVAL;
		return pipeline_gap(t, &(struct conn_id){ proc, conn }, dir, *ts, len);
	}
	if (!strcmp(e->cmd, "close")) {
		if (get_u64(e, "proc", &proc) || get_u64(e, "conn", &conn))
			return -EINVAL;
		return pipeline_close(t, &(struct conn_id){ proc, conn }, *ts, 0);
	}
	if (!strcmp(e->cmd, "close_proc")) {
		if (get_u64(e, "proc", &proc))
			return -EINVAL;
		pipeline_origin(t, proc, ORIGIN_CLOSED, *ts);
		return 0;
	}
	if (!strcmp(e->cmd, "close_all")) {
		pipeline_close_all(t, *ts);
		return 0;
	}
	return -EINVAL;
}

/* The flow engine's counters; orphans are the chain's (no owner) and the
 * engine's, duplicates the dedup stage's and the engine's (a busy 4-tuple). */
static void print_counters(const struct pipeline *t, const struct sink_set *set)
{
	const struct flow_counters *c = flow_counters(pipeline_stage_priv(t, "flows"));
	const struct dedup_counters *d = dedup_counters(pipeline_stage_priv(t, "dedup"));
	fprintf(stderr, "flows_opened=%" PRIu64 " flows_closed=%" PRIu64
		" flows_duplicate=%" PRIu64 " c2s_bytes=%" PRIu64 " s2c_bytes=%" PRIu64
		" c2s_gap=%" PRIu64 " s2c_gap=%" PRIu64 " packets=%" PRIu64
		" orphan_records=%" PRIu64 " bad_offsets=%" PRIu64,
		c->flows_opened, c->flows_closed, c->flows_duplicate + d->duplicates, c->bytes[0],
		c->bytes[1], c->gap_bytes[0], c->gap_bytes[1], c->packets,
		c->orphan_records + pipeline_counters(t)->orphan_records, c->bad_offsets);
	for (size_t i = 0; i < set->n; i++)
		fprintf(stderr, " sink_packets=%" PRIu64 " sink_lost=%" PRIu64
			" sink_files=%" PRIu64, set->v[i]->ctr.packets,
			set->v[i]->ctr.lost_packets, set->v[i]->ctr.files);
	fputc('\n', stderr);
}

static int usage(void)
{
	fprintf(stderr, "usage: flowreplay [--mss N] [--snaplen N] [--rotate-size BYTES] "
		"EVENTS OUT.pcap ('-' = stdout)\n"
		"       flowreplay --bench BYTES [--record-size N] [--mss N] OUT.pcap\n"
		"       (before either: --stage NAME[=ARG], repeatable)\n");
	return 2;
}

static double clock_s(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define BENCH_FLOWS 16
#define BENCH_SRC (16u << 20)

static int bench(struct pipeline *t, struct sink_set *set, uint64_t total, size_t rec)
{
	uint8_t *src = malloc(BENCH_SRC);
	uint64_t off[BENCH_FLOWS] = { 0 }, done = 0, ts = 1700000000ull * 1000000000ull;
	size_t pos = 0;
	if (!src || rec == 0 || rec > BENCH_SRC)
		return 1;
	for (size_t i = 0; i < BENCH_SRC; i++)
		src[i] = (uint8_t)(i * 131 + (i >> 12));
	for (unsigned c = 0; c < BENCH_FLOWS; c++) {
		struct conn_open in = { .id = { 1, c + 1 }, .ts_ns = ts,
			.family = 4, .side = 1, .client_port = (uint16_t)(40000 + c),
			.server_port = 443, .client_addr = { 10, 0, 0, 1 },
			.server_addr = { 10, 0, 0, 2 } };
		pipeline_open(t, &in);
	}
	double cpu0 = clock_s(CLOCK_PROCESS_CPUTIME_ID), wall0 = clock_s(CLOCK_MONOTONIC);
	for (unsigned c = 0; done < total; c = (c + 1) % BENCH_FLOWS) {
		if (pos + rec > BENCH_SRC)
			pos = 0;
		pipeline_data(t, &(struct conn_id){ 1, c + 1 }, 1, ts, off[c], src + pos, rec, NULL);
		off[c] += rec;
		pos += (rec + 63) & ~(size_t)63; /* records are 64-byte aligned in a ring */
		done += rec;
		ts += 1000;
	}
	pipeline_close_all(t, ts);
	sink_set_flush(set);
	double cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
	double wall = clock_s(CLOCK_MONOTONIC) - wall0;
	fprintf(stderr, "bench: %" PRIu64 " bytes in %zu-byte records, %" PRIu64 " packets, "
		"cpu %.3f s, wall %.3f s: %.2f GB/s = %.1f Gbit/s of clear text per CPU second\n",
		done, rec, flow_counters(pipeline_stage_priv(t, "flows"))->packets, cpu, wall, (double)done / cpu / 1e9,
		(double)done * 8 / cpu / 1e9);
	free(src);
	return 0;
}

static int replay(FILE *in, struct pipeline *t)
{
	char *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	uint64_t ts = 0;
	int bad_script = 0;
	struct event e;
	while (getline(&line, &cap, in) >= 0) {
		lineno++;
		int ret = parse_line(line, &e);
		if (ret == 0)
			ret = run_event(t, &e, &ts);
		else if (ret < 0)
			bad_script = 1;
		if (ret < 0)
			fprintf(stderr, "line %u: %s: %s\n", lineno, e.cmd[0] ? e.cmd : "?",
				strerror(-ret));
		if (ret == -EINVAL)
			bad_script = 1;
		event_free(&e);
	}
	free(line);
	return bad_script;
}

/* --stage NAME[=ARG]: enables a row of stage_table. Returns 0 or -EINVAL. */
static int enable_stage(struct pipeline_opts *po, const char *spec)
{
	const char *eq = strchr(spec, '=');
	size_t n = eq ? (size_t)(eq - spec) : strlen(spec);
	for (size_t i = 0; i < stage_table_len; i++) {
		if (stage_table[i].option && strlen(stage_table[i].name) == n &&
		    !strncmp(stage_table[i].name, spec, n)) {
			po->arg[i] = eq ? eq + 1 : "";
			return 0;
		}
	}
	return -EINVAL;
}

int main(int argc, char **argv)
{
	struct pipeline_opts po = { 0 };
	struct flow_config cfg = { 0 };
	struct sink_opts o = { 0 };
	struct sink_set set = { 0 };
	const char *err = NULL;
	int i = 1, ret = 1;
	uint64_t bench_bytes = 0;
	size_t rec = 16384;
	signal(SIGPIPE, SIG_IGN); /* a reader that goes away is EPIPE, counted as lost */
	for (; i + 1 < argc && !strncmp(argv[i], "--", 2); i += 2) {
		unsigned long long v = strtoull(argv[i + 1], NULL, 0);
		if (!strcmp(argv[i], "--bench"))
			bench_bytes = v;
		else if (!strcmp(argv[i], "--record-size"))
			rec = (size_t)v;
		else if (!strcmp(argv[i], "--mss"))
			cfg.mss = (uint16_t)v;
		else if (!strcmp(argv[i], "--snaplen"))
			o.snaplen = (uint32_t)v;
		else if (!strcmp(argv[i], "--rotate-size"))
			o.rotate_bytes = v;
		else if (!strcmp(argv[i], "--stage") && !enable_stage(&po, argv[i + 1]))
			;
		else
			return usage();
	}
	if (argc - i != (bench_bytes ? 1 : 2))
		return usage();
	FILE *in = bench_bytes ? NULL : fopen(argv[i], "r");
	if (bench_bytes)
		i--; /* the output is the last argument either way */
	else if (!in) {
		fprintf(stderr, "flowreplay: cannot open %s: %s\n", argv[i], strerror(errno));
		return 1;
	}
	int r = sink_set_add(&set, &sink_pcap_ops, argv[i + 1], &o, &err);
	if (r < 0) {
		fprintf(stderr, "flowreplay: %s: %s (%s)\n", argv[i + 1], err, strerror(-r));
		goto out;
	}
	cfg.sinks = &set;
	po.flow = cfg;
	struct pipeline *t = pipeline_new(&po, &err);
	if (!t) {
		fprintf(stderr, "flowreplay: %s\n", err ? err : "out of memory");
		goto out;
	}
	for (unsigned k = 0; k < REPLAY_ORIGINS; k++)
		pipeline_origin_new(t); /* proc=1..REPLAY_ORIGINS are the script's */
	ret = bench_bytes ? bench(t, &set, bench_bytes, rec) : replay(in, t);
	sink_set_flush(&set);
	print_counters(t, &set);
	pipeline_free(t);
out:
	sink_set_close(&set);
	if (in)
		fclose(in);
	return ret;
}
