/* Command-line options from a table (opt.h): parsing, storing and the --help lines. */
#include "common/opt.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define OPT_MAX_ROWS 128

const char *opt_label(const struct opt_def *d, char *buf, size_t len)
{
	if (d->short_opt)
		snprintf(buf, len, "-%c", d->short_opt);
	else
		snprintf(buf, len, "--%s", d->name);
	return buf;
}

int opt_parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -EINVAL;
	int shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: break;
	}
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || (shift && v > (ULLONG_MAX >> shift)))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

int opt_parse_uint(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

static void store(void *cfg, const struct opt_def *d, uint64_t v)
{
	char *p = (char *)cfg + d->off;
	switch (d->width) {
	case 1: { uint8_t x = (uint8_t)v; memcpy(p, &x, 1); break; }
	case 2: { uint16_t x = (uint16_t)v; memcpy(p, &x, 2); break; }
	case 4: { uint32_t x = (uint32_t)v; memcpy(p, &x, 4); break; }
	default: memcpy(p, &v, 8); break;
	}
}

/* "a number from LO to HI" for a row without its own words. */
static const char *want_of(const struct opt_def *d)
{
	static char buf[96];
	if (d->want)
		return d->want;
	if (d->kind == OPT_CHOICE)
		snprintf(buf, sizeof(buf), "one of %s", d->choices);
	else
		snprintf(buf, sizeof(buf), "a %s from %llu to %llu", d->kind == OPT_SIZE ? "size" :
			 "number", (unsigned long long)d->lo, (unsigned long long)d->hi);
	return buf;
}

static int choice_ok(const char *choices, const char *arg)
{
	size_t al = strlen(arg);
	for (const char *c = choices; *c;) {
		size_t l = strcspn(c, "|");
		if (l == al && !memcmp(c, arg, l))
			return 1;
		c += l + (c[l] == '|');
	}
	return 0;
}

int opt_apply(const struct opt_def *d, void *cfg, const char *arg, struct opt_ctx *ctx,
	      const char **why)
{
	uint64_t v = 0;
	ctx->shown = arg;
	switch (d->kind) {
	case OPT_FLAG:
		store(cfg, d, 1);
		return 0;
	case OPT_UINT:
		if (opt_parse_uint(arg, d->lo, d->hi, &v))
			break;
		store(cfg, d, v);
		return 0;
	case OPT_SIZE:
		if (opt_parse_size(arg, &v) || v < d->lo || v > d->hi)
			break;
		store(cfg, d, v);
		return 0;
	case OPT_STRING:
		memcpy((char *)cfg + d->off, &arg, sizeof(arg));
		return 0;
	case OPT_CHOICE:
		if (!choice_ok(d->choices, arg))
			break;
		memcpy((char *)cfg + d->off, &arg, sizeof(arg));
		return 0;
	case OPT_CUSTOM: {
		*why = NULL;
		int rc = d->parse(d, cfg, arg, ctx, why);
		if (rc < 0 && !*why)
			*why = "not understood";
		return rc;
	}
	}
	*why = want_of(d);
	return -EINVAL;
}

int opt_parse(const struct opt_def *rows, size_t n, int argc, char **argv,
	      const char *const *origin, void *cfg, const char *prog, FILE *err)
{
	struct option lo[OPT_MAX_ROWS + 1];
	/* '+': no permutation, so that an element's origin stays its index;
	 * ':': a missing value is told apart from an unknown option */
	char shorts[2 * OPT_MAX_ROWS + 3] = "+:";
	size_t ns = 2;
	if (n > OPT_MAX_ROWS) {
		fprintf(err, "%s: too many options in the table\n", prog);
		return 2;
	}
	for (size_t i = 0; i < n; i++) {
		lo[i] = (struct option){ rows[i].name, rows[i].metavar ? required_argument : no_argument,
					 NULL, 256 + (int)i };
		if (rows[i].short_opt) {
			shorts[ns++] = (char)rows[i].short_opt;
			if (rows[i].metavar)
				shorts[ns++] = ':';
		}
	}
	shorts[ns] = 0;
	memset(&lo[n], 0, sizeof(lo[n]));
	int c, cur = -1;
	opterr = 0;
	optind = 0; /* a fresh scan (the unit tests parse more than once) */
#define WHERE (origin && cur >= 0 && cur < argc && origin[cur] ? origin[cur] : "")
	while ((c = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
		cur = optarg && optind >= 2 && argv[optind - 1] == optarg ? optind - 2 : optind - 1;
		if (c == ':') {
			fprintf(err, "%s: %soption %s needs a value\n", prog, WHERE, argv[optind - 1]);
			return 2;
		}
		const struct opt_def *d = NULL;
		if (c >= 256 && (size_t)(c - 256) < n)
			d = &rows[c - 256];
		for (size_t i = 0; !d && c > 0 && c < 256 && i < n; i++)
			if (rows[i].short_opt == c)
				d = &rows[i];
		if (!d) {
			fprintf(err, "%s: %sunknown option '%s' (see %s --help)\n", prog, WHERE,
				argv[optind - 1], prog);
			return 2;
		}
		/* a file's line holds its value ("--mss=N"): "mss" alone never takes
		 * the next element (the next line, or the command line's) */
		if (d->metavar && origin && origin[cur] && cur == optind - 2) {
			fprintf(err, "%s: %soption %s needs a value\n", prog, WHERE, argv[cur]);
			return 2;
		}
		const char *why = NULL;
		struct opt_ctx ctx = { .where = WHERE };
		const char *arg = d->metavar ? optarg : "";
		int rc = opt_apply(d, cfg, arg, &ctx, &why);
		if (rc == OPT_STOP)
			return 0;
		if (rc < 0) {
			char label[64];
			fprintf(err, "%s: %sinvalid %s '%s': %s\n", prog, WHERE,
				opt_label(d, label, sizeof(label)), ctx.shown ? ctx.shown : arg, why);
			return 2;
		}
	}
	if (optind < argc) {
		cur = optind;
		fprintf(err, "%s: %sunexpected argument '%s' (see %s --help)\n", prog, WHERE,
			argv[optind], prog);
		return 2;
	}
#undef WHERE
	return -1;
}

/* One line of the help, its continuation lines at column 27. */
static size_t help_row(const struct opt_def *d, char *buf, size_t len, size_t at)
{
	char opt[80], lead[8] = "      ";
	if (at >= len)
		return at;
	snprintf(opt, sizeof(opt), "--%s%s%s", d->name, d->metavar ? " " : "",
		 d->metavar ? d->metavar : "");
	if (d->short_opt)
		snprintf(lead, sizeof(lead), "  -%c, ", d->short_opt);
	const char *h = d->help ? d->help : "";
	size_t l = strcspn(h, "\n");
	int k = strlen(opt) < 20 ? snprintf(buf + at, len - at, "%s%-20s%.*s\n", lead, opt, (int)l, h) :
		snprintf(buf + at, len - at, "%s%s\n%26s%.*s\n", lead, opt, "", (int)l, h);
	at = k > 0 ? at + (size_t)k : at;
	while (h[l] == '\n' && at < len) {
		h += l + 1;
		l = strcspn(h, "\n");
		k = snprintf(buf + at, len - at, "%26s%.*s\n", "", (int)l, h);
		at = k > 0 ? at + (size_t)k : at;
	}
	return at < len ? at : len - 1;
}

size_t opt_help(const struct opt_def *rows, size_t n, unsigned sec, char *buf, size_t len,
		size_t at)
{
	for (size_t i = 0; i < n; i++)
		if (rows[i].section == sec)
			at = help_row(&rows[i], buf, len, at);
	return at;
}
