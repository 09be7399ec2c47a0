/* The agent's command line and --config file (cli.c): one option table, parsed by common/opt.c. */
#ifndef TLSMIRROR_CLI_H
#define TLSMIRROR_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "agent/agent.h"
#include "common/opt.h"

/* Every option of the agent: the outputs' (sink_table), the fixed ones,
 * the stages' (stage_table), in --help's order. */
const struct opt_def *agent_opts(size_t *n);
/* The agent's --help, written from agent_opts. */
void agent_usage(FILE *f);
/* Reads the --config files and parses argv into cfg (which holds the
 * defaults); errors go to err. Returns -1 to run the agent, or the exit
 * status (0 after --help/--version, 2 for a bad command line or file).
 * cfg's strings point into argv and the files' lines: agent_cli_free
 * after the agent. */
int agent_cli_parse(int argc, char **argv, struct agent_config *cfg, FILE *err);
void agent_cli_free(void);

#endif
