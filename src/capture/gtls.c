/* The GnuTLS back-end: the interposed gnutls_* calls, a session table, the metadata libgnutls gives. */
#include "capture/capture.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/*
 * libgnutls' ABI, declared here rather than taken from <gnutls/gnutls.h>: the
 * library is built without it and never loads or links libgnutls. A session
 * is an opaque pointer; a datum is { data, size } (stable since 3.0).
 */
struct gtls_datum {
	unsigned char *data;
	unsigned int size;
};
typedef int (*gtls_keylog_fn)(void *sess, const char *label, const struct gtls_datum *secret);

#define GTLS_SERVER 1u          /* gnutls_init flag */
#define GTLS_SHUT_RDWR 0        /* gnutls_bye how */
#define GTLS_SLOTS 16384        /* sessions tracked at once: beyond, not mirrored */
#define GTLS_PROBES 64          /* slots looked at per session */
#define GTLS_FD_MAX (1 << 24)   /* a transport "pointer" below this is an fd */
#define GTLS_EARLY_MAX (64 << 10) /* a client's early data held until its handshake ends */
#define GTLS_SFLAGS_EARLY_DATA (1u << 10)

/* The versions the functions below were declared for (libgnutls.so.30). */
#define V34 "GNUTLS_3_4"

/* libgnutls functions the library calls (never hooks). */
static struct {
	int (*get_int)(void *s);
	void *(*get_ptr)(void *s);
	int (*version)(void *s);
	const char *(*suite)(void *s);
	int (*cipher)(void *s);
	const char *(*cipher_name)(int c);
	int (*server_name)(void *s, void *data, size_t *len, unsigned int *type, unsigned int idx);
	int (*alpn)(void *s, struct gtls_datum *proto);
	void (*random)(void *s, struct gtls_datum *client, struct gtls_datum *server);
	gtls_keylog_fn (*get_keylog)(void *s);
	void (*set_keylog)(void *s, gtls_keylog_fn f);
	int (*packet_get)(void *pkt, struct gtls_datum *data, unsigned char *seq);
	unsigned (*flags)(void *s);
	int ok;
} gt;
static pthread_once_t gt_once = PTHREAD_ONCE_INIT;

static void gt_resolve(void)
{
	gt.get_int = sym_gnutls("gnutls_transport_get_int", V34);
	gt.get_ptr = sym_gnutls("gnutls_transport_get_ptr", V34);
	gt.version = sym_gnutls("gnutls_protocol_get_version", V34);
	gt.suite = sym_gnutls("gnutls_ciphersuite_get", "GNUTLS_3_7_4");
	gt.cipher = sym_gnutls("gnutls_cipher_get", V34);
	gt.cipher_name = sym_gnutls("gnutls_cipher_get_name", V34);
	gt.server_name = sym_gnutls("gnutls_server_name_get", V34);
	gt.alpn = sym_gnutls("gnutls_alpn_get_selected_protocol", V34);
	gt.random = sym_gnutls("gnutls_session_get_random", V34);
	gt.get_keylog = sym_gnutls("gnutls_session_get_keylog_function", "GNUTLS_3_6_13");
	gt.set_keylog = sym_gnutls("gnutls_session_set_keylog_function", "GNUTLS_3_6_13");
	gt.packet_get = sym_gnutls("gnutls_packet_get", V34);
	gt.flags = sym_gnutls("gnutls_session_get_flags", V34);
	__atomic_store_n(&gt.ok, gt.get_ptr && gt.version && gt.random ? 1 : -1, __ATOMIC_RELEASE);
}

static int gt_ready(void)
{
	if (!__atomic_load_n(&gt.ok, __ATOMIC_ACQUIRE)) {
		int saved = errno;
		pthread_once(&gt_once, gt_resolve);
		errno = saved;
	}
	return gt.ok > 0 ? 0 : -ENOENT;
}

/* ---- the session table ----
 * GnuTLS has no ex-data: each session's state lives in an open-addressed
 * table keyed by the session pointer. A slot is claimed by compare-and-
 * exchange (BUSY while being filled), found by a bounded linear probe, and
 * freed to TOMB by gnutls_deinit. No lock; a full table only means sessions
 * that are not mirrored (counted as missed). */

#define SLOT_BUSY ((void *)1)
#define SLOT_TOMB ((void *)2)

struct gtls_slot {
	void *sess;                 /* NULL, SLOT_BUSY, SLOT_TOMB or the session */
	struct cap_conn *conn;
	gtls_keylog_fn app_keylog;  /* the function ours chains to (the application's or libgnutls' default) */
	char *sni;                  /* a client's gnutls_server_name_set (malloc'd), NULL if none */
	uint8_t *early;             /* a client's early data, sent at the handshake (malloc'd) */
	size_t early_len;           /* bytes in early; more than GTLS_EARLY_MAX: only counted */
	int8_t server;              /* from gnutls_init's flags; -1 unknown */
	uint8_t shaken;             /* a handshake finished: the metadata calls are safe */
};
static struct gtls_slot slots[GTLS_SLOTS];
static uint64_t missed;       /* sessions the table had no room for */

static __thread struct gtls_slot *tl_last __attribute__((tls_model("initial-exec")));

static inline size_t slot_hash(void *sess)
{
	uintptr_t v = (uintptr_t)sess >> 4;
	v ^= v >> 17;
	v *= 0x9e3779b97f4a7c15ULL;
	return (size_t)(v >> 20) % GTLS_SLOTS;
}

static struct gtls_slot *slot_find(void *sess)
{
	struct gtls_slot *s = tl_last;
	if (s && __atomic_load_n(&s->sess, __ATOMIC_ACQUIRE) == sess)
		return s;
	size_t h = slot_hash(sess);
	for (size_t i = 0; i < GTLS_PROBES; i++) {
		s = &slots[(h + i) % GTLS_SLOTS];
		void *k = __atomic_load_n(&s->sess, __ATOMIC_ACQUIRE);
		if (k == sess) {
			tl_last = s;
			return s;
		}
		if (!k)
			return NULL;
	}
	return NULL;
}

/* A new slot for sess with a fresh connection state; NULL if full or no memory. */
static struct gtls_slot *slot_add(void *sess, int server)
{
	struct cap_conn *c = conn_new(&cap_tls_gnutls);
	if (!c)
		return NULL;
	size_t h = slot_hash(sess);
	for (size_t i = 0; i < GTLS_PROBES; i++) {
		struct gtls_slot *s = &slots[(h + i) % GTLS_SLOTS];
		void *k = __atomic_load_n(&s->sess, __ATOMIC_ACQUIRE);
		if (k != NULL && k != SLOT_TOMB)
			continue;
		if (!__atomic_compare_exchange_n(&s->sess, &k, SLOT_BUSY, 0, __ATOMIC_ACQ_REL,
						 __ATOMIC_RELAXED))
			continue;
		s->conn = c;
		s->app_keylog = NULL;
		s->sni = NULL;
		s->early = NULL;
		s->early_len = 0;
		s->server = (int8_t)server;
		/* made at a later call than gnutls_init (a session older than the
		 * library: tlsmirror attach): the handshake is behind, the stream
		 * began before us (gnutls_handshake makes its own, not late) */
		s->shaken = server < 0;
		c->late = server < 0;
		__atomic_store_n(&s->sess, sess, __ATOMIC_RELEASE);
		return s;
	}
	__atomic_fetch_add(&missed, 1, __ATOMIC_RELAXED);
	conn_unref(c);
	return NULL;
}

static struct cap_conn *gt_state(void *sess, int create)
{
	if (!sess || gt_ready() < 0)
		return NULL;
	struct gtls_slot *s = slot_find(sess);
	if (!s && create)
		s = slot_add(sess, -1); /* a session made before we were there */
	return s ? s->conn : NULL;
}

/* -1 for a session made before the library was loaded: libgnutls' API does
 * not say which end a session is (conn.c asks the socket). */
static int gt_is_server(void *sess)
{
	struct gtls_slot *s = slot_find(sess);
	return s ? s->server : 0;
}

/* gnutls_transport_set_int/_ptr store one pointer: an fd if it is small. */
static int gt_get_fd(void *sess)
{
	intptr_t p = (intptr_t)gt.get_ptr(sess);
	return p >= 0 && p < GTLS_FD_MAX ? (int)p : -1;
}

/* The client's (server 0) or the server's random: 0 or -ENOENT. */
static int gt_random(void *sess, int server, uint8_t out[32])
{
	struct gtls_datum c = { 0 }, s = { 0 };
	gt.random(sess, &c, &s);
	const struct gtls_datum *r = server ? &s : &c;
	if (!r->data || r->size != 32)
		return -ENOENT;
	memcpy(out, r->data, 32);
	return 0;
}

static int gt_client_random(void *sess, uint8_t out[32])
{
	return gt_random(sess, 0, out);
}

/* gnutls_protocol_t -> the wire version (0x0303, 0x0304; DTLS: 0). */
static uint16_t wire_version(int v)
{
	static const uint16_t tls[] = { 0, 0x0300, 0x0301, 0x0302, 0x0303, 0x0304 };
	return v > 0 && v < (int)(sizeof(tls) / sizeof(tls[0])) ? tls[v] : 0;
}

/* For the # TUPLE line: the suite stays 0 (libgnutls names suites, it has no
 * call for the IANA number that is safe inside the handshake). */
static int gt_server_hello(void *sess, uint8_t sr[32], uint16_t *version, uint16_t *suite)
{
	if (gt_random(sess, 1, sr) < 0)
		return -ENOENT;
	*version = wire_version(gt.version(sess));
	*suite = 0;
	return 0;
}

static void gt_describe(void *sess, struct ring_open *o)
{
	/* a server reads the client's name; a client only has the one it set */
	char name[256];
	size_t len = sizeof(name);
	unsigned int type = 0;
	struct gtls_slot *s = slot_find(sess);
	if (s && s->server != 1 && s->sni)
		conn_copy_str(o->sni, sizeof(o->sni), s->sni, strlen(s->sni));
	/* before the handshake's end (a client's early data) libgnutls has no
	 * cipher suite yet, and gnutls_ciphersuite_get() would crash */
	if (!s || !s->shaken)
		return;
	o->tls_version = wire_version(gt.version(sess));
	if (!o->sni[0] && gt.server_name && gt.server_name(sess, name, &len, &type, 0) == 0 &&
	    type == 1)
		conn_copy_str(o->sni, sizeof(o->sni), name, strnlen(name, len));
	struct gtls_datum a = { 0 };
	if (gt.alpn && gt.alpn(sess, &a) == 0 && a.data)
		conn_copy_str(o->alpn, sizeof(o->alpn), (const char *)a.data, a.size);
	/* the IANA name (3.7.4+: TLS_AES_128_GCM_SHA256), else the cipher's */
	const char *cn = gt.suite ? gt.suite(sess) : NULL;
	if (!cn && gt.cipher && gt.cipher_name)
		cn = gt.cipher_name(gt.cipher(sess));
	conn_copy_str(o->cipher, sizeof(o->cipher), cn, cn ? strlen(cn) : 0);
}

const struct cap_tls_ops cap_tls_gnutls = {
	.name = "gnutls",
	.bit = CAP_TLS_GNUTLS,
	.watch = 0,
	.resolve = gt_ready,
	.state = gt_state,
	.is_server = gt_is_server,
	.get_fd = gt_get_fd,
	.describe = gt_describe,
	.client_random = gt_client_random,
	.server_hello = gt_server_hello,
};

uint64_t gtls_missed_sessions(void)
{
	return __atomic_load_n(&missed, __ATOMIC_RELAXED);
}

/* ---- key export ----
 * Installed on every session at gnutls_init; it chains to whatever function
 * was there (libgnutls' own, which writes $GNUTLS_KEYLOGFILE) or the one the
 * application sets later. Each secret also goes to the ring for an agent
 * that asks (keys.c; tlsmirror --keylog). */
static void key_secret(struct cap_conn *c, void *sess, const char *label,
		       const uint8_t *secret, size_t len)
{
	uint8_t cr[32];
	int l = label ? keys_label(label, strlen(label)) : -1;
	if (l >= 0 && !gt_client_random(sess, cr)) {
		keys_tuple(&cap_tls_gnutls, sess, c->id, (unsigned)l, cr);
		keys_send(c->id, (unsigned)l, cr, secret, len);
	}
}

static int keylog_cb(void *sess, const char *label, const struct gtls_datum *secret)
{
	struct gtls_slot *s = slot_find(sess);
	gtls_keylog_fn next = s ? s->app_keylog : NULL;
	if (s && s->conn && secret) {
		int saved = errno; /* getsockname() of the # TUPLE record may fail */
		key_secret(s->conn, sess, label, secret->data, secret->size);
		errno = saved;
	}
	return next ? next(sess, label, secret) : 0;
}

static void install_keylog(struct gtls_slot *s, void *sess)
{
	if (!gt.get_keylog || !gt.set_keylog)
		return;
	gtls_keylog_fn prev = gt.get_keylog(sess);
	if (prev == keylog_cb)
		return;
	s->app_keylog = prev;
	gt.set_keylog(sess, keylog_cb);
}

/* ---- the hooks ---- */

static inline void *real_fn(void **slot, const char *name, const char *ver)
{
	return sym_real_gnutls(slot, name, ver);
}

/* gnutls_* returns a negative GNUTLS_E_* code: GNUTLS_E_INTERNAL_ERROR when
 * libgnutls can't be found (it always can: our caller linked it). */
static inline long no_real(void)
{
	return -59;
}

EXPORT int gnutls_init(void **session, unsigned int flags)
{
	static void *slot;
	int (*real)(void **, unsigned int) = real_fn(&slot, "gnutls_init", V34);
	if (!real)
		return (int)no_real();
	int ret = real(session, flags);
	if (ret != 0 || !session || !*session)
		return ret;
	int saved = errno;
	if (gt_ready() == 0) {
		struct gtls_slot *s = slot_find(*session);
		if (s) /* a stale entry: the address of a session freed without gnutls_deinit */
			s->server = (int8_t)(flags & GTLS_SERVER ? 1 : 0);
		else
			s = slot_add(*session, flags & GTLS_SERVER ? 1 : 0);
		if (s)
			install_keylog(s, *session);
	}
	errno = saved;
	return ret;
}

EXPORT void gnutls_session_set_keylog_function(void *session, gtls_keylog_fn func)
{
	static void *slot;
	void (*real)(void *, gtls_keylog_fn) =
		real_fn(&slot, "gnutls_session_set_keylog_function", "GNUTLS_3_6_13");
	if (!real)
		return;
	int saved = errno;
	struct gtls_slot *s = gt_ready() == 0 ? slot_find(session) : NULL;
	errno = saved;
	if (!s || func == keylog_cb) {
		real(session, func);
		return;
	}
	s->app_keylog = func;
	real(session, keylog_cb);
}

/* A client names the server: remember it for the OPEN (libgnutls tells only a server). */
EXPORT int gnutls_server_name_set(void *session, int type, const void *name, size_t len)
{
	static void *slot;
	int (*real)(void *, int, const void *, size_t) =
		real_fn(&slot, "gnutls_server_name_set", V34);
	if (!real)
		return (int)no_real();
	int ret = real(session, type, name, len);
	int saved = errno;
	struct gtls_slot *s = ret == 0 && type == 1 && name && gt_ready() == 0 ? slot_find(session) : NULL;
	if (s) {
		char *copy = len < 256 ? malloc(len + 1) : NULL;
		if (copy) {
			memcpy(copy, name, len);
			copy[len] = 0;
		}
		free(s->sni);
		s->sni = copy;
	}
	errno = saved;
	return ret;
}

/* The outermost call mirrors what moved: the application wrote (app_write)
 * or read ret bytes at buf. */
static inline ssize_t finish(struct cap_call *call, int top, int app_write, const void *buf,
			     ssize_t ret)
{
	if (buf || ret <= 0) {
		conn_call_finish(call, top, app_write, buf, ret > 0 ? (size_t)ret : 0);
		return ret;
	}
	/* a send retried after GNUTLS_E_AGAIN with NULL, 0: the clear text went
	 * with the first call, whose buffer we can't trust now: a gap */
	int saved = errno;
	conn_call_end(call);
	if (top)
		conn_gap(call, app_write, (size_t)ret);
	errno = saved;
	return ret;
}

EXPORT ssize_t gnutls_record_send(void *session, const void *data, size_t len)
{
	static void *slot;
	ssize_t (*real)(void *, const void *, size_t) = real_fn(&slot, "gnutls_record_send", V34);
	if (!real)
		return no_real();
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_gnutls, session);
	return finish(&call, top, 1, data, real(session, data, len));
}

EXPORT ssize_t gnutls_record_send2(void *session, const void *data, size_t len, size_t pad,
				unsigned flags)
{
	static void *slot;
	ssize_t (*real)(void *, const void *, size_t, size_t, unsigned) =
		real_fn(&slot, "gnutls_record_send2", "GNUTLS_3_6_3");
	if (!real)
		return no_real();
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_gnutls, session);
	return finish(&call, top, 1, data, real(session, data, len, pad, flags));
}

EXPORT ssize_t gnutls_record_send_range(void *session, const void *data, size_t len,
				     const void *range)
{
	static void *slot;
	ssize_t (*real)(void *, const void *, size_t, const void *) =
		real_fn(&slot, "gnutls_record_send_range", V34);
	if (!real)
		return no_real();
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_gnutls, session);
	return finish(&call, top, 1, data, real(session, data, len, range));
}

/* TLS 1.3 early data (0-RTT) of a client: libgnutls buffers it and returns 0
 * (not a count); it goes with the ClientHello, before the session has a
 * transport or a cipher suite. A copy waits for the handshake's end
 * (early_flush), to be mirrored if the server took it. */
EXPORT ssize_t gnutls_record_send_early_data(void *session, const void *data, size_t len)
{
	static void *slot;
	ssize_t (*real)(void *, const void *, size_t) =
		real_fn(&slot, "gnutls_record_send_early_data", "GNUTLS_3_6_5");
	if (!real)
		return no_real();
	ssize_t ret = real(session, data, len);
	int saved = errno;
	struct gtls_slot *s = ret >= 0 && data && len && gt_ready() == 0 ? slot_find(session) : NULL;
	size_t n = ret > 0 ? (size_t)ret : len;
	if (s && !s->shaken) {
		uint8_t *p = s->early_len + n <= GTLS_EARLY_MAX ? realloc(s->early, s->early_len + n) : NULL;
		if (p) {
			memcpy(p + s->early_len, data, n);
			s->early = p;
		}
		s->early_len += n; /* beyond the cap (or no memory): a gap of that size */
	}
	errno = saved;
	return ret;
}

/* The handshake ended: the early data the server accepted comes first. */
static void early_flush(struct cap_call *call, struct gtls_slot *s)
{
	size_t n = s->early_len;
	uint8_t *p = s->early;
	s->early = NULL;
	s->early_len = 0;
	if (n && gt.flags && (gt.flags(call->sess) & GTLS_SFLAGS_EARLY_DATA)) {
		if (p && n <= GTLS_EARLY_MAX)
			conn_data(call, 1, p, n);
		else
			conn_gap(call, 1, n);
	}
	free(p);
}

EXPORT ssize_t gnutls_record_recv(void *session, void *data, size_t len)
{
	static void *slot;
	ssize_t (*real)(void *, void *, size_t) = real_fn(&slot, "gnutls_record_recv", V34);
	if (!real)
		return no_real();
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_gnutls, session);
	return finish(&call, top, 0, data, real(session, data, len));
}

EXPORT ssize_t gnutls_record_recv_seq(void *session, void *data, size_t len, unsigned char *seq)
{
	static void *slot;
	ssize_t (*real)(void *, void *, size_t, unsigned char *) =
		real_fn(&slot, "gnutls_record_recv_seq", V34);
	if (!real)
		return no_real();
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_gnutls, session);
	return finish(&call, top, 0, data, real(session, data, len, seq));
}

EXPORT ssize_t gnutls_record_recv_early_data(void *session, void *data, size_t len)
{
	static void *slot;
	ssize_t (*real)(void *, void *, size_t) =
		real_fn(&slot, "gnutls_record_recv_early_data", "GNUTLS_3_6_5");
	if (!real)
		return no_real();
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_gnutls, session);
	return finish(&call, top, 0, data, real(session, data, len));
}

/* Zero-copy receive: the clear text is in the packet libgnutls hands out. */
EXPORT ssize_t gnutls_record_recv_packet(void *session, void **packet)
{
	static void *slot;
	ssize_t (*real)(void *, void **) = real_fn(&slot, "gnutls_record_recv_packet", V34);
	if (!real)
		return no_real();
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_gnutls, session);
	ssize_t ret = real(session, packet);
	struct gtls_datum d = { 0 };
	int saved = errno;
	if (ret > 0 && packet && *packet && gt.packet_get)
		gt.packet_get(*packet, &d, NULL);
	errno = saved;
	conn_call_finish(&call, top, 0, d.data, d.data ? d.size : 0);
	return ret;
}

/* Kernel TLS (or libgnutls reading the file itself): read the range back. */
EXPORT ssize_t gnutls_record_send_file(void *session, int fd, off_t *offset, size_t count)
{
	static void *slot;
	ssize_t (*real)(void *, int, off_t *, size_t) =
		real_fn(&slot, "gnutls_record_send_file", "GNUTLS_3_7_4");
	if (!real)
		return no_real();
	int saved = errno;
	off_t at = offset ? *offset : lseek(fd, 0, SEEK_CUR);
	errno = saved;
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_gnutls, session);
	ssize_t ret = real(session, fd, offset, count);
	saved = errno;
	conn_call_end(&call);
	if (top && ret > 0 && at >= 0)
		conn_sendfile(&call, fd, at, (size_t)ret);
	errno = saved;
	return ret;
}

EXPORT int gnutls_handshake(void *session)
{
	static void *slot;
	int (*real)(void *) = real_fn(&slot, "gnutls_handshake", V34);
	if (!real)
		return (int)no_real();
	int saved = errno;
	if (gt_ready() == 0 && !slot_find(session)) {
		/* older than the library, its handshake not done yet: nothing missed */
		struct gtls_slot *s = slot_add(session, -1);
		if (s) {
			s->shaken = 0;
			s->conn->late = 0;
		}
	}
	errno = saved;
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_gnutls, session);
	int ret = real(session);
	saved = errno;
	conn_call_end(&call);
	if (top && ret == 0) {
		struct gtls_slot *s = slot_find(session);
		if (s)
			s->shaken = 1;
		got_check();
		if (s && s->early_len)
			early_flush(&call, s);
		conn_handshake_done(&call);
	}
	errno = saved;
	return ret;
}

/* GNUTLS_SHUT_WR only ends our direction (the peer's data may follow, as
 * gnutls-cli reads the reply after its stdin ends): the connection ends at
 * gnutls_deinit or close() then. GNUTLS_SHUT_RDWR ends it. */
EXPORT int gnutls_bye(void *session, int how)
{
	static void *slot;
	int (*real)(void *, int) = real_fn(&slot, "gnutls_bye", V34);
	if (!real)
		return (int)no_real();
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_gnutls, session);
	int ret = real(session, how);
	int saved = errno;
	conn_call_end(&call);
	if (top && how == GTLS_SHUT_RDWR && ret == 0)
		conn_closed(&call);
	errno = saved;
	return ret;
}

EXPORT void gnutls_deinit(void *session)
{
	static void *slot;
	void (*real)(void *) = real_fn(&slot, "gnutls_deinit", V34);
	if (!real)
		return;
	int saved = errno;
	struct gtls_slot *s = session && gt_ready() == 0 ? slot_find(session) : NULL;
	if (s) {
		struct cap_conn *c = s->conn;
		s->conn = NULL;
		s->app_keylog = NULL;
		free(s->sni);
		s->sni = NULL;
		free(s->early);
		s->early = NULL;
		s->early_len = 0;
		__atomic_store_n(&s->sess, SLOT_TOMB, __ATOMIC_RELEASE);
		if (tl_last == s)
			tl_last = NULL;
		if (c)
			conn_release(c, session);
	}
	errno = saved;
	real(session);
}
