/* The table of sources: adding one is its file and one row here. */
#include "sources/source.h"
#include "agent/agent.h"

static int collector_enabled(const struct agent_config *cfg)
{
	return cfg->collector;
}

const struct source_def source_table[] = {
	{ NULL, &ring_source_ops, NULL },
	{ "collector", &collector_source_ops, collector_enabled }, /* -C */
};
const size_t source_table_len = sizeof(source_table) / sizeof(source_table[0]);
