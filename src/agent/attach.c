/* tlsmirror attach: loading the capture library into a running x86_64 process with ptrace, leaving it as it was. */
#include "agent/procmap.h"
#include "agent/reach.h"
#include "common/elf.h"

#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ATTACH_MAX_THREADS 4096   /* threads looked at for a safe one */
#define PICK_TRIES 300            /* interrupts of one thread before giving up (~1 s) */
#define CALL_WARN_MS 5000         /* a call in the target this slow is reported */
#define STOP_TIMEOUT_MS 2000      /* the thread to stop after PTRACE_INTERRUPT */
#define RED_ZONE 128              /* the x86_64 ABI's, below the target's stack pointer */
#define SCRATCH 2048u             /* our strings and the return address, below the red zone */
#define STACK_SAVE (256u << 10)  /* below the stack pointer: what our calls' frames may overwrite */
#define STACK_MIN (32u << 10)    /* less room than this below it: refused */
#define XSTATE_MAX 16384          /* FPU/SSE/AVX(-512) registers */
#define LIBC_DLOPEN_PRIVATE 0x80000000u /* __RTLD_DLOPEN, which __libc_dlopen_mode wants */
#define SECCOMP_MAX_FILTERS 64    /* filters of a target read; more: refused */
#ifndef PTRACE_SECCOMP_GET_FILTER
#define PTRACE_SECCOMP_GET_FILTER 0x420c
#endif

/* The steps, in order; TLSMIRROR_ATTACH_FAIL_STEP=N fails step N (test hook). */
enum step {
	S_CHECK = 1, S_RESOLVE, S_SEIZE, S_STOP, S_SAVE, S_WRITE, S_DLOPEN, S_INIT, S_RESTORE,
	S_DETACH, S_DONE
};
static const char *const step_name[] = {
	[S_CHECK] = "check", [S_RESOLVE] = "resolve", [S_SEIZE] = "seize", [S_STOP] = "stop",
	[S_SAVE] = "save", [S_WRITE] = "write", [S_DLOPEN] = "dlopen", [S_INIT] = "init",
	[S_RESTORE] = "restore", [S_DETACH] = "detach",
};

struct target {
	pid_t pid, tid;
	const char *lib, *sock;
	int mem;                          /* /proc/PID/mem, once seized */
	uint64_t dlopen_fn, dlclose_fn, dlerror_fn;
	int dlopen_mode;
	uint64_t init_off, undo_off;      /* tlsmirror_attached, tlsmirror_detach in the file */
	uint64_t lib_base;                /* where the target mapped the library */
	int seized, saved, written, loaded, inited;
	int left_loaded;                  /* undone, but the library stays mapped */
	int pending_sig;                  /* a signal the stop took: delivered at detach */
	struct user_regs_struct regs;     /* as the thread was */
	uint8_t xstate[XSTATE_MAX];
	struct iovec xiov;
	int have_xstate;
	uint64_t sigmask;
	uint64_t scratch;                 /* lowest address of our area */
	uint8_t *stack_save;              /* [save_lo, regs.rsp) as it was */
	uint64_t save_lo;
	uint64_t handle;
	int unpatched;
	struct timespec t_stop;
	char why[512];                    /* the reason of a failure */
};

static int fail_step;  /* TLSMIRROR_ATTACH_FAIL_STEP */
static int pause_step, pause_ms; /* TLSMIRROR_ATTACH_PAUSE_STEP, _PAUSE_MS */

static int failf(struct target *t, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int failf(struct target *t, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(t->why, sizeof(t->why), fmt, ap);
	va_end(ap);
	return err < 0 ? err : -EINVAL;
}

/* The test hooks: step s pauses (the target may die meanwhile), or fails,
 * before it does anything. */
static int injected(struct target *t, enum step s)
{
	if (pause_step == (int)s) {
		fprintf(stderr, "tlsmirror: pid %d: pausing %d ms before step %d (%s) "
			"(TLSMIRROR_ATTACH_PAUSE_STEP, test hook)\n", (int)t->pid, pause_ms, (int)s,
			step_name[s]);
		struct timespec ts = { pause_ms / 1000, (long)(pause_ms % 1000) * 1000000L };
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	if (fail_step != (int)s)
		return 0;
	return failf(t, -ECANCELED, "step %d (%s) failed by TLSMIRROR_ATTACH_FAIL_STEP (test hook)",
		     (int)s, step_name[s]);
}

static uint64_t ms_since(const struct timespec *a)
{
	struct timespec b;
	clock_gettime(CLOCK_MONOTONIC, &b);
	return (uint64_t)(b.tv_sec - a->tv_sec) * 1000 + (uint64_t)(b.tv_nsec - a->tv_nsec) / 1000000;
}

static double ms_f(const struct timespec *a)
{
	struct timespec b;
	clock_gettime(CLOCK_MONOTONIC, &b);
	return (double)(b.tv_sec - a->tv_sec) * 1e3 + (double)(b.tv_nsec - a->tv_nsec) / 1e6;
}

/* ---- step 1: may we, and is it worth it ---- */

/* A "Key:\tvalue" line of /proc/PID/status (or /proc/self/status). */
static int status_field(pid_t pid, const char *key, char *out, size_t len)
{
	char path[64], line[512];
	snprintf(path, sizeof(path), pid ? "/proc/%d/status" : "/proc/self/status", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? -ESRCH : -errno;
	size_t kl = strlen(key);
	int rc = -ENOENT;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, kl) || line[kl] != ':')
			continue;
		char *v = line + kl + 1;
		v += strspn(v, " \t");
		v[strcspn(v, "\n")] = 0;
		snprintf(out, len, "%s", v);
		rc = 0;
		break;
	}
	fclose(f);
	return rc;
}

static int have_cap_ptrace(void)
{
	char v[64];
	if (status_field(0, "CapEff", v, sizeof(v)) < 0)
		return 0;
	return (strtoull(v, NULL, 16) >> 19) & 1; /* CAP_SYS_PTRACE */
}

static int check_yama(struct target *t, int cap)
{
	FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");
	int scope = 0;
	if (!f)
		return 0; /* no Yama */
	if (fscanf(f, "%d", &scope) != 1)
		scope = 0;
	fclose(f);
	if (scope >= 3)
		return failf(t, -EPERM, "ptrace is disabled on this system (kernel.yama.ptrace_scope"
			     "=3; only a reboot lifts it): restart the program under tlsmirror run");
	if (scope >= 1 && !cap)
		return failf(t, -EPERM, "kernel.yama.ptrace_scope=%d allows attaching to a process "
			     "that is not our child only with CAP_SYS_PTRACE: run tlsmirror attach as "
			     "root (or restart the program under tlsmirror run)", scope);
	return 0;
}

static int check_owner(struct target *t, int cap)
{
	char uids[128], comm[64];
	if (status_field(t->pid, "Uid", uids, sizeof(uids)) < 0)
		return failf(t, -ESRCH, "no such process");
	unsigned r, e, s, fs;
	if (sscanf(uids, "%u %u %u %u", &r, &e, &s, &fs) != 4)
		return failf(t, -EIO, "cannot read its uids");
	uid_t me = geteuid();
	if (!cap && (r != me || e != me || s != me))
		return failf(t, -EPERM, "it runs as uid %u and we as uid %u: attaching needs root "
			     "(CAP_SYS_PTRACE)", e, (unsigned)me);
	if (status_field(t->pid, "TracerPid", uids, sizeof(uids)) == 0 && atoi(uids) > 0) {
		char p[64];
		int tracer = atoi(uids);
		snprintf(p, sizeof(p), "/proc/%d/comm", tracer);
		FILE *f = fopen(p, "re");
		snprintf(comm, sizeof(comm), "?");
		if (f) {
			if (fgets(comm, sizeof(comm), f))
				comm[strcspn(comm, "\n")] = 0;
			fclose(f);
		}
		return failf(t, -EBUSY, "it is already traced by pid %d (%s): a process has one "
			     "tracer at a time; detach that one first", tracer, comm);
	}
	if (status_field(t->pid, "State", uids, sizeof(uids)) == 0 &&
	    (uids[0] == 'Z' || uids[0] == 'X' || uids[0] == 'T' || uids[0] == 't'))
		return failf(t, -EINVAL, "it is %s", uids[0] == 'T' || uids[0] == 't' ?
			     "stopped (resume it first)" : "exiting");
	if (status_field(t->pid, "Seccomp", uids, sizeof(uids)) == 0 && atoi(uids) == 1)
		return failf(t, -EPERM, "it runs in strict seccomp mode (only read, write and exit "
			     "allowed): nothing can be loaded into it; restart it under tlsmirror run");
	if (status_field(t->pid, "SigIgn", uids, sizeof(uids)) == 0 &&
	    (strtoull(uids, NULL, 16) >> (SIGSEGV - 1)) & 1)
		return failf(t, -EINVAL, "it ignores SIGSEGV, which ends our call in it");
	return 0;
}

/* The library as the target sees it (its mount namespace, its root). */
static int check_lib(struct target *t)
{
	char there[PATH_MAX + 32];
	struct stat a, b;
	if (t->lib[0] != '/')
		return failf(t, -EINVAL, "the library path %s is not absolute", t->lib);
	snprintf(there, sizeof(there), "/proc/%d/root%s", (int)t->pid, t->lib);
	if (stat(t->lib, &a) < 0 || stat(there, &b) < 0 || a.st_dev != b.st_dev ||
	    a.st_ino != b.st_ino)
		return failf(t, -ENOENT, "it does not see %s (another mount namespace or chroot): "
			     "install the library inside it and set TLSMIRROR_LIB", t->lib);
	struct elf_file e;
	int rc = elf_open(&e, t->lib);
	if (!rc)
		rc = elf_find_symbol(&e, "tlsmirror_attached", &t->init_off);
	if (!rc)
		rc = elf_find_symbol(&e, "tlsmirror_detach", &t->undo_off);
	elf_close(&e);
	if (rc)
		return failf(t, rc, "%s has no tlsmirror_attached (an older library?)", t->lib);
	return 0;
}

static int loaded_cb(const struct procmap_ent *m, void *arg)
{
	return procmap_is_lib(m->path, "libtlsmirror") ? 1 : 0;
}

static int check_target(struct target *t)
{
	int cap = have_cap_ptrace(), rc;
	char exe[64];
	if (t->pid == getpid())
		return failf(t, -EINVAL, "that is tlsmirror itself");
	if ((rc = check_owner(t, cap)) || (rc = check_yama(t, cap)))
		return rc;
	snprintf(exe, sizeof(exe), "/proc/%d/exe", (int)t->pid);
	struct elf_file e;
	rc = elf_open(&e, exe);
	int ok = !rc && e.is64 && e.machine == EM_X86_64;
	unsigned machine = e.machine;
	elf_close(&e);
	if (rc == -ESRCH || rc == -ENOENT)
		return failf(t, -ESRCH, "no such process");
	if (rc)
		return failf(t, rc, "cannot read its program (%s)", strerror(-rc));
	if (!ok)
		return failf(t, -ENOEXEC, "it is not an x86_64 program (ELF machine %u): attach "
			     "supports x86_64 only; restart it under tlsmirror run", machine);
	if ((rc = check_lib(t)))
		return rc;
	rc = procmap_each(t->pid, loaded_cb, NULL);
	if (rc == 1)
		return failf(t, -EEXIST, "the capture library is loaded in it already");
	return rc < 0 ? failf(t, rc, "cannot read its memory map (%s)", strerror(-rc)) : 0;
}

/* ---- step 2: where dlopen is in the target ---- */

struct libc_find {
	pid_t pid;
	const char *stem;
	uint64_t base_map;  /* start of the mapping at file offset 0 */
	char path[PROCMAP_PATH];
	uint64_t xlo, xhi;  /* an executable mapping */
};

static int libc_cb(const struct procmap_ent *m, void *arg)
{
	struct libc_find *f = arg;
	if (m->path[0] != '/' || !procmap_is_lib(m->path, f->stem))
		return 0;
	if (f->path[0] && strcmp(f->path, m->path))
		return 0; /* a second copy: the first one is the one in use */
	snprintf(f->path, sizeof(f->path), "%s", m->path);
	if (m->off == 0 && !f->base_map)
		f->base_map = m->lo;
	if (m->perms[2] == 'x' && !f->xlo) {
		f->xlo = m->lo;
		f->xhi = m->hi;
	}
	return 0;
}

/* name's address in the object stem of the target; 0 if absent. */
static uint64_t remote_sym(struct libc_find *f, const char *name)
{
	char file[PROCMAP_PATH + 32];
	struct elf_file e;
	uint64_t v = 0, addr = 0;
	snprintf(file, sizeof(file), "/proc/%d/root%s", (int)f->pid, f->path);
	if (elf_open(&e, file) == 0 && elf_find_symbol(&e, name, &v) == 0 && v) {
		addr = f->base_map - elf_first_load(&e) + v;
		if (addr < f->xlo || addr >= f->xhi)
			addr = 0; /* not code in a mapping we saw: do not jump there */
	}
	elf_close(&e);
	return addr;
}

static int resolve(struct target *t)
{
	static const char *const stems[] = { "libc.so", "libc.musl", "ld-musl", "libdl.so" };
	for (size_t i = 0; i < sizeof(stems) / sizeof(stems[0]) && !t->dlopen_fn; i++) {
		struct libc_find f = { .pid = t->pid, .stem = stems[i] };
		int rc = procmap_each(t->pid, libc_cb, &f);
		if (rc < 0)
			return failf(t, rc, "cannot read its memory map (%s)", strerror(-rc));
		if (!f.path[0] || !f.base_map || !f.xlo)
			continue;
		t->dlopen_fn = remote_sym(&f, "dlopen");
		t->dlclose_fn = remote_sym(&f, "dlclose");
		t->dlerror_fn = remote_sym(&f, "dlerror");
		t->dlopen_mode = RTLD_NOW;
		if (!t->dlopen_fn && i == 0) { /* glibc before 2.34 without libdl loaded */
			t->dlopen_fn = remote_sym(&f, "__libc_dlopen_mode");
			t->dlclose_fn = remote_sym(&f, "__libc_dlclose");
			t->dlerror_fn = 0;
			t->dlopen_mode = (int)(RTLD_NOW | LIBC_DLOPEN_PRIVATE);
		}
		if (t->dlopen_fn && !t->dlclose_fn)
			t->dlopen_fn = 0;
	}
	if (!t->dlopen_fn)
		return failf(t, -ENOENT, "it has no dlopen (statically linked, or no libc "
			     "mapped): restart it under tlsmirror run");
	return 0;
}

/* ---- steps 3, 4: one thread, stopped in a system call ---- */

/* Blocking calls a thread sleeps in holding none of libc's locks (x86_64):
 * the threads preferred. */
static int safe_syscall(long nr)
{
	static const long ok[] = { 0 /* read */, 7 /* poll */, 23 /* select */, 34 /* pause */,
		35 /* nanosleep */, 43 /* accept */, 45 /* recvfrom */, 47 /* recvmsg */,
		61 /* wait4 */, 128 /* rt_sigtimedwait */, 130 /* rt_sigsuspend */,
		230 /* clock_nanosleep */, 232 /* epoll_wait */, 247 /* waitid */,
		270 /* pselect6 */, 271 /* ppoll */, 281 /* epoll_pwait */, 288 /* accept4 */,
		441 /* epoll_pwait2 */ };
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (nr == ok[i])
			return 1;
	return 0;
}

/* Calls libc makes holding a lock our dlopen needs (malloc's, the loader's)
 * or that change the thread itself: a thread stopped in or right after one
 * is let go and caught again later. Any other system call boundary is safe:
 * the program, not libc, made that call. */
static int unsafe_syscall(long nr)
{
	static const long no[] = { 2 /* open */, 9 /* mmap */, 10 /* mprotect */, 11 /* munmap */,
		12 /* brk */, 13 /* rt_sigaction */, 14 /* rt_sigprocmask */, 25 /* mremap */,
		28 /* madvise */, 56 /* clone */, 57 /* fork */, 58 /* vfork */, 59 /* execve */,
		60 /* exit */, 202 /* futex */, 231 /* exit_group */, 257 /* openat */,
		435 /* clone3 */, 437 /* openat2 */ };
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		if (nr == no[i])
			return 1;
	return nr < 0;
}

/* The threads, the ones sleeping in a safe call first. */
static size_t list_threads(pid_t pid, pid_t *tids, size_t cap)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	size_t n = 0, good = 0;
	if (!d)
		return 0;
	struct dirent *de;
	while (n < cap && (de = readdir(d))) {
		int tid = atoi(de->d_name);
		if (tid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", (int)pid, tid);
		FILE *f = fopen(path, "re");
		long nr = -1;
		if (f) {
			if (fscanf(f, "%ld", &nr) != 1)
				nr = -1;
			fclose(f);
		}
		tids[n++] = tid;
		if (safe_syscall(nr) && good < n) { /* move it to the front, main thread first */
			pid_t x = tids[good];
			tids[good] = tids[n - 1];
			tids[n - 1] = x;
			if (tid == pid && good) {
				x = tids[0];
				tids[0] = tids[good];
				tids[good] = x;
			}
			good++;
		}
	}
	closedir(d);
	return n;
}

/* waitpid for tid, at most ms; 0 (status in *st), -ETIMEDOUT, -errno. */
static int wait_tid(pid_t tid, int *st, int ms)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned spin = 0;; spin++) {
		pid_t r = waitpid(tid, st, __WALL | WNOHANG);
		if (r == tid)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (ms_since(&t0) >= (uint64_t)ms)
			return -ETIMEDOUT;
		if (spin > 100)
			usleep(200);
	}
}

static int seize(struct target *t)
{
	pid_t tids[ATTACH_MAX_THREADS];
	size_t n = list_threads(t->pid, tids, ATTACH_MAX_THREADS);
	if (!n)
		return failf(t, -ESRCH, "no such process");
	t->tid = tids[0];
	if (ptrace(PTRACE_SEIZE, t->tid, NULL, NULL) < 0) {
		int e = errno;
		if (e == EPERM)
			return failf(t, -EPERM, "the kernel refused ptrace (EPERM): another tracer, "
				     "Yama, a non-dumpable (setuid) process, or a user namespace "
				     "we are not privileged in");
		return failf(t, -e, "ptrace(PTRACE_SEIZE): %s", strerror(e));
	}
	t->seized = 1;
	char mem[64];
	snprintf(mem, sizeof(mem), "/proc/%d/mem", (int)t->pid);
	t->mem = open(mem, O_RDWR | O_CLOEXEC);
	if (t->mem < 0)
		return failf(t, -errno, "cannot open %s: %s", mem, strerror(errno));
	return 0;
}

/* Interrupts the thread until it is caught at a safe system call. */
static int stop_thread(struct target *t)
{
	for (int i = 0; i < PICK_TRIES; i++) {
		int st;
		if (ptrace(PTRACE_INTERRUPT, t->tid, NULL, NULL) < 0)
			return failf(t, -errno, "ptrace(PTRACE_INTERRUPT): %s", strerror(errno));
		int rc = wait_tid(t->tid, &st, STOP_TIMEOUT_MS);
		if (rc)
			return failf(t, rc, "thread %d did not stop (%s)", (int)t->tid, strerror(-rc));
		if (!WIFSTOPPED(st))
			return failf(t, -ESRCH, "thread %d ended", (int)t->tid);
		clock_gettime(CLOCK_MONOTONIC, &t->t_stop);
		/* a signal-delivery stop: the signal is handed back at detach */
		int sig = (st >> 16) == 0 ? WSTOPSIG(st) : 0;
		if (sig && sig != SIGTRAP)
			t->pending_sig = sig;
		if (ptrace(PTRACE_GETREGS, t->tid, NULL, &t->regs) < 0)
			return failf(t, -errno, "ptrace(PTRACE_GETREGS): %s", strerror(errno));
		/* orig_rax >= 0: stopped in a system call (rax -ERESTART*: to be restarted
		 * when we let it go) or right after one (rax its result); in user code
		 * (an interrupt: orig_rax < 0) it might hold any lock */
		if (!unsafe_syscall((long)t->regs.orig_rax))
			return 0;
		if (ptrace(PTRACE_CONT, t->tid, NULL, (void *)(long)t->pending_sig) < 0)
			return failf(t, -errno, "ptrace(PTRACE_CONT): %s", strerror(errno));
		t->pending_sig = 0;
		usleep(3000);
	}
	return failf(t, -EAGAIN, "thread %d was never caught at a safe point (a system call "
		     "the program makes itself): try again later", (int)t->tid);
}

/* ---- step 4 (cont.): a seccomp filter must allow what our calls do ---- */

/* One classic BPF filter run on d (the kernel's seccomp checker admits
 * only these instructions); 0 and *ret, or -1 on anything else. */
static int bpf_run(const struct sock_filter *f, size_t n, const struct seccomp_data *d,
		   uint32_t *ret)
{
	uint32_t a = 0, x = 0, mem[BPF_MEMWORDS] = { 0 };
	for (size_t pc = 0; pc < n; pc++) {
		const struct sock_filter *i = &f[pc];
		uint32_t k = i->k, src = BPF_SRC(i->code) == BPF_X ? x : k;
		switch (BPF_CLASS(i->code)) {
		case BPF_LD:
		case BPF_LDX: {
			uint32_t v;
			if (i->code == (BPF_LD | BPF_W | BPF_ABS)) {
				if (k % 4 || k > sizeof(*d) - 4)
					return -1;
				memcpy(&v, (const uint8_t *)d + k, 4);
			} else if (BPF_MODE(i->code) == BPF_LEN) {
				v = sizeof(*d);
			} else if (BPF_MODE(i->code) == BPF_IMM) {
				v = k;
			} else if (BPF_MODE(i->code) == BPF_MEM && k < BPF_MEMWORDS) {
				v = mem[k];
			} else {
				return -1;
			}
			*(BPF_CLASS(i->code) == BPF_LD ? &a : &x) = v;
			break;
		}
		case BPF_ST:
		case BPF_STX:
			if (k >= BPF_MEMWORDS)
				return -1;
			mem[k] = BPF_CLASS(i->code) == BPF_ST ? a : x;
			break;
		case BPF_ALU:
			switch (BPF_OP(i->code)) {
			case BPF_ADD: a += src; break;
			case BPF_SUB: a -= src; break;
			case BPF_MUL: a *= src; break;
			case BPF_DIV: if (!src) return -1; a /= src; break;
			case BPF_MOD: if (!src) return -1; a %= src; break;
			case BPF_AND: a &= src; break;
			case BPF_OR: a |= src; break;
			case BPF_XOR: a ^= src; break;
			case BPF_LSH: a = src < 32 ? a << src : 0; break;
			case BPF_RSH: a = src < 32 ? a >> src : 0; break;
			case BPF_NEG: a = -a; break;
			default: return -1;
			}
			break;
		case BPF_JMP: {
			int c;
			switch (BPF_OP(i->code)) {
			case BPF_JA: pc += k; continue;
			case BPF_JEQ: c = a == src; break;
			case BPF_JGT: c = a > src; break;
			case BPF_JGE: c = a >= src; break;
			case BPF_JSET: c = (a & src) != 0; break;
			default: return -1;
			}
			pc += c ? i->jt : i->jf;
			break;
		}
		case BPF_RET:
			*ret = BPF_RVAL(i->code) == BPF_A ? a : k;
			return 0;
		case BPF_MISC:
			if (BPF_MISCOP(i->code) == BPF_TAX)
				x = a;
			else
				a = x;
			break;
		default:
			return -1;
		}
	}
	return -1; /* ran off the end: the kernel's checker never lets that in */
}

/* The system calls dlopen and tlsmirror_attached make (strace), with the
 * arguments a filter may look at (mmap's and mprotect's protections). */
static const struct { int nr; uint64_t a2, a3; const char *name; } our_calls[] = {
	{ 0, 0, 0, "read" }, { 3, 0, 0, "close" }, { 5, 0, 0, "fstat" }, { 8, 0, 0, "lseek" },
	{ 9, PROT_READ, MAP_PRIVATE | MAP_DENYWRITE, "mmap" },
	{ 9, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FIXED | MAP_DENYWRITE, "mmap" },
	{ 9, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_DENYWRITE, "mmap" },
	{ 9, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, "mmap" },
	{ 10, PROT_NONE, 0, "mprotect" }, { 10, PROT_READ, 0, "mprotect" },
	{ 10, PROT_READ | PROT_WRITE, 0, "mprotect" }, { 11, 0, 0, "munmap" }, { 12, 0, 0, "brk" },
	{ 17, 0, 0, "pread64" }, { 39, 0, 0, "getpid" }, { 186, 0, 0, "gettid" },
	{ 202, 0, 0, "futex" }, { 257, (uint64_t)O_RDONLY | O_CLOEXEC, 0, "openat" },
	{ 262, 0, 0, "newfstatat" }, { 332, 0, 0, "statx" },
};

static int check_seccomp(struct target *t)
{
	char mode[32];
	if (status_field(t->pid, "Seccomp", mode, sizeof(mode)) < 0 || atoi(mode) != 2)
		return 0;
	struct sock_filter *f = malloc(BPF_MAXINSNS * sizeof(*f));
	int rc = 0, nf = 0;
	if (!f)
		return failf(t, -ENOMEM, "out of memory");
	for (;; nf++) {
		long n = ptrace(PTRACE_SECCOMP_GET_FILTER, t->tid, (void *)(long)nf, NULL);
		if (n < 0 && errno == ENOENT && nf > 0)
			break; /* all read */
		if (n < 0) {
			rc = failf(t, -EPERM, "it runs under a seccomp filter that cannot be read "
				   "(%s: reading it needs CAP_SYS_ADMIN): loading the library might "
				   "kill it; restart it under tlsmirror run", strerror(errno));
			break;
		}
		if (nf >= SECCOMP_MAX_FILTERS || n <= 0 || n > BPF_MAXINSNS ||
		    ptrace(PTRACE_SECCOMP_GET_FILTER, t->tid, (void *)(long)nf, f) != n) {
			rc = failf(t, -EPERM, "its seccomp filters cannot be read whole: refused");
			break;
		}
		for (size_t c = 0; c < sizeof(our_calls) / sizeof(our_calls[0]) && !rc; c++) {
			struct seccomp_data d = { .nr = our_calls[c].nr, .arch = AUDIT_ARCH_X86_64,
						  .instruction_pointer = t->regs.rip };
			d.args[2] = our_calls[c].a2;
			d.args[3] = our_calls[c].a3;
			uint32_t ret = 0;
			if (bpf_run(f, (size_t)n, &d, &ret) < 0)
				rc = failf(t, -EPERM, "its seccomp filter %d has an instruction we do "
					   "not understand: refused", nf);
			else if ((ret & SECCOMP_RET_ACTION_FULL) != SECCOMP_RET_ALLOW &&
				 (ret & SECCOMP_RET_ACTION_FULL) != SECCOMP_RET_LOG)
				rc = failf(t, -EPERM, "its seccomp filter does not allow %s (action "
					   "0x%08x), which loading the library needs: refused (it would "
					   "fail or kill the process); restart it under tlsmirror run",
					   our_calls[c].name, ret);
		}
		if (rc)
			break;
	}
	free(f);
	return rc;
}

/* ---- steps 5..9: save, call, restore ---- */

static int mem_rw(struct target *t, uint64_t at, void *buf, size_t len, int write)
{
	ssize_t n = write ? pwrite(t->mem, buf, len, (off_t)at) : pread(t->mem, buf, len, (off_t)at);
	return n == (ssize_t)len ? 0 : -EFAULT;
}

struct stack_find {
	uint64_t sp, lo;
};

static int stack_cb(const struct procmap_ent *m, void *arg)
{
	struct stack_find *f = arg;
	if (f->sp <= m->lo || f->sp > m->hi || m->perms[0] != 'r' || m->perms[1] != 'w')
		return 0;
	f->lo = m->lo;
	return 1;
}

static int save_state(struct target *t)
{
	t->xiov.iov_base = t->xstate;
	t->xiov.iov_len = sizeof(t->xstate);
	t->have_xstate = ptrace(PTRACE_GETREGSET, t->tid, (void *)NT_X86_XSTATE, &t->xiov) == 0;
	if (!t->have_xstate &&
	    ptrace(PTRACE_GETFPREGS, t->tid, NULL, t->xstate) < 0)
		return failf(t, -errno, "cannot read the FPU registers: %s", strerror(errno));
	if (ptrace(PTRACE_GETSIGMASK, t->tid, (void *)sizeof(t->sigmask), &t->sigmask) < 0)
		return failf(t, -errno, "ptrace(PTRACE_GETSIGMASK): %s", strerror(errno));
	struct stack_find sf = { .sp = t->regs.rsp };
	if (procmap_each(t->pid, stack_cb, &sf) != 1 || t->regs.rsp - sf.lo < STACK_MIN)
		return failf(t, -ENOMEM, "its stack pointer 0x%llx is not in a mapping with room "
			     "below it", (unsigned long long)t->regs.rsp);
	t->save_lo = t->regs.rsp - sf.lo > STACK_SAVE ? t->regs.rsp - STACK_SAVE : sf.lo;
	free(t->stack_save);
	t->stack_save = malloc(t->regs.rsp - t->save_lo);
	t->scratch = (t->regs.rsp - RED_ZONE - SCRATCH) & ~(uint64_t)15;
	if (!t->stack_save || mem_rw(t, t->save_lo, t->stack_save, t->regs.rsp - t->save_lo, 0))
		return failf(t, -EFAULT, "cannot read its stack at 0x%" PRIx64, t->save_lo);
	t->saved = 1;
	return 0;
}

/* Layout of our area: [scratch: return address 0 | lib path | socket path]. */
#define OFF_LIB 64u
#define OFF_SOCK 1088u

static int write_args(struct target *t)
{
	uint8_t area[SCRATCH];
	memset(area, 0, sizeof(area));
	if (strlen(t->lib) >= OFF_SOCK - OFF_LIB || strlen(t->sock) >= SCRATCH - OFF_SOCK)
		return failf(t, -ENAMETOOLONG, "the library or socket path is too long");
	memcpy(area + OFF_LIB, t->lib, strlen(t->lib));
	memcpy(area + OFF_SOCK, t->sock, strlen(t->sock));
	t->written = 1; /* from here on the stack must be put back */
	if (mem_rw(t, t->scratch, area, SCRATCH, 1))
		return failf(t, -EFAULT, "cannot write its stack");
	/* during our calls: every signal but the SIGSEGV that ends them waits */
	uint64_t mask = ~(1ULL << (SIGSEGV - 1));
	if (ptrace(PTRACE_SETSIGMASK, t->tid, (void *)sizeof(mask), &mask) < 0)
		return failf(t, -errno, "ptrace(PTRACE_SETSIGMASK): %s", strerror(errno));
	return 0;
}

/* Calls fn(a0, a1) in the stopped thread; it returns to address 0, whose
 * SIGSEGV stops it again. 0 and *ret, or -errno. */
static int call(struct target *t, uint64_t fn, uint64_t a0, uint64_t a1, uint64_t *ret)
{
	struct user_regs_struct r = t->regs;
	uint64_t sp = t->scratch + 16; /* 16-aligned; [scratch+8] holds the return address 0 */
	r.rsp = sp - 8;
	r.rip = fn;
	r.rdi = a0;
	r.rsi = a1;
	r.rax = 0;
	r.orig_rax = (unsigned long long)-1; /* no system call restart on the way out */
	uint64_t zero = 0;
	if (mem_rw(t, r.rsp, &zero, sizeof(zero), 1))
		return failf(t, -EFAULT, "cannot write its stack");
	if (ptrace(PTRACE_SETREGS, t->tid, NULL, &r) < 0 ||
	    ptrace(PTRACE_CONT, t->tid, NULL, NULL) < 0)
		return failf(t, -errno, "cannot start the call: %s", strerror(errno));
	for (;;) {
		int st, rc = wait_tid(t->tid, &st, CALL_WARN_MS);
		if (rc == -ETIMEDOUT) {
			/* giving up would let it return to address 0 and crash: wait */
			fprintf(stderr, "tlsmirror: pid %d: the call in it has taken %d s so far; "
				"waiting (it holds a lock another thread has?)\n", (int)t->pid,
				CALL_WARN_MS / 1000);
			continue;
		}
		if (rc)
			return failf(t, rc, "the call in the target did not return (%s)", strerror(-rc));
		if (!WIFSTOPPED(st))
			return failf(t, -ESRCH, "the target ended during the call");
		if ((st >> 16) == PTRACE_EVENT_STOP) { /* a group stop: carry on */
			if (ptrace(PTRACE_CONT, t->tid, NULL, NULL) < 0)
				return failf(t, -errno, "ptrace(PTRACE_CONT): %s", strerror(errno));
			continue;
		}
		int sig = WSTOPSIG(st);
		if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) {
			/* a stop signal (unblockable SIGSTOP) in the middle of dlopen: held
			 * back until detach, so the call finishes and nothing is left half done */
			if (!t->pending_sig)
				t->pending_sig = sig;
			if (ptrace(PTRACE_CONT, t->tid, NULL, NULL) < 0)
				return failf(t, -errno, "ptrace(PTRACE_CONT): %s", strerror(errno));
			continue;
		}
		if (ptrace(PTRACE_GETREGS, t->tid, NULL, &r) < 0)
			return failf(t, -errno, "ptrace(PTRACE_GETREGS): %s", strerror(errno));
		if (sig != SIGSEGV || r.rip != 0)
			return failf(t, -EFAULT, "signal %d at 0x%llx during the call", WSTOPSIG(st),
				     (unsigned long long)r.rip);
		*ret = r.rax;
		return 0;
	}
}

/* dlerror()'s text in the target, for the message. */
static void remote_dlerror(struct target *t, char *out, size_t len)
{
	uint64_t p = 0;
	snprintf(out, len, "no reason given");
	if (!t->dlerror_fn || call(t, t->dlerror_fn, 0, 0, &p) || !p)
		return;
	char buf[256] = { 0 };
	for (size_t i = 0; i + 1 < sizeof(buf); i += 16) /* stop at an unmapped page */
		if (mem_rw(t, p + i, buf + i, 16, 0))
			break;
	buf[sizeof(buf) - 1] = 0;
	snprintf(out, len, "%s", buf);
}

static int do_dlopen(struct target *t)
{
	uint64_t h = 0;
	int rc = call(t, t->dlopen_fn, t->scratch + OFF_LIB, (uint64_t)(unsigned)t->dlopen_mode, &h);
	if (rc)
		return rc;
	if (!h) {
		char err[256];
		remote_dlerror(t, err, sizeof(err));
		return failf(t, -ENOEXEC, "dlopen in the target failed: %s", err);
	}
	t->handle = h;
	t->loaded = 1;
	return 0;
}

struct lib_find {
	uint64_t base;
	const char *path;
};

static int lib_cb(const struct procmap_ent *m, void *arg)
{
	struct lib_find *f = arg;
	if (!strcmp(m->path, f->path) && m->off == 0) {
		f->base = m->lo;
		return 1;
	}
	return 0;
}

static int do_init(struct target *t)
{
	struct lib_find f = { .path = t->lib };
	uint64_t rv = 0;
	if (procmap_each(t->pid, lib_cb, &f) != 1)
		return failf(t, -ENOENT, "the library is not in its memory map after dlopen");
	t->lib_base = f.base;
	int rc = call(t, f.base + t->init_off, t->scratch + OFF_SOCK, 0, &rv);
	if (rc)
		return rc;
	t->inited = 1; /* got_patch_loaded() may have changed some slots even when it failed */
	if ((int)rv < 0)
		return failf(t, (int)rv, "the library's set-up failed: %s", strerror(-(int)rv));
	t->unpatched = (int)rv;
	return 0;
}

/* Puts back what we changed; the first error wins. */
static int restore(struct target *t)
{
	int rc = 0;
	if (t->written && mem_rw(t, t->save_lo, t->stack_save, t->regs.rsp - t->save_lo, 1))
		rc = failf(t, -EFAULT, "cannot restore its stack");
	if (ptrace(PTRACE_SETSIGMASK, t->tid, (void *)sizeof(t->sigmask), &t->sigmask) < 0 && !rc)
		rc = failf(t, -errno, "cannot restore its signal mask");
	if ((t->have_xstate ? ptrace(PTRACE_SETREGSET, t->tid, (void *)NT_X86_XSTATE, &t->xiov)
			    : ptrace(PTRACE_SETFPREGS, t->tid, NULL, t->xstate)) < 0 && !rc)
		rc = failf(t, -errno, "cannot restore its FPU registers");
	if (ptrace(PTRACE_SETREGS, t->tid, NULL, &t->regs) < 0 && !rc)
		rc = failf(t, -errno, "cannot restore its registers");
	t->written = t->saved = 0;
	return rc;
}

static size_t thread_count(pid_t pid)
{
	pid_t tids[ATTACH_MAX_THREADS];
	return list_threads(pid, tids, ATTACH_MAX_THREADS);
}

/* Undoes whatever was done, in reverse. */
static void undo(struct target *t)
{
	if (t->loaded && !t->saved && t->seized && (save_state(t) || write_args(t)))
		return;
	uint64_t rv = 0;
	if (t->inited && (call(t, t->lib_base + t->undo_off, 0, 0, &rv) || (int)rv < 0)) {
		t->left_loaded = 2; /* still hooked: unloading it now would crash the target */
	} else if (t->loaded && thread_count(t->pid) > 1) {
		t->left_loaded = 1; /* another thread may be inside a hook at this moment */
	} else if (t->loaded && call(t, t->dlclose_fn, t->handle, 0, &rv) == 0) {
		t->loaded = 0;
	}
	if (t->saved)
		restore(t);
}

static int detach(struct target *t)
{
	if (!t->seized)
		return 0;
	t->seized = 0;
	if (ptrace(PTRACE_DETACH, t->tid, NULL, (void *)(long)t->pending_sig) < 0)
		return failf(t, -errno, "ptrace(PTRACE_DETACH): %s", strerror(errno));
	return 0;
}

/* ---- one process ---- */

/* The target exited or was killed (a zombie until its parent reaps it): the
 * thread we hold is (a main thread that called pthread_exit is a zombie in
 * a process that lives on: not that one). */
static int target_gone(const struct target *t)
{
	char path[96], line[128];
	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)t->pid, (int)t->tid);
	FILE *f = fopen(path, "re");
	if (!f)
		return errno == ENOENT || errno == ESRCH;
	int gone = 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "State:", 6)) {
			char *v = line + 6 + strspn(line + 6, " \t");
			gone = *v == 'Z' || *v == 'X';
			break;
		}
	fclose(f);
	return gone;
}

static int attach_one(struct target *t, double *stopped_ms)
{
	int rc = 0;
	enum step s, at = S_CHECK;
	sigset_t all, old;
	sigemptyset(&all);
	sigaddset(&all, SIGINT);
	sigaddset(&all, SIGTERM);
	sigaddset(&all, SIGHUP);
	sigaddset(&all, SIGQUIT);
	/* dying with the thread in the middle of our call would leave it to crash */
	sigprocmask(SIG_BLOCK, &all, &old);
	for (s = S_CHECK; s < S_DONE && !rc; s++) {
		at = s;
		if ((rc = injected(t, s)))
			break;
		switch (s) {
		case S_CHECK: rc = check_target(t); break;
		case S_RESOLVE: rc = resolve(t); break;
		case S_SEIZE: rc = seize(t); break;
		case S_STOP: rc = stop_thread(t); if (!rc) rc = check_seccomp(t); break;
		case S_SAVE: rc = save_state(t); break;
		case S_WRITE: rc = write_args(t); break;
		case S_DLOPEN: rc = do_dlopen(t); break;
		case S_INIT: rc = do_init(t); break;
		case S_RESTORE: rc = restore(t); break;
		case S_DETACH: rc = detach(t); break;
		default: break;
		}
	}
	if (rc) {
		char why[sizeof(t->why)];
		memcpy(why, t->why, sizeof(why));
		int gone = at > S_RESOLVE && t->tid && target_gone(t);
		if (!gone)
			undo(t);
		detach(t);
		if (gone) /* killed or exited meanwhile: nothing is left to undo */
			snprintf(t->why, sizeof(t->why), "it ended during step %d (%s) (%.400s)", (int)at,
				 step_name[at], why);
		else
			memcpy(t->why, why, sizeof(why));
	}
	if (t->t_stop.tv_sec)
		*stopped_ms = ms_f(&t->t_stop);
	if (t->mem >= 0)
		close(t->mem);
	t->mem = -1;
	sigprocmask(SIG_SETMASK, &old, NULL);
	return rc;
}

int attach_main(int argc, char **argv, const char *sock, const char *lib)
{
#if !defined(__x86_64__)
	fprintf(stderr, "tlsmirror: attach supports x86_64 only; use tlsmirror run\n");
	return 1;
#endif
	if (!argc) {
		fprintf(stderr, "usage: tlsmirror attach [--socket PATH] PID...\n");
		return 2;
	}
	const char *f = getenv("TLSMIRROR_ATTACH_FAIL_STEP");
	fail_step = f ? atoi(f) : 0;
	f = getenv("TLSMIRROR_ATTACH_PAUSE_STEP");
	pause_step = f ? atoi(f) : 0;
	f = getenv("TLSMIRROR_ATTACH_PAUSE_MS");
	pause_ms = f && atoi(f) > 0 ? atoi(f) : 1000;
	char abs[PATH_MAX];
	if (!realpath(lib, abs)) {
		fprintf(stderr, "tlsmirror: %s: %s\n", lib, strerror(errno));
		return 1;
	}
	int bad = 0;
	for (int i = 0; i < argc; i++) {
		char *end;
		long pid = strtol(argv[i], &end, 10);
		if (*end || pid <= 0 || pid > INT_MAX) {
			fprintf(stderr, "tlsmirror: attach: '%s' is not a process id\n", argv[i]);
			return 2;
		}
		struct target *t = calloc(1, sizeof(*t));
		if (!t)
			return 1;
		t->pid = (pid_t)pid;
		t->lib = abs;
		t->sock = sock;
		t->mem = -1;
		double stopped = 0;
		int rc = attach_one(t, &stopped);
		if (rc) {
			fprintf(stderr, "tlsmirror: cannot attach to %ld: %s%s\n", pid, t->why,
				t->left_loaded == 2 ? " (the library stays loaded and hooked: it could "
				"not be unhooked)" : t->left_loaded ? " (the library stays mapped, "
				"unhooked: another thread might be inside it)" : "");
			bad = 1;
		} else {
			printf("attached pid=%ld tid=%d stopped_ms=%.3f unpatched_objs=%d\n", pid,
			       (int)t->tid, stopped, t->unpatched);
		}
		fflush(stdout);
		free(t->stack_save);
		free(t);
	}
	return bad;
}
