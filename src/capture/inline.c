/* OpenSSL/BoringSSL linked into the executable: its SSL_read/SSL_write... found in the ELF symbol tables and hooked in place (a jump at the entry, the prologue relocated to a trampoline). */
#include "capture/capture.h"
#include "capture/reloc.h"
#include "common/elf.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define INL_SLOT 256                /* trampoline bytes per hooked function */
#define INL_NEAR_STEP 0x10000ULL    /* search step for a page near the program's code */
#define INL_NEAR_MAX (1ULL << 30)   /* ... this far from it at most (rel32 reach is 2 GiB) */

/* The functions hooked, in enum inl_fn order. */
static const char *const hooked_names[INL_NFN] = {
	[INL_SSL_READ] = "SSL_read", [INL_SSL_READ_EX] = "SSL_read_ex",
	[INL_SSL_WRITE] = "SSL_write", [INL_SSL_WRITE_EX] = "SSL_write_ex",
	[INL_SSL_DO_HANDSHAKE] = "SSL_do_handshake", [INL_SSL_SHUTDOWN] = "SSL_shutdown",
	[INL_SSL_FREE] = "SSL_free",
};

/* The static copy's functions the OpenSSL back-end calls (ossl.c), never hooked. */
static const char *const helper_names[] = {
	"SSL_get_fd", "SSL_is_server", "SSL_get_servername", "SSL_get0_alpn_selected",
	"SSL_version", "SSL_get_current_cipher", "SSL_CIPHER_get_name", "SSL_get_client_random",
	"SSL_get_ex_data", "SSL_set_ex_data", "CRYPTO_get_ex_new_index", "SSL_get_ex_new_index",
};
#define NHELPERS (sizeof(helper_names) / sizeof(helper_names[0]))

void *inl_real[INL_NFN];

static struct {
	uint64_t addr[INL_NFN], size[INL_NFN];
	uint64_t helper[NHELPERS];
	int found;                 /* hooked functions present */
	int hooked;                /* installed (all found, or none) */
	char why[RING_INLINE_WHY];
	int active;                /* the hooks are in place */
} inl;

void *inl_sym(const char *name)
{
	for (size_t i = 0; i < NHELPERS; i++)
		if (!strcmp(name, helper_names[i]))
			return inl.helper[i] ? (void *)(uintptr_t)inl.helper[i] : NULL;
	return NULL;
}

int inl_active(void)
{
	return __atomic_load_n(&inl.active, __ATOMIC_ACQUIRE);
}

void inl_report(struct ring_hdr *r)
{
	r->inline_hooks = (uint64_t)inl.hooked;
	r->inline_refused = (uint64_t)(inl.found - inl.hooked);
	memcpy(r->inline_why, inl.why, sizeof(r->inline_why));
}

/* The first reason stays (the agent logs it); every function found stays unhooked. */
static void refuse(const char *fn, const char *why)
{
	if (!inl.why[0])
		snprintf(inl.why, sizeof(inl.why), "%s%s%s", fn ? fn : "", fn ? ": " : "", why);
}

/* ---- the program's symbols ---- */

struct want {
	uint64_t bias;
};

static int sym_cb(const char *name, uint64_t value, uint64_t size, int defined, int type, void *arg)
{
	struct want *w = arg;
	if (!defined || type != STT_FUNC || !value || (name[0] != 'S' && name[0] != 'C'))
		return 0;
	for (int i = 0; i < INL_NFN; i++)
		if (!inl.addr[i] && !strcmp(name, hooked_names[i])) {
			inl.addr[i] = value + w->bias;
			inl.size[i] = size;
			inl.found++;
			return 0;
		}
	for (size_t i = 0; i < NHELPERS; i++)
		if (!inl.helper[i] && !strcmp(name, helper_names[i]))
			inl.helper[i] = value + w->bias;
	return 0;
}

struct main_obj {
	uintptr_t bias, lo, hi;     /* load bias; executable code range */
	int found;
	const uint32_t *gnu_hash;   /* its dynamic symbols, as the loader sees them */
	const ElfW(Sym) *symtab;
	const char *strtab;
};

static uintptr_t dyn_ptr(uintptr_t bias, uintptr_t p)
{
	/* glibc stores most d_ptr relocated; some loaders do not */
	return bias && p < bias ? p + bias : p;
}

static int main_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct main_obj *m = arg;
	m->bias = info->dlpi_addr;
	m->lo = UINTPTR_MAX;
	for (size_t i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *p = &info->dlpi_phdr[i];
		if (p->p_type != PT_LOAD || !(p->p_flags & PF_X))
			continue;
		uintptr_t s = info->dlpi_addr + p->p_vaddr;
		if (s < m->lo)
			m->lo = s;
		if (s + p->p_memsz > m->hi)
			m->hi = s + p->p_memsz;
	}
	m->found = m->lo < m->hi;
	for (size_t i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *p = &info->dlpi_phdr[i];
		if (p->p_type != PT_DYNAMIC)
			continue;
		for (const ElfW(Dyn) *d = (const ElfW(Dyn) *)(info->dlpi_addr + p->p_vaddr);
		     d->d_tag != DT_NULL; d++) {
			uintptr_t v = dyn_ptr(info->dlpi_addr, d->d_un.d_ptr);
			if (d->d_tag == DT_GNU_HASH)
				m->gnu_hash = (const uint32_t *)v;
			else if (d->d_tag == DT_SYMTAB)
				m->symtab = (const ElfW(Sym) *)v;
			else if (d->d_tag == DT_STRTAB)
				m->strtab = (const char *)v;
		}
	}
	return 1; /* the first object is the program */
}

/* The program's exported definition of name through the loader's own GNU
 * hash table (dladdr would scan every symbol of node per call): its
 * symbol, or NULL. */
static const ElfW(Sym) *gnu_lookup(const struct main_obj *m, const char *name)
{
	const uint32_t *gh = m->gnu_hash;
	if (!gh || !m->symtab || !m->strtab)
		return NULL;
	uint32_t nb = gh[0], off = gh[1], bloom = gh[2];
	if (!nb)
		return NULL;
	const uint32_t *buckets = (const uint32_t *)((const uint64_t *)(gh + 4) + bloom);
	const uint32_t *chain = buckets + nb;
	uint32_t h = 5381;
	for (const unsigned char *c = (const unsigned char *)name; *c; c++)
		h = h * 33 + *c;
	uint32_t i = buckets[h % nb];
	if (i < off)
		return NULL;
	for (;; i++) {
		uint32_t h2 = chain[i - off];
		const ElfW(Sym) *s = &m->symtab[i];
		if ((h | 1) == (h2 | 1) && s->st_shndx != SHN_UNDEF && !strcmp(name, m->strtab + s->st_name))
			return s;
		if (h2 & 1)
			return NULL;
	}
}

/* The program's exported definitions (node): no file to read. */
static void mem_symbols(const struct main_obj *m)
{
	for (int i = 0; i < INL_NFN; i++) {
		const ElfW(Sym) *s = gnu_lookup(m, hooked_names[i]);
		if (!s || ELF64_ST_TYPE(s->st_info) != STT_FUNC)
			continue;
		inl.addr[i] = m->bias + s->st_value;
		inl.size[i] = s->st_size;
		inl.found++;
	}
	for (size_t i = 0; i < NHELPERS; i++) {
		const ElfW(Sym) *s = gnu_lookup(m, helper_names[i]);
		if (s && ELF64_ST_TYPE(s->st_info) == STT_FUNC)
			inl.helper[i] = m->bias + s->st_value;
	}
}

/* ---- trampolines and patching ---- */

static long page_size(void)
{
	long p = sysconf(_SC_PAGESIZE);
	return p > 0 ? p : 4096;
}

/* A page within rel32 reach of [lo, hi): below the program first (the heap
 * grows above it). MAP_FIXED_NOREPLACE never takes what is mapped. */
static uint8_t *near_page(uintptr_t lo, uintptr_t hi, size_t len)
{
	uintptr_t start = lo & ~(uintptr_t)(INL_NEAR_STEP - 1);
	for (uint64_t d = INL_NEAR_STEP; d <= INL_NEAR_MAX; d += INL_NEAR_STEP) {
		for (int up = 0; up < 2; up++) {
			uintptr_t a;
			if (up) {
				a = ((hi + INL_NEAR_STEP - 1) & ~(uintptr_t)(INL_NEAR_STEP - 1)) + (1ULL << 28) + d;
				if (a + len - lo > (1ULL << 31) - 4096)
					continue;
			} else {
				if (start < d + (1ULL << 20))
					continue; /* not the lowest MiB (mmap_min_addr and below) */
				a = start - d;
				if (hi - a > (1ULL << 31) - 4096)
					continue;
			}
			void *p = mmap((void *)a, len, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
			if (p == MAP_FAILED)
				continue;
			if ((uintptr_t)p == a)
				return p;
			munmap(p, len); /* an old kernel took the address as a hint only */
		}
	}
	return NULL;
}

/* The only thread? /proc/self/task has one entry then. -1 if unreadable. */
static int threads(void)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return -1;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Protection of the program's page holding a (its PT_LOAD flags). */
struct prot_find {
	uintptr_t a;
	int prot;
};

static int prot_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct prot_find *f = arg;
	for (size_t i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *p = &info->dlpi_phdr[i];
		uintptr_t s = info->dlpi_addr + p->p_vaddr;
		if (p->p_type != PT_LOAD || f->a < s || f->a - s >= p->p_memsz)
			continue;
		f->prot = (p->p_flags & PF_R ? PROT_READ : 0) | (p->p_flags & PF_W ? PROT_WRITE : 0) |
			  (p->p_flags & PF_X ? PROT_EXEC : 0);
	}
	return 1;
}

/* Writes n bytes at a in the program's code: writable (not executable)
 * only while writing, then its own protection again. 0 or -errno. */
static int poke(uintptr_t a, const uint8_t *b, size_t n)
{
	struct prot_find f = { .a = a, .prot = -1 };
	dl_iterate_phdr(prot_cb, &f);
	if (f.prot < 0 || !(f.prot & PROT_EXEC))
		return -EFAULT;
	uintptr_t pg = a & ~(uintptr_t)(page_size() - 1);
	size_t len = (size_t)((a + n - pg + (uintptr_t)page_size() - 1) & ~(uintptr_t)(page_size() - 1));
	if (mprotect((void *)pg, len, PROT_READ | PROT_WRITE) < 0)
		return -errno;
	memcpy((void *)a, b, n);
	int err = mprotect((void *)pg, len, f.prot) < 0 ? -errno : 0;
	__builtin___clear_cache((char *)a, (char *)a + n);
	return err;
}

static const uint8_t endbr64[4] = { 0xf3, 0x0f, 0x1e, 0xfa };

/* The trampoline of function i at t: endbr64 + relocated prologue (the real
 * function, inl_real), and at t + INL_SLOT - 16 the stub the entry jumps to:
 * jmp *hook. 0, or -1 (refused: why set). */
static int build(int i, uint8_t *t, struct reloc *r)
{
	const uint8_t *code = (const uint8_t *)(uintptr_t)inl.addr[i];
	size_t avail = inl.size[i] && inl.size[i] < RELOC_MAX_IN ? inl.size[i] : RELOC_MAX_IN;
	if (reloc_prologue(code, avail, inl.addr[i], (uintptr_t)t + 4, r) < 0) {
		refuse(hooked_names[i], r->why);
		return -1;
	}
	const char *why;
	uint64_t lo = inl.addr[i], hi = inl.addr[i] + r->skip + r->patched;
	if (inl.size[i] > r->skip + r->patched &&
	    reloc_check_body(code, inl.size[i], inl.addr[i], lo, hi, &why) < 0) {
		refuse(hooked_names[i], why);
		return -1;
	}
	if (4 + r->out_len > INL_SLOT - 16) {
		refuse(hooked_names[i], "the relocated prologue does not fit the trampoline");
		return -1;
	}
	memcpy(t, endbr64, 4);
	memcpy(t + 4, r->out, r->out_len);
	memset(t + 4 + r->out_len, 0xcc, INL_SLOT - 16 - 4 - r->out_len);
	uint8_t *stub = t + INL_SLOT - 16;
	static const uint8_t jmp_abs[6] = { 0xff, 0x25, 0, 0, 0, 0 }; /* jmp *0(%rip) */
	void *hook = inl_hooks[i];
	memcpy(stub, jmp_abs, 6);
	memcpy(stub + 6, &hook, 8);
	stub[14] = stub[15] = 0xcc;
	return 0;
}

/* Finds the program's own OpenSSL and hooks it, unless off says why not. */
static void install(const char *off)
{
	struct main_obj m = { 0 };
	dl_iterate_phdr(main_cb, &m);
	if (!m.found)
		return;
	/* exported (node): the loader's hash tables, no file to read */
	mem_symbols(&m);
	if (!inl.addr[INL_SSL_READ] || !inl.addr[INL_SSL_WRITE]) {
		struct elf_file e;
		if (elf_open(&e, "/proc/self/exe") < 0) {
			elf_close(&e);
			return;
		}
		struct want w = { .bias = e.type == ET_DYN ? m.bias : 0 };
		if (inl.found)
			memset(inl.addr, 0, sizeof(inl.addr)), inl.found = 0;
		elf_symbols(&e, ELF_SYMS_DYN | ELF_SYMS_FULL, sym_cb, &w);
		elf_close(&e);
	}
	if (!inl.addr[INL_SSL_READ] && !inl.addr[INL_SSL_WRITE])
		return; /* no TLS library in the program: the usual case */
	if (!inl.addr[INL_SSL_READ] || !inl.addr[INL_SSL_WRITE]) {
		refuse(NULL, "SSL_read or SSL_write missing from the program's symbols");
		return;
	}
	if (off) {
		refuse(NULL, off);
		return;
	}
	if (!inl_sym("SSL_get_ex_data") || !inl_sym("SSL_set_ex_data") || !inl_sym("SSL_is_server") ||
	    (!inl_sym("CRYPTO_get_ex_new_index") && !inl_sym("SSL_get_ex_new_index"))) {
		refuse(NULL, "the program lacks SSL_get_ex_data/SSL_set_ex_data/SSL_is_server/"
		       "an ex_data index function");
		return;
	}
	for (int i = 0; i < INL_NFN; i++)
		if (inl.addr[i] && (inl.addr[i] < m.lo || inl.addr[i] + 32 > m.hi)) {
			refuse(hooked_names[i], "not in the program's executable segment");
			return;
		}
	if (threads() != 1) {
		refuse(NULL, "threads run already (patching is only done before they start)");
		return;
	}
	size_t len = (size_t)((INL_NFN * INL_SLOT + page_size() - 1) & ~(page_size() - 1));
	uint8_t *t = near_page(m.lo, m.hi, len);
	if (!t) {
		refuse(NULL, "no free page within 2 GiB of the program's code");
		return;
	}
	struct reloc r[INL_NFN];
	int bad = 0;
	for (int i = 0; i < INL_NFN; i++)
		if (inl.addr[i] && build(i, t + (size_t)i * INL_SLOT, &r[i]) < 0)
			bad = 1;
	/* all or none: half a connection's directions would be a lie */
	if (bad || mprotect(t, len, PROT_READ | PROT_EXEC) < 0) {
		if (!bad)
			refuse(NULL, "mprotect of the trampoline page failed");
		munmap(t, len);
		return;
	}
	/* no signal handler may run on a page made non-executable for a moment */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int done[INL_NFN] = { 0 };
	uint8_t saved[INL_NFN][RELOC_MAX_IN];
	int err = 0;
	for (int i = 0; i < INL_NFN && !err; i++) {
		if (!inl.addr[i])
			continue;
		inl_real[i] = t + (size_t)i * INL_SLOT;
		uintptr_t at = (uintptr_t)inl.addr[i] + r[i].skip;
		uintptr_t stub = (uintptr_t)t + (size_t)i * INL_SLOT + INL_SLOT - 16;
		uint8_t j[RELOC_MAX_IN];
		memset(j, 0xcc, r[i].patched);
		j[0] = 0xe9;
		int32_t rel = (int32_t)(int64_t)(stub - (at + RELOC_JMP_LEN));
		memcpy(j + 1, &rel, 4);
		memcpy(saved[i], (const void *)at, r[i].patched);
		if ((err = poke(at, j, r[i].patched)) < 0)
			refuse(hooked_names[i], "the code page could not be made writable");
		else
			done[i] = 1;
	}
	if (err) {
		/* back to exactly what it was */
		for (int i = 0; i < INL_NFN; i++)
			if (done[i])
				poke((uintptr_t)inl.addr[i] + r[i].skip, saved[i], r[i].patched);
		memset(inl_real, 0, sizeof(inl_real));
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		munmap(t, len);
		return;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	for (int i = 0; i < INL_NFN; i++)
		inl.hooked += done[i];
	__atomic_store_n(&inl.active, 1, __ATOMIC_RELEASE);
}

/* Preloaded (LD_PRELOAD, /etc/ld.so.preload), this runs before the program's
 * own constructors. Loaded by tlsmirror attach, other threads may run
 * anywhere and a failed attach unloads the library again: no patching then. */
static int preloaded(void)
{
	Dl_info di;
	if (!dladdr((void *)preloaded, &di) || !di.dli_fname)
		return 0;
	const char *me = strrchr(di.dli_fname, '/');
	me = me ? me + 1 : di.dli_fname;
	const char *v = getenv("LD_PRELOAD");
	if (v && strstr(v, me))
		return 1;
	char buf[4096];
	int fd = open("/etc/ld.so.preload", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = cap_libc.read(fd, buf, sizeof(buf) - 1);
	cap_libc.close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	return strstr(buf, me) != NULL;
}

/* Before main: the program's own threads do not exist yet. Off with
 * TLSMIRROR_NO_CODE_PATCH=1 (or TLSMIRROR_DISABLE): then the program's
 * static OpenSSL is only reported (refused, why). */
__attribute__((constructor)) static void inl_init(void)
{
	const char *v = getenv("TLSMIRROR_DISABLE");
	if (v && *v && strcmp(v, "0") != 0)
		return;
	int saved = errno;
	cap_setup(); /* the configuration, and cap_libc: our own close(), read()... call it */
	v = getenv("TLSMIRROR_NO_CODE_PATCH");
	install(v && *v && strcmp(v, "0") != 0 ? "code patching is off (TLSMIRROR_NO_CODE_PATCH)"
		: !preloaded() ? "loaded late (tlsmirror attach): in-place hooks are installed at "
				 "program start only (tlsmirror run)" : NULL);
	if (inl.found && !inl.hooked) {
		/* no hooked call will ever tell the agent: say it now (the ring's
		 * inline_* fields, its log, tlsmirror stats and scan) */
		uint32_t epoch;
		cap_ring(cap_now_ns(), &epoch);
	}
	errno = saved;
}
