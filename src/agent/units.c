/*
 * Per-service enablement: `tlsmirror enable nginx.service` writes
 * /etc/systemd/system/nginx.service.d/tlsmirror.conf, which sets LD_PRELOAD
 * and TLSMIRROR_SOCKET for that service; `disable` removes it (and the
 * directory if it is left empty); `status` lists the drop-ins and, asking
 * the agent, which processes of each unit are attached now (a process's unit
 * is the last .service of its cgroup path, /proc/PID/cgroup).
 */
#include "agent/units.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MARK "# Written by tlsmirror enable"
#define STATUS_MAX_PIDS 4096
#define STATUS_MAX_UNITS 1024

static const char *units_dir(void)
{
	const char *d = getenv("TLSMIRROR_SYSTEMD_DIR");
	return d && *d ? d : UNITS_DIR;
}

int unit_name_check(const char *in, char *out, size_t len, const char **why)
{
	static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\@";
	size_t n = strlen(in);
	const char *dot = strrchr(in, '.');
	*why = NULL;
	if (!n)
		*why = "empty";
	else if (strspn(in, ok) != n)
		*why = "only letters, digits and : - _ . \\ @ may appear in a unit name";
	else if (in[0] == '.' || in[0] == '-')
		*why = "a unit name does not start with '.' or '-'";
	else if (dot && strcmp(dot, ".service") && (!strcmp(dot, ".socket") || !strcmp(dot, ".timer") ||
		 !strcmp(dot, ".target") || !strcmp(dot, ".mount") || !strcmp(dot, ".slice") ||
		 !strcmp(dot, ".scope") || !strcmp(dot, ".path") || !strcmp(dot, ".device") ||
		 !strcmp(dot, ".swap") || !strcmp(dot, ".automount")))
		*why = "only a .service runs programs to preload into";
	else if (n + sizeof(".service") > len || n + sizeof(".service") > 256)
		*why = "longer than 255 characters";
	if (*why)
		return -EINVAL;
	if (in[0] == '@') {
		*why = "a template needs a name before '@'";
		return -EINVAL;
	}
	snprintf(out, len, "%s%s", in, dot && !strcmp(dot, ".service") ? "" : ".service");
	return 0;
}

static int dropin_path(const char *unit, char *dir, size_t dl, char *file, size_t fl)
{
	int a = snprintf(dir, dl, "%s/%s.d", units_dir(), unit);
	int b = snprintf(file, fl, "%s/%s.d/%s", units_dir(), unit, UNITS_DROPIN);
	return a > 0 && (size_t)a < dl && b > 0 && (size_t)b < fl ? 0 : -ENAMETOOLONG;
}

/* One UNIT argument (and optional --socket PATH before it). */
static int one_unit(int argc, char **argv, const char *cmd, char *unit, size_t len,
		    const char **sock)
{
	const char *why = NULL;
	while (argc > 1 && !strcmp(argv[0], "--socket")) {
		if (sock)
			*sock = argv[1];
		argc -= 2;
		argv += 2;
	}
	if (argc != 1 || argv[0][0] == '-') {
		fprintf(stderr, "usage: tlsmirror %s UNIT%s\n", cmd,
			sock ? " [--socket PATH before it]" : " | --all");
		return 2;
	}
	if (unit_name_check(argv[0], unit, len, &why) < 0) {
		fprintf(stderr, "tlsmirror: %s '%s': not a service unit name: %s\n", cmd, argv[0], why);
		return 2;
	}
	return 0;
}

/* The drop-in's value: no newline or '%' (systemd's specifier) in a path we write. */
static int clean_value(const char *what, const char *v)
{
	if (strpbrk(v, "\n\r%\"\\ ") || v[0] != '/') {
		fprintf(stderr, "tlsmirror: enable: the %s '%s' must be an absolute path without "
			"blanks, quotes, '%%' or '\\'\n", what, v);
		return -EINVAL;
	}
	return 0;
}

int units_enable(int argc, char **argv, const char *lib, const char *sock)
{
	char unit[256], dir[4096], file[4200], tmp[4300];
	int rc = one_unit(argc, argv, "enable", unit, sizeof(unit), &sock);
	if (rc)
		return rc;
	if (clean_value("capture library", lib) < 0 || clean_value("socket", sock) < 0)
		return 2;
	if (dropin_path(unit, dir, sizeof(dir), file, sizeof(file)) < 0) {
		fprintf(stderr, "tlsmirror: enable: path too long\n");
		return 2;
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "tlsmirror: enable: cannot create %s: %s%s\n", dir, strerror(errno),
			errno == EACCES ? " (run as root)" : "");
		return 1;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", file);
	FILE *f = fopen(tmp, "w");
	if (!f) {
		fprintf(stderr, "tlsmirror: enable: cannot write %s: %s\n", tmp, strerror(errno));
		return 1;
	}
	fprintf(f, MARK " %s; `tlsmirror disable %s` removes it.\n"
		"# The service's TLS clear text is copied to the tlsmirror agent (docs/operations.md).\n"
		"[Service]\n"
		"Environment=LD_PRELOAD=%s\n"
		"Environment=TLSMIRROR_SOCKET=%s\n", unit, unit, lib, sock);
	if (fflush(f) || fsync(fileno(f)) || fclose(f) || rename(tmp, file) < 0) {
		fprintf(stderr, "tlsmirror: enable: cannot write %s: %s\n", file, strerror(errno));
		unlink(tmp);
		return 1;
	}
	chmod(file, 0644);
	printf("tlsmirror: wrote %s\n"
	       "apply it (the service restarts with the capture library preloaded):\n"
	       "  systemctl daemon-reload\n"
	       "  systemctl restart %s\n", file, unit);
	return 0;
}

/* Removes UNIT's drop-in; 1 if there was one, 0 if not, -1 on error. */
static int remove_dropin(const char *unit)
{
	char dir[4096], file[4200];
	if (dropin_path(unit, dir, sizeof(dir), file, sizeof(file)) < 0)
		return -1;
	if (unlink(file) < 0) {
		if (errno == ENOENT)
			return 0;
		fprintf(stderr, "tlsmirror: disable: cannot remove %s: %s\n", file, strerror(errno));
		return -1;
	}
	rmdir(dir); /* only if empty: the unit's other drop-ins stay */
	printf("tlsmirror: removed %s\n", file);
	return 1;
}

/* Calls fn for every UNIT with a UNIT.d/tlsmirror.conf; returns how many. */
static size_t each_enabled(void (*fn)(const char *unit, void *arg), void *arg)
{
	DIR *d = opendir(units_dir());
	size_t n = 0;
	if (!d)
		return 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < STATUS_MAX_UNITS) {
		size_t l = strlen(e->d_name);
		if (l < 3 || strcmp(e->d_name + l - 2, ".d"))
			continue;
		char unit[256], file[4200];
		if (l - 2 >= sizeof(unit))
			continue;
		memcpy(unit, e->d_name, l - 2);
		unit[l - 2] = 0;
		snprintf(file, sizeof(file), "%s/%s/%s", units_dir(), e->d_name, UNITS_DROPIN);
		if (access(file, F_OK))
			continue;
		fn(unit, arg);
		n++;
	}
	closedir(d);
	return n;
}

static void disable_one(const char *unit, void *arg)
{
	int *failed = arg;
	if (remove_dropin(unit) < 0)
		*failed = 1;
	else
		printf("  systemctl restart %s\n", unit);
}

int units_disable(int argc, char **argv)
{
	if (argc == 1 && !strcmp(argv[0], "--all")) {
		int failed = 0;
		size_t n = each_enabled(disable_one, &failed);
		if (n)
			printf("apply it: systemctl daemon-reload, then restart the units above\n");
		else
			printf("tlsmirror: no unit was enabled\n");
		return failed;
	}
	char unit[256];
	int rc = one_unit(argc, argv, "disable", unit, sizeof(unit), NULL);
	if (rc)
		return rc;
	int r = remove_dropin(unit);
	if (r < 0)
		return 1;
	if (!r) {
		printf("tlsmirror: %s was not enabled (no %s/%s.d/%s)\n", unit, units_dir(), unit,
		       UNITS_DROPIN);
		return 0;
	}
	printf("apply it (the service restarts without the capture library):\n"
	       "  systemctl daemon-reload\n"
	       "  systemctl restart %s\n", unit);
	return 0;
}

/* ---- status ---- */

struct attached {
	int pid;
	char comm[32];
	char unit[256];              /* its .service, or the last part of its cgroup */
	int is_service;
};

/* The unit of pid from /proc/PID/cgroup: the last .service of the v2 line
 * ("0::/system.slice/x.service") or of v1's name=systemd line, whichever
 * names one (a unified systemd under a kernel that also has a name=systemd
 * hierarchy, as in containers, leaves that one at "/"); else the last part
 * of the first of them. */
static void pid_unit(int pid, struct attached *at)
{
	char path[64], line[1024];
	snprintf(path, sizeof(path), "/proc/%d/cgroup", pid);
	snprintf(at->unit, sizeof(at->unit), "?");
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	int have_other = 0;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		if (strncmp(line, "0::", 3) && !strstr(line, ":name=systemd:"))
			continue;
		const char *cg = strchr(strchr(line, ':') + 1, ':') + 1;
		/* the last component ending in .service: the unit */
		const char *best = NULL, *last = cg;
		size_t best_len = 0;
		for (const char *p = cg; *p;) {
			const char *slash = strchr(p, '/');
			size_t l = slash ? (size_t)(slash - p) : strlen(p);
			if (l > 8 && !memcmp(p + l - 8, ".service", 8)) {
				best = p;
				best_len = l;
			}
			if (l)
				last = p;
			p += l + (slash ? 1 : 0);
		}
		if (best && best_len < sizeof(at->unit)) {
			memcpy(at->unit, best, best_len);
			at->unit[best_len] = 0;
			at->is_service = 1;
			break;
		}
		if (!have_other)
			snprintf(at->unit, sizeof(at->unit), "%s", *last ? last : "/");
		have_other = 1;
	}
	fclose(f);
}

/* The attached processes of the agent's text: "pid=N ... comm=X state=attached ...". */
static size_t parse_attached(const char *stats, struct attached *v, size_t max)
{
	size_t n = 0;
	for (const char *l = stats; l && *l && n < max;) {
		const char *end = strchr(l, '\n');
		size_t len = end ? (size_t)(end - l) : strlen(l);
		char line[1024];
		if (len < sizeof(line) && !strncmp(l, "pid=", 4)) {
			memcpy(line, l, len);
			line[len] = 0;
			const char *c = strstr(line, " comm="), *s = strstr(line, " state=attached");
			if (s && c) {
				memset(&v[n], 0, sizeof(v[n]));
				v[n].pid = atoi(line + 4);
				sscanf(c + 6, "%31s", v[n].comm);
				pid_unit(v[n].pid, &v[n]);
				n++;
			}
		}
		l = end ? end + 1 : NULL;
	}
	return n;
}

struct status_ctx {
	struct attached *att;
	size_t n_att;
	int *shown;
	int agent;
};

static void status_one(const char *unit, void *arg)
{
	struct status_ctx *c = arg;
	size_t k = 0;
	char pids[512] = "";
	size_t at = 0;
	for (size_t i = 0; i < c->n_att; i++) {
		if (!c->att[i].is_service || strcmp(c->att[i].unit, unit))
			continue;
		c->shown[i] = 1;
		k++;
		if (at + 16 < sizeof(pids))
			at += (size_t)snprintf(pids + at, sizeof(pids) - at, "%s%d", at ? " " : "",
					       c->att[i].pid);
	}
	if (!c->agent)
		printf("%-32s enabled   -\n", unit);
	else if (k)
		printf("%-32s enabled   %zu attached (pid %s)\n", unit, k, pids);
	else
		printf("%-32s enabled   none attached (restarted since enable?)\n", unit);
}

int units_status(const char *sock, const char *stats)
{
	static struct attached att[STATUS_MAX_PIDS];
	static int shown[STATUS_MAX_PIDS];
	size_t n = stats ? parse_attached(stats, att, STATUS_MAX_PIDS) : 0;
	memset(shown, 0, sizeof(shown));
	if (stats)
		printf("agent: running on %s, %zu process%s attached\n", sock, n, n == 1 ? "" : "es");
	else
		printf("agent: not answering on %s (not running, or not allowed: root and group "
		       "tlsmirror may ask)\n", sock);
	printf("%-32s %-9s %s\n", "UNIT", "DROP-IN", "PROCESSES");
	struct status_ctx c = { att, n, shown, stats != NULL };
	size_t en = each_enabled(status_one, &c);
	for (size_t i = 0; i < n; i++)
		if (!shown[i])
			printf("%-32s %-9s pid %d (%s)\n", att[i].unit, "-", att[i].pid, att[i].comm);
	if (!en)
		printf("(no unit enabled: tlsmirror enable UNIT; drop-ins in %s)\n", units_dir());
	return 0;
}
