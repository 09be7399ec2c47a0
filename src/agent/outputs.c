/* The kinds of output (sink_table: -w, --pcapng, -o, --vxlan, --pcap-over-ip, -t) and opening them. */
#include "agent/agent.h"
#include "common/log.h"
#include "tunnel/tunnel.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const struct sink_def sink_table[] = {
	{ "write", 'w', "FILE", "pcap output; '-' writes to stdout (FILE.pcapng: pcapng)",
	  &sink_pcap_ops, 1 },
	{ "pcapng", 0, "FILE", "pcapng output, connection metadata as comments; '-': stdout",
	  &sink_pcapng_ops, 1 },
	{ "output-interface", 'o', "IFACE", "replay onto an interface (repeatable)",
	  &sink_afpacket_ops, AGENT_MAX_OUTPUTS },
	{ "vxlan", 0, "HOST[:PORT]", "send VXLAN (UDP 4789) to a sensor (repeatable); --vni N",
	  &sink_vxlan_ops, AGENT_MAX_OUTPUTS },
	{ "pcap-over-ip", 0, "[ADDR:]PORT", "serve a live pcap stream to every TCP client",
	  &sink_poip_ops, 1 },
	{ "tunnel", 't', "HOST:PORT", "send to a collector over mutually authenticated TLS",
	  &sink_tunnel_ops, 1 },
};
const size_t sink_table_len = sizeof(sink_table) / sizeof(sink_table[0]);

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
