/* Unit-test runner: runs every registered test (or those whose name contains argv[1]). */
#include "unit.h"

#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UNIT_MAX_TESTS 1024

struct unit_test {
	const char *name;
	void (*fn)(void);
};

static struct unit_test tests[UNIT_MAX_TESTS];
static size_t ntests;
static const char *cur_name;
static int cur_failed;
static char tmpdir[512];

void unit_register(const char *name, void (*fn)(void))
{
	if (ntests == UNIT_MAX_TESTS) {
		fprintf(stderr, "unit: more than %d tests, raise UNIT_MAX_TESTS\n",
			UNIT_MAX_TESTS);
		exit(2);
	}
	tests[ntests].name = name;
	tests[ntests].fn = fn;
	ntests++;
}

static void fail_line(const char *file, int line)
{
	printf("FAIL %s: %s:%d: ", cur_name, file, line);
	cur_failed = 1;
}

int unit_check(int ok, const char *expr, const char *file, int line)
{
	if (!ok) {
		fail_line(file, line);
		printf("CHECK(%s)\n", expr);
	}
	return ok;
}

int unit_check_u64(uint64_t a, uint64_t b, const char *ea, const char *eb,
		   const char *file, int line)
{
	if (a != b) {
		fail_line(file, line);
		printf("%s == %s: %" PRIu64 " (%" PRId64 ", 0x%" PRIx64 ") != %"
		       PRIu64 " (%" PRId64 ", 0x%" PRIx64 ")\n",
		       ea, eb, a, (int64_t)a, a, b, (int64_t)b, b);
	}
	return a == b;
}

int unit_check_mem(const void *a, const void *b, size_t len, const char *ea,
		   const char *eb, const char *file, int line)
{
	const uint8_t *x = a, *y = b;
	for (size_t i = 0; i < len; i++) {
		if (x[i] != y[i]) {
			fail_line(file, line);
			printf("%s and %s differ at byte %zu: 0x%02x != 0x%02x\n",
			       ea, eb, i, x[i], y[i]);
			return 0;
		}
	}
	return 1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

static void rm_tmpdir(void)
{
	if (tmpdir[0])
		nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *unit_tmpdir(void)
{
	if (!tmpdir[0]) {
		const char *base = getenv("TMPDIR");
		if (!base || !*base || strlen(base) > sizeof(tmpdir) - 32)
			base = "/tmp";
		snprintf(tmpdir, sizeof(tmpdir), "%s/tlsmirror-unit.XXXXXX", base);
		if (!mkdtemp(tmpdir)) {
			perror("unit: mkdtemp");
			exit(2);
		}
		atexit(rm_tmpdir);
	}
	return tmpdir;
}

int main(int argc, char **argv)
{
	const char *filter = argc > 1 ? argv[1] : NULL;
	unsigned passed = 0, failed = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; i < ntests; i++) {
		if (filter && !strstr(tests[i].name, filter))
			continue;
		cur_name = tests[i].name;
		cur_failed = 0;
		tests[i].fn();
		if (cur_failed)
			failed++;
		else
			passed++;
	}
	printf("unit: %u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
