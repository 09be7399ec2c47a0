/* The key store and the key-log file follower (keys.h). */
#include "decrypt/keys.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct key_store {
	struct key_entry *e;     /* a ring of max entries: e[head] is the oldest when full */
	size_t max, n, head;
	uint32_t *bucket;        /* index + 1 of a chain's first entry */
	uint32_t *tbucket;       /* the same, by 4-tuple (# TUPLE) */
	size_t nbuckets;         /* a power of two >= max */
	uint64_t gen;
	struct key_stats st;
	struct {
		uint8_t family;  /* 0: none */
		uint8_t ca[16], sa[16];
		uint16_t cp, sp;
	} pend;                  /* a # TUPLE line of the ends alone, for the next key line */
};

static const struct {
	const char *name;
	int label;               /* enum key_label, -1: known, not used */
} labels[] = {
	{ "CLIENT_RANDOM", KEY_MASTER },
	{ "CLIENT_EARLY_TRAFFIC_SECRET", KEY_CLIENT_EARLY },
	{ "CLIENT_HANDSHAKE_TRAFFIC_SECRET", KEY_CLIENT_HS },
	{ "SERVER_HANDSHAKE_TRAFFIC_SECRET", KEY_SERVER_HS },
	{ "CLIENT_TRAFFIC_SECRET_0", KEY_CLIENT_AP },
	{ "SERVER_TRAFFIC_SECRET_0", KEY_SERVER_AP },
	{ "EXPORTER_SECRET", -1 },
	{ "EARLY_EXPORTER_SECRET", -1 },
	{ "RSA", -1 },
};

struct key_store *keys_new(size_t max)
{
	struct key_store *ks = calloc(1, sizeof(*ks));
	if (!ks)
		return NULL;
	ks->max = max ? max : KEYS_DEFAULT_MAX;
	ks->nbuckets = 64;
	while (ks->nbuckets < ks->max)
		ks->nbuckets <<= 1;
	ks->bucket = calloc(ks->nbuckets, sizeof(*ks->bucket));
	ks->tbucket = calloc(ks->nbuckets, sizeof(*ks->tbucket));
	ks->e = calloc(ks->max, sizeof(*ks->e)); /* untouched pages cost nothing */
	if (!ks->bucket || !ks->tbucket || !ks->e) {
		keys_free(ks);
		return NULL;
	}
	return ks;
}

void keys_free(struct key_store *ks)
{
	if (!ks)
		return;
	free(ks->bucket);
	free(ks->tbucket);
	free(ks->e);
	free(ks);
}

static size_t cr_hash(const struct key_store *ks, const uint8_t cr[32])
{
	uint64_t h;
	memcpy(&h, cr + 24, 8); /* random bytes: the last 8 (TLS 1.2's first 4 may be a time) */
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ULL;
	return (size_t)(h >> 17) & (ks->nbuckets - 1);
}

const struct key_entry *keys_find(const struct key_store *ks, const uint8_t cr[32])
{
	for (uint32_t i = ks->bucket[cr_hash(ks, cr)]; i; i = ks->e[i - 1].next)
		if (!memcmp(ks->e[i - 1].cr, cr, 32))
			return &ks->e[i - 1];
	return NULL;
}

/* The same for both orders of the ends (a # TUPLE line names the client first, a frame either). */
static size_t tuple_hash(const struct key_store *ks, int family, const uint8_t a[16], uint16_t pa,
			 const uint8_t b[16], uint16_t pb)
{
	uint64_t h = (uint64_t)family * 0x9e3779b97f4a7c15ULL ^ ((uint64_t)pa * pb) ^ ((uint64_t)pa + pb) << 32;
	for (int i = 0; i < 16; i++)
		h += (uint64_t)(a[i] ^ b[i]) << (8 * (i % 8)) ^ (uint64_t)(a[i] + b[i]) << (8 * ((i + 3) % 8));
	h ^= h >> 31;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 29;
	return (size_t)h & (ks->nbuckets - 1);
}

static size_t entry_tuple_hash(const struct key_store *ks, const struct key_entry *e)
{
	return tuple_hash(ks, e->family, e->caddr, e->cport, e->saddr, e->sport);
}

static void tuple_unlink(struct key_store *ks, size_t idx)
{
	if (!ks->e[idx].placed)
		return;
	uint32_t *pp = &ks->tbucket[entry_tuple_hash(ks, &ks->e[idx])];
	while (*pp && *pp != idx + 1)
		pp = &ks->e[*pp - 1].tnext;
	if (*pp)
		*pp = ks->e[idx].tnext;
	ks->e[idx].placed = 0;
}

const struct key_entry *keys_find_tuple(const struct key_store *ks, int family, const uint8_t a[16],
					uint16_t pa, const uint8_t b[16], uint16_t pb, int *a_is_client)
{
	for (uint32_t i = ks->tbucket[tuple_hash(ks, family, a, pa, b, pb)]; i; i = ks->e[i - 1].tnext) {
		const struct key_entry *e = &ks->e[i - 1];
		if (e->family != family)
			continue;
		if (e->cport == pa && e->sport == pb && !memcmp(e->caddr, a, 16) &&
		    !memcmp(e->saddr, b, 16)) {
			*a_is_client = 1;
			return e;
		}
		if (e->cport == pb && e->sport == pa && !memcmp(e->caddr, b, 16) &&
		    !memcmp(e->saddr, a, 16)) {
			*a_is_client = 0;
			return e;
		}
	}
	return NULL;
}

static void unlink_entry(struct key_store *ks, size_t idx)
{
	uint32_t *pp = &ks->bucket[cr_hash(ks, ks->e[idx].cr)];
	while (*pp && *pp != idx + 1)
		pp = &ks->e[*pp - 1].next;
	if (*pp)
		*pp = ks->e[idx].next;
	tuple_unlink(ks, idx);
}

static struct key_entry *entry_for(struct key_store *ks, const uint8_t cr[32])
{
	struct key_entry *e = (struct key_entry *)keys_find(ks, cr);
	if (e)
		return e;
	size_t idx;
	if (ks->n < ks->max) {
		idx = ks->n++;
	} else {
		idx = ks->head;
		ks->head = (ks->head + 1) % ks->max;
		unlink_entry(ks, idx);
		ks->st.evicted++;
		ks->st.evicted_unused += !ks->e[idx].used;
	}
	e = &ks->e[idx];
	memset(e, 0, sizeof(*e));
	memcpy(e->cr, cr, 32);
	size_t b = cr_hash(ks, cr);
	e->next = ks->bucket[b];
	ks->bucket[b] = (uint32_t)(idx + 1);
	ks->st.entries = ks->n;
	return e;
}

void keys_add_secret(struct key_store *ks, const uint8_t cr[32], int label, const uint8_t *sec,
		     size_t len)
{
	if (label < 0 || label >= KEY_NLABELS || len > KEY_SECRET_MAX)
		return;
	struct key_entry *e = entry_for(ks, cr);
	if (e->have & (1u << label))
		ks->st.replaced++;
	e->have |= (uint8_t)(1u << label);
	e->len[label] = (uint8_t)len;
	memcpy(e->secret[label], sec, len);
	ks->gen++;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* n hex digits at s into n/2 bytes; -1 if one is not a digit. */
static int unhex(uint8_t *out, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i += 2) {
		int hi = hexval(s[i]), lo = hexval(s[i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i / 2] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static size_t field(const char *s, size_t len, size_t at, size_t *end)
{
	while (at < len && (s[at] == ' ' || s[at] == '\t'))
		at++;
	size_t b = at;
	while (at < len && s[at] != ' ' && s[at] != '\t')
		at++;
	*end = at;
	return b;
}

/* HOST:PORT (IPv4) or [HOST]:PORT (IPv6) of s[0..n): 0, or -1. */
static int endpoint(const char *s, size_t n, int *family, uint8_t addr[16], uint16_t *port)
{
	char buf[INET6_ADDRSTRLEN + 8];
	if (n < 3 || n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n);
	buf[n] = 0;
	char *colon = strrchr(buf, ':'), *host = buf;
	if (!colon || !colon[1])
		return -1;
	*colon = 0;
	char *end;
	unsigned long p = strtoul(colon + 1, &end, 10);
	if (*end || p == 0 || p > 65535 || colon[1] < '0' || colon[1] > '9')
		return -1;
	*port = (uint16_t)p;
	memset(addr, 0, 16);
	if (host[0] == '[') {
		size_t hl = strlen(host);
		if (hl < 3 || host[hl - 1] != ']')
			return -1;
		host[hl - 1] = 0;
		*family = 6;
		return inet_pton(AF_INET6, host + 1, addr) == 1 ? 0 : -1;
	}
	*family = 4;
	return inet_pton(AF_INET, host, addr) == 1 ? 0 : -1;
}


/* The connection of client random cr is the one between ca:cp (its client) and sa:sp. */
static void place(struct key_store *ks, const uint8_t cr[32], int family, const uint8_t ca[16],
		  uint16_t cp, const uint8_t sa[16], uint16_t sp, const uint8_t sr[32], uint16_t ver,
		  uint16_t suite)
{
	struct key_entry *ke = entry_for(ks, cr);
	size_t idx = (size_t)(ke - ks->e);
	tuple_unlink(ks, idx);
	ke->placed = 1;
	ke->family = (uint8_t)family;
	memcpy(ke->caddr, ca, 16);
	memcpy(ke->saddr, sa, 16);
	ke->cport = cp;
	ke->sport = sp;
	ke->version = ver;
	ke->suite = suite;
	memcpy(ke->sr, sr, 32);
	size_t h = entry_tuple_hash(ks, ke);
	ke->tnext = ks->tbucket[h];
	ks->tbucket[h] = (uint32_t)(idx + 1);
	ks->st.tuples++;
	ks->gen++;
}

/* "# TUPLE CLIENT SERVER CLIENT_RANDOM [SERVER_RANDOM [VERSION [SUITE]]]"
 * (after the "# TUPLE"): 1, or -EINVAL. Unknown fields may be "-". */
static int tuple_line(struct key_store *ks, const char *s, size_t len, const char **why)
{
	size_t b[6], e[6], at = 0;
	int nf = 0;
	for (; nf < 6; nf++) {
		b[nf] = field(s, len, at, &e[nf]);
		if (e[nf] == b[nf])
			break;
		at = e[nf];
	}
	size_t xe;
	field(s, len, at, &xe);
	int fa, fb;
	uint8_t ca[16], sa[16], cr[32], sr[32];
	uint16_t cp, sp, ver = 0, suite = 0;
	memset(sr, 0, sizeof(sr));
	if (nf < 2 || xe != at) {
		*why = "a # TUPLE line is CLIENT:PORT SERVER:PORT [CLIENT_RANDOM SERVER_RANDOM VERSION SUITE]";
		return -EINVAL;
	}
	if (endpoint(s + b[0], e[0] - b[0], &fa, ca, &cp) < 0 ||
	    endpoint(s + b[1], e[1] - b[1], &fb, sa, &sp) < 0 || fa != fb) {
		*why = "a # TUPLE endpoint is ADDRESS:PORT or [IPv6]:PORT, both of one family";
		return -EINVAL;
	}
	if (nf == 2) {
		/* the ends alone: they belong to the key line that comes next */
		ks->pend.family = (uint8_t)fa;
		memcpy(ks->pend.ca, ca, 16);
		memcpy(ks->pend.sa, sa, 16);
		ks->pend.cp = cp;
		ks->pend.sp = sp;
		return 0;
	}
	if (e[2] - b[2] != 64 || unhex(cr, s + b[2], 64) < 0) {
		*why = "the # TUPLE client random is not 64 hex digits";
		return -EINVAL;
	}
	if (nf > 3 && !(e[3] - b[3] == 1 && s[b[3]] == '-') &&
	    (e[3] - b[3] != 64 || unhex(sr, s + b[3], 64) < 0)) {
		*why = "the # TUPLE server random is not 64 hex digits (or -)";
		return -EINVAL;
	}
	for (int f = 4; f < nf; f++) {
		uint8_t v[2];
		if (e[f] - b[f] == 1 && s[b[f]] == '-')
			continue;
		if (e[f] - b[f] != 4 || unhex(v, s + b[f], 4) < 0) {
			*why = "the # TUPLE version and suite are 4 hex digits (or -)";
			return -EINVAL;
		}
		*(f == 4 ? &ver : &suite) = (uint16_t)(v[0] << 8 | v[1]);
	}
	place(ks, cr, fa, ca, cp, sa, sp, sr, ver, suite);
	return 1;
}

static int key_line(struct key_store *ks, const char *line, size_t len, size_t lb, const char **why);

int keys_add_line(struct key_store *ks, const char *line, size_t len, const char **why)
{
	if (len && line[len - 1] == '\r')
		len--;
	size_t lb = 0;
	while (lb < len && (line[lb] == ' ' || line[lb] == '\t'))
		lb++;
	if (lb + 8 <= len && !memcmp(line + lb, "# TUPLE ", 8)) {
		ks->pend.family = 0;
		int r = tuple_line(ks, line + lb + 8, len - lb - 8, why);
		if (r < 0)
			ks->st.bad_lines++;
		return r;
	}
	int r = key_line(ks, line, len, lb, why);
	if (r <= 0)
		ks->pend.family = 0; /* the short form names the very next line only */
	return r;
}

void keys_line_break(struct key_store *ks)
{
	ks->pend.family = 0;
}

/* A line that is no # TUPLE line, from lb on: as keys_add_line. */
static int key_line(struct key_store *ks, const char *line, size_t len, size_t lb, const char **why)
{
	size_t le, cb, ce, sb, se, xe;
	if (lb == len || line[lb] == '#')
		return 0;
	lb = field(line, len, lb, &le);
	cb = field(line, len, le, &ce);
	sb = field(line, len, ce, &se);
	field(line, len, se, &xe);
	int label = -2;
	for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++)
		if (le - lb == strlen(labels[i].name) && !memcmp(line + lb, labels[i].name, le - lb))
			label = labels[i].label;
	if (label == -2 && le - lb > 22 && (!memcmp(line + lb, "CLIENT_TRAFFIC_SECRET_", 22) ||
					    !memcmp(line + lb, "SERVER_TRAFFIC_SECRET_", 22))) {
		/* later generations (OpenSSL writes them after a KeyUpdate): we
		 * derive those from _0 ourselves */
		size_t d = lb + 22;
		while (d < le && line[d] >= '0' && line[d] <= '9')
			d++;
		if (d == le)
			label = -1;
	}
	if (label == -2) {
		*why = "not a key-log label (CLIENT_RANDOM, CLIENT_TRAFFIC_SECRET_0, ...)";
		goto bad;
	}
	if (ce == cb || se == sb || xe != se) {
		*why = "a key-log line is LABEL CLIENT_RANDOM SECRET";
		goto bad;
	}
	if (label == -1) {
		ks->st.unknown_labels++;
		return 0;
	}
	uint8_t cr[32], sec[KEY_SECRET_MAX];
	size_t sl = (se - sb) / 2;
	if (ce - cb != 64 || unhex(cr, line + cb, 64) < 0) {
		*why = "the client random is not 64 hex digits";
		goto bad;
	}
	/* the length first: unhex writes sl bytes into sec */
	if ((se - sb) % 2 || (label == KEY_MASTER ? sl != 48 : sl != 32 && sl != 48) ||
	    unhex(sec, line + sb, se - sb) < 0) {
		*why = label == KEY_MASTER ? "the master secret is not 96 hex digits" :
		       "a TLS 1.3 secret is 64 or 96 hex digits (SHA-256 or SHA-384)";
		goto bad;
	}
	keys_add_secret(ks, cr, label, sec, sl);
	ks->st.lines++;
	if (ks->pend.family) {
		const struct key_entry *ke = keys_find(ks, cr);
		static const uint8_t zero[32];
		if (!ke->placed) /* a full # TUPLE line of this client random says more */
			place(ks, cr, ks->pend.family, ks->pend.ca, ks->pend.cp, ks->pend.sa,
			      ks->pend.sp, zero, label == KEY_MASTER ? 0x0303 : 0x0304, 0);
		ks->pend.family = 0;
	}
	return 1;
bad:
	ks->st.bad_lines++;
	return -EINVAL;
}

unsigned keys_note_placement(struct key_store *ks, const struct key_entry *e)
{
	struct key_entry *m = &ks->e[e - ks->e]; /* ours: the store's own entry */
	unsigned n = m->placements;
	if (m->placements < 255)
		m->placements++;
	return n;
}

void keys_mark_used(struct key_store *ks, const uint8_t cr[32])
{
	struct key_entry *e = (struct key_entry *)keys_find(ks, cr);
	if (e)
		e->used = 1;
}

uint64_t keys_unused(const struct key_store *ks)
{
	uint64_t n = ks->st.evicted_unused;
	for (size_t i = 0; i < ks->n; i++)
		n += !ks->e[i].used;
	return n;
}

size_t keys_capacity(const struct key_store *ks)
{
	return ks->max;
}

uint64_t keys_generation(const struct key_store *ks)
{
	return ks->gen;
}

const struct key_stats *keys_stats(const struct key_store *ks)
{
	return &ks->st;
}

/* ---- files ---- */

int key_file_open(struct key_file *kf, const char *path, const char **why)
{
	memset(kf, 0, sizeof(*kf));
	kf->path = path;
	kf->fd = -1;
	struct stat st;
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode)) {
		*why = "not a file";
		return -EINVAL;
	}
	return 0;
}

static void reopen(struct key_file *kf)
{
	if (kf->fd >= 0)
		close(kf->fd);
	kf->fd = open(kf->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	kf->off = 0;
	kf->blen = 0;
	kf->skipping = 0;
	struct stat st;
	if (kf->fd >= 0 && fstat(kf->fd, &st) == 0) {
		kf->dev = st.st_dev;
		kf->ino = st.st_ino;
		kf->missing_logged = 0;
	} else if (!kf->missing_logged) {
		log_info("--keys %s: %s (looked for again as keys are needed)", kf->path,
			 strerror(errno));
		kf->missing_logged = 1;
	}
}

static int take_line(struct key_file *kf, struct key_store *ks, const char *p, size_t n)
{
	static struct log_limit lim;
	const char *why = NULL;
	int r = keys_add_line(ks, p, n, &why);
	if (r < 0) {
		kf->bad++;
		log_limited(&lim, 10, "--keys %s: line %llu skipped: %s", kf->path,
			    (unsigned long long)(kf->lines + kf->bad), why);
		return 0;
	}
	kf->lines++;
	return r > 0;
}

int key_file_poll(struct key_file *kf, struct key_store *ks)
{
	struct stat st;
	if (kf->fd < 0 || (stat(kf->path, &st) == 0 && (st.st_ino != kf->ino || st.st_dev != kf->dev)))
		reopen(kf);
	else if (fstat(kf->fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size < kf->off)
		reopen(kf); /* truncated: written again from the start */
	keys_line_break(ks); /* a short # TUPLE line names a key line of its own file */
	if (kf->fd < 0)
		return 0;
	int taken = 0;
	char chunk[16384];
	for (int rounds = 0; rounds < 64; rounds++) {
		ssize_t r = read(kf->fd, chunk, sizeof(chunk));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EAGAIN ? taken : -errno;
		if (r == 0)
			break;
		kf->off += r;
		for (ssize_t i = 0; i < r;) {
			const char *nl = memchr(chunk + i, '\n', (size_t)(r - i));
			size_t n = nl ? (size_t)(nl - chunk - i) : (size_t)(r - i);
			if (kf->skipping) {
				kf->skipping = !nl;
			} else if (kf->blen + n > sizeof(kf->buf)) {
				take_line(kf, ks, "line too long", 13);
				kf->blen = 0;
				kf->skipping = !nl;
			} else {
				memcpy(kf->buf + kf->blen, chunk + i, n);
				kf->blen += n;
				if (nl) {
					taken += take_line(kf, ks, kf->buf, kf->blen);
					kf->blen = 0;
				}
			}
			i += (ssize_t)n + (nl ? 1 : 0);
		}
	}
	keys_line_break(ks);
	return taken;
}

void key_file_close(struct key_file *kf)
{
	if (kf->fd >= 0)
		close(kf->fd);
	kf->fd = -1;
}
