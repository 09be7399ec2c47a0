/* Turns the command line's outputs (-w, -o, --vxlan, --pcap-over-ip, -t) and -C into sinks. */
#include "agent/agent.h"
#include "common/log.h"

#include <errno.h>
#include <string.h>

/* Opens one sink and says why not, naming the option and the target. */
static int add(struct agent *a, const char *opt, const struct sink_ops *ops, const char *target)
{
	const char *why = NULL;
	int err = sink_set_add(&a->sinks, ops, target, &a->cfg.sink, &why);
	if (err < 0)
		log_err("%s %s: %s", opt, strcmp(target, "-") ? target : "(stdout)",
			why ? why : strerror(-err));
	return err;
}

/* An output this build cannot deliver to yet: a clear error, not silence. */
static int unavailable(const char *opt)
{
	log_err("%s is not available in this version yet (see docs/)", opt);
	return -ENOTSUP;
}

int outputs_open(struct agent *a)
{
	const struct agent_config *c = &a->cfg;
	int err = 0;
	if (c->write_path && (err = add(a, "-w", &sink_pcap_ops, c->write_path)) < 0)
		return err;
	for (size_t i = 0; i < c->n_ifaces; i++)
		return unavailable("-o (interface replay)");
	for (size_t i = 0; i < c->n_vxlans; i++)
		return unavailable("--vxlan");
	if (c->pcap_over_ip)
		return unavailable("--pcap-over-ip");
	if (c->tunnel)
		return unavailable("-t (tunnel to a collector)");
	if (c->collector)
		return unavailable("-C (collector)");
	return err;
}
