/* Command-line options from a table: one row per option parses it, stores it and writes its --help line. */
#ifndef TLSMIRROR_OPT_H
#define TLSMIRROR_OPT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum opt_kind {
	OPT_FLAG,                /* no argument: stores 1 */
	OPT_UINT,                /* a decimal number in [lo, hi] */
	OPT_SIZE,                /* bytes with an optional K/M/G suffix, in [lo, hi] */
	OPT_STRING,              /* the argument itself (a pointer into argv) */
	OPT_CHOICE,              /* one of the words of choices ("zstd|lz4|none") */
	OPT_CUSTOM,              /* parse() does it */
};

struct opt_def;

/* What a custom parser knows of the element being parsed. */
struct opt_ctx {
	const char *where;       /* "FILE:LINE: " for a --config line, "" for the command line */
	const char *shown;       /* the value an error shows: the argument unless the parser sets it */
};

/* A custom parser's answer besides 0 (taken) and -errno (refused, *why says why). */
#define OPT_STOP 1               /* stop parsing: leave with status 0 (--help, --version) */

struct opt_def {
	const char *name;        /* long option, without its -- ("mss") */
	int short_opt;           /* its letter, 0 if none */
	const char *metavar;     /* the argument in --help ("N"); NULL: takes none */
	const char *help;        /* its --help text ('\n' starts a continuation line) */
	unsigned section;        /* where --help lists it (the caller's numbering) */
	enum opt_kind kind;
	size_t off;              /* offsetof(the config, the field) */
	unsigned width;          /* sizeof the field (OPT_FLAG, OPT_UINT, OPT_SIZE: 1, 2, 4 or 8) */
	uint64_t lo, hi;         /* bounds (OPT_UINT, OPT_SIZE) */
	const char *choices;     /* OPT_CHOICE: "a|b|c" */
	const char *want;        /* what the error says is expected; NULL: made from the bounds */
	/* OPT_CUSTOM: takes arg ("" for an option without argument) into cfg.
	 * Returns 0, OPT_STOP, or -errno with *why set (and ctx->shown if the
	 * error is about a part of arg). */
	int (*parse)(const struct opt_def *d, void *cfg, const char *arg, struct opt_ctx *ctx,
		     const char **why);
	const void *data;        /* for parse (a sink's or a stage's row) */
};

/* "-c" for an option with a letter, else "--name": how errors name it. */
const char *opt_label(const struct opt_def *d, char *buf, size_t len);

/* Parses arg for row d and stores it into cfg. 0, OPT_STOP, or -EINVAL
 * with *why what is expected (ctx->shown the value at fault). */
int opt_apply(const struct opt_def *d, void *cfg, const char *arg, struct opt_ctx *ctx,
	      const char **why);

/* Parses a byte size with an optional K/M/G (and B) suffix. 0 or -EINVAL. */
int opt_parse_size(const char *s, uint64_t *out);
/* Parses a decimal number in [lo, hi] (no sign, no blanks). 0 or -EINVAL. */
int opt_parse_uint(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);

/*
 * Parses argv (argv[0] is the program) with the n rows: every element must
 * be an option of a row (getopt_long's syntax: --name VALUE, --name=VALUE,
 * -c VALUE, -cVALUE, no permutation). origin[i], when origin is not NULL,
 * is "FILE:LINE: " for an element that came from a --config file (NULL:
 * the command line); errors start with it. Errors are written to err as
 * "PROG: [origin]invalid --opt 'value': want", "option --opt needs a
 * value", "unknown option '--x' (see PROG --help)", "unexpected argument
 * 'x' (see PROG --help)". Returns -1 to go on, or the status to leave with
 * (0 after OPT_STOP, 2 for an error).
 */
int opt_parse(const struct opt_def *rows, size_t n, int argc, char **argv,
	      const char *const *origin, void *cfg, const char *prog, FILE *err);

/* Appends the --help lines of the rows of section sec at buf[at..len):
 * "  -c, --name METAVAR   help", the help at column 27 (on a line of its own
 * after a long option). Returns the new end. */
size_t opt_help(const struct opt_def *rows, size_t n, unsigned sec, char *buf, size_t len,
		size_t at);

#endif
