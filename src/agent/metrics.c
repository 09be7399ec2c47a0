/*
 * The counters as samples (name, labels, value), for Prometheus (--metrics,
 * the text format 0.0.4) and `tlsmirror stats --json`.
 *
 * One source: the processes, the total, the stages and the sinks come
 * from the same rows (struct kv) the text prints (proc_fields,
 * stats_total, pipeline_stage_counters, sink_counters: "stage name=h2
 * ..." is tlsmirror_stage_KEY_total{name="h2"}, "sink name=pcap target=x
 * ..." tlsmirror_sink_KEY_total{name="pcap",target="x"}); the remaining
 * lines ("pipeline ...", "tunnel ...", "collector ...", "access ...") are
 * turned into samples as they are printed: the first word is the kind, a
 * numeric value is a sample (tlsmirror_KIND_KEY_total, or a gauge for the
 * keys below), a word is a label, state=WORD a gauge of its own. A
 * component that adds a counter gets a metric with no change here.
 * docs/operations.md lists the names.
 *
 * The HTTP server runs in the agent's event loop: non-blocking, at most
 * METRICS_MAX_CLIENTS connections, a bounded request, a deadline for the
 * whole exchange; the answer is built at once and written as the client
 * takes it, so a slow scraper costs memory it is bounded in, never time.
 */
#include "agent/metrics.h"
#include "agent/agent.h"
#include "common/log.h"
#include "common/text.h"
#include "transport/ctl.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define ARENA_BYTES (2u << 20)

/* ---- the sample set ---- */

static const char *set_str(struct metric_set *set, const char *s, size_t n, int label)
{
	if (set->used + n + 1 > set->arena_cap)
		return NULL;
	char *d = set->arena + set->used;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		/* label values are UTF-8 in the format: bytes outside printable
		 * ASCII (a process's name is its own claim) are shown as '_' */
		if (label && (c < ' ' || c > '~'))
			c = '_';
		/* a name: [a-zA-Z0-9_] only */
		if (!label && !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				(c >= '0' && c <= '9') || c == '_'))
			c = '_';
		d[i] = c;
	}
	d[n] = 0;
	set->used += n + 1;
	return d;
}

int metrics_set_init(struct metric_set *set)
{
	memset(set, 0, sizeof(*set));
	set->cap = 1024;
	set->v = malloc(set->cap * sizeof(*set->v));
	set->arena_cap = ARENA_BYTES;
	set->arena = malloc(set->arena_cap);
	if (!set->v || !set->arena) {
		metrics_free(set);
		return -ENOMEM;
	}
	return 0;
}

void metrics_free(struct metric_set *set)
{
	free(set->v);
	free(set->arena);
	memset(set, 0, sizeof(*set));
}

/* name: interned already (or a literal); lk/lv copied. */
static void add(struct metric_set *set, const char *name, int gauge, size_t nl,
		const char *const *lk, const char *const *lv, uint64_t v)
{
	if (!name || set->n >= METRICS_MAX_SAMPLES) {
		set->truncated++;
		return;
	}
	if (set->n == set->cap) {
		struct metric_sample *nv = realloc(set->v, 2 * set->cap * sizeof(*nv));
		if (!nv) {
			set->truncated++;
			return;
		}
		set->v = nv;
		set->cap *= 2;
	}
	struct metric_sample *s = &set->v[set->n];
	memset(s, 0, sizeof(*s));
	s->name = name;
	s->gauge = gauge;
	s->v = v;
	s->seq = set->n;
	for (size_t i = 0; i < nl && i < METRICS_MAX_LABELS; i++) {
		s->lk[s->nl] = lk[i];
		s->lv[s->nl] = set_str(set, lv[i], strlen(lv[i]), 1);
		if (!s->lv[s->nl]) {
			set->truncated++;
			return;
		}
		s->nl++;
	}
	set->n++;
}

/* "tlsmirror_" a "_" b ["_total"], interned. */
static const char *name3(struct metric_set *set, const char *a, const char *b, int total)
{
	char buf[160];
	int n = snprintf(buf, sizeof(buf), "tlsmirror_%s_%s%s", a, b, total ? "_total" : "");
	if (n <= 0 || (size_t)n >= sizeof(buf))
		return NULL;
	return set_str(set, buf, (size_t)n, 0);
}

/* ---- processes and the total ---- */

static const struct {
	const char *key, *name, *lk, *lv;
	int gauge;
} proc_map[] = {
	{ "conns", "tlsmirror_process_conns_total", NULL, NULL, 0 },
	{ "open", "tlsmirror_process_open_conns", NULL, NULL, 1 },
	{ "c2s_bytes", "tlsmirror_process_bytes_total", "direction", "c2s", 0 },
	{ "s2c_bytes", "tlsmirror_process_bytes_total", "direction", "s2c", 0 },
	{ "drop_full_bytes", "tlsmirror_dropped_bytes_total", "reason", "ring_full", 0 },
	{ "drop_noring_bytes", "tlsmirror_dropped_bytes_total", "reason", "no_ring", 0 },
	{ "drop_busy_bytes", "tlsmirror_dropped_bytes_total", "reason", "busy", 0 },
	{ "unpatched_objs", "tlsmirror_process_unpatched_objs", NULL, NULL, 1 },
};

static void add_proc(struct metric_set *set, const char *pid, const char *comm, const char *uid,
		     int attached, const struct kv *kv, size_t n)
{
	const char *lk[4] = { "pid", "comm", "uid", NULL }, *lv[4] = { pid, comm, uid, NULL };
	add(set, "tlsmirror_process_attached", 1, 3, lk, lv, (uint64_t)attached);
	for (size_t i = 0; i < n; i++) {
		size_t m = 0;
		while (m < sizeof(proc_map) / sizeof(proc_map[0]) && strcmp(proc_map[m].key, kv[i].key))
			m++;
		if (m < sizeof(proc_map) / sizeof(proc_map[0])) {
			lk[3] = proc_map[m].lk;
			lv[3] = proc_map[m].lv;
			add(set, proc_map[m].name, proc_map[m].gauge, proc_map[m].lk ? 4 : 3, lk, lv, kv[i].v);
		} else {
			add(set, name3(set, "process", kv[i].key, 1), 0, 3, lk, lv, kv[i].v);
		}
	}
}

/*
 * One series per process, newest first, for the attached ones and those
 * that exited less than METRICS_FOLD_SECONDS ago, at most
 * METRICS_PROC_SERIES; the others are summed into pid="other": a sum over
 * the processes stays the agent's total and never goes down.
 */
static void collect_procs(struct agent *a, struct metric_set *set)
{
	uint64_t now = agent_now_ns();
	struct kv other[STATS_MAX_KV], kv[STATS_MAX_KV];
	size_t n_other = 0, shown = 0;
	for (struct proc *p = a->procs; p; p = p->next) {
		proc_read_drops(p);
		size_t n = proc_fields(p, kv);
		int old = p->state != PROC_ATTACHED &&
			  now - p->exited_ns > (uint64_t)METRICS_FOLD_SECONDS * 1000000000ULL;
		if (old || shown >= METRICS_PROC_SERIES) {
			if (!n_other)
				for (size_t i = 0; i < n; i++)
					other[i] = (struct kv){ kv[i].key, 0, 0 };
			n_other = n;
			for (size_t i = 0; i < n; i++)
				other[i].v += kv[i].v;
			continue;
		}
		char pid[16], uid[16], comm[sizeof(p->comm)];
		snprintf(pid, sizeof(pid), "%d", (int)p->pid);
		snprintf(uid, sizeof(uid), "%u", (unsigned)p->uid);
		memcpy(comm, p->comm, sizeof(comm));
		comm[sizeof(comm) - 1] = 0;
		add_proc(set, pid, comm[0] ? comm : "?", uid, p->state == PROC_ATTACHED, kv, n);
		shown++;
	}
	if (n_other)
		add_proc(set, "other", "other", "other", 0, other, n_other);
}

static void collect_total(struct agent *a, struct metric_set *set)
{
	struct kv kv[STATS_MAX_KV];
	size_t n = stats_total(a, kv);
	for (size_t i = 0; i < n; i++) {
		const char *k = kv[i].key;
		if (!strcmp(k, "uptime_s"))
			add(set, "tlsmirror_agent_uptime_seconds", 1, 0, NULL, NULL, kv[i].v);
		else if (!strcmp(k, "processes") || !strcmp(k, "open_conns"))
			add(set, name3(set, "agent", k, 0), 1, 0, NULL, NULL, kv[i].v);
		else
			add(set, name3(set, "agent", k, 1), 0, 0, NULL, NULL, kv[i].v);
	}
}

/* ---- the components that report rows: stages and sinks ---- */

/* tlsmirror_KIND_KEY_total (a gauge: tlsmirror_KIND_KEY) per row, with the line's labels. */
static void add_rows(struct metric_set *set, const char *kind, size_t nl, const char *const *lk,
		     const char *const *lv, const struct kv *kv, size_t n)
{
	for (size_t i = 0; i < n; i++)
		add(set, name3(set, kind, kv[i].key, !kv[i].gauge), kv[i].gauge, nl, lk, lv, kv[i].v);
}

static void collect_rows(struct agent *a, struct metric_set *set)
{
	for (size_t i = 0; i < pipeline_n_stages(a->pl); i++) {
		struct kv kv[STAGE_MAX_COUNTERS];
		const char *lk[1] = { "name" }, *lv[1] = { pipeline_stage_name(a->pl, i) };
		add_rows(set, "stage", 1, lk, lv, kv, pipeline_stage_counters(a->pl, i, kv,
									  STAGE_MAX_COUNTERS));
	}
	for (size_t i = 0; i < a->sinks.n + a->records.n; i++) {
		const struct sink *s = i < a->sinks.n ? a->sinks.v[i] : a->records.v[i - a->sinks.n];
		struct kv kv[SINK_MAX_COUNTERS];
		char target[128];
		sink_shown_target(s, target, sizeof(target));
		const char *lk[2] = { "name", "target" }, *lv[2] = { s->ops->name, target };
		add_rows(set, "sink", 2, lk, lv, kv, sink_counters(s, kv, SINK_MAX_COUNTERS));
	}
}

/* ---- the other lines ---- */

/* Values that are levels, not counts: gauges (no _total). */
static const char *const gauge_keys[] = {
	"open", "owned", "queued_bytes", "buffered_bytes", "broken", "peers", "agents", "clients",
};
/* Numeric values that name something: labels. */
static const char *const label_keys[] = { "uid", "vlan", "pid", "name", "target", "listen" };
/* Shown in the text, not worth a series (it changes at every reconnect). */
static const char *const skip_keys[] = { "peer" };

static int in(const char *const *list, size_t n, const char *k, size_t kl)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(list[i]) == kl && !memcmp(list[i], k, kl))
			return 1;
	return 0;
}
#define IN(list, k, kl) in(list, sizeof(list) / sizeof(list[0]), k, kl)

static int numeric(const char *v, size_t n)
{
	if (!n || n > 20)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (v[i] < '0' || v[i] > '9')
			return 0;
	return 1;
}

#define LINE_MAX_TOKENS 64

static void parse_line(struct metric_set *set, const char *line, size_t len)
{
	const char *tok[LINE_MAX_TOKENS];
	size_t tl[LINE_MAX_TOKENS], nt = 0;
	for (size_t i = 0; i < len && nt < LINE_MAX_TOKENS;) {
		while (i < len && line[i] == ' ')
			i++;
		size_t j = i;
		while (j < len && line[j] != ' ')
			j++;
		if (j > i) {
			tok[nt] = line + i;
			tl[nt++] = j - i;
		}
		i = j;
	}
	if (nt < 2 || memchr(tok[0], '=', tl[0]))
		return; /* not "KIND key=value ..." */
	char kind[48];
	if (tl[0] >= sizeof(kind))
		return;
	memcpy(kind, tok[0], tl[0]);
	kind[tl[0]] = 0;
	char lv_buf[METRICS_MAX_LABELS][160];
	const char *lk[METRICS_MAX_LABELS], *lv[METRICS_MAX_LABELS];
	size_t nl = 0;
	const char *state = NULL;
	size_t state_len = 0;
	/* the labels first: they apply to every sample of the line */
	for (size_t t = 1; t < nt; t++) {
		const char *eq = memchr(tok[t], '=', tl[t]);
		if (!eq)
			continue;
		size_t kl = (size_t)(eq - tok[t]), vl = tl[t] - kl - 1;
		const char *v = eq + 1;
		if (IN(skip_keys, tok[t], kl) || (numeric(v, vl) && !IN(label_keys, tok[t], kl)))
			continue;
		if (kl == 5 && !memcmp(tok[t], "state", 5)) {
			state = v;
			state_len = vl;
			continue;
		}
		if (nl >= METRICS_MAX_LABELS - 1 || !kl || vl >= sizeof(lv_buf[0]))
			continue; /* one left for state */
		if (!(lk[nl] = set_str(set, tok[t], kl, 0))) /* interned: a valid label name */
			return;
		memcpy(lv_buf[nl], v, vl);
		lv_buf[nl][vl] = 0;
		lv[nl] = lv_buf[nl];
		nl++;
	}
	for (size_t t = 1; t < nt; t++) {
		const char *eq = memchr(tok[t], '=', tl[t]);
		if (!eq)
			continue;
		size_t kl = (size_t)(eq - tok[t]), vl = tl[t] - kl - 1;
		if (!numeric(eq + 1, vl) || IN(label_keys, tok[t], kl) || IN(skip_keys, tok[t], kl))
			continue;
		char key[64], val[24];
		if (kl >= sizeof(key))
			continue;
		memcpy(key, tok[t], kl);
		key[kl] = 0;
		memcpy(val, eq + 1, vl);
		val[vl] = 0;
		int g = IN(gauge_keys, key, kl);
		add(set, name3(set, kind, key, !g), g, nl, lk, lv, strtoull(val, NULL, 10));
	}
	if (state && state_len < sizeof(lv_buf[0])) {
		memcpy(lv_buf[nl], state, state_len);
		lv_buf[nl][state_len] = 0;
		lk[nl] = "state";
		lv[nl] = lv_buf[nl];
		add(set, name3(set, kind, "state", 0), 1, nl + 1, lk, lv, 1);
	}
}

void metrics_parse_lines(struct metric_set *set, const char *text)
{
	while (*text) {
		const char *nl = strchr(text, '\n');
		size_t len = nl ? (size_t)(nl - text) : strlen(text);
		parse_line(set, text, len);
		text += len + (nl ? 1 : 0);
	}
}

static int cmp_sample(const void *x, const void *y)
{
	const struct metric_sample *a = x, *b = y;
	int c = strcmp(a->name, b->name);
	return c ? c : (a->seq > b->seq) - (a->seq < b->seq);
}

void metrics_sort(struct metric_set *set)
{
	qsort(set->v, set->n, sizeof(*set->v), cmp_sample);
}

int metrics_collect(struct agent *a, struct metric_set *set)
{
	if (metrics_set_init(set) < 0)
		return -ENOMEM;
	collect_procs(a, set);
	collect_total(a, set);
	char *buf = malloc(CTL_STATS_MAX);
	if (!buf) {
		metrics_free(set);
		return -ENOMEM;
	}
	buf[0] = 0;
	collect_rows(a, set);
	stats_text_lines_format(a, buf, CTL_STATS_MAX, 0);
	metrics_parse_lines(set, buf);
	free(buf);
	add(set, "tlsmirror_metrics_truncated", 1, 0, NULL, NULL, set->truncated);
	metrics_sort(set);
	return 0;
}

/* ---- output ---- */

struct out {
	char *p;
	size_t n, cap;
	int oom;
};

__attribute__((format(printf, 2, 3)))
static void out_add(struct out *o, const char *fmt, ...)
{
	for (;;) {
		if (o->oom)
			return;
		va_list ap;
		va_start(ap, fmt);
		int k = vsnprintf(o->p ? o->p + o->n : NULL, o->p ? o->cap - o->n : 0, fmt, ap);
		va_end(ap);
		if (k < 0) {
			o->oom = 1;
			return;
		}
		if (o->p && o->n + (size_t)k < o->cap) {
			o->n += (size_t)k;
			return;
		}
		size_t nc = o->cap ? o->cap * 2 : 65536;
		while (nc < o->n + (size_t)k + 1)
			nc *= 2;
		char *np = realloc(o->p, nc);
		if (!np) {
			o->oom = 1;
			return;
		}
		o->p = np;
		o->cap = nc;
	}
}

static char *out_done(struct out *o, size_t *len)
{
	if (o->oom || !o->p) {
		free(o->p);
		return NULL;
	}
	*len = o->n;
	return o->p;
}

/* label values: \ " and newline escaped (the set has no other control bytes) */
static void out_escaped(struct out *o, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			out_add(o, "\\%c", *s);
		else if (*s == '\n')
			out_add(o, "\\n");
		else
			out_add(o, "%c", *s);
	}
}

char *metrics_prometheus(const struct metric_set *set, size_t *len)
{
	struct out o = { 0 };
	for (size_t i = 0; i < set->n; i++) {
		const struct metric_sample *s = &set->v[i];
		if (!i || strcmp(s->name, set->v[i - 1].name))
			out_add(&o, "# HELP %s tlsmirror %s (docs/operations.md)\n# TYPE %s %s\n",
				s->name, s->gauge ? "gauge" : "counter", s->name,
				s->gauge ? "gauge" : "counter");
		out_add(&o, "%s", s->name);
		for (size_t l = 0; l < s->nl; l++) {
			out_add(&o, "%s%s=\"", l ? "," : "{", s->lk[l]);
			out_escaped(&o, s->lv[l]);
			out_add(&o, "\"%s", l + 1 == s->nl ? "}" : "");
		}
		out_add(&o, " %llu\n", (unsigned long long)s->v);
	}
	return out_done(&o, len);
}

char *metrics_json(const struct metric_set *set, size_t *len)
{
	struct out o = { 0 };
	out_add(&o, "{\"metrics\":[");
	for (size_t i = 0; i < set->n; i++) {
		const struct metric_sample *s = &set->v[i];
		out_add(&o, "%s\n{\"name\":\"%s\",\"type\":\"%s\",\"labels\":{", i ? "," : "", s->name,
			s->gauge ? "gauge" : "counter");
		for (size_t l = 0; l < s->nl; l++) {
			out_add(&o, "%s\"%s\":\"", l ? "," : "", s->lk[l]);
			out_escaped(&o, s->lv[l]); /* the same escapes are JSON's */
			out_add(&o, "\"");
		}
		out_add(&o, "},\"value\":%llu}", (unsigned long long)s->v);
	}
	out_add(&o, "\n]}\n");
	return out_done(&o, len);
}

/* ---- the HTTP server ---- */

struct mclient {
	struct metrics_server *srv;
	struct agent_watch w;        /* w.fd -1: free */
	char req[METRICS_MAX_REQUEST];
	size_t req_len;
	char *out;                   /* the answer, once built */
	size_t out_len, out_off;
	uint64_t deadline_ns;
};

struct metrics_server {
	struct agent *a;
	struct agent_watch lw;
	char listen[80];
	struct mclient c[METRICS_MAX_CLIENTS];
	uint64_t scrapes, rejected, timeouts, bad_requests;
};

static void client_close(struct mclient *c)
{
	if (c->w.fd < 0)
		return;
	agent_unwatch_fd(c->srv->a, &c->w);
	close(c->w.fd);
	c->w.fd = -1;
	free(c->out);
	c->out = NULL;
	c->out_len = c->out_off = c->req_len = 0;
}

static void client_write(struct mclient *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->w.fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return; /* EPOLLOUT brings us back */
		if (n <= 0) {
			client_close(c);
			return;
		}
		c->out_off += (size_t)n;
	}
	/* all written: read what the client may have sent after its request
	 * (so that closing does not reset the connection), then close */
	char sink[512];
	while (recv(c->w.fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
		;
	shutdown(c->w.fd, SHUT_WR);
	client_close(c);
}

static void respond(struct mclient *c, int code, const char *reason, const char *extra,
		    const char *body, size_t body_len)
{
	struct out o = { 0 };
	out_add(&o, "HTTP/1.1 %d %s\r\nServer: tlsmirror\r\nConnection: close\r\n"
		"Content-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", code, reason,
		code == 200 ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8",
		body_len, extra ? extra : "");
	if (!o.oom && body_len) {
		if (o.n + body_len + 1 > o.cap) {
			char *np = realloc(o.p, o.n + body_len + 1);
			if (!np)
				o.oom = 1;
			else {
				o.p = np;
				o.cap = o.n + body_len + 1;
			}
		}
		if (!o.oom) {
			memcpy(o.p + o.n, body, body_len);
			o.n += body_len;
		}
	}
	c->out = out_done(&o, &c->out_len);
	if (!c->out) {
		client_close(c);
		return;
	}
	struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = &c->w };
	epoll_ctl(c->srv->a->epfd, EPOLL_CTL_MOD, c->w.fd, &ev);
	client_write(c);
}

static void error_reply(struct mclient *c, int code, const char *reason, const char *extra)
{
	char body[96];
	int n = snprintf(body, sizeof(body), "%d %s\n", code, reason);
	c->srv->bad_requests++;
	respond(c, code, reason, extra, body, (size_t)n);
}

/* The request head is complete in c->req: only GET /metrics, HTTP/1.0 or 1.1. */
static void handle_request(struct mclient *c)
{
	char method[16], target[256], version[16];
	const char *eol = memchr(c->req, '\n', c->req_len);
	size_t ll = eol ? (size_t)(eol - c->req) : c->req_len;
	char line[512];
	if (ll >= sizeof(line))
		return error_reply(c, 414, "URI Too Long", NULL);
	memcpy(line, c->req, ll);
	line[ll] = 0;
	if (ll && line[ll - 1] == '\r')
		line[ll - 1] = 0;
	char tail;
	if (sscanf(line, "%15s %255s %15s %c", method, target, version, &tail) != 3)
		return error_reply(c, 400, "Bad Request", NULL);
	if (strcmp(version, "HTTP/1.0") && strcmp(version, "HTTP/1.1"))
		return error_reply(c, 505, "HTTP Version Not Supported", NULL);
	if (strcmp(method, "GET"))
		return error_reply(c, 405, "Method Not Allowed", "Allow: GET\r\n");
	if (strcmp(target, "/metrics") && strncmp(target, "/metrics?", 9))
		return error_reply(c, 404, "Not Found", NULL);
	struct metric_set set;
	size_t len = 0;
	char *body = NULL;
	if (!metrics_collect(c->srv->a, &set)) {
		body = metrics_prometheus(&set, &len);
		metrics_free(&set);
	}
	if (!body)
		return error_reply(c, 503, "Service Unavailable", NULL);
	c->srv->scrapes++;
	respond(c, 200, "OK", NULL, body, len);
	free(body);
}

static void on_client(struct agent *a, struct agent_watch *w, uint32_t events)
{
	struct mclient *c = w->arg;
	if (c->out) {
		client_write(c);
		return;
	}
	for (;;) {
		if (c->req_len >= sizeof(c->req)) {
			error_reply(c, 431, "Request Header Fields Too Large", NULL);
			return;
		}
		ssize_t n = recv(w->fd, c->req + c->req_len, sizeof(c->req) - c->req_len, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			client_close(c);
			return;
		}
		size_t from = c->req_len >= 3 ? c->req_len - 3 : 0;
		c->req_len += (size_t)n;
		for (size_t i = from; i + 1 < c->req_len; i++) {
			if ((c->req[i] == '\n' && c->req[i + 1] == '\n') ||
			    (i + 3 < c->req_len && !memcmp(c->req + i, "\r\n\r\n", 4))) {
				handle_request(c);
				return;
			}
		}
	}
}

static void on_listen(struct agent *a, struct agent_watch *w, uint32_t events)
{
	struct metrics_server *srv = w->arg;
	for (;;) {
		int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		struct mclient *c = NULL;
		for (size_t i = 0; i < METRICS_MAX_CLIENTS && !c; i++)
			if (srv->c[i].w.fd < 0)
				c = &srv->c[i];
		if (!c) {
			srv->rejected++;
			close(fd);
			continue;
		}
		c->w = (struct agent_watch){ .fd = fd, .on_event = on_client, .arg = c };
		c->deadline_ns = agent_now_ns() + (uint64_t)METRICS_TIMEOUT_MS * 1000000ULL;
		if (agent_watch_fd(a, &c->w, EPOLLIN | EPOLLRDHUP) < 0) {
			close(fd);
			c->w.fd = -1;
		}
	}
}

static void metrics_tick(struct agent *a, uint64_t now_ns, void *arg)
{
	struct metrics_server *srv = arg;
	for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++) {
		struct mclient *c = &srv->c[i];
		if (c->w.fd >= 0 && now_ns > c->deadline_ns) {
			srv->timeouts++;
			client_close(c);
		}
	}
}

int metrics_parse_addr(const char *s, void *ssv, unsigned *sslen)
{
	char host[128];
	const char *port;
	if (!*s || strlen(s) >= sizeof(host))
		return -EINVAL;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':')
			return -EINVAL;
		memcpy(host, s + 1, (size_t)(end - s - 1));
		host[end - s - 1] = 0;
		port = end + 2;
	} else if (strchr(s, ':')) {
		const char *colon = strrchr(s, ':');
		if (strchr(s, ':') != colon)
			return -EINVAL; /* an IPv6 address needs [ ] */
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = 0;
		port = colon + 1;
	} else {
		snprintf(host, sizeof(host), "127.0.0.1");
		port = s;
	}
	char *end;
	unsigned long p = strtoul(port, &end, 10);
	if (!*port || *end || !p || p > 65535 || !*host)
		return -EINVAL;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV }, *ai = NULL;
	if (getaddrinfo(host, port, &hints, &ai) || !ai)
		return -EINVAL;
	memcpy(ssv, ai->ai_addr, ai->ai_addrlen);
	*sslen = (unsigned)ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

int metrics_open(struct agent *a, const char *addr)
{
	struct sockaddr_storage ss;
	unsigned sl = 0;
	if (metrics_parse_addr(addr, &ss, &sl) < 0) {
		log_err("--metrics %s: not ADDR:PORT (a numeric address, [ADDR]:PORT for IPv6)", addr);
		return -EINVAL;
	}
	struct metrics_server *srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->a = a;
	snprintf(srv->listen, sizeof(srv->listen), "%s", addr);
	for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++) {
		srv->c[i].srv = srv;
		srv->c[i].w.fd = -1;
	}
	int one = 1, err = 0;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 16) < 0)
		err = -errno;
	srv->lw = (struct agent_watch){ .fd = fd, .on_event = on_listen, .arg = srv };
	if (!err && (err = agent_watch_fd(a, &srv->lw, EPOLLIN)) == 0)
		err = agent_add_tick(a, (struct agent_tick){ .run = metrics_tick, .arg = srv });
	if (err) {
		log_err("--metrics %s: %s", addr, strerror(-err));
		if (fd >= 0)
			close(fd);
		free(srv);
		return err;
	}
	a->metrics = srv;
	log_info("metrics on http://%s/metrics", addr);
	return 0;
}

void metrics_close(struct agent *a)
{
	struct metrics_server *srv = a->metrics;
	if (!srv)
		return;
	for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++)
		client_close(&srv->c[i]);
	agent_unwatch_fd(a, &srv->lw);
	close(srv->lw.fd);
	free(srv);
	a->metrics = NULL;
}

size_t metrics_stats_format(struct agent *a, char *buf, size_t len, size_t at)
{
	const struct metrics_server *srv = a->metrics;
	if (!srv)
		return at;
	char listen[sizeof(srv->listen)];
	text_token(listen, sizeof(listen), srv->listen);
	size_t clients = 0;
	for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++)
		clients += srv->c[i].w.fd >= 0;
	return text_add(buf, len, at, "metrics listen=%s scrapes=%llu rejected=%llu timeouts=%llu "
			"bad_requests=%llu clients=%zu\n", listen, (unsigned long long)srv->scrapes,
			(unsigned long long)srv->rejected, (unsigned long long)srv->timeouts,
			(unsigned long long)srv->bad_requests, clients);
}
