/*
 * The agent's command line and --config file: one table of options
 * (agent_opts: the fixed ones, then one row per stage of stage_table and
 * one per output of sink_table), parsed by common/opt.c; --help is written
 * from the same rows, so an option and its help cannot disagree. Adding an
 * option is one row here (a stage's or a sink's: its row in its own table).
 */
#include "agent/cli.h"
#include "agent/metrics.h"
#include "common/log.h"
#include "common/opt.h"
#include "common/version.h"
#include "http/records.h"
#include "transport/ctl.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Smallest --mss: the flow engine's FLOW_MIN_MSS (an IPv6 segment then still
 * carries 68 bytes); below it the flow engine would raise it silently. */
#define MSS_MIN 88
#define MSS_MIN_S "88"
#define CAP_WANT "a number from 1 to 100000000"

/* What the parser fills: the configuration, and what the checks after it need. */
struct agent_cli {
	struct agent_config cfg;
	int socket_given;
	/* the outputs of each kind so far came from a --config file (the command line replaces them) */
	unsigned char outputs_from_file[AGENT_MAX_SINK_KINDS];
};

/* --help's sections, in order */
enum { SEC_OUTPUTS = 1, SEC_RECORDS, SEC_DECRYPT, SEC_AGENT, SEC_STAGES, SEC_CAPS, SEC_DELIVERY, SEC_MISC,
       SEC_N };

static const char *const section_head[SEC_N] = {
	[SEC_OUTPUTS] = "outputs (at least one; docs/pipeline.md):",
	[SEC_RECORDS] = "HTTP records (with or without packets; docs/http.md):",
	[SEC_DECRYPT] = "tlsmirror decrypt (ciphertext and keys in, clear text out; docs/decrypt.md):",
	[SEC_AGENT] = "agent options:",
	[SEC_STAGES] = "stages (in this order; docs/pipeline.md):",
	[SEC_CAPS] = "memory caps (docs/agent.md \"Memory\"; over a cap: counted in tlsmirror stats, "
		     "logged once):",
	[SEC_DELIVERY] = "delivery (see tlsmirror(1), docs/delivery.md, docs/tunnel.md):",
	[SEC_MISC] = "",
};

#define CLI(field) offsetof(struct agent_cli, cfg.field), sizeof(((struct agent_cli *)0)->cfg.field)

/* ---- the custom parsers ---- */

static int p_config(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		    const char **why)
{
	return 0; /* read before parsing (config_expand) */
}

static int p_socket(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		    const char **why)
{
	struct agent_cli *cli = c;
	cli->cfg.socket_path = arg;
	cli->socket_given = 1;
	return 0;
}

static int p_metrics(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		     const char **why)
{
	struct sockaddr_storage ss;
	unsigned sl;
	if (metrics_parse_addr(arg, &ss, &sl) < 0) {
		*why = "ADDR:PORT with a numeric address ([ADDR]:PORT for IPv6), or PORT for 127.0.0.1";
		return -EINVAL;
	}
	((struct agent_cli *)c)->cfg.metrics_addr = arg;
	return 0;
}

static int p_access(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		    const char **why)
{
	int g = d->data != NULL; /* the --allow-group row has data */
	int err = access_add(&((struct agent_cli *)c)->cfg.access, arg, g, &ctx->shown);
	if (err == -ENOSPC) {
		ctx->shown = arg;
		*why = "too many entries";
	} else if (err < 0) {
		*why = g ? "no such group (a name or a GID)" : "no such user (a name or a UID)";
	}
	return err < 0 ? -EINVAL : 0;
}

static int p_listen(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		    const char **why)
{
	if (outputs_check_listen(arg, why) < 0)
		return -EINVAL;
	((struct agent_cli *)c)->cfg.listen_addr = arg;
	return 0;
}

/* aa:bb:cc:dd:ee:ff */
static int p_mac(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		 const char **why)
{
	struct sink_opts *o = &((struct agent_cli *)c)->cfg.sink;
	unsigned b[6];
	char tail;
	if (sscanf(arg, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5],
		   &tail) != 6) {
		*why = "six hex bytes like 02:00:00:00:00:01";
		return -EINVAL;
	}
	for (int i = 0; i < 6; i++)
		o->dst_mac[i] = (uint8_t)b[i];
	o->has_dst_mac = 1;
	return 0;
}

static int p_quiet(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		   const char **why)
{
	log_quiet = 1;
	return 0;
}

static int p_help(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		  const char **why)
{
	agent_usage(stdout);
	return OPT_STOP;
}

static int p_version(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		     const char **why)
{
	printf("tlsmirror %s\n", TLSMIRROR_VERSION);
	return OPT_STOP;
}

/* A stage's option (stage_table row in d->data). */
static int p_stage(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		   const char **why)
{
	const struct stage_def *s = d->data;
	if (s->check && s->check(arg, why) < 0)
		return -EINVAL;
	((struct agent_cli *)c)->cfg.stage_arg[s - stage_table] = arg;
	return 0;
}

/* An output's option (sink_table row in d->data). */
static int p_sink(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		  const char **why)
{
	struct agent_cli *cli = c;
	const struct sink_def *s = d->data;
	size_t i = (size_t)(s - sink_table);
	/* a once-only output: the command line replaces what a --config file gave */
	if (s->max == 1 && !*ctx->where && cli->outputs_from_file[i]) {
		cli->cfg.n_outputs[i] = 0;
		cli->outputs_from_file[i] = 0;
	}
	if (cli->cfg.n_outputs[i] >= s->max) {
		*why = s->max > 1 ? "given too many times" :
		       "given twice: one such output at most (see --help)";
		return -EINVAL;
	}
	if (s->check && s->check(arg, why) < 0)
		return -EINVAL;
	if (!cli->cfg.n_outputs[i])
		cli->outputs_from_file[i] = *ctx->where != 0;
	cli->cfg.outputs[i][cli->cfg.n_outputs[i]++] = arg;
	return 0;
}

/* A repeatable option: arg appended to v[*n] (at most max) once check (NULL: any) takes it. */
static int push_arg(const char **v, size_t *n, size_t max, const char *arg,
		    int (*check)(const char *arg, const char **why), const char **why)
{
	if (*n >= max) {
		*why = "given too many times";
		return -EINVAL;
	}
	if (check && check(arg, why) < 0)
		return -EINVAL;
	v[(*n)++] = arg;
	return 0;
}

static int check_url(const char *arg, const char **why)
{
	if (strncmp(arg, "http://", 7) && strncmp(arg, "https://", 8)) {
		*why = "a URL: http://HOST[:PORT][/PATH] or https://...";
		return -EINVAL;
	}
	return 0;
}

static int check_kv(const char *arg, const char **why)
{
	const char *eq = strchr(arg, '=');
	if (!eq || eq == arg) {
		*why = "KEY=VALUE, a librdkafka property (acks=all, security.protocol=ssl...)";
		return -EINVAL;
	}
	return 0;
}

/* --http-log FILE, --http-post URL, --kafka-conf KEY=VALUE (repeatable) */
static int p_http_log(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		      const char **why)
{
	struct agent_config *cfg = &((struct agent_cli *)c)->cfg;
	return push_arg(cfg->http_log, &cfg->n_http_log, AGENT_MAX_OUTPUTS, arg, outputs_check_file, why);
}

static int p_http_post(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		       const char **why)
{
	struct agent_config *cfg = &((struct agent_cli *)c)->cfg;
	return push_arg(cfg->http_post, &cfg->n_http_post, AGENT_MAX_OUTPUTS, arg, check_url, why);
}

static int p_kafka_conf(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
			const char **why)
{
	struct agent_config *cfg = &((struct agent_cli *)c)->cfg;
	return push_arg(cfg->kafka_conf, &cfg->n_kafka_conf, AGENT_MAX_KAFKA_CONF, arg, check_kv, why);
}

static int p_http_body_max(const struct opt_def *d, void *c, const char *arg,
			   struct opt_ctx *ctx, const char **why)
{
	struct agent_config *cfg = &((struct agent_cli *)c)->cfg;
	uint64_t v;
	(void)d;
	(void)ctx;
	if (opt_parse_size(arg, &v) < 0 || v > REC_MAX_BODY_MAX) {
		*why = "a size from 0 (headers only) to 256K, like 64K";
		return -EINVAL;
	}
	cfg->http_body_max = v;
	cfg->http_body_max_set = 1;
	return 0;
}

/* tlsmirror decrypt: -r FILE, --keys FILE (repeatable), --key-wait TIME */
static int p_read(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		  const char **why)
{
	struct agent_config *cfg = &((struct agent_cli *)c)->cfg;
	return push_arg(cfg->dec_read, &cfg->n_dec_read, AGENT_MAX_DEC_FILES, arg, NULL, why);
}

static int p_keys(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		  const char **why)
{
	struct agent_config *cfg = &((struct agent_cli *)c)->cfg;
	return push_arg(cfg->dec_keys, &cfg->n_dec_keys, AGENT_MAX_OUTPUTS, arg, NULL, why);
}

/* N, Ns, Nms or Nm: a time to milliseconds (at most a day) */
static int p_key_wait(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		      const char **why)
{
	struct agent_config *cfg = &((struct agent_cli *)c)->cfg;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(arg, &end, 10);
	uint64_t mul = !strcmp(end, "ms") ? 1 : (!*end || !strcmp(end, "s")) ? 1000 :
		       !strcmp(end, "m") ? 60000 : 0;
	if (errno || end == arg || *arg == '-' || !mul || v > 86400000ULL / mul) {
		*why = "a time like 5s, 500ms or 2m (at most a day)";
		return -EINVAL;
	}
	cfg->dec_key_wait_ms = v * mul;
	cfg->dec_key_wait_set = 1;
	return 0;
}

/* ---- the table ---- */

#define NUM(name, sh, mv, help, sec, field, lo, hi, want) \
	{ name, sh, mv, help, sec, OPT_UINT, CLI(field), lo, hi, NULL, want, NULL, NULL }
#define SIZE(name, mv, help, sec, field, lo, hi, want) \
	{ name, 0, mv, help, sec, OPT_SIZE, CLI(field), lo, hi, NULL, want, NULL, NULL }
#define STR(name, sh, mv, help, sec, field) \
	{ name, sh, mv, help, sec, OPT_STRING, CLI(field), 0, 0, NULL, NULL, NULL, NULL }
#define CHOICE(name, mv, help, sec, field, choices, want) \
	{ name, 0, mv, help, sec, OPT_CHOICE, CLI(field), 0, 0, choices, want, NULL, NULL }
#define FLAG(name, sh, help, sec, field) \
	{ name, sh, NULL, help, sec, OPT_FLAG, CLI(field), 0, 0, NULL, NULL, NULL, NULL }
#define CUSTOM(name, sh, mv, help, sec, fn, data) \
	{ name, sh, mv, help, sec, OPT_CUSTOM, 0, 0, 0, 0, NULL, NULL, fn, data }
#define CAP(name, help, field) NUM(name, 0, "N", help, SEC_CAPS, field, 1, 100000000, CAP_WANT)

static const struct opt_def fixed_opts[] = {
	CUSTOM("config", 0, "FILE", "read options from FILE: one long option a line, without\n"
	       "its --, then its value (docs/operations.md)", SEC_AGENT, p_config, NULL),
	CUSTOM("socket", 0, "PATH", "control socket (default $TLSMIRROR_SOCKET or "
	       CTL_DEFAULT_SOCKET ")", SEC_AGENT, p_socket, NULL),
	CUSTOM("metrics", 0, "ADDR:PORT", "serve the counters for Prometheus on http://ADDR:PORT/metrics",
	       SEC_AGENT, p_metrics, NULL),
	NUM("mss", 0, "N", "TCP payload per packet, " MSS_MIN_S "..65000 (default 1460; IPv6 uses N-20)",
	    SEC_AGENT, mss, MSS_MIN, 65000, "a number from " MSS_MIN_S " (the minimum: "
	    "IPv6 segments carry N-20) to 65000"),
	SIZE("rotate-size", "SIZE", "start a new file before SIZE bytes (K, M, G suffixes)", SEC_AGENT,
	     sink.rotate_bytes, 4096, UINT64_MAX, "a size of at least 4K, like 100M"),
	NUM("rotate-seconds", 0, "N", "start a new file every N seconds", SEC_AGENT,
	    sink.rotate_seconds, 1, 10u * 365 * 86400, "a positive number of seconds"),
	NUM("rotate-count", 0, "N", "keep N files and reuse them in turn (FILE, FILE.1 .. FILE.N-1)",
	    SEC_AGENT, sink.rotate_count, 1, 1000000, "a number of files from 1 to 1000000"),
	NUM("snaplen", 0, "N", "pcap snaplen, 128..262144 (default 262144)", SEC_AGENT, sink.snaplen,
	    128, 262144, NULL),
	CUSTOM("allow-user", 0, "U[,U]", "let these users (names or UIDs) attach besides root and\n"
	       "group tlsmirror (repeatable)", SEC_AGENT, p_access, NULL),
	CUSTOM("allow-group", 0, "G[,G]", "the same for groups (names or GIDs; repeatable)", SEC_AGENT,
	       p_access, "group"),
	CAP("max-conns", "open connections mirrored at once, in total (default 100000)", max_conns),
	CAP("max-conns-per-proc", "open connections per attached process, at -C per agent\n(default 10000)",
	    max_conns_per_proc),
	CAP("max-procs", "attached processes (default 1024)", max_procs),
	SIZE("max-ring-size", "SIZE", "largest ring accepted from a process, 64K..1G (default 1G)",
	     SEC_CAPS, max_ring_size, RING_MIN_DATA, RING_MAX_DATA, "a size from 64K to 1G"),
	CAP("max-h2-conns", "connections converted by --h2-to-h1 at once (default 128)", max_h2_conns),
	CAP("max-h2-streams", "HTTP/2 streams open at once, in total (default 16384)", max_h2_streams),
	CAP("max-peers", "agents connected to a collector (-C) at once (default 256)", max_peers),
	CAP("max-http-conns", "connections followed for --http-log at once (default 10000)",
	    max_http_conns),
	STR("interface", 'I', "IFACE", "the host's interface: its addresses for the synthesized frames",
	    SEC_DELIVERY, sink.src_iface),
	CUSTOM("dst-mac", 0, "MAC", "destination MAC of replayed frames", SEC_DELIVERY, p_mac, NULL),
	NUM("vni", 0, "N", "the VXLAN network identifier of --vxlan (default 0)", SEC_DELIVERY,
	    sink.vni, 0, 0xffffff, NULL),
	FLAG("collector", 'C', "collector: accept agents, their connections into the outputs",
	     SEC_DELIVERY, collector),
	CUSTOM("listen", 'l', "ADDR:PORT", "where the collector listens (default 127.0.0.1:7443)",
	       SEC_DELIVERY, p_listen, NULL),
	STR("cert", 0, "FILE", "certificate for the tunnel (tlsmirror pki)", SEC_DELIVERY, sink.cert),
	STR("key", 0, "FILE", "its private key", SEC_DELIVERY, sink.key),
	STR("ca", 0, "FILE", "the CA that signs the peers' certificates", SEC_DELIVERY, sink.ca),
	CHOICE("compress", "zstd|lz4", "compress the tunnel (none: do not)", SEC_DELIVERY,
	       sink.compress, "zstd|lz4|none", "zstd, lz4 or none"),
	SIZE("queue-size", "SIZE", "bound of each output's queue, at least 1M (default 64M)",
	     SEC_DELIVERY, sink.queue_bytes, 1u << 20, UINT64_MAX, "a size of at least 1M, like 64M"),
	CHOICE("tag-agents", "vlan|vni", "mark each agent's packets with a VLAN id (or VNI) on the\n"
	       "collector", SEC_DELIVERY, tag_agents, "vlan|vni", "vlan or vni"),
	FLAG("insecure-plaintext-tunnel", 0, "no TLS on the tunnel (testing only)", SEC_DELIVERY,
	     sink.insecure_plaintext),
	STR("keylog", 0, "FILE", "append the TLS secrets the capture libraries see as an NSS key\n"
	    "log (mode 0600; keys decrypt the traffic: docs/capture.md); at -C: those agents send",
	    SEC_OUTPUTS, keylog),
	FLAG("send-keys", 0, "send those secrets to the collector too (-t, over its TLS only;\n"
	     "for tlsmirror decrypt -C there)", SEC_DELIVERY, send_keys),
	FLAG("send-keys-only", 0, "the same, and no connections: the collector decrypts the\n"
	     "ciphertext it captures itself", SEC_DELIVERY, sink.keys_only),
	CUSTOM("http-log", 0, "FILE", "write each HTTP exchange as a JSON line ('-': stdout;\n"
	       "repeatable; docs/http.md)", SEC_RECORDS, p_http_log, NULL),
	CUSTOM("http-body-max", 0, "SIZE", "body bytes kept per direction, 0..256K (default 64K)",
	       SEC_RECORDS, p_http_body_max, NULL),
	CHOICE("http-format", "tlsmirror|akto", "the records' fields: ours (default) or Akto's",
	       SEC_RECORDS, http_format, "tlsmirror|akto", "tlsmirror or akto"),
	STR("http-headers-only", 0, "TYPE[,..]", "content types whose bodies are never kept\n"
	    "(prefixes: image/,application/x-www-form-urlencoded)", SEC_RECORDS, http_headers_only),
	CUSTOM("http-post", 0, "URL", "POST the records in batches to URL (http:// or https://,\n"
	       "verified; repeatable)", SEC_RECORDS, p_http_post, NULL),
	STR("http-post-ca", 0, "FILE", "the CAs that sign --http-post's server (default: the system's)",
	    SEC_RECORDS, http_post_ca),
	STR("kafka", 0, "BROKERS", "produce the records to Kafka (host:port[,host:port])", SEC_RECORDS,
	    kafka),
	STR("kafka-topic", 0, "TOPIC", "the topic of --kafka", SEC_RECORDS, kafka_topic),
	CUSTOM("kafka-conf", 0, "KEY=VALUE", "a librdkafka property for --kafka (repeatable)",
	       SEC_RECORDS, p_kafka_conf, NULL),
	CUSTOM("read", 'r', "FILE", "read ciphertext from a pcap or pcapng file (repeatable: in\n"
	       "order; then exit)", SEC_DECRYPT, p_read, NULL),
	STR("input-interface", 'i', "IFACE", "capture ciphertext live from IFACE (libpcap)", SEC_DECRYPT,
	    dec_iface),
	STR("filter", 0, "BPF", "only the packets this capture filter takes (with -i)", SEC_DECRYPT,
	    dec_filter),
	CUSTOM("keys", 0, "FILE", "an NSS key log (SSLKEYLOGFILE, --keylog): followed as it grows\n"
	       "(repeatable)", SEC_DECRYPT, p_keys, NULL),
	STR("rsa-key", 0, "FILE", "a server's RSA private key (PEM): opens TLS 1.2 RSA key exchange\n"
	    "without a key log", SEC_DECRYPT, dec_rsa_key),
	CUSTOM("key-wait", 0, "TIME", "how long ciphertext waits for its keys (default 5s)",
	       SEC_DECRYPT, p_key_wait, NULL),
	CAP("max-keys", "client randoms whose keys are kept by decrypt (default 65536)", max_keys),
	CUSTOM("quiet", 'q', NULL, "log errors only", SEC_MISC, p_quiet, NULL),
	CUSTOM("help", 'h', NULL, "this text", SEC_MISC, p_help, NULL),
	CUSTOM("version", 'V', NULL, "print the version", SEC_MISC, p_version, NULL),
};

#define N_FIXED (sizeof(fixed_opts) / sizeof(fixed_opts[0]))
static struct opt_def all_opts[AGENT_MAX_SINK_KINDS + N_FIXED + PIPELINE_MAX_STAGES];
static size_t n_all;

const struct opt_def *agent_opts(size_t *n)
{
	if (!n_all) {
		for (size_t i = 0; i < sink_table_len; i++) {
			const struct sink_def *s = &sink_table[i];
			all_opts[n_all++] = (struct opt_def)CUSTOM(s->option, s->short_opt, s->metavar,
								   s->help, SEC_OUTPUTS, p_sink, s);
		}
		memcpy(all_opts + n_all, fixed_opts, sizeof(fixed_opts));
		n_all += N_FIXED;
		for (size_t i = 0; i < stage_table_len; i++) {
			const struct stage_def *s = &stage_table[i];
			if (s->option)
				all_opts[n_all++] = (struct opt_def)CUSTOM(s->option, 0, s->metavar, s->help,
									   SEC_STAGES, p_stage, s);
		}
	}
	*n = n_all;
	return all_opts;
}

void agent_usage(FILE *f)
{
	static char buf[16384];
	size_t n, at = 0;
	const struct opt_def *rows = agent_opts(&n);
	for (unsigned sec = SEC_OUTPUTS; sec < SEC_N; sec++) {
		at = text_add(buf, sizeof(buf), at, "\n%s%s", section_head[sec], *section_head[sec] ? "\n" : "");
		at = opt_help(rows, n, sec, buf, sizeof(buf), at);
	}
	fprintf(f,
"usage: tlsmirror [options] OUTPUT...       run the agent (or with -C the collector);\n"
"                                           OUTPUT: see outputs below\n"
"       tlsmirror stats [-C] [--json] [--socket PATH]  show the running agent's\n"
"                                           (-C: collector's) counters\n"
"       tlsmirror enable|disable UNIT       preload the capture library into a systemd\n"
"                                           service (a drop-in), or stop doing so\n"
"       tlsmirror status [--socket PATH]    enabled units and their attached processes\n"
"       tlsmirror run [--socket PATH] -- CMD [ARGS...]\n"
"                                           start CMD with the capture library\n"
"       tlsmirror attach [--socket PATH] PID...   load the capture library into running\n"
"                                           processes (ptrace; docs/capture.md)\n"
"       tlsmirror scan [--socket PATH] [PID...]   list each process's TLS stacks and\n"
"                                           whether they are mirrored\n"
"       tlsmirror repair [--check] FILE...  cut a pcap/pcapng file to its last whole\n"
"                                           record (an agent killed while writing)\n"
"       tlsmirror decrypt -r FILE|-i IFACE --keys FILE OUTPUT...\n"
"                                           decrypt captured TLS with its key log\n"
"       tlsmirror pki init DIR | pki issue DIR NAME --agent|--collector ...\n"
"                                           make a CA and the tunnel's certificates\n"
"%s"
"\n"
"Files after the first are FILE.1, FILE.2, ...; a FILE with '%%' is an strftime pattern.\n"
"See tlsmirror(1).\n", buf);
}

/* ---- --config FILE ---- */

/* Where each element of the agent's argv came from: "FILE:LINE: " for the
 * lines of a --config file, NULL for the command line (config_expand). */
static const char **arg_origin;
static char **arg_vec;             /* the expanded argv (config_expand), freed by agent_cli_free */
static int arg_count;

/* The file's elements are the ones with an origin: they and the vectors were malloc'ed. */
static void config_free_vec(char **v, const char **o, int n)
{
	for (int i = 0; v && o && i < n; i++)
		if (o[i]) {
			free(v[i]);
			free((char *)o[i]);
		}
	free(v);
	free((void *)o);
}

void agent_cli_free(void)
{
	config_free_vec(arg_vec, arg_origin, arg_count);
	arg_vec = NULL;
	arg_origin = NULL;
	arg_count = 0;
}

#define CONFIG_MAX_LINES 1000
#define CONFIG_LINE_MAX 4096

/* Appends FILE's options to *out (elements "--name=value" or "--name"). */
static int config_read(const char *file, char ***out, const char ***org, int *n, FILE *err)
{
	FILE *f = fopen(file, "r");
	if (!f) {
		fprintf(err, "tlsmirror: --config %s: %s\n", file, strerror(errno));
		return -1;
	}
	char line[CONFIG_LINE_MAX + 2];
	int lineno = 0, rc = 0;
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		size_t l = strlen(line);
		char pos[320];
		snprintf(pos, sizeof(pos), "%s:%d: ", file, lineno);
		if (l > CONFIG_LINE_MAX || lineno > CONFIG_MAX_LINES) {
			fprintf(err, "tlsmirror: %s%s\n", pos, lineno > CONFIG_MAX_LINES ?
				"more than 1000 lines" : "line longer than 4096 bytes");
			rc = -1;
			break;
		}
		while (l && (line[l - 1] == '\n' || line[l - 1] == '\r' || line[l - 1] == ' ' ||
			     line[l - 1] == '\t'))
			line[--l] = 0;
		char *p = line + strspn(line, " \t");
		if (!*p || *p == '#')
			continue;
		if (!strncmp(p, "--", 2))
			p += 2;
		size_t nl = strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789-");
		char *val = p + nl;
		if (!nl || *p < 'a' || *p > 'z' || (*val && *val != ' ' && *val != '\t' && *val != '=')) {
			fprintf(err, "tlsmirror: %snot an option: '%s' (a long option without its "
				"--, then its value: 'write /var/lib/tlsmirror/mirror.pcap')\n", pos, p);
			rc = -1;
			break;
		}
		if (*val)
			*val++ = 0;
		val += strspn(val, " \t=");
		if (!strcmp(p, "config")) {
			fprintf(err, "tlsmirror: %sa configuration file cannot include another\n", pos);
			rc = -1;
			break;
		}
		char *opt = malloc(strlen(p) + strlen(val) + 4), *o = strdup(pos);
		char **nv = realloc(*out, sizeof(char *) * (size_t)(*n + 2));
		const char **no = nv ? realloc(*org, sizeof(char *) * (size_t)(*n + 2)) : NULL;
		if (nv)
			*out = nv;
		if (no)
			*org = no;
		if (!opt || !o || !nv || !no) {
			free(opt);
			free(o);
			rc = -1;
			break;
		}
		sprintf(opt, "--%s%s%s", p, *val ? "=" : "", val);
		(*out)[*n] = opt;
		(*org)[(*n)++] = o;
	}
	fclose(f);
	return rc;
}

/* --config FILE (or --config=FILE), anywhere on the command line: FILE's
 * options come first, then the command line's (which thus win for options
 * given once). Returns 0 or 2 (error shown). */
static int config_expand(int *argc, char ***argv, FILE *err)
{
	char **nv = malloc(sizeof(char *) * 2);
	const char **no = malloc(sizeof(char *) * 2);
	int n = 1, any = 0;
	if (!nv || !no)
		return 2;
	nv[0] = (*argv)[0];
	no[0] = NULL;
	for (int i = 1; i < *argc; i++) {
		const char *a = (*argv)[i], *file = NULL;
		if (!strcmp(a, "--"))
			break;
		if (!strcmp(a, "--config")) {
			if (i + 1 >= *argc) {
				fprintf(err, "tlsmirror: option --config needs a value\n");
				config_free_vec(nv, no, n);
				return 2;
			}
			file = (*argv)[++i];
		} else if (!strncmp(a, "--config=", 9)) {
			file = a + 9;
		}
		if (file) {
			any = 1;
			if (config_read(file, &nv, &no, &n, err) < 0) {
				config_free_vec(nv, no, n);
				return 2;
			}
		}
	}
	if (!any) {
		free(nv);
		free(no);
		return 0;
	}
	for (int i = 1; i < *argc; i++) {
		const char *a = (*argv)[i];
		if (!strcmp(a, "--config")) {
			i++;
			continue;
		}
		if (!strncmp(a, "--config=", 9))
			continue;
		char **v2 = realloc(nv, sizeof(char *) * (size_t)(n + 2));
		const char **o2 = v2 ? realloc(no, sizeof(char *) * (size_t)(n + 2)) : NULL;
		if (v2)
			nv = v2;
		if (!o2) {
			config_free_vec(nv, no, n);
			return 2;
		}
		no = o2;
		nv[n] = (*argv)[i];
		no[n++] = NULL;
	}
	nv[n] = NULL;
	*argc = n;
	*argv = nv;
	arg_vec = nv;
	arg_origin = no;
	arg_count = n;
	return 0;
}

int agent_cli_parse(int argc, char **argv, struct agent_config *out, FILE *err)
{
	static struct agent_cli c;
	struct agent_cli *cli = &c;
	struct agent_config *cfg = &cli->cfg;
	memset(cli, 0, sizeof(*cli));
	*cfg = *out;
	int rc = config_expand(&argc, &argv, err);
	if (rc)
		return rc;
	size_t n;
	const struct opt_def *rows = agent_opts(&n);
	rc = opt_parse(rows, n, argc, argv, arg_origin, cli, "tlsmirror", err);
	if (rc >= 0)
		return rc;
	*out = *cfg;
	cfg = out;
	if (cfg->sink.rotate_count && !cfg->sink.rotate_bytes && !cfg->sink.rotate_seconds) {
		fprintf(err, "tlsmirror: --rotate-count needs --rotate-size or --rotate-seconds\n");
		return 2;
	}
	size_t n_outputs = 0;
	for (size_t i = 0; i < sink_table_len; i++)
		n_outputs += cfg->n_outputs[i];
	/* the files: -w and --pcapng */
	const char *paths[2] = {
		cfg->n_outputs[SINK_ROW_PCAP] ? cfg->outputs[SINK_ROW_PCAP][0] : NULL,
		cfg->n_outputs[SINK_ROW_PCAPNG] ? cfg->outputs[SINK_ROW_PCAPNG][0] : NULL };
	int to_stdout = 0;
	for (size_t i = 0; i < 2; i++) {
		if (cfg->sink.rotate_count && paths[i] && strchr(paths[i], '%')) {
			fprintf(err, "tlsmirror: --rotate-count needs a plain file name, not a '%%' pattern\n");
			return 2;
		}
		to_stdout |= paths[i] && !strcmp(paths[i], "-");
	}
	if (paths[0] && paths[1] && !strcmp(paths[0], paths[1])) {
		fprintf(err, "tlsmirror: -w and --pcapng both write to %s: give each its own\n",
			strcmp(paths[0], "-") ? paths[0] : "stdout");
		return 2;
	}
	if (cfg->decrypt) {
		if (!cfg->n_dec_read && !cfg->dec_iface) {
			fprintf(err, "tlsmirror decrypt: nothing to read: give -r FILE (a pcap or pcapng "
				"capture of the ciphertext) or -i IFACE\n");
			return 2;
		}
		if (cfg->keylog || cfg->send_keys) {
			fprintf(err, "tlsmirror decrypt: %s is an agent's option, not decrypt's (with -C, "
				"decrypt takes the keys agents send with --send-keys itself)\n",
				cfg->keylog ? "--keylog" : "--send-keys");
			return 2;
		}
		if (!cli->socket_given && !getenv("TLSMIRROR_SOCKET"))
			cfg->socket_path = NULL; /* no control socket unless asked for one */
	} else if (cfg->n_dec_read || cfg->dec_iface || cfg->dec_filter || cfg->n_dec_keys ||
		   cfg->dec_key_wait_set || cfg->max_keys || cfg->dec_rsa_key) {
		fprintf(err, "tlsmirror: -r, -i, --filter, --keys, --rsa-key, --key-wait and --max-keys are "
			"options of tlsmirror decrypt (tlsmirror decrypt -r FILE --keys FILE -w OUT)\n");
		return 2;
	}
	if (cfg->sink.keys_only)
		cfg->send_keys = 1;
	if (cfg->send_keys && (!cfg->n_outputs[SINK_ROW_TUNNEL] || cfg->sink.insecure_plaintext)) {
		fprintf(err, "tlsmirror: --send-keys sends the secrets to the collector of -t "
			"HOST:PORT, over its mutually authenticated TLS only: %s\n",
			cfg->sink.insecure_plaintext ? "not with --insecure-plaintext-tunnel" : "add -t");
		return 2;
	}
	if (cfg->dec_filter && !cfg->dec_iface) {
		fprintf(err, "tlsmirror decrypt: --filter is for -i IFACE\n");
		return 2;
	}
	if (!n_outputs && !records_wanted(cfg) && !cfg->keylog) {
		fprintf(err, "tlsmirror: nothing to do: give an output: -w FILE (or -w - for "
			"stdout), --pcapng FILE, -o IFACE, -t HOST:PORT, --vxlan HOST, --pcap-over-ip PORT, "
			"--http-log FILE (--http-post URL, --kafka BROKERS) or --keylog FILE\n");
		return 2;
	}
	for (size_t i = 0; i < cfg->n_http_log; i++) {
		if (!strcmp(cfg->http_log[i], "/dev/null"))
			continue; /* as often as one likes */
		int dup = !strcmp(cfg->http_log[i], "-") ? to_stdout : 0;
		for (size_t k = 0; k < 2 && !dup; k++)
			dup = paths[k] && !strcmp(paths[k], cfg->http_log[i]);
		for (size_t k = 0; k < i && !dup; k++)
			dup = !strcmp(cfg->http_log[k], cfg->http_log[i]);
		if (dup) {
			fprintf(err, "tlsmirror: --http-log %s: written by another output already: "
				"give each its own\n", strcmp(cfg->http_log[i], "-") ? cfg->http_log[i] :
				"stdout");
			return 2;
		}
	}
	if ((cfg->http_format || cfg->http_body_max_set || cfg->http_headers_only ||
	     cfg->max_http_conns) && !records_wanted(cfg)) {
		fprintf(err, "tlsmirror: --http-format, --http-body-max, --http-headers-only and "
			"--max-http-conns shape the HTTP records: add --http-log FILE, --http-post URL "
			"or --kafka BROKERS\n");
		return 2;
	}
	if (!cfg->kafka != !cfg->kafka_topic || (cfg->n_kafka_conf && !cfg->kafka)) {
		fprintf(err, "tlsmirror: --kafka BROKERS and --kafka-topic TOPIC go together "
			"(--kafka-conf with them)\n");
		return 2;
	}
	if (cfg->http_post_ca && !cfg->n_http_post) {
		fprintf(err, "tlsmirror: --http-post-ca is for --http-post URL: add it\n");
		return 2;
	}
	/* A collector has a default socket of its own (stats, and local capture
	 * if applications are pointed at it): an agent on the same host keeps
	 * the usual one. */
	if (cfg->collector && !cfg->decrypt && !cli->socket_given && !getenv("TLSMIRROR_SOCKET"))
		cfg->socket_path = CTL_COLLECTOR_SOCKET;
	if (cfg->listen_addr && !cfg->collector) {
		fprintf(err, "tlsmirror: -l ADDR:PORT is where a collector listens: add -C\n");
		return 2;
	}
	if (to_stdout && isatty(STDOUT_FILENO)) {
		fprintf(err, "tlsmirror: refusing to write pcap to a terminal: "
			"pipe it (| tshark -r -) or give -w FILE\n");
		return 2;
	}
	return -1;
}

