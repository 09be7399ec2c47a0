/* TLS session keys for passive decryption: NSS key-log lines parsed into a bounded store found by client random, and key-log files followed as they grow. */
#ifndef TLSMIRROR_DECRYPT_KEYS_H
#define TLSMIRROR_DECRYPT_KEYS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The secrets a key log names (the labels of the NSS key-log format). */
enum key_label {
	KEY_MASTER = 0,          /* CLIENT_RANDOM: the TLS 1.2 master secret (48 bytes) */
	KEY_CLIENT_EARLY,        /* CLIENT_EARLY_TRAFFIC_SECRET */
	KEY_CLIENT_HS,           /* CLIENT_HANDSHAKE_TRAFFIC_SECRET */
	KEY_SERVER_HS,           /* SERVER_HANDSHAKE_TRAFFIC_SECRET */
	KEY_CLIENT_AP,           /* CLIENT_TRAFFIC_SECRET_0 */
	KEY_SERVER_AP,           /* SERVER_TRAFFIC_SECRET_0 */
	KEY_NLABELS
};

#define KEY_SECRET_MAX 64        /* longest secret kept (SHA-512 sized) */
#define KEYS_DEFAULT_MAX 65536   /* client randoms kept (the oldest go first) */

struct key_entry {
	uint8_t cr[32];          /* the client random */
	uint8_t have;            /* bit (1 << label) per secret present */
	uint8_t used;            /* a connection decrypted with them (keys_mark_used) */
	uint8_t len[KEY_NLABELS];
	uint8_t secret[KEY_NLABELS][KEY_SECRET_MAX];
	uint32_t next;           /* hash chain (index + 1; 0: end) */
	/* a # TUPLE line named its connection (keys_find_tuple) */
	uint8_t placed;
	uint8_t placements;      /* connections placed with it (keys_note_placement) */
	uint8_t family;          /* 4 or 6 */
	uint16_t cport, sport;
	uint16_t version, suite; /* 0: not known */
	uint8_t caddr[16], saddr[16]; /* IPv4 in the first 4 bytes */
	uint8_t sr[32];          /* the server random (all zero: not known) */
	uint32_t tnext;          /* tuple hash chain (index + 1; 0: end) */
};

struct key_stats {
	uint64_t lines;          /* key lines taken */
	uint64_t replaced;       /* of them: a secret given again for a client random (the latest kept) */
	uint64_t bad_lines;      /* lines that are not key-log lines (reason logged, rate-limited) */
	uint64_t unknown_labels; /* well-formed lines with a label we do not use (RSA, EXPORTER_SECRET) */
	uint64_t evicted;        /* client randoms forgotten over the cap */
	uint64_t evicted_unused; /* of them, never used by a connection */
	uint64_t entries;        /* client randoms held now (gauge) */
	uint64_t tuples;         /* # TUPLE lines taken */
};

struct key_store;

/* A store of at most max client randoms (0: KEYS_DEFAULT_MAX). NULL on ENOMEM. */
struct key_store *keys_new(size_t max);
void keys_free(struct key_store *ks);
/* Parses one key-log line (without its newline; a trailing CR is allowed).
 * Returns 1 for a key (or a # TUPLE line) taken, 0 for a comment, blank
 * line or unused label, -EINVAL for a malformed line (*why says what is
 * wrong). The comment "# TUPLE CLIENT SERVER CLIENT_RANDOM SERVER_RANDOM
 * VERSION SUITE" (tlsmirror --keylog; docs/decrypt.md) places a
 * connection first seen mid-stream. */
int keys_add_line(struct key_store *ks, const char *line, size_t len, const char **why);
/* The lines that follow are not from the same writer (another file, a file
 * read again): a short-form # TUPLE line waiting for its key line is forgotten. */
void keys_line_break(struct key_store *ks);
/* Adds one secret (label: enum key_label) for client random cr, as a
 * key-log line would (a master secret the decryptor derived itself). */
void keys_add_secret(struct key_store *ks, const uint8_t cr[32], int label, const uint8_t *sec,
		     size_t len);
/* The entry for client random cr, or NULL. Valid until the next add. */
const struct key_entry *keys_find(const struct key_store *ks, const uint8_t cr[32]);
/* The entry a # TUPLE line placed on the connection between a:pa and b:pb
 * (either way round; the latest line wins), or NULL. *a_is_client says
 * which end the line names the client. Valid until the next add. */
const struct key_entry *keys_find_tuple(const struct key_store *ks, int family, const uint8_t a[16],
					uint16_t pa, const uint8_t b[16], uint16_t pb, int *a_is_client);
/* A connection is placed with e: the number of placements with it before
 * this one (a # TUPLE line names one connection: more are replays). */
unsigned keys_note_placement(struct key_store *ks, const struct key_entry *e);
/* A connection with client random cr decrypted: its keys were good for something. */
void keys_mark_used(struct key_store *ks, const uint8_t cr[32]);
/* Client randoms held, or forgotten over the cap, that no connection used
 * (keys for traffic that was not captured, or that decrypt nothing). */
uint64_t keys_unused(const struct key_store *ks);
/* Changes whenever a key is added: a waiting connection looks again. */
uint64_t keys_generation(const struct key_store *ks);
const struct key_stats *keys_stats(const struct key_store *ks);
/* The cap on client randoms (keys_new's max, or its default). */
size_t keys_capacity(const struct key_store *ks);

/*
 * A key-log file followed like tail -f: what was appended since the last
 * poll is parsed (a partial last line waits for its newline); a file
 * truncated or replaced (a new inode at the path) is read again from its
 * start; a file that does not exist yet is looked for at each poll.
 */
struct key_file {
	const char *path;
	int fd;
	dev_t dev;
	ino_t ino;
	off_t off;
	char buf[1024];          /* the partial line */
	size_t blen;
	int skipping;            /* inside a line too long: skipped to its newline */
	uint64_t lines, bad;     /* of this file */
	int missing_logged;
};

/* Opens path (it may not exist yet). Returns 0 or -errno for an unusable
 * path (a directory...); *why says why. */
int key_file_open(struct key_file *kf, const char *path, const char **why);
/* Reads what is new into ks. Returns the number of keys taken (0 if none), -errno on a read error. */
int key_file_poll(struct key_file *kf, struct key_store *ks);
void key_file_close(struct key_file *kf);

#endif
