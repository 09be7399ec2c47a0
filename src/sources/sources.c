/* The table of sources: adding one is its file and one row here. */
#include "sources/source.h"
#include "agent/agent.h"

static int collector_enabled(const struct agent_config *cfg)
{
	return cfg->collector;
}

static int ring_enabled(const struct agent_config *cfg)
{
	return !cfg->decrypt;
}

static int decrypt_enabled(const struct agent_config *cfg)
{
	return cfg->decrypt;
}

const struct source_def source_table[] = {
	{ "ring", &ring_source_ops, ring_enabled }, /* the capture libraries (not with decrypt) */
	{ "collector", &collector_source_ops, collector_enabled }, /* -C */
	{ "decrypt", &decrypt_source_ops, decrypt_enabled }, /* tlsmirror decrypt */
};
const size_t source_table_len = sizeof(source_table) / sizeof(source_table[0]);
