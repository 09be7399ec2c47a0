/* Integration-test client: runs dbhelper.so's TLS exchange loaded with dlopen(RTLD_DEEPBIND), like PHP's extensions. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

/*
 * dbclient MODE HELPER.so HOST PORT CAFILE BYTES
 * MODE deepbind: dlopen(HELPER, RTLD_NOW | RTLD_GLOBAL | RTLD_DEEPBIND), as PHP
 *      loads curl.so and pgsql.so: the helper's libssl calls bind to libssl
 *      directly, past a preloaded library;
 * MODE lazy: the same with RTLD_LAZY: the helper's PLT slots are not bound yet
 *      when the library looks at them;
 * MODE bare: the same (RTLD_NOW) with HELPER's file name only: found through this
 *      program's RUNPATH ($ORIGIN), which a dlopen called from another
 *      object would not search;
 * MODE dlsym: dlopen(HELPER, RTLD_NOW), the helper calls SSL_write/SSL_read
 *      through pointers from dlsym on libssl's handle.
 * libssl is linked into this program, so it is loaded before the helper.
 */
int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: dbclient deepbind|lazy|bare|dlsym HELPER HOST PORT CAFILE BYTES\n");
		return 2;
	}
	OPENSSL_init_ssl(0, NULL);
	int bare = !strcmp(argv[1], "bare"), lazy = !strcmp(argv[1], "lazy");
	int deep = bare || lazy || !strcmp(argv[1], "deepbind");
	const char *file = strrchr(argv[2], '/');
	file = bare && file ? file + 1 : argv[2];
	void *h = dlopen(file, (lazy ? RTLD_LAZY : RTLD_NOW) | (deep ? RTLD_GLOBAL | RTLD_DEEPBIND : 0));
	if (!h) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	int (*run)(const char *, const char *, const char *, size_t, int) =
		(int (*)(const char *, const char *, const char *, size_t, int))dlsym(h, "db_run");
	if (!run)
		return 1;
	return run(argv[3], argv[4], argv[5], strtoul(argv[6], NULL, 10), !deep) ? 1 : 0;
}
