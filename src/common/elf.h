/* Reading ELF files of other processes safely: bounded, validated reads of headers and symbol tables. */
#ifndef TLSMIRROR_ELF_H
#define TLSMIRROR_ELF_H

#include <stddef.h>
#include <stdint.h>

#define ELF_MAX_SECTION (256u << 20) /* a symbol or string table larger than this is skipped */
#define ELF_MAX_SYMS 4000000u        /* symbols looked at per table */

/* An open ELF file: the headers only; tables are read when asked for. */
struct elf_file {
	int fd;
	uint64_t size;
	int is64;              /* ELFCLASS64, little-endian: the only class whose tables are read */
	uint16_t type;         /* ET_EXEC, ET_DYN, ... */
	uint16_t machine;      /* EM_X86_64, ... */
	void *shdr;            /* Elf64_Shdr[shnum], validated against size */
	size_t shnum;
	char *shstr;           /* section names, NUL-terminated copy */
	size_t shstrsz;
	void *phdr;            /* Elf64_Phdr[phnum] */
	size_t phnum;
};

/* Opens path and validates its headers. 0, -ENOEXEC (not an ELF file, or
 * headers out of bounds), or -errno of open/read. For a 32-bit or big-endian
 * file only machine and type are filled. elf_close() in every case. */
int elf_open(struct elf_file *e, const char *path);
void elf_close(struct elf_file *e);

/* SYMS_DYN: .dynsym; SYMS_FULL: .symtab (absent in a stripped file). */
enum { ELF_SYMS_DYN = 1, ELF_SYMS_FULL = 2 };

/* Calls fn for each named symbol of the tables in `which`: name (always
 * NUL-terminated), value, size (st_size), whether it is defined here (not
 * SHN_UNDEF), and ELF64_ST_TYPE. Stops at the first nonzero return of fn and returns it;
 * 0 when all were seen (tables out of bounds are skipped). */
int elf_symbols(struct elf_file *e, int which,
		int (*fn)(const char *name, uint64_t value, uint64_t size, int defined, int type,
			  void *arg),
		void *arg);

/* The value of the defined symbol `name` (a version suffix @... is ignored),
 * .dynsym first. 0 or -ENOENT. */
int elf_find_symbol(struct elf_file *e, const char *name, uint64_t *value);

/* 1 when a section of that name exists. */
int elf_has_section(const struct elf_file *e, const char *name);

/* Whether the section `name` contains the bytes needle (read in bounded
 * chunks). 1, 0, or 0 when absent. */
int elf_section_contains(struct elf_file *e, const char *name, const char *needle);

/* The lowest PT_LOAD address, page-aligned (the load bias is a mapping's
 * start minus this); 0 when there is none. */
uint64_t elf_first_load(const struct elf_file *e);

#endif
