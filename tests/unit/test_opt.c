/* Unit tests for common/opt.c (the option table) and the agent's table and --config files (agent/cli.c). */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/cli.h"
#include "common/opt.h"
#include "unit.h"

struct tcfg {
	uint16_t n;
	uint64_t size;
	const char *name;
	const char *mode;
	uint8_t flag;
	int custom;
};

static int t_custom(const struct opt_def *d, void *c, const char *arg, struct opt_ctx *ctx,
		    const char **why)
{
	if (!strcmp(arg, "stop"))
		return OPT_STOP;
	if (strncmp(arg, "ok", 2)) {
		ctx->shown = arg + 1; /* an error about a part of the argument */
		*why = "ok or stop";
		return -EINVAL;
	}
	((struct tcfg *)c)->custom++;
	return 0;
}

#define F(field) offsetof(struct tcfg, field), sizeof(((struct tcfg *)0)->field)
static const struct opt_def rows[] = {
	{ "num", 'n', "N", "a number", 1, OPT_UINT, F(n), 5, 1000, NULL, NULL, NULL, NULL },
	{ "size", 0, "SIZE", "a size", 1, OPT_SIZE, F(size), 4096, 1u << 30, NULL,
	  "a size from 4K to 1G", NULL, NULL },
	{ "name", 0, "S", "a string", 1, OPT_STRING, F(name), 0, 0, NULL, NULL, NULL, NULL },
	{ "mode", 0, "M", "a choice", 2, OPT_CHOICE, F(mode), 0, 0, "fast|slow", NULL, NULL, NULL },
	{ "flag", 'f', NULL, "a flag", 2, OPT_FLAG, F(flag), 0, 0, NULL, NULL, NULL, NULL },
	{ "custom", 0, "X", "custom\nsecond line", 2, OPT_CUSTOM, 0, 0, 0, 0, NULL, NULL, t_custom,
	  NULL },
};
#define NROWS (sizeof(rows) / sizeof(rows[0]))

/* Parses the NULL-terminated arguments after "prog"; *msg: what was written to err. */
static int parse(struct tcfg *c, char **msg, const char *const *origin, ...)
{
	char *argv[32] = { "prog" };
	int argc = 1;
	va_list ap;
	va_start(ap, origin);
	for (char *a; argc < 31 && (a = va_arg(ap, char *));)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	size_t len = 0;
	FILE *err = open_memstream(msg, &len);
	memset(c, 0, sizeof(*c));
	int rc = opt_parse(rows, NROWS, argc, argv, origin, c, "prog", err);
	fclose(err);
	return rc;
}

#define EXPECT_ERR(want, ...) do { \
		char *em = NULL; \
		CHECK_EQ(parse(&c, &em, NULL, __VA_ARGS__, NULL), 2); \
		if (!CHECK(em && !strcmp(em, want))) \
			fprintf(stderr, "  got '%s', want '%s'\n", em ? em : "(null)", want); \
		free(em); \
	} while (0)

TEST(opt_kinds_and_bounds)
{
	struct tcfg c;
	char *m = NULL;
	CHECK_EQ(parse(&c, &m, NULL, "--num", "5", "--size=64K", "--name", "x", "--mode", "slow",
		       "-f", "--custom", "ok", "-n1000", NULL), -1);
	CHECK_EQ(c.n, 1000);
	CHECK_EQ(c.size, 65536);
	CHECK(c.name && !strcmp(c.name, "x"));
	CHECK(c.mode && !strcmp(c.mode, "slow"));
	CHECK_EQ(c.flag, 1);
	CHECK_EQ(c.custom, 1);
	CHECK(m && !*m);
	free(m);
	EXPECT_ERR("prog: invalid -n '4': a number from 5 to 1000\n", "--num", "4");
	EXPECT_ERR("prog: invalid -n '1001': a number from 5 to 1000\n", "-n", "1001");
	EXPECT_ERR("prog: invalid -n 'abc': a number from 5 to 1000\n", "--num=abc");
	EXPECT_ERR("prog: invalid -n '-7': a number from 5 to 1000\n", "--num", "-7");
	EXPECT_ERR("prog: invalid -n '99999999999999999999': a number from 5 to 1000\n", "-n",
		   "99999999999999999999");
	EXPECT_ERR("prog: invalid --size '1K': a size from 4K to 1G\n", "--size", "1K");
	EXPECT_ERR("prog: invalid --size '2G': a size from 4K to 1G\n", "--size", "2G");
	EXPECT_ERR("prog: invalid --size '9999999999999999999G': a size from 4K to 1G\n", "--size",
		   "9999999999999999999G");
	EXPECT_ERR("prog: invalid --size '5X': a size from 4K to 1G\n", "--size", "5X");
	EXPECT_ERR("prog: invalid --mode 'medium': one of fast|slow\n", "--mode", "medium");
	EXPECT_ERR("prog: invalid --custom 'ad': ok or stop\n", "--custom", "bad");
	CHECK_EQ(parse(&c, &m, NULL, "--custom", "stop", "--bogus", NULL), 0); /* stops first */
	free(m);
}

TEST(opt_unknown_missing_unexpected)
{
	struct tcfg c;
	EXPECT_ERR("prog: unknown option '--bogus' (see prog --help)\n", "--num", "6", "--bogus");
	EXPECT_ERR("prog: unknown option '-Z' (see prog --help)\n", "-Z");
	EXPECT_ERR("prog: unknown option '--flag=1' (see prog --help)\n", "--flag=1");
	EXPECT_ERR("prog: option --num needs a value\n", "--num");
	EXPECT_ERR("prog: option -n needs a value\n", "-n");
	EXPECT_ERR("prog: unexpected argument 'extra' (see prog --help)\n", "-f", "extra");
	/* no permutation: an option after an argument is not taken */
	EXPECT_ERR("prog: unexpected argument 'x' (see prog --help)\n", "x", "-f");
	/* the origin of an element starts its errors */
	const char *const origin[] = { NULL, "a.conf:3: ", NULL };
	char *m = NULL;
	CHECK_EQ(parse(&c, &m, origin, "--num=2", "-f", NULL), 2);
	CHECK(m && !strcmp(m, "prog: a.conf:3: invalid -n '2': a number from 5 to 1000\n"));
	free(m);
}

TEST(opt_help_from_rows)
{
	char buf[1024];
	size_t at = opt_help(rows, NROWS, 2, buf, sizeof(buf), 0);
	CHECK_EQ(at, strlen(buf));
	CHECK(!strcmp(buf, "      --mode M            a choice\n"
			   "  -f, --flag              a flag\n"
			   "      --custom X          custom\n"
			   "                          second line\n"));
	/* a long option: its help on a line of its own; a small buffer: cut, terminated */
	static const struct opt_def lng[] = {
		{ "a-very-long-option-name", 0, "VALUE", "help", 1, OPT_FLAG, 0, 1, 0, 0, NULL, NULL,
		  NULL, NULL },
	};
	opt_help(lng, 1, 1, buf, sizeof(buf), 0);
	CHECK(!strcmp(buf, "      --a-very-long-option-name VALUE\n                          help\n"));
	CHECK_EQ(opt_help(lng, 1, 1, buf, 10, 0), 9);
	CHECK_EQ(strlen(buf), 9);
}

/* Every option of the agent has a help line, and --help shows it. */
TEST(opt_agent_help_lists_every_option)
{
	size_t n, len = 0;
	const struct opt_def *r = agent_opts(&n);
	char *text = NULL;
	FILE *f = open_memstream(&text, &len);
	agent_usage(f);
	fclose(f);
	CHECK(n > 30);
	for (size_t i = 0; i < n; i++) {
		char want[96];
		snprintf(want, sizeof(want), "--%s%s%s\n", r[i].name, r[i].metavar ? " " : "",
			 r[i].metavar ? r[i].metavar : "");
		char want2[96];
		snprintf(want2, sizeof(want2), "--%s%s%s ", r[i].name, r[i].metavar ? " " : "",
			 r[i].metavar ? r[i].metavar : "");
		if (!CHECK(r[i].help && *r[i].help && text && (strstr(text, want) || strstr(text, want2))))
			fprintf(stderr, "  --%s is not in --help\n", r[i].name);
		for (size_t k = 0; k < i; k++)
			CHECK(strcmp(r[i].name, r[k].name) &&
			      (!r[i].short_opt || r[i].short_opt != r[k].short_opt));
	}
	free(text);
}

/* tlsmirror(1) names every option of the table (run from the source tree, as tests/run.sh does). */
TEST(opt_agent_man_page_names_every_option)
{
	FILE *f = fopen("man/tlsmirror.1", "r");
	if (!CHECK(f != NULL))
		return;
	static char man[1 << 17];
	size_t len = fread(man, 1, sizeof(man) - 1, f);
	fclose(f);
	man[len] = 0;
	size_t n;
	const struct opt_def *r = agent_opts(&n);
	for (size_t i = 0; i < n; i++) {
		char want[96] = "\\-\\-";
		size_t k = strlen(want);
		for (const char *c = r[i].name; *c && k + 3 < sizeof(want); c++) {
			if (*c == '-')
				want[k++] = '\\';
			want[k++] = *c;
		}
		want[k] = 0;
		if (!CHECK(strstr(man, want)))
			fprintf(stderr, "  man/tlsmirror.1 lacks %s\n", want);
	}
}

/* agent_cli_parse on a --config file of these lines; returns its status, *msg its errors. */
static int agent_with_config(const char *lines, char **msg, struct agent_config *cfg,
			     const char *cli_arg)
{
	static int seq;
	char path[600];
	snprintf(path, sizeof(path), "%s/agent-%d.conf", unit_tmpdir(), seq++);
	FILE *f = fopen(path, "w");
	if (!f)
		return -100;
	fputs(lines, f);
	fclose(f);
	char *argv[] = { "tlsmirror", "--socket", "/nonexistent/x.sock", "--config", path,
			 (char *)cli_arg, NULL };
	size_t len = 0;
	FILE *err = open_memstream(msg, &len);
	memset(cfg, 0, sizeof(*cfg));
	cfg->mss = 1460;
	int rc = agent_cli_parse(cli_arg ? 6 : 5, argv, cfg, err);
	fclose(err);
	/* the message without the file's name */
	if (*msg && strstr(*msg, path)) {
		char *p = strstr(*msg, path);
		memmove(p, p + strlen(path), strlen(p + strlen(path)) + 1);
	}
	return rc;
}

TEST(opt_agent_config_file_errors)
{
	static const struct { const char *lines, *want; } cases[] = {
		{ "mss 10\n", "tlsmirror: :1: invalid --mss '10': a number from 88 (the minimum: "
		  "IPv6 segments carry N-20) to 65000\n" },
		{ "write /tmp/x\nbogus-option 3\n", "tlsmirror: :2: unknown option '--bogus-option=3' "
		  "(see tlsmirror --help)\n" },
		{ "write /tmp/x\nmss\n", "tlsmirror: :2: option --mss needs a value\n" },
		{ "# c\n\nwrite /tmp/x\nmax-conns 0\n", "tlsmirror: :4: invalid --max-conns '0': "
		  "a number from 1 to 100000000\n" },
		{ "write /tmp/x\nwrite /tmp/y\n", "tlsmirror: :2: invalid -w '/tmp/y': given twice: "
		  "one such output at most (see --help)\n" },
		{ "write /tmp/x\n\n-w /tmp/y\n", "tlsmirror: :3: not an option: '-w /tmp/y' (a long "
		  "option without its --, then its value: 'write /var/lib/tlsmirror/mirror.pcap')\n" },
		{ "config /etc/x\n", "tlsmirror: :1: a configuration file cannot include another\n" },
		{ "write /tmp/x\nquiet yes\n", "tlsmirror: :2: unknown option '--quiet=yes' "
		  "(see tlsmirror --help)\n" },
		{ "write /tmp/x\nrotate-size 1K\n", "tlsmirror: :2: invalid --rotate-size '1K': "
		  "a size of at least 4K, like 100M\n" },
		{ "write /tmp/x\ncompress gzip\n", "tlsmirror: :2: invalid --compress 'gzip': "
		  "zstd, lz4 or none\n" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct agent_config cfg;
		char *m = NULL;
		int rc = agent_with_config(cases[i].lines, &m, &cfg, NULL);
		if (!CHECK(rc == 2 && m && !strcmp(m, cases[i].want)))
			fprintf(stderr, "  config %zu: rc %d, '%s', want '%s'\n", i, rc, m ? m : "",
				cases[i].want);
		free(m);
		agent_cli_free();
	}
	/* good lines: stored where the rows say; the command line wins for a once-only output */
	struct agent_config cfg;
	char *m = NULL;
	int rc = agent_with_config("write /tmp/file.pcap\nmss=1000\nrotate-size 10M\nvni 7\n"
				   "compress lz4\ncollector\ninsecure-plaintext-tunnel\n"
				   "max-ring-size 64K\n", &m, &cfg, "-w/tmp/cli.pcap");
	CHECK_EQ(rc, -1);
	CHECK(m && !*m);
	CHECK_EQ(cfg.mss, 1000);
	CHECK_EQ(cfg.sink.rotate_bytes, 10u << 20);
	CHECK_EQ(cfg.sink.vni, 7);
	CHECK(cfg.sink.compress && !strcmp(cfg.sink.compress, "lz4"));
	CHECK_EQ(cfg.collector, 1);
	CHECK_EQ(cfg.sink.insecure_plaintext, 1);
	CHECK_EQ(cfg.max_ring_size, 65536);
	CHECK_EQ(cfg.n_outputs[SINK_ROW_PCAP], 1);
	CHECK(!strcmp(cfg.outputs[SINK_ROW_PCAP][0], "/tmp/cli.pcap"));
	CHECK(!strcmp(cfg.socket_path, "/nonexistent/x.sock")); /* given: -C keeps it */
	free(m);
	agent_cli_free();
}
