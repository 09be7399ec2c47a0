/* x86-64 prologue relocation for in-process (inline) hooks: pure functions, no process state. */
#ifndef TLSMIRROR_RELOC_H
#define TLSMIRROR_RELOC_H

#include <stddef.h>
#include <stdint.h>

#define RELOC_JMP_LEN 5      /* e9 rel32: what overwrites the entry */
#define RELOC_MAX_IN 32      /* bytes of prologue looked at */
#define RELOC_MAX_OUT 160    /* relocated code + jump back + literals */
#define RELOC_MAX_BODY 65536 /* bytes of a function scanned for branches into the patch */

struct reloc {
	size_t skip;         /* endbr64 left in place at the entry (0 or 4) */
	size_t patched;      /* whole instructions after skip that the jump overwrites (>= 5) */
	size_t out_len;      /* bytes of out, to run at `to` */
	uint8_t out[RELOC_MAX_OUT];
	int rip_rel;         /* RIP-relative operands rewritten */
	int branches;        /* relative branches re-encoded */
	const char *why;     /* the refusal, when reloc_prologue fails */
};

/*
 * Relocates the first instructions of the function at address `from`
 * (its bytes at code, avail of them readable) so that they run at address
 * `to`: an endbr64 at the entry stays where it is (r->skip), then whole
 * instructions covering RELOC_JMP_LEN bytes are copied with their
 * RIP-relative displacements and relative branches rewritten, followed by a
 * jump back to from + skip + patched. Refuses (-1, r->why) what it cannot
 * relocate exactly: undecodable bytes, a branch back into the patched bytes,
 * loop/jrcxz, a function that ends (ret, jmp) before the jump fits, a call
 * whose return would land inside the patched bytes, a displacement out of
 * rel32 range. 0 on success.
 */
int reloc_prologue(const uint8_t *code, size_t avail, uint64_t from, uint64_t to, struct reloc *r);

/*
 * Whether any relative branch in the function body [from, from + size)
 * (bytes at code) lands in [lo, hi) (the entry and the patched bytes):
 * 0 if none, -1 with *why if one does or the body does not decode.
 */
int reloc_check_body(const uint8_t *code, size_t size, uint64_t from, uint64_t lo, uint64_t hi,
		     const char **why);

#endif
