/* tlsmirror command line: the agent, `tlsmirror stats` and `tlsmirror run`. */
#include "agent/agent.h"
#include "agent/metrics.h"
#include "agent/units.h"
#include "agent/pki.h"
#include "agent/reach.h"
#include "common/log.h"
#include "common/version.h"
#include "transport/ctl.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Smallest --mss: the flow engine's FLOW_MIN_MSS (an IPv6 segment then still
 * carries 68 bytes); below it the flow engine would raise it silently. */
#define MSS_MIN 88
#define MSS_MIN_S "88"

/* One line of the help for an option of a table row. */
static size_t help_line(char *buf, size_t len, size_t at, int short_opt, const char *option,
			const char *metavar, const char *help)
{
	char opt[64];
	if (at >= len)
		return at;
	snprintf(opt, sizeof(opt), "--%s%s%s", option, metavar ? " " : "", metavar ? metavar : "");
	char lead[8] = "      ";
	if (short_opt)
		snprintf(lead, sizeof(lead), "  -%c, ", short_opt);
	/* the help in column 27, on a line of its own after a long option */
	int n = strlen(opt) < 20 ? snprintf(buf + at, len - at, "%s%-20s%s\n", lead, opt, help) :
		snprintf(buf + at, len - at, "%s%s\n%26s%s\n", lead, opt, "", help);
	return n > 0 ? at + (size_t)n : at;
}

/* The stages' lines of the help, from stage_table. */
static const char *stage_help(void)
{
	static char buf[2048];
	size_t at = 0;
	for (size_t i = 0; i < stage_table_len; i++) {
		const struct stage_def *d = &stage_table[i];
		if (d->option)
			at = help_line(buf, sizeof(buf), at, 0, d->option, d->metavar, d->help);
	}
	return buf;
}

/* The outputs' lines of the help, from sink_table. */
static const char *sink_help(void)
{
	static char buf[2048];
	size_t at = 0;
	for (size_t i = 0; i < sink_table_len; i++) {
		const struct sink_def *d = &sink_table[i];
		at = help_line(buf, sizeof(buf), at, d->short_opt, d->option, d->metavar, d->help);
	}
	return buf;
}

static void usage(FILE *f)
{
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
"       tlsmirror pki init DIR | pki issue DIR NAME --agent|--collector ...\n"
"                                           make a CA and the tunnel's certificates\n"
"\n"
"outputs (at least one; docs/pipeline.md):\n"
"%s"
"\n"
"agent options:\n"
"      --config FILE       read options from FILE: one long option a line, without\n"
"                          its --, then its value (docs/operations.md)\n"
"      --socket PATH       control socket (default $TLSMIRROR_SOCKET or %s)\n"
"      --metrics ADDR:PORT serve the counters for Prometheus on http://ADDR:PORT/metrics\n"
"      --mss N             TCP payload per packet, 88..65000 (default 1460; IPv6 uses N-20)\n"
"      --rotate-size SIZE  start a new file before SIZE bytes (K, M, G suffixes)\n"
"      --rotate-seconds N  start a new file every N seconds\n"
"      --rotate-count N    keep N files and reuse them in turn (FILE, FILE.1 .. FILE.N-1)\n"
"      --snaplen N         pcap snaplen (default 262144)\n"
"      --allow-user U[,U]  let these users (names or UIDs) attach besides root and group\n"
"                          tlsmirror (repeatable); --allow-group G[,G] the same for groups\n"
"\n"
"stages (in this order; docs/pipeline.md):\n"
"%s"
"\n"
"memory caps (docs/agent.md \"Memory\"; over a cap: counted in tlsmirror stats, logged once):\n"
"      --max-conns N       open connections mirrored at once, in total (default 100000)\n"
"      --max-conns-per-proc N  ... per attached process, at -C per agent (default 10000)\n"
"      --max-procs N       attached processes (default 1024)\n"
"      --max-ring-size SIZE  largest ring accepted from a process (default 1G)\n"
"      --max-h2-conns N    connections converted by --h2-to-h1 at once (default 128)\n"
"      --max-h2-streams N  HTTP/2 streams open at once, in total (default 16384)\n"
"      --max-peers N       agents connected to a collector (-C) at once (default 256)\n"
"\n"
"delivery (see tlsmirror(1), docs/delivery.md, docs/tunnel.md):\n"
"  -I, --interface IFACE   the host's interface: its addresses for the synthesized frames\n"
"      --dst-mac MAC       destination MAC of replayed frames\n"
"  -C [-l ADDR:PORT]       collector: accept agents, their connections into the outputs\n"
"      --cert/--key/--ca F certificate, key and CA for the tunnel (tlsmirror pki)\n"
"      --compress zstd|lz4 compress the tunnel; --queue-size SIZE bounds each output\n"
"      --tag-agents vlan   mark each agent's packets with a VLAN id on the collector\n"
"      --insecure-plaintext-tunnel  no TLS on the tunnel (testing only)\n"
"\n"
"  -q, --quiet             log errors only\n"
"  -h, --help              this text\n"
"  -V, --version           print the version\n"
"\n"
"Files after the first are FILE.1, FILE.2, ...; a FILE with '%%' is an strftime pattern.\n"
"See tlsmirror(1).\n", sink_help(), CTL_DEFAULT_SOCKET, stage_help());
}

static const char *default_socket(void)
{
	const char *s = getenv("TLSMIRROR_SOCKET");
	return s && *s ? s : CTL_DEFAULT_SOCKET;
}

/* Parses a byte size with an optional K/M/G suffix. Returns 0 or -EINVAL. */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -EINVAL;
	int shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: break;
	}
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || (shift && v > (ULLONG_MAX >> shift)))
		return -EINVAL;
	*out = v << shift;
	return 0;
}

static int parse_uint(const char *s, unsigned long long lo, unsigned long long hi,
		      unsigned long long *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Where each element of the agent's argv came from: "FILE:LINE: " for the
 * lines of a --config file, NULL for the command line (config_expand). */
static const char **arg_origin;
static char **arg_vec;             /* the expanded argv (config_expand), freed by config_free */
static int arg_count, cur_arg = -1;
/* the outputs of each kind so far came from a --config file (the command line replaces them) */
static unsigned char cfg_outputs_from_file[AGENT_MAX_SINK_KINDS];

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

static void config_free(void)
{
	config_free_vec(arg_vec, arg_origin, arg_count);
	arg_vec = NULL;
	arg_origin = NULL;
	arg_count = 0;
}

static const char *where(void)
{
	return arg_origin && cur_arg >= 0 && cur_arg < arg_count && arg_origin[cur_arg] ?
	       arg_origin[cur_arg] : "";
}

static int bad_arg(const char *opt, const char *val, const char *want)
{
	fprintf(stderr, "tlsmirror: %sinvalid %s '%s': %s\n", where(), opt, val, want);
	return 2;
}

#define CONFIG_MAX_LINES 1000
#define CONFIG_LINE_MAX 4096

/* Appends FILE's options to *out (elements "--name=value" or "--name"). */
static int config_read(const char *file, char ***out, const char ***org, int *n)
{
	FILE *f = fopen(file, "r");
	if (!f) {
		fprintf(stderr, "tlsmirror: --config %s: %s\n", file, strerror(errno));
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
			fprintf(stderr, "tlsmirror: %s%s\n", pos, lineno > CONFIG_MAX_LINES ?
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
			fprintf(stderr, "tlsmirror: %snot an option: '%s' (a long option without its "
				"--, then its value: 'write /var/lib/tlsmirror/mirror.pcap')\n", pos, p);
			rc = -1;
			break;
		}
		if (*val)
			*val++ = 0;
		val += strspn(val, " \t=");
		if (!strcmp(p, "config")) {
			fprintf(stderr, "tlsmirror: %sa configuration file cannot include another\n", pos);
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
static int config_expand(int *argc, char ***argv)
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
				fprintf(stderr, "tlsmirror: option --config needs a value\n");
				config_free_vec(nv, no, n);
				return 2;
			}
			file = (*argv)[++i];
		} else if (!strncmp(a, "--config=", 9)) {
			file = a + 9;
		}
		if (file) {
			any = 1;
			if (config_read(file, &nv, &no, &n) < 0) {
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

#define CAP_WANT "a number from 1 to 100000000"

/* A cap on a count (--max-conns...). Returns 0 or -EINVAL. */
static int parse_cap(const char *s, size_t *out)
{
	unsigned long long v;
	if (parse_uint(s, 1, 100000000, &v))
		return -EINVAL;
	*out = (size_t)v;
	return 0;
}

/* Parses aa:bb:cc:dd:ee:ff. Returns 0 or -EINVAL. */
static int parse_mac(const char *s, uint8_t mac[6])
{
	unsigned b[6];
	char tail;
	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5],
		   &tail) != 6)
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	return 0;
}

/* Parses the agent's options into cfg-> Returns -1 to go on, or the exit
 * status to leave with (0 after --help/--version, 2 for a bad command line). */
static int parse_agent(int argc, char **argv, struct agent_config *cfg)
{
	enum { O_SOCKET = 256, O_MSS, O_RSIZE, O_RSECS, O_RCOUNT, O_SNAPLEN,
	       O_VXLAN, O_VNI, O_DSTMAC, O_POIP, O_CERT, O_KEY, O_CA, O_PLAIN, O_COMPRESS,
	       O_QUEUE, O_TAG, O_MAXC, O_MAXCP, O_MAXP, O_MAXRING, O_MAXH2C, O_MAXH2S, O_MAXPEERS,
	       O_AUSER, O_AGROUP, O_METRICS, O_CONFIG, O_STAGE, O_SINK = O_STAGE + PIPELINE_MAX_STAGES };
	static const struct option fixed[] = {
		{ "socket", required_argument, NULL, O_SOCKET },
		{ "mss", required_argument, NULL, O_MSS },
		{ "rotate-size", required_argument, NULL, O_RSIZE },
		{ "rotate-seconds", required_argument, NULL, O_RSECS },
		{ "rotate-count", required_argument, NULL, O_RCOUNT },
		{ "snaplen", required_argument, NULL, O_SNAPLEN },
		{ "interface", required_argument, NULL, 'I' },
		{ "collector", no_argument, NULL, 'C' },
		{ "listen", required_argument, NULL, 'l' },
		{ "vni", required_argument, NULL, O_VNI },
		{ "dst-mac", required_argument, NULL, O_DSTMAC },
		{ "cert", required_argument, NULL, O_CERT },
		{ "key", required_argument, NULL, O_KEY },
		{ "ca", required_argument, NULL, O_CA },
		{ "insecure-plaintext-tunnel", no_argument, NULL, O_PLAIN },
		{ "compress", required_argument, NULL, O_COMPRESS },
		{ "queue-size", required_argument, NULL, O_QUEUE },
		{ "tag-agents", required_argument, NULL, O_TAG },
		{ "max-conns", required_argument, NULL, O_MAXC },
		{ "max-conns-per-proc", required_argument, NULL, O_MAXCP },
		{ "max-procs", required_argument, NULL, O_MAXP },
		{ "max-ring-size", required_argument, NULL, O_MAXRING },
		{ "max-h2-conns", required_argument, NULL, O_MAXH2C },
		{ "max-h2-streams", required_argument, NULL, O_MAXH2S },
		{ "max-peers", required_argument, NULL, O_MAXPEERS },
		{ "allow-user", required_argument, NULL, O_AUSER },
		{ "allow-group", required_argument, NULL, O_AGROUP },
		{ "metrics", required_argument, NULL, O_METRICS },
		{ "config", required_argument, NULL, O_CONFIG },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
	};
	/* the fixed options, then one per stage of stage_table */
	struct option opts[sizeof(fixed) / sizeof(fixed[0]) + PIPELINE_MAX_STAGES +
			   AGENT_MAX_SINK_KINDS + 1];
	size_t no = sizeof(fixed) / sizeof(fixed[0]);
	memcpy(opts, fixed, sizeof(fixed));
	for (size_t i = 0; i < stage_table_len; i++)
		if (stage_table[i].option)
			opts[no++] = (struct option){ stage_table[i].option,
				stage_table[i].metavar ? required_argument : no_argument,
				NULL, O_STAGE + (int)i };
	/* '+': no permutation, so that an element's origin (where()) stays its index */
	char shorts[64] = "+:qhVI:Cl:";
	for (size_t i = 0; i < sink_table_len; i++) {
		const struct sink_def *d = &sink_table[i];
		int val = O_SINK + (int)i;
		if (d->short_opt) {
			size_t k = strlen(shorts);
			shorts[k] = (char)d->short_opt;
			shorts[k + 1] = ':';
			shorts[k + 2] = 0;
		}
		opts[no++] = (struct option){ d->option, required_argument, NULL, val };
	}
	memset(&opts[no], 0, sizeof(opts[no]));
	unsigned long long v;
	int c, socket_given = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, shorts, opts, NULL)) != -1) {
		cur_arg = optarg && optind >= 2 && argv[optind - 1] == optarg ? optind - 2 : optind - 1;
		for (size_t i = 0; i < sink_table_len; i++)
			if (sink_table[i].short_opt && c == sink_table[i].short_opt)
				c = O_SINK + (int)i;
		switch (c) {
		case O_SOCKET: cfg->socket_path = optarg; socket_given = 1; break;
		case O_MSS:
			if (parse_uint(optarg, MSS_MIN, 65000, &v))
				return bad_arg("--mss", optarg, "a number from " MSS_MIN_S " (the minimum: "
					       "IPv6 segments carry N-20) to 65000");
			cfg->mss = (uint16_t)v;
			break;
		case O_RSIZE:
			if (parse_size(optarg, &cfg->sink.rotate_bytes) || cfg->sink.rotate_bytes < 4096)
				return bad_arg("--rotate-size", optarg, "a size of at least 4K, like 100M");
			break;
		case O_RSECS:
			if (parse_uint(optarg, 1, 10u * 365 * 86400, &v))
				return bad_arg("--rotate-seconds", optarg, "a positive number of seconds");
			cfg->sink.rotate_seconds = v;
			break;
		case O_RCOUNT:
			if (parse_uint(optarg, 1, 1000000, &v))
				return bad_arg("--rotate-count", optarg, "a number of files from 1 to 1000000");
			cfg->sink.rotate_count = (uint32_t)v;
			break;
		case O_SNAPLEN:
			if (parse_uint(optarg, 128, 262144, &v))
				return bad_arg("--snaplen", optarg, "a number from 128 to 262144");
			cfg->sink.snaplen = (uint32_t)v;
			break;
		case 'q': log_quiet = 1; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("tlsmirror %s\n", TLSMIRROR_VERSION); return 0;
		case 'I': cfg->sink.src_iface = optarg; break;
		case O_SINK ... O_SINK + AGENT_MAX_SINK_KINDS - 1: {
			size_t i = (size_t)(c - O_SINK);
			const struct sink_def *d = &sink_table[i];
			char opt[40];
			if (d->short_opt)
				snprintf(opt, sizeof(opt), "-%c", d->short_opt);
			else
				snprintf(opt, sizeof(opt), "--%s", d->option);
			const char *why = NULL;
			/* a once-only output: the command line replaces what a --config file gave */
			if (d->max == 1 && !*where() && cfg_outputs_from_file[i]) {
				cfg->n_outputs[i] = 0;
				cfg_outputs_from_file[i] = 0;
			}
			if (cfg->n_outputs[i] >= d->max)
				return bad_arg(opt, optarg, d->max > 1 ? "given too many times" :
					       "given twice: one such output at most (see --help)");
			if (d->check && d->check(optarg, &why) < 0)
				return bad_arg(opt, optarg, why);
			if (!cfg->n_outputs[i])
				cfg_outputs_from_file[i] = *where() != 0;
			cfg->outputs[i][cfg->n_outputs[i]++] = optarg;
			break;
		}
		case 'C': cfg->collector = 1; break;
		case 'l': {
			const char *why = NULL;
			if (outputs_check_listen(optarg, &why) < 0)
				return bad_arg("-l", optarg, why);
			cfg->listen_addr = optarg;
			break;
		}
		case O_VNI:
			if (parse_uint(optarg, 0, 0xffffff, &v))
				return bad_arg("--vni", optarg, "a number from 0 to 16777215");
			cfg->sink.vni = (uint32_t)v;
			break;
		case O_DSTMAC:
			if (parse_mac(optarg, cfg->sink.dst_mac) < 0)
				return bad_arg("--dst-mac", optarg, "six hex bytes like 02:00:00:00:00:01");
			cfg->sink.has_dst_mac = 1;
			break;
		case O_CERT: cfg->sink.cert = optarg; break;
		case O_KEY: cfg->sink.key = optarg; break;
		case O_CA: cfg->sink.ca = optarg; break;
		case O_PLAIN: cfg->sink.insecure_plaintext = 1; break;
		case O_COMPRESS:
			if (strcmp(optarg, "zstd") && strcmp(optarg, "lz4") && strcmp(optarg, "none"))
				return bad_arg("--compress", optarg, "zstd, lz4 or none");
			cfg->sink.compress = optarg;
			break;
		case O_QUEUE:
			if (parse_size(optarg, &cfg->sink.queue_bytes) || cfg->sink.queue_bytes < (1u << 20))
				return bad_arg("--queue-size", optarg, "a size of at least 1M, like 64M");
			break;
		case O_TAG:
			if (strcmp(optarg, "vlan") && strcmp(optarg, "vni"))
				return bad_arg("--tag-agents", optarg, "vlan or vni");
			cfg->tag_agents = optarg;
			break;
		case O_MAXC:
			if (parse_cap(optarg, &cfg->max_conns))
				return bad_arg("--max-conns", optarg, CAP_WANT);
			break;
		case O_MAXCP:
			if (parse_cap(optarg, &cfg->max_conns_per_proc))
				return bad_arg("--max-conns-per-proc", optarg, CAP_WANT);
			break;
		case O_MAXP:
			if (parse_cap(optarg, &cfg->max_procs))
				return bad_arg("--max-procs", optarg, CAP_WANT);
			break;
		case O_MAXH2C:
			if (parse_cap(optarg, &cfg->max_h2_conns))
				return bad_arg("--max-h2-conns", optarg, CAP_WANT);
			break;
		case O_MAXH2S:
			if (parse_cap(optarg, &cfg->max_h2_streams))
				return bad_arg("--max-h2-streams", optarg, CAP_WANT);
			break;
		case O_MAXPEERS:
			if (parse_cap(optarg, &cfg->max_peers))
				return bad_arg("--max-peers", optarg, CAP_WANT);
			break;
		case O_MAXRING:
			if (parse_size(optarg, &cfg->max_ring_size) ||
			    cfg->max_ring_size < RING_MIN_DATA || cfg->max_ring_size > RING_MAX_DATA)
				return bad_arg("--max-ring-size", optarg, "a size from 64K to 1G");
			break;
		case O_AUSER:
		case O_AGROUP: {
			const char *bad = optarg;
			int g = c == O_AGROUP;
			int err = access_add(&cfg->access, optarg, g, &bad);
			if (err == -ENOSPC)
				return bad_arg(g ? "--allow-group" : "--allow-user", optarg, "too many entries");
			if (err < 0)
				return bad_arg(g ? "--allow-group" : "--allow-user", bad,
					       g ? "no such group (a name or a GID)" :
					       "no such user (a name or a UID)");
			break;
		}
		case O_METRICS: {
			struct sockaddr_storage ss;
			unsigned sl;
			if (metrics_parse_addr(optarg, &ss, &sl) < 0)
				return bad_arg("--metrics", optarg, "ADDR:PORT with a numeric address "
					       "([ADDR]:PORT for IPv6), or PORT for 127.0.0.1");
			cfg->metrics_addr = optarg;
			break;
		}
		case O_CONFIG: /* read before parsing (config_expand) */
			break;
		case O_STAGE ... O_STAGE + PIPELINE_MAX_STAGES - 1: {
			const struct stage_def *d = &stage_table[c - O_STAGE];
			const char *why = NULL, *arg = d->metavar ? optarg : "";
			if (d->check && d->check(arg, &why) < 0) {
				char opt[64];
				snprintf(opt, sizeof(opt), "--%s", d->option);
				return bad_arg(opt, arg, why ? why : "not understood");
			}
			cfg->stage_arg[c - O_STAGE] = arg;
			break;
		}
		case ':':
			fprintf(stderr, "tlsmirror: %soption %s needs a value\n", where(), argv[optind - 1]);
			return 2;
		default:
			fprintf(stderr, "tlsmirror: %sunknown option '%s' (see tlsmirror --help)\n",
				where(), argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		cur_arg = optind;
		fprintf(stderr, "tlsmirror: %sunexpected argument '%s' (see tlsmirror --help)\n",
			where(), argv[optind]);
		return 2;
	}
	if (cfg->sink.rotate_count && !cfg->sink.rotate_bytes && !cfg->sink.rotate_seconds) {
		fprintf(stderr, "tlsmirror: --rotate-count needs --rotate-size or --rotate-seconds\n");
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
			fprintf(stderr, "tlsmirror: --rotate-count needs a plain file name, not a '%%' pattern\n");
			return 2;
		}
		to_stdout |= paths[i] && !strcmp(paths[i], "-");
	}
	if (paths[0] && paths[1] && !strcmp(paths[0], paths[1])) {
		fprintf(stderr, "tlsmirror: -w and --pcapng both write to %s: give each its own\n",
			strcmp(paths[0], "-") ? paths[0] : "stdout");
		return 2;
	}
	if (!n_outputs) {
		fprintf(stderr, "tlsmirror: nothing to do: give an output: -w FILE (or -w - for "
			"stdout), --pcapng FILE, -o IFACE, -t HOST:PORT, --vxlan HOST or --pcap-over-ip PORT\n");
		return 2;
	}
	/* A collector has a default socket of its own (stats, and local capture
	 * if applications are pointed at it): an agent on the same host keeps
	 * the usual one. */
	if (cfg->collector && !socket_given && !getenv("TLSMIRROR_SOCKET"))
		cfg->socket_path = CTL_COLLECTOR_SOCKET;
	if (cfg->listen_addr && !cfg->collector) {
		fprintf(stderr, "tlsmirror: -l ADDR:PORT is where a collector listens: add -C\n");
		return 2;
	}
	if (to_stdout && isatty(STDOUT_FILENO)) {
		fprintf(stderr, "tlsmirror: refusing to write pcap to a terminal: "
			"pipe it (| tshark -r -) or give -w FILE\n");
		return 2;
	}
	return -1;
}

static int cmd_agent(int argc, char **argv)
{
	struct agent_config cfg = {
		.socket_path = default_socket(),
		.mss = 1460,
		.idle_ms = 10,
	};
	int rc = config_expand(&argc, &argv);
	if (rc)
		return rc;
	rc = parse_agent(argc, argv, &cfg);
	if (rc < 0) {
		outputs_reduce_caps(&cfg);
		rc = agent_run(&cfg) < 0 ? 1 : 0;
	}
	config_free(); /* cfg points into the expanded argv: after the agent */
	return rc;
}

/* Takes --socket PATH off the front of a subcommand's arguments. */
static int sub_socket(int *argc, char ***argv, const char **path)
{
	while (*argc > 0 && (*argv)[0][0] == '-') {
		char *a = (*argv)[0];
		if (!strcmp(a, "--")) {
			(*argc)--;
			(*argv)++;
			break;
		}
		if (!strcmp(a, "--socket") && *argc > 1) {
			*path = (*argv)[1];
			*argc -= 2;
			*argv += 2;
		} else if (!strncmp(a, "--socket=", 9)) {
			*path = a + 9;
			(*argc)--;
			(*argv)++;
		} else {
			fprintf(stderr, "tlsmirror: unknown option '%s'\n", a);
			return -EINVAL;
		}
	}
	return 0;
}

/* Asks the agent on path for its counters (CTL_STATS: text, CTL_STATS_JSON).
 * Returns the malloc'ed answer (NUL-terminated) or NULL; *err says why. */
static char *ask_agent(const char *path, uint16_t type, const char **err)
{
	static char why[512];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	*err = why;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(why, sizeof(why), "socket path too long: %s", path);
		return NULL;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		snprintf(why, sizeof(why), "no agent on %s: %s (is it running? --socket?)", path,
			 strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	struct ctl_hello h;
	memset(&h, 0, sizeof(h));
	h.magic = CTL_MAGIC;
	h.version = CTL_VERSION;
	h.type = type;
	h.pid = (uint32_t)getpid();
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	size_t max = type == CTL_STATS_JSON ? CTL_STATS_JSON_MAX : CTL_STATS_MAX;
	char *buf = malloc(max + 1);
	ssize_t n = -1;
	if (buf && send(fd, &h, sizeof(h), MSG_NOSIGNAL) == (ssize_t)sizeof(h))
		n = recv(fd, buf, max, 0);
	close(fd);
	if (n <= 0) {
		snprintf(why, sizeof(why), "the agent on %s did not answer (it answers only root, "
			 "group tlsmirror and its --allow-user/--allow-group lists)", path);
		free(buf);
		return NULL;
	}
	buf[n] = 0;
	return buf;
}

/* The socket of `stats`, `status`, `enable`: $TLSMIRROR_SOCKET, the usual
 * one, or the packaged service's (/run/tlsmirror/, docs/operations.md). */
static const char *client_socket(void)
{
	const char *s = default_socket();
	if (!getenv("TLSMIRROR_SOCKET") && access(s, F_OK) && !access(CTL_SERVICE_SOCKET, F_OK))
		return CTL_SERVICE_SOCKET;
	return s;
}

static int cmd_stats(int argc, char **argv)
{
	const char *path = client_socket();
	int json = 0;
	for (; argc > 0; argc--, argv++) {
		if (!strcmp(argv[0], "-C")) /* the collector's default socket, or the unit's */
			path = access(CTL_COLLECTOR_SOCKET, F_OK) && !access(CTL_SERVICE_COLLECTOR_SOCKET, F_OK) ?
			       CTL_SERVICE_COLLECTOR_SOCKET : CTL_COLLECTOR_SOCKET;
		else if (!strcmp(argv[0], "--json"))
			json = 1;
		else if (!strcmp(argv[0], "--socket") && argc > 1) {
			path = argv[1];
			argc--;
			argv++;
		} else if (!strncmp(argv[0], "--socket=", 9))
			path = argv[0] + 9;
		else {
			fprintf(stderr, "usage: tlsmirror stats [-C] [--json] [--socket PATH]\n");
			return 2;
		}
	}
	const char *err = NULL;
	char *buf = ask_agent(path, json ? CTL_STATS_JSON : CTL_STATS, &err);
	if (!buf) {
		fprintf(stderr, "tlsmirror: %s\n", err);
		return 1;
	}
	fputs(buf, stdout);
	free(buf);
	return 0;
}

/* The capture library: $TLSMIRROR_LIB, beside the binary (build tree), or
 * ../lib/tlsmirror/ relative to it (installed). */
static int find_lib(char *out, size_t len)
{
	const char *env = getenv("TLSMIRROR_LIB");
	if (env && *env) {
		snprintf(out, len, "%s", env);
		return access(out, R_OK) ? -ENOENT : 0;
	}
	char exe[PATH_MAX - 64];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return -ENOENT;
	exe[n] = 0;
	char *slash = strrchr(exe, '/');
	if (!slash)
		return -ENOENT;
	*slash = 0;
	static const char *const rel[] = { "/libtlsmirror.so", "/../lib/tlsmirror/libtlsmirror.so" };
	for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
		snprintf(out, len, "%s%s", exe, rel[i]);
		if (!access(out, R_OK))
			return 0;
	}
	return -ENOENT;
}

static int cmd_run(int argc, char **argv)
{
	const char *path = NULL;
	if (sub_socket(&argc, &argv, &path) < 0 || argc < 1) {
		fprintf(stderr, "usage: tlsmirror run [--socket PATH] -- CMD [ARGS...]\n");
		return 2;
	}
	if (!path) { /* the packaged agent's socket when only it is there */
		const char *s = client_socket();
		if (strcmp(s, default_socket()))
			path = s;
	}
	char lib[PATH_MAX];
	if (find_lib(lib, sizeof(lib)) < 0) {
		fprintf(stderr, "tlsmirror: cannot find libtlsmirror.so (set TLSMIRROR_LIB)\n");
		return 1;
	}
	const char *old = getenv("LD_PRELOAD");
	size_t need = strlen(lib) + (old ? strlen(old) + 2 : 1);
	char *pre = malloc(need);
	if (!pre)
		return 1;
	if (old && *old)
		snprintf(pre, need, "%s:%s", lib, old);
	else
		snprintf(pre, need, "%s", lib);
	setenv("LD_PRELOAD", pre, 1);
	if (path)
		setenv("TLSMIRROR_SOCKET", path, 1);
	execvp(argv[0], argv);
	int e = errno; /* fprintf may change errno */
	fprintf(stderr, "tlsmirror: cannot run %s: %s\n", argv[0], strerror(e));
	return e == ENOENT ? 127 : 126;
}

/* attach and scan (src/agent/attach.c, scan.c): --socket, then their own arguments. */
static int cmd_reach(int argc, char **argv, int attach)
{
	const char *path = client_socket();
	char lib[PATH_MAX];
	if (sub_socket(&argc, &argv, &path) < 0)
		return 2;
	if (!attach)
		return scan_main(argc, argv, path);
	if (find_lib(lib, sizeof(lib)) < 0) {
		fprintf(stderr, "tlsmirror: cannot find libtlsmirror.so (set TLSMIRROR_LIB)\n");
		return 1;
	}
	return attach_main(argc, argv, path, lib);
}

static int cmd_enable(int argc, char **argv)
{
	char lib[PATH_MAX];
	if (find_lib(lib, sizeof(lib)) < 0) {
		fprintf(stderr, "tlsmirror: cannot find libtlsmirror.so (set TLSMIRROR_LIB)\n");
		return 1;
	}
	/* the library's own path, as the service will open it */
	char real[PATH_MAX];
	if (realpath(lib, real))
		snprintf(lib, sizeof(lib), "%s", real);
	/* a drop-in names the socket the packaged agent listens on unless told */
	const char *sock = getenv("TLSMIRROR_SOCKET");
	if (!sock || !*sock)
		sock = access(CTL_DEFAULT_SOCKET, F_OK) ? CTL_SERVICE_SOCKET : CTL_DEFAULT_SOCKET;
	return units_enable(argc, argv, lib, sock);
}

static int cmd_status(int argc, char **argv)
{
	const char *path = client_socket();
	if (sub_socket(&argc, &argv, &path) < 0 || argc) {
		fprintf(stderr, "usage: tlsmirror status [--socket PATH]\n");
		return 2;
	}
	const char *err = NULL;
	char *stats = ask_agent(path, CTL_STATS, &err);
	int rc = units_status(path, stats);
	free(stats);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc > 1 && (!strcmp(argv[1], "attach") || !strcmp(argv[1], "scan")))
		return cmd_reach(argc - 2, argv + 2, argv[1][0] == 'a');
	if (argc > 1 && !strcmp(argv[1], "enable"))
		return cmd_enable(argc - 2, argv + 2);
	if (argc > 1 && !strcmp(argv[1], "disable"))
		return units_disable(argc - 2, argv + 2);
	if (argc > 1 && !strcmp(argv[1], "status"))
		return cmd_status(argc - 2, argv + 2);
	if (argc > 1 && !strcmp(argv[1], "stats"))
		return cmd_stats(argc - 2, argv + 2);
	if (argc > 1 && !strcmp(argv[1], "run"))
		return cmd_run(argc - 2, argv + 2);
	if (argc > 1 && !strcmp(argv[1], "pki"))
		return pki_main(argc - 2, argv + 2);
	return cmd_agent(argc, argv);
}
