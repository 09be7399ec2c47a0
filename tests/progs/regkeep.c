/* Attach test target: sleeps in raw nanosleep calls with known values in registers and below its stack pointer; exits 3 if any changed. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BELOW_LO 4096 /* bytes below %rsp that must survive: covers the red zone and attach's scratch area */
#define BELOW_HI 160  /* above this the memset/printf calls of this loop use the stack */

static unsigned char pattern(uint64_t i, unsigned round)
{
	return (unsigned char)(i * 131u + round * 7u + 0x5a);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (unsigned round = 0;; round++) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		uint64_t sp;
		__asm__ volatile("mov %%rsp, %0" : "=r"(sp));
		volatile unsigned char *below = (volatile unsigned char *)(uintptr_t)(sp - BELOW_LO);
		for (uint64_t i = 0; i < BELOW_LO - BELOW_HI; i++)
			below[i] = pattern(i, round);
		register uint64_t rbx __asm__("rbx") = 0x1111111111111111ull * (round % 15 + 1);
		register uint64_t r12 __asm__("r12") = 0x0c0c0c0c0c0c0c0cull ^ round;
		register uint64_t r13 __asm__("r13") = 0x0d0d0d0d0d0d0d0dull ^ round;
		register uint64_t r14 __asm__("r14") = 0x0e0e0e0e0e0e0e0eull ^ round;
		register uint64_t r15 __asm__("r15") = 0x0f0f0f0f0f0f0f0full ^ round;
		register uint64_t r8 __asm__("r8") = 0x0808080808080808ull ^ round;
		register uint64_t r9 __asm__("r9") = 0x0909090909090909ull ^ round;
		register double x8 __asm__("xmm8") = 8.5 + round;
		register double x15 __asm__("xmm15") = 15.25 + round;
		long rax = 35; /* nanosleep: restarted with the time left after an interrupt */
		__asm__ volatile("syscall"
				 : "+a"(rax), "+r"(rbx), "+r"(r12), "+r"(r13), "+r"(r14), "+r"(r15),
				   "+r"(r8), "+r"(r9), "+x"(x8), "+x"(x15)
				 : "D"(&ts), "S"(0)
				 : "rcx", "r11", "memory");
		int bad = rax != 0 || rbx != 0x1111111111111111ull * (round % 15 + 1) ||
			  r12 != (0x0c0c0c0c0c0c0c0cull ^ round) || r13 != (0x0d0d0d0d0d0d0d0dull ^ round) ||
			  r14 != (0x0e0e0e0e0e0e0e0eull ^ round) || r15 != (0x0f0f0f0f0f0f0f0full ^ round) ||
			  r8 != (0x0808080808080808ull ^ round) || r9 != (0x0909090909090909ull ^ round) ||
			  x8 != 8.5 + round || x15 != 15.25 + round;
		uint64_t first_bad = UINT64_MAX;
		for (uint64_t i = 0; i < BELOW_LO - BELOW_HI && first_bad == UINT64_MAX; i++)
			if (below[i] != pattern(i, round))
				first_bad = i;
		if (bad || first_bad != UINT64_MAX) {
			printf("CHANGED round %u: rax=%ld registers %s, stack byte %lld below %%rsp\n",
			       round, rax, bad ? "differ" : "same",
			       first_bad == UINT64_MAX ? -1LL : (long long)(BELOW_LO - first_bad));
			return 3;
		}
		if (round % 10 == 0)
			printf("round %u ok\n", round);
	}
}
