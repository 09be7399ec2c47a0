/* Capture library internals: process state (capture.c), symbols (sym.c), connections (conn.c). */
#ifndef TLSMIRROR_CAPTURE_H
#define TLSMIRROR_CAPTURE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "transport/ring.h"

/* OpenSSL objects stay opaque: the library is built without OpenSSL's
 * headers' ABI assumptions and works with 1.1.1 and 3.x alike. */
struct ssl_st;
struct ssl_cipher_st;
struct bio_st;

#define CAP_DIR_C2S 0
#define CAP_DIR_S2C 1

/* ---- sym.c: the real functions behind our hooks ---- */

/* Finds a libssl/libcrypto function: RTLD_NEXT first, else the libssl or
 * libcrypto already loaded in the process (dlopen RTLD_LOCAL, Python's _ssl).
 * Returns NULL if none is loaded. Never prints. */
void *sym_ssl(const char *name);
/* sym_ssl() cached in *slot: the real function behind a hook. */
void *sym_real(void **slot, const char *name);
/* What a hook does when libssl can't be found: fail like the call would. */
int sym_missing(void);
/* Finds a libgnutls function: version ver (dlvsym, NULL: the default one)
 * after ours, else from a libgnutls.so loaded RTLD_LOCAL. NULL if none is
 * loaded: never loads it. sym_real_gnutls caches it in *slot. */
void *sym_gnutls(const char *name, const char *ver);
void *sym_real_gnutls(void **slot, const char *name, const char *ver);
/* Finds a libc function after ours (RTLD_NEXT). */
void *sym_libc(const char *name);

/* The libc calls the library itself makes, never through its own hooks. */
struct cap_libc {
	ssize_t (*read)(int fd, void *buf, size_t n);
	ssize_t (*write)(int fd, const void *buf, size_t n);
	ssize_t (*send)(int fd, const void *buf, size_t n, int flags);
	ssize_t (*recv)(int fd, void *buf, size_t n, int flags);
	ssize_t (*sendmsg)(int fd, const struct msghdr *msg, int flags);
	int (*close)(int fd);
};
extern struct cap_libc cap_libc;
void sym_init_libc(void);

/* ---- capture.c: process-wide state (the only file that holds any) ---- */

/* Reads the configuration (environment) once; the constructors call it. */
void cap_setup(void);

/* Current wall-clock time in ns (vDSO, no syscall). */
uint64_t cap_now_ns(void);

/*
 * Returns the ring to write into, creating it (first use) and attaching or
 * re-attaching to the agent at a bounded rate. NULL if the ring can't exist.
 * *epoch gets the attachment epoch: a connection announced in an older epoch
 * must be announced again. Never blocks, never prints.
 */
struct ring_hdr *cap_ring(uint64_t now, uint32_t *epoch);

/* After committing records: wakes the agent if it sleeps and the ring fills. */
void cap_doorbell(struct ring_hdr *ring);

/* A new connection id, unique in this process. */
uint64_t cap_next_conn_id(void);

/* Bytes dropped before a ring existed; added to the ring once it does. */
void cap_count_noring(uint64_t bytes);

/* How many times this process forked so far (the child inherits the count). */
uint32_t cap_fork_count(void);

/* True if fd is the library's own control socket. */
int cap_is_own_fd(int fd);
/* The application closed fd: forget it if it was ours. */
void cap_fd_closed(int fd);

/* ---- conn.c: one TLS connection ---- */

/* watch.c: the ciphertext libssl moved, to find calls that bypassed us. */
enum { WATCH_OFF = 0, WATCH_ON = 1, WATCH_DONE = 2 };
struct cap_watch {
	struct bio_st *rbio, *wbio; /* the BIOs counted (a new BIO restarts) */
	uint64_t seen[2];           /* rbio bytes read, wbio bytes written at our last look */
	uint32_t inflight;          /* hooked calls in progress (threads sharing an SSL) */
	uint8_t state;              /* WATCH_*: ON once the handshake is done */
	uint8_t bypassed;           /* counted in the ring once */
};

struct cap_conn {
	uint64_t id;
	uint32_t epoch;         /* epoch of the last OPEN we emitted, 0 = none */
	uint32_t announcing;    /* 1 while a thread emits the OPEN */
	uint8_t side;           /* RING_SIDE_* */
	uint8_t family;
	uint8_t map_method;     /* 0 = not mapped yet */
	uint8_t closed;         /* atomic: set once, by the thread that emits the CLOSE */
	uint8_t late;           /* first seen after its handshake (a session older than the
				 * library: tlsmirror attach): its OPEN says mid-stream */
	uint16_t cport, sport;
	uint32_t refs;          /* atomic: the SSL's ex-data and the fd table (fd_conn) */
	uint32_t pid;           /* process that emitted the last OPEN, 0 = none */
	uint32_t forks;         /* cap_fork_count() at that OPEN */
	uint8_t caddr[16], saddr[16];
	int io_fd;              /* socket seen during a TLS call, -1 if none */
	int fd;                 /* socket remembered for close(), -1 if none */
	uint64_t off[2];        /* bytes per direction so far */
	uint64_t committed[2];  /* end of the last record in the ring per direction */
	struct cap_watch watch;
};

/* ---- the TLS back-ends: one file and one table row each ---- */

/* Bits of ring_hdr.tls_backends: the back-ends that announced a connection. */
#define CAP_TLS_OPENSSL RING_TLS_OPENSSL
#define CAP_TLS_GNUTLS RING_TLS_GNUTLS
#define CAP_TLS_OPENSSL_STATIC RING_TLS_OPENSSL_STATIC

/* What the generic connection logic (conn.c) asks of a TLS library. sess is
 * the library's session object (SSL *, ...). None of these set errno. */
struct cap_tls_ops {
	const char *name;
	uint32_t bit;                 /* CAP_TLS_* */
	int watch;                    /* watch.c's bypass detection applies (OpenSSL BIOs) */
	int (*resolve)(void);         /* 0 once the library is found in the process, else -ENOENT */
	/* The session's state, created (create 1) with conn_new() if it has none;
	 * NULL if it can't exist. */
	struct cap_conn *(*state)(void *sess, int create);
	int (*is_server)(void *sess); /* 1, 0, or -1: unknown (a session older than the library) */
	int (*get_fd)(void *sess);    /* the socket the library was given, or -1 */
	/* tls_version, sni, alpn, cipher of the OPEN */
	void (*describe)(void *sess, struct ring_open *o);
	int (*client_random)(void *sess, uint8_t out[32]); /* 0 or -ENOENT */
	/* the ServerHello's random, the version and the IANA suite (0 where
	 * unknown) for the key log's # TUPLE line; 0 or -ENOENT */
	int (*server_hello)(void *sess, uint8_t sr[32], uint16_t *version, uint16_t *suite);
};

extern const struct cap_tls_ops cap_tls_openssl;   /* ossl.c */
extern const struct cap_tls_ops cap_tls_gnutls;    /* gtls.c */
/* OpenSSL/BoringSSL linked into the executable, called through its own symbols (ossl.c, inline.c) */
extern const struct cap_tls_ops cap_tls_openssl_static;

/* ---- inline.c: OpenSSL linked into the executable, hooked in place ---- */

enum inl_fn {
	INL_SSL_READ, INL_SSL_READ_EX, INL_SSL_WRITE, INL_SSL_WRITE_EX,
	INL_SSL_DO_HANDSHAKE, INL_SSL_SHUTDOWN, INL_SSL_FREE, INL_NFN
};
/* The original functions (their relocated prologues), NULL where not hooked. */
extern void *inl_real[INL_NFN];
/* What the patched entries jump to (ssl_hooks.c). */
extern void *const inl_hooks[INL_NFN];
/* A function of the program's own OpenSSL (SSL_get_fd, ...), NULL if it has none. */
void *inl_sym(const char *name);
/* 1 once the program's SSL_read/SSL_write... are hooked. */
int inl_active(void);
/* The ring's inline_* fields: what was hooked, what was not and why. */
void inl_report(struct ring_hdr *r);

/* gtls.c: sessions the GnuTLS session table had no room for. */
uint64_t gtls_missed_sessions(void);

/* The TLS call a thread is inside (thread-local, nesting-aware). */
struct cap_call {
	const struct cap_tls_ops *ops;
	void *sess;
	struct cap_conn *conn;
	int want_fd;            /* the connection is not mapped: watch socket I/O */
	int io_fd;
	int watched;            /* watch_begin counted this call in flight */
	struct cap_call *outer;
};

/* Enters/leaves a hooked TLS call. Returns 1 if this is the outermost call
 * (the one that captures), 0 if nested. */
int conn_call_begin(struct cap_call *call, const struct cap_tls_ops *ops, void *sess);
void conn_call_end(struct cap_call *call);

/* Ends a hooked call (conn_call_end) and mirrors the `moved` bytes at buf that
 * the application wrote (app_write 1) or read (0), if this was the outermost
 * call. errno is what the real call left. */
void conn_call_finish(struct cap_call *call, int top, int app_write, const void *buf,
		      size_t moved);

/* The socket I/O hooks report fds used inside TLS calls here (cheap check). */
void conn_note_io_fd(int fd);

/* Records the client random of a ClientHello seen on fd (io hooks); sent
 * says whether this process wrote it (client) or read it (server). */
void conn_note_client_hello(int fd, const uint8_t *buf, size_t len, int sent);

/* Mirrors len bytes of clear text the application wrote (app_write 1) or
 * read (0) on the call's connection. Errors are counted, never reported. */
void conn_data(struct cap_call *call, int app_write, const void *buf, size_t len);

/* len bytes moved that the library can't show: the stream gets a gap there. */
void conn_gap(struct cap_call *call, int app_write, size_t len);

/* Mirrors bytes sent with SSL_sendfile from file fd at offset. */
void conn_sendfile(struct cap_call *call, int fd, off_t offset, size_t len);

/* The handshake finished: announce the connection now. */
void conn_handshake_done(struct cap_call *call);

/* The connection ended (SSL_shutdown, SSL_free, close of its socket). */
void conn_closed(struct cap_call *call);
void conn_fd_closed(int fd);

/* SSL_free: the connection ends (its state goes with the ex-data, conn_release). */
void conn_free(const struct cap_tls_ops *ops, void *sess);

/* A new connection state holding one reference (the session's); NULL if out of memory. */
struct cap_conn *conn_new(const struct cap_tls_ops *ops);
/* The session is freed: ends the connection and drops the session's reference. */
void conn_release(struct cap_conn *c, void *sess);
/* Drops a reference; the last one frees the state. */
void conn_unref(struct cap_conn *c);
/* Copies len bytes of src (NULL: none) into dst of size n, cut and NUL-terminated. */
void conn_copy_str(char *dst, size_t n, const char *src, size_t len);

/* ---- keys.c: the TLS secrets, for an agent that asks (RING_CONSUMER_KEYS) ---- */

/* The client's and the server's end of socket fd (local_is_client: which
 * this process is): 0, or -errno (not an IPv4/IPv6 stream socket). */
int cap_names_of(int fd, int local_is_client, uint8_t *family, uint8_t caddr[16], uint16_t *cport,
		 uint8_t saddr[16], uint16_t *sport);
/* The handshake of sess (ops' library) made its first secret after the
 * ServerHello: its # TUPLE record goes first, for an agent that asks. */
void keys_tuple(const struct cap_tls_ops *ops, void *sess, uint64_t conn_id, unsigned label,
		const uint8_t client_random[32]);

/* One secret (label: enum ring_key_label) of connection conn_id (0: not known). */
void keys_send(uint64_t conn_id, unsigned label, const uint8_t client_random[32],
	       const uint8_t *secret, size_t len);
/* Secrets that waited for the agent's word: sent or forgotten once it has
 * spoken (called when a connection is announced, moves data or closes:
 * one relaxed load when nothing waits). */
void keys_poll(void);
/* The enum ring_key_label of an NSS key-log label, -1 if none. */
int keys_label(const char *name, size_t n);
/* The shared libssl's SSL is first seen (before its handshake): its
 * context gets the key-log callback, if the agent asks for keys. */
void keys_openssl_prepare(struct ssl_st *ssl);

/* ---- watch.c: what bypassed the hooks ---- */

/* Around every outermost hooked call (conn_call_begin/end): ciphertext that
 * moved in between was moved by calls we did not see. */
void watch_begin(struct cap_call *call);
void watch_end(struct cap_call *call);
/* The connection ends (SSL alive, before its CLOSE): a last look. */
void watch_close(struct cap_conn *c, void *sess);

/* ---- got.c: objects that bind past the hooks (RTLD_DEEPBIND) ---- */

/* Points the GOT entries of objects loaded since the last check at our hooks
 * (dlopen does it itself; TLS handshakes catch what it missed), and shows the
 * objects that could not be patched in the ring. Never blocks. */
void got_check(void);

/* Loaded late into a running process (tlsmirror attach): the objects loaded
 * before us bind to libssl and libc, not to us, so point all their GOT
 * entries (libssl's and libcrypto's own included) at the hooks, now. Returns
 * the number of objects that could not be patched, or -errno. */
int got_patch_loaded(void);

/* tlsmirror attach failed after got_patch_loaded(): every slot it changed
 * goes back to what it was. 0, or -ENOSPC (too many to remember) / -errno. */
int got_unpatch_loaded(void);

/* capture.c: the agent's socket, for a library loaded late (no environment). 0 or -ENAMETOOLONG. */
int cap_set_socket(const char *path);

#endif
