/* Tiny unit-test harness: TEST(name) registers a test; CHECK* record failures with file:line. */
#ifndef TLSMIRROR_UNIT_H
#define TLSMIRROR_UNIT_H

#include <stddef.h>
#include <stdint.h>

/*
 * A test is a void function; TEST(name) defines it and registers it before
 * main() runs. The CHECK macros never return from the test: they record a
 * failure (printed with file:line) and evaluate to 1 when the check held, so
 * a test guards what depends on it with `if (!CHECK(p)) return;`.
 */
void unit_register(const char *name, void (*fn)(void));
int unit_check(int ok, const char *expr, const char *file, int line);
int unit_check_u64(uint64_t a, uint64_t b, const char *ea, const char *eb,
		   const char *file, int line);
int unit_check_mem(const void *a, const void *b, size_t len, const char *ea,
		   const char *eb, const char *file, int line);

/* A directory for this run's files under $TMPDIR (default /tmp; created on
 * first use, removed at exit). */
const char *unit_tmpdir(void);

#define TEST(name)                                                        \
	static void name(void);                                           \
	__attribute__((constructor)) static void name##_register(void)    \
	{                                                                 \
		unit_register(#name, name);                               \
	}                                                                 \
	static void name(void)

#define CHECK(cond) unit_check(!!(cond), #cond, __FILE__, __LINE__)
#define CHECK_EQ(a, b) \
	unit_check_u64((uint64_t)(a), (uint64_t)(b), #a, #b, __FILE__, __LINE__)
#define CHECK_MEM(a, b, len) \
	unit_check_mem((a), (b), (len), #a, #b, __FILE__, __LINE__)

#endif
