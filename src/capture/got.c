/* RTLD_DEEPBIND objects bind libssl/libc past our hooks: dlopen is watched and their GOT entries pointed at the hooks. */
#include "capture/capture.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GOT_MAX_OBJS 4096   /* objects remembered as done; beyond, rescanned each time */
#define GOT_MAX_UNDO 16384  /* slots remembered for tlsmirror attach's undo */
#define LOCK_TRIES 10000    /* yields while another thread scans (a few ms at most) */

/* Every symbol the library hooks (src/capture/exports.map), dlopen included:
 * a DEEPBIND object's own dlopen calls then come here as well. */
static const char *const hooked[] = {
	"SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex", "SSL_peek", "SSL_peek_ex",
	"SSL_shutdown", "SSL_free", "SSL_do_handshake", "SSL_connect", "SSL_accept",
	"SSL_sendfile", "SSL_read_early_data", "SSL_write_early_data",
	"SSL_CTX_set_keylog_callback", "SSL_CTX_get_keylog_callback", "SSL_set_SSL_CTX",
	"BIO_read", "BIO_read_ex", "BIO_write", "BIO_write_ex",
	"gnutls_init", "gnutls_deinit", "gnutls_handshake", "gnutls_bye",
	"gnutls_record_send", "gnutls_record_send2", "gnutls_record_send_range",
	"gnutls_record_send_early_data", "gnutls_record_send_file",
	"gnutls_record_recv", "gnutls_record_recv_seq", "gnutls_record_recv_early_data",
	"gnutls_record_recv_packet", "gnutls_session_set_keylog_function", "gnutls_server_name_set",
	"read", "write", "send", "sendto", "sendmsg", "recv", "recvfrom", "recvmsg",
	"readv", "writev", "__read_chk", "__recv_chk", "close", "dlopen",
};
#define NHOOKED (sizeof(hooked) / sizeof(hooked[0]))

#if __ELF_NATIVE_CLASS == 64
#define REL_SYM(i) ELF64_R_SYM(i)
#define REL_TYPE(i) ELF64_R_TYPE(i)
#else
#define REL_SYM(i) ELF32_R_SYM(i)
#define REL_TYPE(i) ELF32_R_TYPE(i)
#endif

#if defined(__x86_64__)
#define R_SLOT R_X86_64_JUMP_SLOT
#define R_GLOB R_X86_64_GLOB_DAT
#define R_ABS R_X86_64_64
#elif defined(__aarch64__)
#define R_SLOT R_AARCH64_JUMP_SLOT
#define R_GLOB R_AARCH64_GLOB_DAT
#define R_ABS R_AARCH64_ABS64
#elif defined(__i386__)
#define R_SLOT R_386_JMP_SLOT
#define R_GLOB R_386_GLOB_DAT
#define R_ABS R_386_32
#else
#define R_SLOT 0xfffffffeu  /* unknown architecture: nothing matches, nothing patched */
#define R_GLOB 0xfffffffeu
#define R_ABS 0xfffffffeu
#endif

static struct {
	pthread_mutex_t lock;
	int ready;                       /* hook addresses resolved */
	int late;                        /* loaded by tlsmirror attach, not preloaded */
	uintptr_t self_base;
	void *hook[NHOOKED];             /* our definitions */
	void *real[NHOOKED];             /* what they call: never one of ours */
	uintptr_t done[GOT_MAX_OBJS];    /* load addresses of objects handled */
	size_t ndone, nstartup;
	unsigned long long adds, subs;   /* dl_iterate_phdr generation of the last scan */
	uint64_t failed;                 /* objects skipped on error */
	struct { void **slot; void *old; int prot; } undo[GOT_MAX_UNDO]; /* late: what we changed */
	size_t nundo;
	int undo_lost;                   /* more than GOT_MAX_UNDO: no undo possible */
} got = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* ---- one object ---- */

struct obj {
	uintptr_t base, lo, hi;          /* load bias, mapped range */
	uintptr_t relro_lo, relro_hi;    /* pages glibc made read-only */
	const ElfW(Phdr) *phdr;
	size_t phnum;
	const ElfW(Sym) *symtab;
	const char *strtab;
	size_t strsz;
	long page;
};

static int in_obj(const struct obj *o, uintptr_t a, size_t len)
{
	return a >= o->lo && a <= o->hi && len <= o->hi - a;
}

/* The protection glibc left on the page holding a (RELRO: read-only). */
static int prot_of(const struct obj *o, uintptr_t a)
{
	if (a >= o->relro_lo && a < o->relro_hi)
		return PROT_READ;
	for (size_t i = 0; i < o->phnum; i++) {
		const ElfW(Phdr) *p = &o->phdr[i];
		uintptr_t s = o->base + p->p_vaddr;
		if (p->p_type != PT_LOAD || a < s || a - s >= p->p_memsz)
			continue;
		return (p->p_flags & PF_R ? PROT_READ : 0) | (p->p_flags & PF_W ? PROT_WRITE : 0) |
		       (p->p_flags & PF_X ? PROT_EXEC : 0);
	}
	return -1;
}

/* Rewrites one pointer-sized slot; 0 or -errno. */
static int put_slot(const struct obj *o, uintptr_t a, void *v)
{
	int prot = prot_of(o, a);
	if (prot < 0)
		return -EFAULT;
	void *page = (void *)(a & ~(uintptr_t)(o->page - 1)); /* an aligned slot: one page */
	size_t len = (size_t)o->page;
	if (!(prot & PROT_WRITE) && mprotect(page, len, prot | PROT_WRITE) < 0)
		return -errno;
	__atomic_store_n((void **)a, v, __ATOMIC_RELEASE);
	if (!(prot & PROT_WRITE) && mprotect(page, len, prot) < 0)
		return -errno;
	return 0;
}

static int hook_index(const char *name)
{
	for (size_t i = 0; i < NHOOKED; i++)
		if (name[0] == hooked[i][0] && !strcmp(name, hooked[i]))
			return (int)i;
	return -1;
}

/* One relocation: if it binds a hooked symbol to the real function (or is a
 * lazy PLT slot not resolved yet), point it at our hook. */
static int one_reloc(const struct obj *o, uintptr_t off, size_t type, size_t symi, long addend)
{
	if (type != R_SLOT && type != R_GLOB && type != R_ABS)
		return 0;
	if (!symi || addend)
		return 0;
	const ElfW(Sym) *sym = &o->symtab[symi];
	if (!in_obj(o, (uintptr_t)sym, sizeof(*sym)) || sym->st_name >= o->strsz)
		return 0;
	int h = hook_index(o->strtab + sym->st_name);
	if (h < 0 || !got.real[h])
		return 0;
	uintptr_t slot = o->base + off;
	if (!in_obj(o, slot, sizeof(void *)) || slot % sizeof(void *))
		return -EFAULT;
	void *v = __atomic_load_n((void **)slot, __ATOMIC_ACQUIRE);
	int lazy = type == R_SLOT && (uintptr_t)v >= o->lo && (uintptr_t)v < o->hi &&
		   sym->st_shndx == SHN_UNDEF;
	if (v == got.hook[h] || (v != got.real[h] && !lazy))
		return 0;
	int err = put_slot(o, slot, got.hook[h]);
	if (!err && got.late) {
		if (got.nundo < GOT_MAX_UNDO) {
			got.undo[got.nundo].slot = (void **)slot;
			got.undo[got.nundo].prot = prot_of(o, slot);
			got.undo[got.nundo++].old = v;
		} else {
			got.undo_lost = 1;
		}
	}
	return err;
}

static uintptr_t dyn_ptr(const struct obj *o, uintptr_t p)
{
	/* glibc stores most d_ptr relocated; some loaders do not */
	return o->base && p < o->base ? p + o->base : p;
}

static int walk_relocs(const struct obj *o, uintptr_t tab, size_t size, int rela)
{
	size_t ent = rela ? sizeof(ElfW(Rela)) : sizeof(ElfW(Rel));
	if (!tab || !size)
		return 0;
	if (!in_obj(o, tab, size))
		return -EFAULT;
	for (size_t i = 0; i < size / ent; i++) {
		int err;
		if (rela) {
			const ElfW(Rela) *r = (const ElfW(Rela) *)tab + i;
			err = one_reloc(o, r->r_offset, REL_TYPE(r->r_info),
					REL_SYM(r->r_info), (long)r->r_addend);
		} else {
			const ElfW(Rel) *r = (const ElfW(Rel) *)tab + i;
			err = one_reloc(o, r->r_offset, REL_TYPE(r->r_info),
					REL_SYM(r->r_info), 0);
		}
		if (err)
			return err;
	}
	return 0;
}

/* Finds the object's range, RELRO and dynamic section; 0 or -errno. */
static int obj_init(struct obj *o, const struct dl_phdr_info *info, const ElfW(Dyn) **dyn)
{
	memset(o, 0, sizeof(*o));
	o->base = info->dlpi_addr;
	o->phdr = info->dlpi_phdr;
	o->phnum = info->dlpi_phnum;
	o->page = sysconf(_SC_PAGESIZE);
	o->lo = UINTPTR_MAX;
	*dyn = NULL;
	for (size_t i = 0; i < o->phnum; i++) {
		const ElfW(Phdr) *p = &o->phdr[i];
		uintptr_t s = o->base + p->p_vaddr;
		if (p->p_type == PT_LOAD) {
			if (s < o->lo)
				o->lo = s;
			if (s + p->p_memsz > o->hi)
				o->hi = s + p->p_memsz;
		} else if (p->p_type == PT_DYNAMIC) {
			*dyn = (const ElfW(Dyn) *)s;
		} else if (p->p_type == PT_GNU_RELRO) {
			/* what _dl_protect_relro made read-only: whole pages only */
			o->relro_lo = s & ~(uintptr_t)(o->page - 1);
			o->relro_hi = (s + p->p_memsz) & ~(uintptr_t)(o->page - 1);
		}
	}
	if (o->page <= 0 || !*dyn || o->lo >= o->hi)
		return -ENOEXEC;
	return 0;
}

static int patch_object(const struct dl_phdr_info *info)
{
	struct obj o;
	const ElfW(Dyn) *d;
	int err = obj_init(&o, info, &d);
	if (err)
		return err;
	uintptr_t jmprel = 0, rela = 0, rel = 0;
	size_t pltsz = 0, relasz = 0, relsz = 0;
	long pltrel = 0;
	for (; in_obj(&o, (uintptr_t)d, sizeof(*d)) && d->d_tag != DT_NULL; d++) {
		switch (d->d_tag) {
		case DT_SYMTAB: o.symtab = (const ElfW(Sym) *)dyn_ptr(&o, d->d_un.d_ptr); break;
		case DT_STRTAB: o.strtab = (const char *)dyn_ptr(&o, d->d_un.d_ptr); break;
		case DT_STRSZ: o.strsz = d->d_un.d_val; break;
		case DT_JMPREL: jmprel = dyn_ptr(&o, d->d_un.d_ptr); break;
		case DT_PLTRELSZ: pltsz = d->d_un.d_val; break;
		case DT_PLTREL: pltrel = (long)d->d_un.d_val; break;
		case DT_RELA: rela = dyn_ptr(&o, d->d_un.d_ptr); break;
		case DT_RELASZ: relasz = d->d_un.d_val; break;
		case DT_REL: rel = dyn_ptr(&o, d->d_un.d_ptr); break;
		case DT_RELSZ: relsz = d->d_un.d_val; break;
		default: break;
		}
	}
	if (!o.symtab || !o.strtab || !in_obj(&o, (uintptr_t)o.strtab, o.strsz))
		return -ENOEXEC;
	if (!(err = walk_relocs(&o, jmprel, pltsz, pltrel == DT_RELA)) &&
	    !(err = walk_relocs(&o, rela, relasz, 1)))
		err = walk_relocs(&o, rel, relsz, 0);
	return err;
}

/* ---- which objects ---- */

/* libssl, libcrypto, libgnutls and libc are what the hooks call; the dynamic linker,
 * the vDSO and sanitizer runtimes are left alone too. */
static int skip_name(const char *name, int late)
{
	static const char *const stems[] = { "libssl.so", "libcrypto.so", "libgnutls.so", "libc.so", "ld-linux",
					     "ld64.so", "linux-vdso", "linux-gate", "libasan.so",
					     "libubsan.so", "libtsan.so", "libdl.so", "libpthread.so" };
	const char *b = strrchr(name, '/');
	b = b ? b + 1 : name;
	/* loaded late, libssl's own calls to read()... must come to us as under LD_PRELOAD */
	for (size_t i = late ? 2 : 0; i < sizeof(stems) / sizeof(stems[0]); i++)
		if (!strncmp(b, stems[i], strlen(stems[i])))
			return 1;
	return 0;
}

static int is_done(uintptr_t base)
{
	for (size_t i = 0; i < got.ndone; i++)
		if (got.done[i] == base)
			return 1;
	return 0;
}

struct scan {
	int mark_only;   /* constructor: remember what is loaded, patch nothing */
	int first;
	unsigned long long adds, subs;
};

/* dl_iterate_phdr's load/unload counts: a scan is due when they changed. */
static int gen_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct scan *s = arg;
	if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof(info->dlpi_subs)) {
		s->adds = info->dlpi_adds;
		s->subs = info->dlpi_subs;
	}
	return 1;
}

static int scan_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct scan *s = arg;
	const char *name = info->dlpi_name ? info->dlpi_name : "";
	if (s->first) {
		s->first = 0;
		gen_cb(info, size, s);
	}
	if (info->dlpi_addr == got.self_base || is_done(info->dlpi_addr))
		return 0;
	if (!s->mark_only && (*name || got.late) && !skip_name(name, got.late) && patch_object(info) < 0)
		got.failed++; /* fail-open: this object stays as it is */
	if (got.ndone < GOT_MAX_OBJS)
		got.done[got.ndone++] = info->dlpi_addr;
	return 0;
}

/* Our own definitions (by our own handle) and the real functions behind them. */
static void resolve(void)
{
	if (!got.ready) {
		Dl_info di;
		if (!dladdr((void *)resolve, &di) || !di.dli_fname)
			return;
		got.self_base = (uintptr_t)di.dli_fbase;
		void *self = dlopen(di.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
		if (!self)
			return;
		for (size_t i = 0; i < NHOOKED; i++) {
			void *p = dlsym(self, hooked[i]);
			Dl_info pi;
			got.hook[i] = p && dladdr(p, &pi) && pi.dli_fbase == di.dli_fbase ? p : NULL;
		}
		dlclose(self);
		got.ready = 1;
	}
	for (size_t i = 0; i < NHOOKED; i++) {
		if (got.real[i] || !got.hook[i])
			continue;
		void *p = hooked[i][0] == 'S' || hooked[i][0] == 'B' ? sym_ssl(hooked[i])
			  : hooked[i][0] == 'g' ? sym_gnutls(hooked[i], NULL)
						: sym_libc(hooked[i]);
		if (p != got.hook[i])
			got.real[i] = p;
	}
}

/* The scan lock. After a dlopen, wait for another scan to finish, boundedly:
 * that scan may itself wait for the loader lock our caller may hold (a
 * constructor's dlopen). In TLS calls, give up at once: the next one retries. */
static int scan_lock(int wait)
{
	for (int i = 0; i < (wait ? LOCK_TRIES : 1); i++) {
		if (!pthread_mutex_trylock(&got.lock))
			return 0;
		sched_yield();
	}
	return -EBUSY;
}

/* Patches every object loaded since the last scan. */
static void got_scan(int wait)
{
	if (scan_lock(wait))
		return;
	int saved = errno;
	struct scan s = { .first = 1, .adds = (unsigned long long)-1 };
	dl_iterate_phdr(gen_cb, &s);
	if (s.adds != got.adds || s.subs != got.subs) {
		if (s.subs != got.subs)
			got.ndone = got.nstartup; /* something was unloaded: addresses get reused */
		resolve();
		if (got.ready) {
			dl_iterate_phdr(scan_cb, &s);
			got.adds = s.adds;
			got.subs = s.subs;
		}
		dlerror(); /* a dlsym that found nothing must not show in the application's dlerror */
	}
	errno = saved;
	pthread_mutex_unlock(&got.lock);
}

void got_check(void)
{
	got_scan(0);
	uint64_t failed = __atomic_load_n(&got.failed, __ATOMIC_RELAXED);
	if (!failed)
		return;
	uint32_t epoch;
	struct ring_hdr *r = cap_ring(cap_now_ns(), &epoch);
	if (r && __atomic_load_n(&r->unpatched_objs, __ATOMIC_RELAXED) != failed)
		__atomic_store_n(&r->unpatched_objs, failed, __ATOMIC_RELAXED);
}

int got_patch_loaded(void)
{
	pthread_mutex_lock(&got.lock);
	got.late = 1;
	got.ndone = got.nstartup = 0;            /* nothing loaded before us binds to us */
	got.adds = got.subs = (unsigned long long)-1; /* a scan is due */
	pthread_mutex_unlock(&got.lock);
	got_scan(1);
	pthread_mutex_lock(&got.lock);
	int rc = got.ready ? (int)(got.failed > INT32_MAX ? INT32_MAX : got.failed) : -ENOENT;
	pthread_mutex_unlock(&got.lock);
	return rc;
}

/* Puts one slot back, with the page protection it had (put_slot's inverse). */
static int unput(void **slot, void *old, int prot, long page)
{
	void *pg = (void *)((uintptr_t)slot & ~(uintptr_t)(page - 1));
	if (!(prot & PROT_WRITE) && mprotect(pg, (size_t)page, prot | PROT_WRITE) < 0)
		return -errno;
	__atomic_store_n(slot, old, __ATOMIC_RELEASE);
	if (!(prot & PROT_WRITE) && mprotect(pg, (size_t)page, prot) < 0)
		return -errno;
	return 0;
}

int got_unpatch_loaded(void)
{
	pthread_mutex_lock(&got.lock);
	int rc = got.undo_lost ? -ENOSPC : 0;
	long page = sysconf(_SC_PAGESIZE);
	for (size_t i = got.nundo; !rc && i-- > 0;) {
		void **slot = got.undo[i].slot;
		Dl_info di;
		if (!dladdr(slot, &di))
			continue; /* its object was unloaded since */
		if (__atomic_load_n(slot, __ATOMIC_ACQUIRE) != got.undo[i].old)
			rc = unput(slot, got.undo[i].old, got.undo[i].prot, page);
	}
	if (!rc) {
		got.nundo = 0;
		got.late = 0;
	}
	pthread_mutex_unlock(&got.lock);
	return rc;
}

/* A fork while another thread scanned: the child's lock must be free. */
static void got_atfork_child(void)
{
	pthread_mutex_init(&got.lock, NULL);
}

/* Objects loaded at start-up share the global scope, our library first: no
 * need to look at them. Remember them so scans skip them. */
__attribute__((constructor)) static void got_init(void)
{
	pthread_mutex_lock(&got.lock);
	Dl_info di;
	if (dladdr((void *)got_init, &di))
		got.self_base = (uintptr_t)di.dli_fbase;
	struct scan s = { .first = 1, .mark_only = 1 };
	dl_iterate_phdr(scan_cb, &s);
	got.nstartup = got.ndone;
	got.adds = s.adds;
	got.subs = s.subs;
	pthread_mutex_unlock(&got.lock);
	pthread_atfork(NULL, NULL, got_atfork_child);
}

/* ---- dlopen ---- */

typedef void *(*dlopen_fn)(const char *, int);

static void *dlopen_missing(const char *file, int mode)
{
	return NULL;
}

static dlopen_fn real_dlopen(void)
{
	static void *slot;
	void *p = __atomic_load_n(&slot, __ATOMIC_ACQUIRE);
	if (!p) {
		p = sym_libc("dlopen");
		__atomic_store_n(&slot, p, __ATOMIC_RELEASE);
	}
	return p ? (dlopen_fn)p : dlopen_missing;
}

/* Loading in the caller's place finds the same files unless a search path
 * of the caller's would be used: its RUNPATH/RPATH for a name without a
 * slash, its DT_RPATH (inherited by the new object's dependencies) for any
 * name; the main program's RPATH is searched in any case. Names with $ORIGIN
 * expand relative to the caller. */
static int same_search(const char *file, const void *caller)
{
	if (strchr(file, '$'))
		return 0;
	Dl_info di;
	struct link_map *lm = NULL;
	if (!dladdr1(caller, &di, (void **)&lm, RTLD_DL_LINKMAP) || !lm || !lm->l_ld)
		return 0;
	int rpath = 0, runpath = 0, main_prog = lm->l_prev == NULL;
	for (const ElfW(Dyn) *d = lm->l_ld; d->d_tag != DT_NULL; d++) {
		rpath |= d->d_tag == DT_RPATH;
		runpath |= d->d_tag == DT_RUNPATH;
	}
	if (rpath && !main_prog)
		return 0;
	return strchr(file, '/') || !runpath;
}

static void *dlopen_patching(const char *file, int mode)
{
	void *h = real_dlopen()(file, mode);
	if (h)
		got_scan(1);
	return h;
}

/* Where the dlopen entry point jumps, with the application's arguments and
 * return address intact: the real dlopen (it then sees the real caller, whose
 * RUNPATH and namespace it uses) unless a DEEPBIND object is loaded that we
 * can load in the caller's place. */
__attribute__((used)) void *got_dlopen_route(const char *file, int mode, const void *caller)
{
	int saved = errno;
	void *to = (void *)real_dlopen();
	/* loaded late, nothing loaded from now on binds to us either: patch it too */
	int late = __atomic_load_n(&got.late, __ATOMIC_RELAXED);
	if (file && ((mode & RTLD_DEEPBIND) || late) && !(mode & RTLD_NOLOAD) &&
	    same_search(file, caller))
		to = (void *)dlopen_patching;
	errno = saved;
	return to;
}

#if defined(__x86_64__)
__asm__(".text\n"
	".globl dlopen\n"
	".type dlopen, @function\n"
	"dlopen:\n"
	".cfi_startproc\n"
	"endbr64\n"
	"push %rdi\n"
	".cfi_adjust_cfa_offset 8\n"
	"push %rsi\n"
	".cfi_adjust_cfa_offset 8\n"
	"sub $8, %rsp\n"
	".cfi_adjust_cfa_offset 8\n"
	"mov 24(%rsp), %rdx\n"
	"call got_dlopen_route\n"
	"add $8, %rsp\n"
	".cfi_adjust_cfa_offset -8\n"
	"pop %rsi\n"
	".cfi_adjust_cfa_offset -8\n"
	"pop %rdi\n"
	".cfi_adjust_cfa_offset -8\n"
	"jmp *%rax\n"
	".cfi_endproc\n"
	".size dlopen, .-dlopen\n");
#else
/* Elsewhere the caller can't be passed on by a jump: the real dlopen sees
 * us as its caller either way, which is harmless where same_search says so. */
__attribute__((visibility("default"))) void *dlopen(const char *file, int mode)
{
	void *(*to)(const char *, int) = (void *(*)(const char *, int))
		got_dlopen_route(file, mode, __builtin_return_address(0));
	return to(file, mode);
}
#endif
