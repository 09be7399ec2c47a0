/* Resolving the real libssl/libcrypto/libgnutls/libc functions behind the capture library's hooks. */
#include "capture/capture.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <string.h>

struct cap_libc cap_libc;

struct find_lib {
	const char *stem;   /* "libssl.so" */
	char path[512];
};

static int find_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct find_lib *f = arg;
	const char *name = info->dlpi_name;
	if (!name || !*name)
		return 0;
	const char *base = strrchr(name, '/');
	base = base ? base + 1 : name;
	if (strncmp(base, f->stem, strlen(f->stem)) != 0)
		return 0;
	size_t n = strlen(name);
	if (n >= sizeof(f->path))
		return 0;
	memcpy(f->path, name, n + 1);
	return 1;
}

/* A handle on an already loaded library whose file name starts with stem. */
static void *loaded_lib(const char *stem)
{
	struct find_lib f = { .stem = stem };
	if (!dl_iterate_phdr(find_cb, &f))
		return NULL;
	/* RTLD_NOLOAD: never load anything the application did not. */
	return dlopen(f.path, RTLD_LAZY | RTLD_NOLOAD);
}

void *sym_ssl(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);
	if (p)
		return p;
	static void *ssl_h, *crypto_h;
	void *h = __atomic_load_n(&ssl_h, __ATOMIC_ACQUIRE);
	if (!h) {
		h = loaded_lib("libssl.so");
		if (h)
			__atomic_store_n(&ssl_h, h, __ATOMIC_RELEASE);
	}
	if (h && (p = dlsym(h, name)))
		return p;
	h = __atomic_load_n(&crypto_h, __ATOMIC_ACQUIRE);
	if (!h) {
		h = loaded_lib("libcrypto.so");
		if (h)
			__atomic_store_n(&crypto_h, h, __ATOMIC_RELEASE);
	}
	return h ? dlsym(h, name) : NULL;
}

void *sym_real(void **slot, const char *name)
{
	void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
	if (!p) {
		int saved = errno;
		p = sym_ssl(name);
		errno = saved;
		if (p)
			__atomic_store_n(slot, p, __ATOMIC_RELEASE);
	}
	return p;
}

void *sym_gnutls(const char *name, const char *ver)
{
	void *p = ver ? dlvsym(RTLD_NEXT, name, ver) : NULL;
	if (p || (p = dlsym(RTLD_NEXT, name)))
		return p;
	static void *gnutls_h;
	void *h = __atomic_load_n(&gnutls_h, __ATOMIC_ACQUIRE);
	if (!h) {
		h = loaded_lib("libgnutls.so");
		if (!h)
			return NULL;
		__atomic_store_n(&gnutls_h, h, __ATOMIC_RELEASE);
	}
	p = ver ? dlvsym(h, name, ver) : NULL;
	return p ? p : dlsym(h, name);
}

void *sym_real_gnutls(void **slot, const char *name, const char *ver)
{
	void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
	if (!p) {
		int saved = errno;
		p = sym_gnutls(name, ver);
		errno = saved;
		if (p)
			__atomic_store_n(slot, p, __ATOMIC_RELEASE);
	}
	return p;
}

int sym_missing(void)
{
	errno = ENOSYS;
	return -1;
}

void *sym_libc(const char *name)
{
	return dlsym(RTLD_NEXT, name);
}

void sym_init_libc(void)
{
	if (cap_libc.close)
		return;
	cap_libc.read = sym_libc("read");
	cap_libc.write = sym_libc("write");
	cap_libc.send = sym_libc("send");
	cap_libc.recv = sym_libc("recv");
	cap_libc.sendmsg = sym_libc("sendmsg");
	__atomic_store_n(&cap_libc.close, sym_libc("close"), __ATOMIC_RELEASE);
}
