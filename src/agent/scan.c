/* tlsmirror scan: which TLS stacks each process carries, and whether tlsmirror mirrors them. */
#include "agent/procmap.h"
#include "agent/reach.h"
#include "common/elf.h"
#include "transport/ctl.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define SCAN_MAX_FILES 4096    /* ELF files whose symbols are remembered */
#define SCAN_MAX_AGENT 65536   /* pids the agent reports */
#define SCAN_MAX_OBJS 1024     /* mapped files looked at per process */

enum stack { ST_OPENSSL, ST_GNUTLS, ST_NSS, ST_STATIC, ST_GO, ST_JAVA, ST_RUSTLS, ST_N };

static const char *const stack_name[ST_N] = {
	"openssl", "gnutls", "nss", "static-openssl", "go-crypto/tls", "java-jsse", "rustls",
};

/* What else reaches a stack the capture library does not hook. */
static const char *const other_way[ST_N] = {
	[ST_NSS] = "NSS is not hooked: SSLKEYLOGFILE (NSS writes it) + passive decryption, "
		   "or terminate TLS at a broker",
	[ST_STATIC] = "a key log (node: --tls-keylog=FILE) + passive decryption, or terminate "
		      "TLS at a broker",
	[ST_GO] = "Go's crypto/tls calls no TLS library: tls.Config.KeyLogWriter + passive "
		  "decryption, or terminate TLS at a broker",
	[ST_JAVA] = "JSSE runs inside the JVM: a key-log Java agent + passive decryption, or "
		    "terminate TLS at a broker",
	[ST_RUSTLS] = "rustls is compiled in: its KeyLog (SSLKEYLOGFILE where enabled) + passive "
		      "decryption, or terminate TLS at a broker",
};

/* What one ELF file (not a known TLS library) carries, by its symbols. */
struct file_info {
	dev_t dev;
	ino_t ino;
	unsigned stacks;     /* 1 << enum stack */
	int boring;
	int stripped;        /* ST_STATIC without SSL_read in any symbol table */
};

struct proc_scan {
	pid_t pid;
	unsigned stacks;
	char obj[ST_N][PROCMAP_PATH];
	int boring;
	int stripped;
	char lib[PROCMAP_PATH + 32]; /* libtlsmirror.so via /proc/PID/root, "" if not */
	size_t nobjs;
	uint64_t seen[SCAN_MAX_OBJS]; /* inodes already looked at */
};

static struct {
	struct file_info files[SCAN_MAX_FILES];
	size_t nfiles;
	pid_t agent_pids[SCAN_MAX_AGENT];
	uint32_t agent_inline[SCAN_MAX_AGENT][2]; /* its inline_hooks, inline_refused */
	size_t nagent;
	int agent_up;
	const char *sock;
} sc;

/* ---- the ELF files ---- */

struct sym_hits {
	int ssl_read, ssl_write, boring, go, go_tls, rustls;
};

static int sym_cb(const char *name, uint64_t value, uint64_t size, int defined, int type,
		  void *arg)
{
	struct sym_hits *h = arg;
	if (!defined)
		return 0;
	if (name[0] == 'S' && (!strcmp(name, "SSL_read") || !strcmp(name, "SSL_read_ex")))
		h->ssl_read = 1;
	else if (name[0] == 'S' && (!strcmp(name, "SSL_write") || !strcmp(name, "SSL_write_ex")))
		h->ssl_write = 1;
	else if (name[0] == 'B' && !strncmp(name, "BORINGSSL_", 10))
		h->boring = 1;
	else if (name[0] == 'r' && !strcmp(name, "runtime.main"))
		h->go = 1;
	else if (name[0] == 'c' && !strncmp(name, "crypto/tls.", 11))
		h->go_tls = 1;
	if (!h->rustls && strstr(name, "rustls"))
		h->rustls = 1;
	return 0;
}

/* The stacks an executable or unknown library carries, cached by inode. */
static const struct file_info *inspect(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return NULL;
	for (size_t i = 0; i < sc.nfiles; i++)
		if (sc.files[i].dev == st.st_dev && sc.files[i].ino == st.st_ino)
			return &sc.files[i];
	struct file_info fi = { .dev = st.st_dev, .ino = st.st_ino };
	struct elf_file e;
	if (elf_open(&e, path) == 0) {
		struct sym_hits h = { 0 };
		elf_symbols(&e, ELF_SYMS_DYN | ELF_SYMS_FULL, sym_cb, &h);
		if (h.ssl_read && h.ssl_write) {
			fi.stacks |= 1u << ST_STATIC;
		} else if (elf_section_contains(&e, ".rodata", "ssl/ssl_lib.c")) {
			/* OpenSSL's (and BoringSSL's) error strings name their
			 * source files: libssl is in there, its symbols are not */
			fi.stacks |= 1u << ST_STATIC;
			fi.stripped = 1;
		}
		fi.boring = h.boring;
		int go = h.go || elf_has_section(&e, ".go.buildinfo");
		/* a stripped Go binary keeps function names in .gopclntab */
		if (go && (h.go_tls || elf_section_contains(&e, ".gopclntab", "crypto/tls.(*Conn)")))
			fi.stacks |= 1u << ST_GO;
		if (h.rustls)
			fi.stacks |= 1u << ST_RUSTLS;
	}
	elf_close(&e);
	if (sc.nfiles == SCAN_MAX_FILES)
		return NULL; /* cache full: the caller counts nothing for this one */
	sc.files[sc.nfiles] = fi;
	return &sc.files[sc.nfiles++];
}

/* Whether our library (as the target maps it) has hooks for a stack. */
static int lib_hooks(const char *lib, enum stack s)
{
	static char last[PROCMAP_PATH + 32];
	static int has[ST_N];
	if (strcmp(last, lib)) {
		struct elf_file e;
		uint64_t v;
		memset(has, 0, sizeof(has));
		if (elf_open(&e, lib) == 0) {
			has[ST_OPENSSL] = elf_find_symbol(&e, "SSL_read", &v) == 0;
			has[ST_GNUTLS] = elf_find_symbol(&e, "gnutls_record_recv", &v) == 0;
		}
		elf_close(&e);
		snprintf(last, sizeof(last), "%s", lib);
	}
	return has[s];
}

/* ---- one process ---- */

static void found(struct proc_scan *p, enum stack s, const char *path)
{
	if (!(p->stacks & (1u << s)))
		snprintf(p->obj[s], sizeof(p->obj[s]), "%s", path);
	p->stacks |= 1u << s;
}

/* The library names that say which stack it is. */
static int by_name(struct proc_scan *p, const char *path)
{
	static const struct { const char *stem; enum stack s; } names[] = {
		{ "libssl3.so", ST_NSS }, { "libnss3.so", ST_NSS }, { "libssl.so", ST_OPENSSL },
		{ "libgnutls.so", ST_GNUTLS }, { "libjvm.so", ST_JAVA },
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (procmap_is_lib(path, names[i].stem)) {
			found(p, names[i].s, path);
			return 1;
		}
	/* system libraries that are none of these: not worth reading */
	static const char *const plain[] = { "libc.so", "ld-linux", "libm.so", "libcrypto.so",
					     "libpthread.so", "libdl.so", "libz.so", "libstdc++.so",
					     "libgcc_s.so", "libtlsmirror.so" };
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
		if (procmap_is_lib(path, plain[i]))
			return 1;
	return 0;
}

static int map_cb(const struct procmap_ent *m, void *arg)
{
	struct proc_scan *p = arg;
	if (m->path[0] != '/' || strstr(m->path, " (deleted)"))
		return 0;
	for (size_t i = 0; i < p->nobjs; i++)
		if (p->seen[i] == m->inode)
			return 0;
	if (p->nobjs == SCAN_MAX_OBJS)
		return 0;
	p->seen[p->nobjs++] = m->inode;
	if (procmap_is_lib(m->path, "libtlsmirror"))
		snprintf(p->lib, sizeof(p->lib), "/proc/%d/root%s", (int)p->pid, m->path);
	if (by_name(p, m->path))
		return 0;
	char root[PROCMAP_PATH + 32];
	snprintf(root, sizeof(root), "/proc/%d/root%s", (int)p->pid, m->path);
	const struct file_info *fi = inspect(root);
	for (int s = 0; fi && s < ST_N; s++)
		if (fi->stacks & (1u << s))
			found(p, (enum stack)s, m->path);
	if (fi && fi->boring)
		p->boring = 1;
	if (fi && fi->stripped)
		p->stripped = 1;
	return 0;
}

/* 1 + its index when the agent reads pid's ring, else 0. */
static size_t agent_has(pid_t pid)
{
	for (size_t i = 0; i < sc.nagent; i++)
		if (sc.agent_pids[i] == pid)
			return i + 1;
	return 0;
}

static void read_comm(pid_t pid, char *out, size_t len)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	FILE *f = fopen(path, "re");
	snprintf(out, len, "?");
	if (f) {
		if (fgets(out, (int)len, f))
			out[strcspn(out, "\n")] = 0;
		fclose(f);
	}
	for (char *c = out; *c; c++)
		if (isspace((unsigned char)*c) || !isprint((unsigned char)*c) || *c == '=')
			*c = '_';
}

/* The verdict on one stack of a process: "yes", "waiting" or "no", and why. */
static const char *how_loaded(pid_t pid);

static const char *verdict_static(const struct proc_scan *p, char *why, size_t len)
{
	if (p->stripped) {
		snprintf(why, len, "static TLS, stripped: not reachable (SSL_read is in no symbol "
			 "table, and tlsmirror does not search code by signature): %s",
			 other_way[ST_STATIC]);
		return "no";
	}
	if (!p->lib[0]) {
		snprintf(why, len, "started without the capture library: restart it under "
			 "tlsmirror run (in-place hooks are installed at start only; attach does "
			 "not patch code), or %s", other_way[ST_STATIC]);
		return "no";
	}
	if (!strncmp(how_loaded(p->pid), "loaded late", 11)) {
		snprintf(why, len, "library loaded late (tlsmirror attach), which patches no code: "
			 "restart it under tlsmirror run, or %s", other_way[ST_STATIC]);
		return "no";
	}
	if (!sc.agent_up) {
		snprintf(why, len, "library loaded, but no agent answers on %s", sc.sock);
		return "no";
	}
	size_t i = agent_has(p->pid);
	if (!i) {
		snprintf(why, len, "library loaded; the agent has not seen it yet (no TLS call since "
			 "the agent started)");
		return "waiting";
	}
	if (sc.agent_inline[i - 1][0] && !sc.agent_inline[i - 1][1]) {
		snprintf(why, len, "library loaded, SSL_read/SSL_write... of the program hooked in "
			 "place, the agent reads its ring");
		return "yes";
	}
	snprintf(why, len, "library loaded, in-place hooks refused (the agent's log says why: "
		 "code patching off, a prologue that cannot be relocated, loaded late): %s",
		 other_way[ST_STATIC]);
	return "no";
}

static const char *verdict(const struct proc_scan *p, enum stack s, char *why, size_t len)
{
	if (s == ST_STATIC)
		return verdict_static(p, why, len);
	if (s != ST_OPENSSL && s != ST_GNUTLS) {
		snprintf(why, len, "%s", other_way[s]);
		return "no";
	}
	if (!p->lib[0]) {
		snprintf(why, len, "started without the capture library: tlsmirror attach %d "
			 "(or restart it under tlsmirror run)", (int)p->pid);
		return "no";
	}
	if (!lib_hooks(p->lib, s)) {
		snprintf(why, len, "this build of libtlsmirror.so has no %s back-end: a key log + "
			 "passive decryption, or terminate TLS at a broker", stack_name[s]);
		return "no";
	}
	if (!sc.agent_up) {
		snprintf(why, len, "library loaded, but no agent answers on %s", sc.sock);
		return "no";
	}
	if (agent_has(p->pid)) {
		snprintf(why, len, "library loaded, hooks installed, the agent reads its ring");
		return "yes";
	}
	snprintf(why, len, "library loaded; the agent has not seen it yet (no TLS call since "
		 "the agent started)");
	return "waiting";
}

/* Prints the process's lines; 0, or -errno when its maps are unreadable. */
static int scan_pid(pid_t pid, int explicit_pid)
{
	struct proc_scan *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->pid = pid;
	int rc = procmap_each(pid, map_cb, p);
	char exe[PROCMAP_PATH], link[64];
	snprintf(link, sizeof(link), "/proc/%d/exe", (int)pid);
	ssize_t n = rc ? -1 : readlink(link, exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = 0;
		const char *b = strrchr(exe, '/');
		/* a JVM maps libjvm.so; the java launcher names it before it does */
		if (b && !strcmp(b + 1, "java"))
			found(p, ST_JAVA, exe);
	}
	char comm[32];
	read_comm(pid, comm, sizeof(comm));
	if (rc) {
		if (explicit_pid)
			printf("pid=%d comm=%s error=%s\n", (int)pid, comm,
			       rc == -ESRCH ? "no such process" : strerror(-rc));
		free(p);
		return rc;
	}
	if (!p->stacks && explicit_pid)
		printf("pid=%d comm=%s stack=none mirrored=no reason=no TLS library or TLS code found\n",
		       (int)pid, comm);
	for (int s = 0; s < ST_N; s++) {
		if (!(p->stacks & (1u << s)))
			continue;
		char why[512];
		const char *v = verdict(p, (enum stack)s, why, sizeof(why));
		const char *name = s == ST_STATIC && p->boring ? "static-boringssl" : stack_name[s];
		printf("pid=%d comm=%s stack=%s object=%s mirrored=%s reason=%s\n", (int)pid, comm,
		       name, p->obj[s], v, why);
	}
	free(p);
	return 0;
}

/* How the library came into pid: LD_PRELOAD in its initial environment, or not. */
static const char *how_loaded(pid_t pid)
{
	char path[64], buf[65536];
	snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return "loaded (how: environment unreadable)";
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	for (size_t at = 0; at < n; at += strlen(buf + at) + 1)
		if (!strncmp(buf + at, "LD_PRELOAD=", 11) && strstr(buf + at, "libtlsmirror"))
			return "preloaded";
	return "loaded late (tlsmirror attach)";
}

size_t scan_summary(pid_t pid, int inline_hooked, char *buf, size_t len)
{
	struct proc_scan *p = calloc(1, sizeof(*p));
	size_t at = 0;
	if (!len)
		return 0;
	buf[0] = 0;
	if (!p || (p->pid = pid, procmap_each(pid, map_cb, p)) < 0) {
		snprintf(buf, len, "memory map unreadable");
		free(p);
		return strlen(buf);
	}
	at = (size_t)snprintf(buf, len, "library %s;", p->lib[0] ? how_loaded(pid) : "not mapped");
	for (int s = 0; s < ST_N && at < len; s++) {
		if (!(p->stacks & (1u << s)))
			continue;
		int hooked = ((s == ST_OPENSSL || s == ST_GNUTLS) && p->lib[0] &&
			      lib_hooks(p->lib, (enum stack)s)) || (s == ST_STATIC && inline_hooked);
		int n = snprintf(buf + at, len - at, " %s (%s) %s", stack_name[s], p->obj[s],
				 hooked ? "hooked" : "NOT hooked");
		at = n < 0 ? at : at + (size_t)n;
	}
	if (!p->stacks && at < len)
		at += (size_t)snprintf(buf + at, len - at, " no TLS stack found");
	free(p);
	return at < len ? at : len - 1;
}

/* ---- the agent ---- */

/* The pids the agent reads rings of (its stats' "pid=N ... state=attached" lines). */
static void ask_agent(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		return;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	char *buf = NULL;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto out;
	struct ctl_hello h;
	memset(&h, 0, sizeof(h));
	h.magic = CTL_MAGIC;
	h.version = CTL_VERSION;
	h.type = CTL_STATS;
	h.pid = (uint32_t)getpid();
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	buf = malloc(CTL_STATS_MAX + 1);
	ssize_t n = -1;
	if (buf && send(fd, &h, sizeof(h), MSG_NOSIGNAL) == (ssize_t)sizeof(h))
		n = recv(fd, buf, CTL_STATS_MAX, 0);
	if (n <= 0)
		goto out;
	buf[n] = 0;
	sc.agent_up = 1;
	for (char *line = buf, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		int pid;
		if (sscanf(line, "pid=%d", &pid) == 1 && strstr(line, " state=attached") &&
		    sc.nagent < SCAN_MAX_AGENT) {
			const char *ih = strstr(line, " inline_hooks="), *ir = strstr(line, " inline_refused=");
			sc.agent_inline[sc.nagent][0] = ih ? (uint32_t)strtoul(ih + 14, NULL, 10) : 0;
			sc.agent_inline[sc.nagent][1] = ir ? (uint32_t)strtoul(ir + 16, NULL, 10) : 0;
			sc.agent_pids[sc.nagent++] = pid;
		}
	}
out:
	free(buf);
	close(fd);
}

static int all_pids(void)
{
	DIR *d = opendir("/proc");
	if (!d) {
		fprintf(stderr, "tlsmirror: cannot read /proc: %s\n", strerror(errno));
		return 1;
	}
	unsigned long scanned = 0, unreadable = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 0 || pid > INT_MAX || pid == getpid())
			continue;
		scanned++;
		int rc = scan_pid((pid_t)pid, 0);
		unreadable += rc < 0 && rc != -ESRCH;
	}
	closedir(d);
	printf("scanned=%lu unreadable=%lu agent=%s\n", scanned, unreadable,
	       sc.agent_up ? sc.sock : "none");
	return 0;
}

int scan_main(int argc, char **argv, const char *sock)
{
	sc.sock = sock;
	ask_agent(sock);
	if (!argc)
		return all_pids();
	int rc = 0;
	for (int i = 0; i < argc; i++) {
		char *end;
		long pid = strtol(argv[i], &end, 10);
		if (*end || pid <= 0 || pid > INT_MAX) {
			fprintf(stderr, "tlsmirror: scan: '%s' is not a process id\n", argv[i]);
			return 2;
		}
		if (scan_pid((pid_t)pid, 1) < 0)
			rc = 1;
	}
	return rc;
}
