/* Turns the command line's outputs (-w, -o, --vxlan, --pcap-over-ip, -t) and -C into sinks. */
#include "agent/agent.h"
#include "common/log.h"
#include "tunnel/tunnel.h"

#include <errno.h>
#include <string.h>

/* Opens one sink and says why not, naming the option and the target. */
static int add(struct agent *a, const char *opt, const struct sink_ops *ops, const char *target)
{
	const char *why = NULL;
	int err = sink_set_add(&a->sinks, ops, target, &a->cfg.sink, &why);
	if (err < 0 && why && !strcmp(opt, "-w") && err != -EINVAL && err != -ENAMETOOLONG)
		log_err("%s %s: %s: %s", opt, target, why, strerror(-err)); /* the system's reason too */
	else if (err < 0)
		log_err("%s %s: %s", opt, strcmp(target, "-") ? target : "(stdout)",
			why ? why : strerror(-err));
	return err;
}

/* -w's format: pcapng if asked for or if the file is named *.pcapng, else pcap. */
static const struct sink_ops *file_format(const struct agent_config *c)
{
	size_t n = strlen(c->write_path);
	if (c->pcapng || (n > 7 && !strcmp(c->write_path + n - 7, ".pcapng")))
		return &sink_pcapng_ops;
	return &sink_pcap_ops;
}

int outputs_open(struct agent *a)
{
	const struct agent_config *c = &a->cfg;
	int err = 0;
	if (c->write_path && (err = add(a, "-w", file_format(c), c->write_path)) < 0)
		return err;
	for (size_t i = 0; i < c->n_ifaces; i++)
		if ((err = add(a, "-o", &sink_afpacket_ops, c->ifaces[i])) < 0)
			return err;
	for (size_t i = 0; i < c->n_vxlans; i++)
		if ((err = add(a, "--vxlan", &sink_vxlan_ops, c->vxlans[i])) < 0)
			return err;
	if (c->pcap_over_ip && (err = add(a, "--pcap-over-ip", &sink_poip_ops, c->pcap_over_ip)) < 0)
		return err;
	if (c->tunnel && (err = add(a, "-t", &sink_tunnel_ops, c->tunnel)) < 0)
		return err;
	if (c->collector && (err = collector_open(a)) < 0)
		return err;
	return err;
}
