/* Bounded ELF reading for scan and attach: every offset and size checked against the file before use. */
#include "common/elf.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (1u << 20)

/* off+len within the file, without overflow. */
static int in_file(const struct elf_file *e, uint64_t off, uint64_t len)
{
	return off <= e->size && len <= e->size - off;
}

/* Reads exactly len bytes at off into a new buffer with one NUL after it. */
static void *read_at(const struct elf_file *e, uint64_t off, uint64_t len)
{
	if (!in_file(e, off, len) || len > ELF_MAX_SECTION)
		return NULL;
	char *buf = malloc(len + 1);
	if (!buf)
		return NULL;
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(e->fd, buf + got, len - got, (off_t)(off + got));
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			free(buf);
			return NULL;
		}
		got += (size_t)n;
	}
	buf[len] = 0;
	return buf;
}

void elf_close(struct elf_file *e)
{
	if (e->fd >= 0)
		close(e->fd);
	free(e->shdr);
	free(e->shstr);
	free(e->phdr);
	memset(e, 0, sizeof(*e));
	e->fd = -1;
}

static int load_tables(struct elf_file *e, const Elf64_Ehdr *h)
{
	if (h->e_phnum && h->e_phentsize == sizeof(Elf64_Phdr)) {
		e->phdr = read_at(e, h->e_phoff, (uint64_t)h->e_phnum * sizeof(Elf64_Phdr));
		if (!e->phdr)
			return -ENOEXEC;
		e->phnum = h->e_phnum;
	}
	if (!h->e_shnum || h->e_shentsize != sizeof(Elf64_Shdr))
		return 0; /* no section headers: program headers only */
	e->shdr = read_at(e, h->e_shoff, (uint64_t)h->e_shnum * sizeof(Elf64_Shdr));
	if (!e->shdr)
		return -ENOEXEC;
	e->shnum = h->e_shnum;
	const Elf64_Shdr *sh = e->shdr;
	if (h->e_shstrndx < e->shnum && sh[h->e_shstrndx].sh_type == SHT_STRTAB) {
		e->shstr = read_at(e, sh[h->e_shstrndx].sh_offset, sh[h->e_shstrndx].sh_size);
		if (e->shstr)
			e->shstrsz = sh[h->e_shstrndx].sh_size;
	}
	return 0;
}

int elf_open(struct elf_file *e, const char *path)
{
	memset(e, 0, sizeof(*e));
	e->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (e->fd < 0)
		return -errno;
	struct stat st;
	if (fstat(e->fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -ENOEXEC;
	e->size = (uint64_t)st.st_size;
	Elf64_Ehdr h;
	if (e->size < EI_NIDENT + 4 || pread(e->fd, &h, sizeof(h), 0) < EI_NIDENT + 4)
		return -ENOEXEC;
	if (memcmp(h.e_ident, ELFMAG, SELFMAG) != 0)
		return -ENOEXEC;
	/* e_type and e_machine sit at the same offsets in both classes */
	e->type = h.e_type;
	e->machine = h.e_machine;
	if (h.e_ident[EI_CLASS] != ELFCLASS64 || h.e_ident[EI_DATA] != ELFDATA2LSB)
		return 0;
	if (e->size < sizeof(h))
		return -ENOEXEC;
	e->is64 = 1;
	return load_tables(e, &h);
}

static const Elf64_Shdr *section(const struct elf_file *e, const char *name)
{
	const Elf64_Shdr *sh = e->shdr;
	if (!e->shstr)
		return NULL;
	for (size_t i = 0; i < e->shnum; i++)
		if (sh[i].sh_name < e->shstrsz && !strcmp(e->shstr + sh[i].sh_name, name))
			return &sh[i];
	return NULL;
}

int elf_has_section(const struct elf_file *e, const char *name)
{
	return section(e, name) != NULL;
}

/* One symbol table (section index i) and its linked string table. */
static int one_table(struct elf_file *e, size_t i,
		     int (*fn)(const char *, uint64_t, uint64_t, int, int, void *), void *arg)
{
	const Elf64_Shdr *sh = e->shdr;
	if (sh[i].sh_entsize != sizeof(Elf64_Sym) || sh[i].sh_link >= e->shnum ||
	    sh[sh[i].sh_link].sh_type != SHT_STRTAB)
		return 0;
	uint64_t nsym = sh[i].sh_size / sizeof(Elf64_Sym);
	if (nsym > ELF_MAX_SYMS)
		nsym = ELF_MAX_SYMS;
	Elf64_Sym *syms = read_at(e, sh[i].sh_offset, nsym * sizeof(Elf64_Sym));
	const Elf64_Shdr *st = &sh[sh[i].sh_link];
	char *str = syms ? read_at(e, st->sh_offset, st->sh_size) : NULL;
	int rc = 0;
	for (uint64_t k = 1; str && k < nsym && !rc; k++) {
		const Elf64_Sym *s = &syms[k];
		if (!s->st_name || s->st_name >= st->sh_size)
			continue; /* str[size] is our NUL: every name ends in bounds */
		rc = fn(str + s->st_name, s->st_value, s->st_size, s->st_shndx != SHN_UNDEF,
			ELF64_ST_TYPE(s->st_info), arg);
	}
	free(syms);
	free(str);
	return rc;
}

int elf_symbols(struct elf_file *e, int which,
		int (*fn)(const char *name, uint64_t value, uint64_t size, int defined, int type,
			  void *arg),
		void *arg)
{
	if (!e->is64 || !e->shdr)
		return 0;
	const Elf64_Shdr *sh = e->shdr;
	for (int pass = 0; pass < 2; pass++) {
		uint32_t want = pass ? SHT_SYMTAB : SHT_DYNSYM;
		if (!(which & (pass ? ELF_SYMS_FULL : ELF_SYMS_DYN)))
			continue;
		for (size_t i = 0; i < e->shnum; i++) {
			if (sh[i].sh_type != want)
				continue;
			int rc = one_table(e, i, fn, arg);
			if (rc)
				return rc;
		}
	}
	return 0;
}

struct find {
	const char *name;
	size_t len;
	uint64_t value;
};

static int find_cb(const char *name, uint64_t value, uint64_t size, int defined, int type,
		   void *arg)
{
	struct find *f = arg;
	if (!defined || strncmp(name, f->name, f->len) || (name[f->len] && name[f->len] != '@'))
		return 0;
	f->value = value;
	return 1;
}

int elf_find_symbol(struct elf_file *e, const char *name, uint64_t *value)
{
	struct find f = { .name = name, .len = strlen(name) };
	if (elf_symbols(e, ELF_SYMS_DYN, find_cb, &f) != 1 &&
	    elf_symbols(e, ELF_SYMS_FULL, find_cb, &f) != 1)
		return -ENOENT;
	*value = f.value;
	return 0;
}

int elf_section_contains(struct elf_file *e, const char *name, const char *needle)
{
	const Elf64_Shdr *s = section(e, name);
	size_t nl = strlen(needle);
	if (!s || s->sh_type == SHT_NOBITS || !nl || nl > CHUNK || !in_file(e, s->sh_offset, s->sh_size))
		return 0;
	uint64_t end = s->sh_offset + (s->sh_size > ELF_MAX_SECTION ? ELF_MAX_SECTION : s->sh_size);
	/* chunks overlap by the needle's length so a match across a border is seen */
	for (uint64_t off = s->sh_offset; off < end; off += CHUNK) {
		uint64_t len = end - off < CHUNK + nl ? end - off : CHUNK + nl;
		char *buf = read_at(e, off, len);
		if (!buf)
			return 0;
		int hit = memmem(buf, len, needle, nl) != NULL;
		free(buf);
		if (hit)
			return 1;
	}
	return 0;
}

uint64_t elf_first_load(const struct elf_file *e)
{
	const Elf64_Phdr *ph = e->phdr;
	uint64_t lo = UINT64_MAX;
	for (size_t i = 0; i < e->phnum; i++)
		if (ph[i].p_type == PT_LOAD && ph[i].p_vaddr < lo)
			lo = ph[i].p_vaddr;
	return lo == UINT64_MAX ? 0 : lo & ~(uint64_t)0xfff;
}
