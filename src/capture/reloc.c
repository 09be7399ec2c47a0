/* Relocating x86-64 function prologues with Capstone: RIP-relative operands, relative branches, refusals. */
#include "capture/reloc.h"

#include <capstone/capstone.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#if defined(__x86_64__)

/*
 * Capstone is loaded only when a program carries its own OpenSSL: linked
 * into the library it would cost every process its relocated tables (more
 * than a MiB of private memory each). The soname of the headers' major
 * version only: the structures differ between majors.
 */
static struct {
	cs_err (*open)(cs_arch, cs_mode, csh *);
	cs_err (*option)(csh, cs_opt_type, size_t);
	bool (*disasm_iter)(csh, const uint8_t **, size_t *, uint64_t *, cs_insn *);
	cs_insn *(*malloc)(csh);
	void (*free)(cs_insn *, size_t);
	cs_err (*close)(csh *);
	bool (*insn_group)(csh, const cs_insn *, unsigned int);
	int ok;
} cs;
static pthread_once_t cs_once = PTHREAD_ONCE_INIT;

static void cs_load(void)
{
	char name[32];
	snprintf(name, sizeof(name), "libcapstone.so.%d", CS_API_MAJOR);
	void *h = dlopen(name, RTLD_LAZY | RTLD_LOCAL);
	if (!h) {
		dlerror();
		return;
	}
	cs.open = (cs_err (*)(cs_arch, cs_mode, csh *))dlsym(h, "cs_open");
	cs.option = (cs_err (*)(csh, cs_opt_type, size_t))dlsym(h, "cs_option");
	cs.disasm_iter = (bool (*)(csh, const uint8_t **, size_t *, uint64_t *, cs_insn *))
		dlsym(h, "cs_disasm_iter");
	cs.malloc = (cs_insn *(*)(csh))dlsym(h, "cs_malloc");
	cs.free = (void (*)(cs_insn *, size_t))dlsym(h, "cs_free");
	cs.close = (cs_err (*)(csh *))dlsym(h, "cs_close");
	cs.insn_group = (bool (*)(csh, const cs_insn *, unsigned int))dlsym(h, "cs_insn_group");
	dlerror();
	cs.ok = cs.open && cs.option && cs.disasm_iter && cs.malloc && cs.free && cs.close &&
		cs.insn_group;
}

#define cs_open cs.open
#define cs_option cs.option
#define cs_disasm_iter cs.disasm_iter
#define cs_malloc cs.malloc
#define cs_free cs.free
#define cs_close cs.close
#define cs_insn_group cs.insn_group

#define CS_STR2(x) #x
#define CS_STR(x) CS_STR2(x)

static const uint8_t endbr64[4] = { 0xf3, 0x0f, 0x1e, 0xfa };

static int fits32(int64_t v)
{
	return v >= INT32_MIN && v <= INT32_MAX;
}

static void put32(uint8_t *p, int32_t v)
{
	memcpy(p, &v, 4);
}

/* The relative branch target of insn, or 0 if it has none (indirect, or no branch). */
static uint64_t branch_target(csh h, const cs_insn *in)
{
	if (!cs_insn_group(h, in, CS_GRP_JUMP) && !cs_insn_group(h, in, CS_GRP_CALL))
		return 0;
	const cs_x86 *x = &in->detail->x86;
	if (x->op_count != 1 || x->operands[0].type != X86_OP_IMM)
		return 0;
	return (uint64_t)x->operands[0].imm;
}

static int open_cs(csh *h)
{
	pthread_once(&cs_once, cs_load);
	if (!cs.ok)
		return -1;
	if (cs_open(CS_ARCH_X86, CS_MODE_64, h) != CS_ERR_OK)
		return -1;
	if (cs_option(*h, CS_OPT_DETAIL, CS_OPT_ON) != CS_ERR_OK) {
		cs_close(h);
		return -1;
	}
	return 0;
}

struct out {
	struct reloc *r;
	uint64_t to;
	size_t lit_need;      /* literal pool entries */
	uint64_t lit[4];
	size_t lit_at[4];     /* where each push's disp32 is, to fix up after the pool is placed */
};

static int emit(struct out *o, const void *p, size_t n)
{
	if (o->r->out_len + n > RELOC_MAX_OUT)
		return -1;
	memcpy(o->r->out + o->r->out_len, p, n);
	o->r->out_len += n;
	return 0;
}

/* A rel32 jump (opcode bytes op/opn) from the current end of out to target. */
static int emit_rel32(struct out *o, const uint8_t *op, size_t opn, uint64_t target)
{
	int64_t rel = (int64_t)(target - (o->to + o->r->out_len + opn + 4));
	if (!fits32(rel))
		return -1;
	uint8_t b[6];
	memcpy(b, op, opn);
	put32(b + opn, (int32_t)rel);
	return emit(o, b, opn + 4);
}

/* One instruction of the prologue at its new place. Returns 0, or -1 with why. */
static int relocate_one(csh h, const cs_insn *in, struct out *o, uint64_t lo, uint64_t hi,
			int last, int *ends)
{
	struct reloc *r = o->r;
	const cs_x86 *x = &in->detail->x86;
	*ends = 0;
	if (cs_insn_group(h, in, CS_GRP_RET) || cs_insn_group(h, in, CS_GRP_IRET) ||
	    in->id == X86_INS_HLT || in->id == X86_INS_UD2) {
		if (!last) {
			r->why = "the function ends before the jump fits";
			return -1;
		}
		*ends = 1;
		return emit(o, in->bytes, in->size);
	}
	if (cs_insn_group(h, in, CS_GRP_INT) || in->id == X86_INS_SYSCALL) {
		r->why = "a trap or system call in the prologue";
		return -1;
	}
	switch (in->id) {
	case X86_INS_LOOP: case X86_INS_LOOPE: case X86_INS_LOOPNE:
	case X86_INS_JRCXZ: case X86_INS_JECXZ: case X86_INS_JCXZ:
		r->why = "loop/jrcxz in the prologue (no rel32 form)";
		return -1;
	default:
		break;
	}
	uint64_t target = branch_target(h, in);
	if (target) {
		if (target >= lo && target < hi) {
			r->why = "a branch into the patched bytes";
			return -1;
		}
		r->branches++;
		if (in->id == X86_INS_CALL) {
			/* the return address must be the original one: the caller's
			 * unwinder and anything reading it see the real function */
			if (!last) {
				r->why = "a call whose return lands in the patched bytes";
				return -1;
			}
			uint64_t ret = in->address + in->size;
			static const uint8_t push_rip[2] = { 0xff, 0x35 }; /* push qword [rip+disp32] */
			if (o->lit_need == 4)
				return -1;
			o->lit[o->lit_need] = ret;
			o->lit_at[o->lit_need++] = r->out_len + 2;
			uint8_t b[6] = { push_rip[0], push_rip[1], 0, 0, 0, 0 };
			if (emit(o, b, sizeof(b)) < 0)
				return -1;
			static const uint8_t jmp = 0xe9;
			*ends = 1;
			if (emit_rel32(o, &jmp, 1, target) < 0) {
				r->why = "call target out of rel32 range of the trampoline";
				return -1;
			}
			return 0;
		}
		if (in->id == X86_INS_JMP) {
			static const uint8_t jmp = 0xe9;
			if (!last) {
				r->why = "the function jumps away before the jump fits";
				return -1;
			}
			*ends = 1;
			if (emit_rel32(o, &jmp, 1, target) < 0) {
				r->why = "jump target out of rel32 range of the trampoline";
				return -1;
			}
			return 0;
		}
		/* jcc: rel8 (0x70+cc) or rel32 (0x0f 0x80+cc) -> rel32 */
		uint8_t cc;
		if (in->size == 2 && in->bytes[0] >= 0x70 && in->bytes[0] <= 0x7f)
			cc = in->bytes[0] & 0x0f;
		else if (in->size == 6 && in->bytes[0] == 0x0f && in->bytes[1] >= 0x80 && in->bytes[1] <= 0x8f)
			cc = in->bytes[1] & 0x0f;
		else {
			r->why = "a relative branch of an unknown encoding";
			return -1;
		}
		uint8_t op[2] = { 0x0f, (uint8_t)(0x80 | cc) };
		if (emit_rel32(o, op, 2, target) < 0) {
			r->why = "branch target out of rel32 range of the trampoline";
			return -1;
		}
		return 0;
	}
	uint8_t b[16];
	memcpy(b, in->bytes, in->size);
	for (int i = 0; i < x->op_count; i++) {
		const cs_x86_op *op = &x->operands[i];
		if (op->type != X86_OP_MEM || op->mem.base != X86_REG_RIP)
			continue;
		if (x->encoding.disp_size != 4 || !x->encoding.disp_offset ||
		    x->encoding.disp_offset + 4u > in->size) {
			r->why = "a RIP-relative operand of an unknown encoding";
			return -1;
		}
		/* the same absolute address from the new place */
		int64_t disp = (int64_t)op->mem.disp + (int64_t)(in->address - (o->to + r->out_len));
		if (!fits32(disp)) {
			r->why = "a RIP-relative operand out of rel32 range of the trampoline";
			return -1;
		}
		put32(b + x->encoding.disp_offset, (int32_t)disp);
		r->rip_rel++;
	}
	if (in->id == X86_INS_CALL || in->id == X86_INS_JMP || in->id == X86_INS_LJMP ||
	    in->id == X86_INS_LCALL) {
		/* indirect: the flow leaves (a call returns into the original code: refused above) */
		if (in->id == X86_INS_CALL) {
			r->why = "an indirect call in the prologue";
			return -1;
		}
		if (!last) {
			r->why = "the function jumps away before the jump fits";
			return -1;
		}
		*ends = 1;
	}
	return emit(o, b, in->size);
}

int reloc_prologue(const uint8_t *code, size_t avail, uint64_t from, uint64_t to, struct reloc *r)
{
	memset(r, 0, sizeof(*r));
	csh h;
	if (open_cs(&h) < 0) {
		r->why = "no libcapstone.so." CS_STR(CS_API_MAJOR) " (Capstone) to relocate prologues";
		return -1;
	}
	if (avail > RELOC_MAX_IN)
		avail = RELOC_MAX_IN;
	size_t at = 0;
	if (avail >= 4 && !memcmp(code, endbr64, 4))
		at = r->skip = 4;
	struct out o = { .r = r, .to = to };
	cs_insn *in = cs_malloc(h);
	int rc = -1, ends = 0;
	if (!in) {
		r->why = "out of memory";
		goto out;
	}
	/* first the extent: whole instructions covering the jump */
	size_t end = at;
	while (end - at < RELOC_JMP_LEN) {
		const uint8_t *p = code + end;
		size_t n = avail - end;
		uint64_t a = from + end;
		if (!cs_disasm_iter(h, &p, &n, &a, in)) {
			r->why = "undecodable bytes in the prologue";
			goto out;
		}
		end += in->size;
	}
	r->patched = end - at;
	uint64_t lo = from, hi = from + end;
	const uint8_t *p = code + at;
	size_t n = end - at;
	uint64_t a = from + at;
	while (n) {
		uint64_t here = a;
		if (!cs_disasm_iter(h, &p, &n, &a, in))
			goto out;
		if (relocate_one(h, in, &o, lo, hi, here + in->size == hi, &ends) < 0) {
			if (!r->why)
				r->why = "the relocated prologue does not fit the trampoline";
			goto out;
		}
	}
	static const uint8_t jmp = 0xe9;
	if (!ends && emit_rel32(&o, &jmp, 1, hi) < 0) {
		r->why = "the function is out of rel32 range of the trampoline";
		goto out;
	}
	/* the literal pool (return addresses of relocated calls), 8-aligned */
	while (o.lit_need && r->out_len % 8)
		if (emit(&o, (const uint8_t[]){ 0xcc }, 1) < 0)
			goto out;
	for (size_t i = 0; i < o.lit_need; i++) {
		size_t lit = r->out_len;
		if (emit(&o, &o.lit[i], 8) < 0) {
			r->why = "the relocated prologue does not fit the trampoline";
			goto out;
		}
		put32(r->out + o.lit_at[i], (int32_t)(lit - (o.lit_at[i] + 4)));
	}
	rc = 0;
out:
	if (in)
		cs_free(in, 1);
	cs_close(&h);
	return rc;
}

int reloc_check_body(const uint8_t *code, size_t size, uint64_t from, uint64_t lo, uint64_t hi,
		     const char **why)
{
	csh h;
	if (open_cs(&h) < 0) {
		*why = "no libcapstone.so." CS_STR(CS_API_MAJOR) " (Capstone) to relocate prologues";
		return -1;
	}
	if (size > RELOC_MAX_BODY)
		size = RELOC_MAX_BODY;
	cs_insn *in = cs_malloc(h);
	int rc = in ? 0 : -1;
	*why = in ? NULL : "out of memory";
	const uint8_t *p = code;
	size_t n = size;
	uint64_t a = from;
	while (!rc && n) {
		if (!cs_disasm_iter(h, &p, &n, &a, in)) {
			*why = "undecodable bytes in the function body";
			rc = -1;
			break;
		}
		uint64_t t = branch_target(h, in);
		if (t && t >= lo && t < hi && in->address >= hi) {
			*why = "a branch in the function lands in the patched bytes";
			rc = -1;
		}
	}
	if (in)
		cs_free(in, 1);
	cs_close(&h);
	return rc;
}

#else

int reloc_prologue(const uint8_t *code, size_t avail, uint64_t from, uint64_t to, struct reloc *r)
{
	memset(r, 0, sizeof(*r));
	r->why = "in-process hooks exist for x86-64 only";
	return -1;
}

int reloc_check_body(const uint8_t *code, size_t size, uint64_t from, uint64_t lo, uint64_t hi,
		     const char **why)
{
	*why = "in-process hooks exist for x86-64 only";
	return -1;
}

#endif
