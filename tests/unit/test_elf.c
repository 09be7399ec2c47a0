/* ELF reader (src/common/elf.c): real files read right, corrupted and truncated ones refused or read in bounds. */
#include "common/elf.h"
#include "unit.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	unsigned char *b = malloc((size_t)n);
	if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		b = NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return b;
}

static int spew(const char *path, const unsigned char *b, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, b, len);
	close(fd);
	return n == (ssize_t)len ? 0 : -1;
}

static int count_cb(const char *name, uint64_t value, uint64_t size, int defined, int type, void *arg)
{
	(*(size_t *)arg) += strlen(name) > 0;
	return 0;
}

TEST(elf_reads_libc)
{
	struct elf_file e;
	uint64_t v = 0;
	int rc = elf_open(&e, "/lib/x86_64-linux-gnu/libc.so.6");
	if (rc == -ENOENT) { /* not a Debian x86_64 layout */
		elf_close(&e);
		return;
	}
	CHECK_EQ(rc, 0);
	CHECK(e.is64);
	CHECK_EQ(e.machine, EM_X86_64);
	CHECK_EQ(elf_find_symbol(&e, "dlopen", &v), 0);
	CHECK(v != 0);
	CHECK_EQ(elf_find_symbol(&e, "no_such_symbol_here", &v), -ENOENT);
	CHECK(elf_has_section(&e, ".dynsym"));
	elf_close(&e);
}

TEST(elf_not_elf)
{
	struct elf_file e;
	CHECK_EQ(elf_open(&e, "/proc/self/status"), -ENOEXEC); /* not a regular file */
	elf_close(&e);
	char path[600];
	snprintf(path, sizeof(path), "%s/elf-XXXXXX", unit_tmpdir()); /* under $TMPDIR */
	int fd = mkstemp(path);
	if (!CHECK(fd >= 0))
		return;
	CHECK_EQ(write(fd, "#!/bin/sh\n", 10), 10);
	close(fd);
	CHECK_EQ(elf_open(&e, path), -ENOEXEC);
	elf_close(&e);
	unlink(path);
}

/* Our own executable, cut short and with bytes of its headers and tables
 * overwritten: every call returns, nothing reads out of bounds (ASan). */
TEST(elf_corrupted_in_bounds)
{
	size_t len = 0;
	unsigned char *orig = slurp("/proc/self/exe", &len);
	if (!CHECK(orig != NULL && len > 4096))
		return;
	unsigned char *b = malloc(len);
	char path[600];
	snprintf(path, sizeof(path), "%s/elf-XXXXXX", unit_tmpdir()); /* under $TMPDIR */
	int fd = mkstemp(path);
	if (!CHECK(b && fd >= 0))
		goto out;
	close(fd);
	const Elf64_Ehdr *h = (const Elf64_Ehdr *)orig;
	uint64_t shoff = h->e_shoff;
	srand(13);
	for (int round = 0; round < 300; round++) {
		memcpy(b, orig, len);
		size_t n = len;
		if (round % 10 == 0)
			n = (size_t)rand() % len; /* truncated */
		for (int k = 0; k < 8; k++) {
			size_t at;
			switch (rand() % 3) {
			case 0: at = (size_t)rand() % sizeof(Elf64_Ehdr); break;
			case 1: at = shoff + (size_t)rand() % (h->e_shnum * sizeof(Elf64_Shdr)); break;
			default: at = (size_t)rand() % len; break;
			}
			if (at < len)
				b[at] = (unsigned char)rand();
		}
		if (!CHECK_EQ(spew(path, b, n), 0))
			break;
		struct elf_file e;
		uint64_t v;
		size_t syms = 0;
		if (elf_open(&e, path) == 0) {
			elf_symbols(&e, ELF_SYMS_DYN | ELF_SYMS_FULL, count_cb, &syms);
			elf_find_symbol(&e, "main", &v);
			elf_section_contains(&e, ".rodata", "tlsmirror");
			elf_first_load(&e);
		}
		elf_close(&e);
	}
	unlink(path);
out:
	free(b);
	free(orig);
}
