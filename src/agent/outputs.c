/* The kinds of output (sink_table: -w, --pcapng, -o, --vxlan, --pcap-over-ip, -t) and opening them. */
#include "agent/agent.h"
#include "common/log.h"
#include "tunnel/tunnel.h"

#include "common/text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Parse-time checks of the targets (sink_def.check): a bad one is refused
 * before anything is opened, so a refused command line creates no file. */

/* -w/--pcapng FILE: stdout, a file name, or an strftime pattern; never a
 * directory or a kernel file (/proc, /sys), never a pattern without a
 * conversion (-w % would make a file named "%"). */
int outputs_check_file(const char *t, const char **why)
{
	if (!strcmp(t, "-"))
		return 0;
	size_t n = strlen(t);
	if (!n || t[n - 1] == '/') {
		*why = "a file name, not a directory";
		return -EINVAL;
	}
	if (strchr(t, '%') && !text_time_pattern_ok(t)) {
		*why = "a '%' pattern needs strftime conversions like %Y%m%d-%H%M%S "
		       "(a literal '%' is '%%')";
		return -EINVAL;
	}
	char dir[4096];
	const char *slash = strrchr(t, '/');
	size_t dl = slash ? (size_t)(slash - t) : 0;
	if (dl >= sizeof(dir))
		dl = sizeof(dir) - 1;
	memcpy(dir, slash ? t : ".", slash ? dl : 1);
	dir[slash ? (dl ? dl : 1) : 1] = 0;
	struct stat st;
	struct statfs fs;
	if (!strchr(t, '%') && stat(t, &st) == 0 && S_ISDIR(st.st_mode)) {
		*why = "a directory, not a file";
		return -EISDIR;
	}
	if (statfs(dir, &fs) == 0 && (fs.f_type == PROC_SUPER_MAGIC || fs.f_type == SYSFS_MAGIC)) {
		*why = "a kernel file (/proc, /sys), not a capture file";
		return -EINVAL;
	}
	return 0;
}

/* The port after HOST: ([V6]:PORT, HOST:PORT); NULL when none is given. */
static const char *port_of(const char *t)
{
	if (t[0] == '[') {
		const char *end = strchr(t, ']');
		return end && end[1] == ':' ? end + 2 : NULL;
	}
	const char *colon = strrchr(t, ':');
	return colon && strchr(t, ':') == colon ? colon + 1 : NULL;
}

static int check_vxlan(const char *t, const char **why)
{
	const char *port = port_of(t);
	if (!*t || *t == ':' || (port && text_port(port) < 0)) {
		*why = "HOST[:PORT] with PORT 1..65535 (IPv6: [ADDR]:PORT)";
		return -EINVAL;
	}
	return 0;
}

static int check_poip(const char *t, const char **why)
{
	const char *port = strrchr(t, ':');
	if (text_port(port ? port + 1 : t) < 0) {
		*why = "[ADDR:]PORT with PORT 1..65535 (0, a random port, would be told to nobody)";
		return -EINVAL;
	}
	return 0;
}

static int check_tunnel(const char *t, const char **why)
{
	char host[256], port[16];
	if (tunnel_split_addr(t, host, sizeof(host), port, sizeof(port)) < 0) {
		*why = "HOST:PORT with PORT 1..65535 (IPv6: [ADDR]:PORT)";
		return -EINVAL;
	}
	return 0;
}

int outputs_check_listen(const char *addr, const char **why)
{
	return check_tunnel(addr, why);
}

const struct sink_def sink_table[] = {
	{ "write", 'w', "FILE", "pcap output; '-' writes to stdout (FILE.pcapng: pcapng)",
	  &sink_pcap_ops, 1, outputs_check_file },
	{ "pcapng", 0, "FILE", "pcapng output, connection metadata as comments; '-': stdout",
	  &sink_pcapng_ops, 1, outputs_check_file },
	{ "output-interface", 'o', "IFACE", "replay onto an interface (repeatable)",
	  &sink_afpacket_ops, AGENT_MAX_OUTPUTS, NULL },
	{ "vxlan", 0, "HOST[:PORT]", "send VXLAN (UDP 4789) to a sensor (repeatable); --vni N",
	  &sink_vxlan_ops, AGENT_MAX_OUTPUTS, check_vxlan },
	{ "pcap-over-ip", 0, "[ADDR:]PORT", "serve a live pcap stream to every TCP client",
	  &sink_poip_ops, 1, check_poip },
	{ "tunnel", 't', "HOST:PORT", "send to a collector over mutually authenticated TLS",
	  &sink_tunnel_ops, 1, check_tunnel },
};
const size_t sink_table_len = sizeof(sink_table) / sizeof(sink_table[0]);

_Static_assert(SINK_ROW_TUNNEL == 5, "sink_table: -t is row SINK_ROW_TUNNEL");
_Static_assert(sizeof(sink_table) / sizeof(sink_table[0]) <= AGENT_MAX_SINK_KINDS,
	       "sink_table outgrew AGENT_MAX_SINK_KINDS");

/* -w FILE.pcapng writes pcapng, as --pcapng FILE does. */
static const struct sink_ops *file_format(const struct sink_def *d, const char *target)
{
	size_t n = strlen(target);
	if (d == &sink_table[SINK_ROW_PCAP] && n > 7 && !strcmp(target + n - 7, ".pcapng"))
		return &sink_pcapng_ops;
	return d->ops;
}

/* Opens one sink and says why not, naming the option and the target. */
static int add(struct agent *a, const struct sink_def *d, const char *target)
{
	const char *why = NULL;
	int file = d == &sink_table[SINK_ROW_PCAP] || d == &sink_table[SINK_ROW_PCAPNG];
	char opt[40];
	if (d->short_opt)
		snprintf(opt, sizeof(opt), "-%c", d->short_opt);
	else
		snprintf(opt, sizeof(opt), "--%s", d->option);
	int err = sink_set_add(&a->sinks, file_format(d, target), target, &a->cfg.sink, &why);
	if (err < 0 && why && file && err != -EINVAL &&
	    err != -ENAMETOOLONG)
		log_err("%s %s: %s: %s", opt, target, why, strerror(-err)); /* the system's reason too */
	else if (err < 0)
		log_err("%s %s: %s", opt, strcmp(target, "-") ? target : "(stdout)",
			why ? why : strerror(-err));
	return err;
}

int outputs_open(struct agent *a)
{
	const struct agent_config *c = &a->cfg;
	int err = 0;
	for (size_t i = 0; i < sink_table_len; i++)
		for (size_t k = 0; k < c->n_outputs[i]; k++)
			if ((err = add(a, &sink_table[i], c->outputs[i][k])) < 0)
				return err;
	return err;
}

/* The port of "[ADDR:]PORT", "HOST:PORT" or "[V6]:PORT"; 0 if none. */
static long addr_port(const char *s)
{
	if (!s)
		return 0;
	const char *b = strrchr(s, ']'), *c = strrchr(b ? b : s, ':');
	return strtol(c ? c + 1 : s, NULL, 10);
}

static int low_port(const char *s)
{
	long p = addr_port(s);
	return p > 0 && p < 1024;
}

/*
 * Of the two capabilities the packaged units allow (CapabilityBoundingSet=
 * CAP_NET_RAW CAP_NET_BIND_SERVICE), keeps only what the configuration
 * needs: CAP_NET_RAW for -o IFACE, CAP_NET_BIND_SERVICE for --metrics, -l or
 * --pcap-over-ip on a port below 1024. Called before anything is opened;
 * the other capabilities are left as they are (root run by hand keeps them).
 */
void outputs_reduce_caps(const struct agent_config *cfg)
{
	/* tlsmirror decrypt -i captures: CAP_NET_RAW stays for libpcap */
	int raw = cfg->dec_iface != NULL, bind_low = low_port(cfg->metrics_addr) || low_port(cfg->listen_addr);
	for (size_t i = 0; i < sink_table_len; i++) {
		if (sink_table[i].ops == &sink_afpacket_ops && cfg->n_outputs[i])
			raw = 1;
		if (sink_table[i].ops == &sink_poip_ops)
			for (size_t k = 0; k < cfg->n_outputs[i]; k++)
				bind_low |= low_port(cfg->outputs[i][k]);
	}
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) < 0)
		return;
	uint32_t drop = (raw ? 0 : 1u << CAP_NET_RAW) | (bind_low ? 0 : 1u << CAP_NET_BIND_SERVICE);
	if (!(d[0].permitted & drop))
		return;
	d[0].effective &= ~drop;
	d[0].permitted &= ~drop;
	d[0].inheritable &= ~drop;
	if (syscall(SYS_capset, &h, d) < 0)
		log_warn("could not give up CAP_NET_RAW/CAP_NET_BIND_SERVICE: %s", strerror(errno));
}
