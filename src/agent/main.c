/* tlsmirror command line: the agent (options: cli.c), `tlsmirror stats`, `run`, `enable`... */
#include "agent/agent.h"
#include "http/har.h"
#include "agent/cli.h"
#include "sinks/repair.h"
#include "agent/metrics.h"
#include "agent/units.h"
#include "agent/pki.h"
#include "agent/reach.h"
#include "common/log.h"
#include "common/version.h"
#include "transport/ctl.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static const char *default_socket(void)
{
	const char *s = getenv("TLSMIRROR_SOCKET");
	return s && *s ? s : CTL_DEFAULT_SOCKET;
}

static int cmd_agent_as(int argc, char **argv, int decrypt)
{
	struct agent_config cfg = {
		.socket_path = default_socket(),
		.mss = 1460,
		.idle_ms = 10,
		.decrypt = decrypt,
	};
	int rc = agent_cli_parse(argc, argv, &cfg, stderr);
	if (rc < 0) {
		outputs_reduce_caps(&cfg);
		rc = agent_run(&cfg) < 0 ? 1 : 0;
	}
	agent_cli_free(); /* cfg points into the expanded argv: after the agent */
	return rc;
}

static int cmd_agent(int argc, char **argv)
{
	return cmd_agent_as(argc, argv, 0);
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

/* tlsmirror repair [--check] FILE...: each capture cut to its last whole
 * record (an agent killed while writing leaves a partial one). Exit 0 when
 * every file is a capture (repaired or whole), 1 if one is not, 2: usage. */
static int cmd_repair(int argc, char **argv)
{
	int check_only = 0, rc = 0, files = 0;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--check")) {
			check_only = 1;
			continue;
		}
		if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "tlsmirror repair: unknown option %s\n"
				"usage: tlsmirror repair [--check] FILE...\n", argv[i]);
			return 2;
		}
	}
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--check"))
			continue;
		files++;
		struct repair_result r;
		const char *why;
		int err = capture_repair(argv[i], check_only, &r, &why);
		if (err < 0) {
			fprintf(stderr, "tlsmirror repair: %s: %s\n", argv[i], why ? why : strerror(-err));
			rc = 1;
		} else if (r.keep < r.size) {
			printf("%s: %s, %llu whole record%s; %s the last %llu byte%s (a partial record "
			       "from offset %llu)\n", argv[i], r.format, (unsigned long long)r.records,
			       r.records == 1 ? "" : "s", check_only ? "would cut" : "cut",
			       (unsigned long long)(r.size - r.keep), r.size - r.keep == 1 ? "" : "s",
			       (unsigned long long)r.keep);
		} else {
			printf("%s: %s, %llu whole record%s, nothing to cut\n", argv[i], r.format,
			       (unsigned long long)r.records, r.records == 1 ? "" : "s");
		}
	}
	if (!files) {
		fprintf(stderr, "usage: tlsmirror repair [--check] FILE...\n");
		return 2;
	}
	return rc;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "repair"))
		return cmd_repair(argc - 2, argv + 2);
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
	if (argc > 1 && !strcmp(argv[1], "decrypt"))
		return cmd_agent_as(argc - 1, argv + 1, 1);
	if (argc > 1 && !strcmp(argv[1], "har"))
		return har_main(argc - 2, argv + 2);
	return cmd_agent(argc, argv);
}
