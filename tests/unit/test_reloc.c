/* The prologue relocator of the in-place hooks (src/capture/reloc.c): sample prologues relocated and run. */
#include "unit.h"

#include "capture/reloc.h"

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__x86_64__)

#define PG 4096

/* Two pages: the function (and its data at +2048) in the first, its
 * relocated prologue in the second. The patched bytes of the original are
 * then overwritten with int3, as the hook's jump would hide them: the
 * relocated code must never need them. Returns what the trampoline returns
 * for arg, or 0xdead when the relocation was refused. */
static long run_relocated(const uint8_t *code, size_t len, long arg, struct reloc *r, long *orig)
{
	uint8_t *m = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return 0xdead;
	memset(m, 0xcc, 2 * PG);
	memcpy(m, code, len);
	uint64_t data = 0x1122334455667788ULL;
	memcpy(m + 2048, &data, 8);
	long ret = 0xdead;
	mprotect(m, 2 * PG, PROT_READ | PROT_EXEC);
	*orig = ((long (*)(long))(void *)m)(arg);
	mprotect(m, 2 * PG, PROT_READ | PROT_WRITE);
	if (reloc_prologue(m, len, (uintptr_t)m, (uintptr_t)(m + PG), r) == 0) {
		memcpy(m + PG, r->out, r->out_len);
		memset(m + r->skip, 0xcc, r->patched);
		mprotect(m, 2 * PG, PROT_READ | PROT_EXEC);
		ret = ((long (*)(long))(void *)(m + PG))(arg);
	}
	munmap(m, 2 * PG);
	return ret;
}

/* endbr64; push rbp; mov rbp,rsp; sub rsp,0x48; mov rax,rdi; add rax,1; leave; ret */
TEST(reloc_endbr_push_sub)
{
	static const uint8_t f[] = { 0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0x48, 0x83,
				     0xec, 0x48, 0x48, 0x89, 0xf8, 0x48, 0x83, 0xc0, 0x01, 0xc9, 0xc3 };
	struct reloc r;
	long orig;
	uint8_t *m = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!CHECK(m != MAP_FAILED))
		return;
	memcpy(m, f, sizeof(f));
	/* the trampoline runs the relocated bytes after the entry's endbr64 */
	CHECK_EQ(reloc_prologue(m, sizeof(f), (uintptr_t)m, (uintptr_t)(m + PG), &r), 0);
	CHECK_EQ(r.skip, 4);
	CHECK_EQ(r.patched, 8); /* push (1) + mov (3) + sub (4): whole instructions */
	CHECK_MEM(r.out, f + 4, 8);
	CHECK_EQ(r.out[8], 0xe9); /* the jump back, to m + 12 */
	int32_t rel;
	memcpy(&rel, r.out + 9, 4);
	CHECK_EQ((uintptr_t)(m + PG + 13) + rel, (uintptr_t)(m + 12));
	CHECK_EQ(r.out_len, 13);
	munmap(m, 2 * PG);
	/* and run: the skipped endbr64 is not part of the trampoline's code */
	static const uint8_t g[] = { 0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x48, 0x48, 0x89,
				     0xf8, 0x48, 0x83, 0xc0, 0x01, 0xc9, 0xc3 };
	CHECK_EQ(run_relocated(g, sizeof(g), 41, &r, &orig), 42);
	CHECK_EQ(orig, 42);
}

/* lea rax,[rip+X] (X: the data at +2048); ret */
TEST(reloc_rip_lea)
{
	uint8_t f[8] = { 0x48, 0x8d, 0x05, 0, 0, 0, 0, 0xc3 };
	int32_t d = 2048 - 7;
	memcpy(f + 3, &d, 4);
	struct reloc r;
	long orig;
	long got = run_relocated(f, sizeof(f), 0, &r, &orig);
	CHECK_EQ(r.rip_rel, 1);
	CHECK_EQ(r.patched, 7);
	CHECK_EQ(got, orig); /* the same absolute address from the trampoline */
}

/* mov rax,[rip+X]; ret */
TEST(reloc_rip_mov)
{
	uint8_t f[8] = { 0x48, 0x8b, 0x05, 0, 0, 0, 0, 0xc3 };
	int32_t d = 2048 - 7;
	memcpy(f + 3, &d, 4);
	struct reloc r;
	long orig;
	CHECK_EQ(run_relocated(f, sizeof(f), 0, &r, &orig), 0x1122334455667788LL);
	CHECK_EQ(orig, 0x1122334455667788LL);
	CHECK_EQ(r.rip_rel, 1);
}

/* SSL_free's start: test rdi,rdi; je L (rel8, out of the patch); mov eax,1; ret; L: mov eax,2; ret */
TEST(reloc_short_jcc)
{
	static const uint8_t f[] = { 0x48, 0x85, 0xff, 0x74, 0x06, 0xb8, 0x01, 0, 0, 0, 0xc3,
				     0xb8, 0x02, 0, 0, 0, 0xc3 };
	struct reloc r;
	long orig;
	CHECK_EQ(run_relocated(f, sizeof(f), 0, &r, &orig), 2);
	CHECK_EQ(orig, 2);
	CHECK_EQ(r.branches, 1);
	CHECK_EQ(r.out[3], 0x0f); /* je rel8 became je rel32 */
	CHECK_EQ(r.out[4], 0x84);
	CHECK_EQ(run_relocated(f, sizeof(f), 1, &r, &orig), 1);
}

/* SSL_read_ex's start in libssl.a: sub rsp,8; call g; add rsp,8; ret -- g: lea eax,[rdi+5]; ret */
TEST(reloc_call_keeps_return_address)
{
	uint8_t f[80];
	memset(f, 0xcc, sizeof(f));
	static const uint8_t head[] = { 0x48, 0x83, 0xec, 0x08, 0xe8, 0, 0, 0, 0, 0x48, 0x83, 0xc4, 0x08, 0xc3 };
	memcpy(f, head, sizeof(head));
	int32_t rel = 64 - 9;
	memcpy(f + 5, &rel, 4);
	static const uint8_t g[] = { 0x8d, 0x47, 0x05, 0xc3 };
	memcpy(f + 64, g, sizeof(g));
	struct reloc r;
	long orig;
	CHECK_EQ(run_relocated(f, sizeof(f), 1, &r, &orig), 6);
	CHECK_EQ(orig, 6);
	CHECK_EQ(r.patched, 9);
	CHECK_EQ(r.out[4], 0xff); /* push qword [rip+lit]: the original return address */
	CHECK_EQ(r.out[5], 0x35);
}

static const char *refusal(const uint8_t *code, size_t len, uint64_t from, uint64_t to)
{
	static struct reloc r;
	return reloc_prologue(code, len, from, to, &r) < 0 ? r.why : NULL;
}

TEST(reloc_refusals)
{
	uint64_t at = 0x400000;
	/* xor eax,eax; ret: ends before the jump fits */
	static const uint8_t tiny[] = { 0x31, 0xc0, 0xc3, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc };
	CHECK(refusal(tiny, sizeof(tiny), at, at + PG) != NULL);
	/* dec edi; jnz back to the entry; ret: a branch into the patched bytes */
	static const uint8_t loop[] = { 0xff, 0xcf, 0x75, 0xfc, 0xc3, 0xcc, 0xcc, 0xcc };
	const char *why = refusal(loop, sizeof(loop), at, at + PG);
	CHECK(why && strstr(why, "patched bytes"));
	/* jrcxz has no rel32 form */
	static const uint8_t jrcxz[] = { 0xe3, 0x10, 0x90, 0x90, 0x90, 0x90, 0xc3 };
	why = refusal(jrcxz, sizeof(jrcxz), at, at + PG);
	CHECK(why && strstr(why, "jrcxz"));
	/* RIP-relative, trampoline 4 GiB away */
	static const uint8_t lea[] = { 0x48, 0x8d, 0x05, 0x10, 0, 0, 0, 0xc3 };
	why = refusal(lea, sizeof(lea), at, at + (1ULL << 32));
	CHECK(why && strstr(why, "range"));
	/* undecodable */
	static const uint8_t bad[] = { 0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	CHECK(refusal(bad, sizeof(bad), at, at + PG) != NULL);
	/* a call rel32 (5 bytes) that starts in the first 5 bytes always ends the
	 * patched range: its return address is the original code, accepted */
	static const uint8_t call2[] = { 0x90, 0xe8, 0x10, 0, 0, 0, 0x90, 0xc3 };
	CHECK(refusal(call2, sizeof(call2), at, at + PG) == NULL);
	/* an indirect call: refused */
	static const uint8_t icall[] = { 0xff, 0xd0, 0x90, 0x90, 0x90, 0xc3 };
	why = refusal(icall, sizeof(icall), at, at + PG);
	CHECK(why && strstr(why, "indirect call"));
}

/* A branch later in the function back into the first bytes: the body check refuses it. */
TEST(reloc_body_branch_into_patch)
{
	/* push rbp; mov rbp,rsp; nop; nop; jmp entry+2 */
	static const uint8_t f[] = { 0x55, 0x48, 0x89, 0xe5, 0x90, 0x90, 0xeb, 0xfa };
	const char *why = NULL;
	uint64_t at = 0x400000;
	CHECK_EQ(reloc_check_body(f, sizeof(f), at, at, at + 5, &why), -1);
	CHECK(why != NULL);
	/* jmp to entry+6 (after the patched bytes): fine */
	static const uint8_t g[] = { 0x55, 0x48, 0x89, 0xe5, 0x90, 0x90, 0xeb, 0xfe };
	CHECK_EQ(reloc_check_body(g, sizeof(g), at, at, at + 5, &why), 0);
}

#endif
