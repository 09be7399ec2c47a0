/* Key export: the TLS secrets of the connections the library sees, as key-log records in the ring, for an agent that asks (tlsmirror --keylog; docs/capture.md, Keys). */
#include "capture/capture.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

/*
 * Off unless the agent reading the ring asks (RING_CONSUMER_KEYS in its
 * header: an older agent never does, and would not know the record): then
 * each secret becomes one RING_REC_KEY record, the binary form of an NSS
 * key-log line, reserved like a CLOSE (never waited for; a full ring drops
 * it, counted). Nothing is allocated and nothing waits. A process's
 * first connection often comes before its agent has mapped the new ring
 * (RING_CONSUMER_SEEN not yet set): its secrets wait in a small table
 * (KEYS_PENDING) until the flags say whether to send them.
 *
 * OpenSSL (1.1.1 and later): a key-log callback on each SSL_CTX whose SSLs
 * we see, installed before their handshake (at the first hooked call of an
 * SSL, and when SSL_set_SSL_CTX moves one to another context, as nginx's SNI
 * does); a callback the application installed, before or after, is called
 * first, as it would have been (SSL_CTX_set/get_keylog_callback are hooked:
 * the application sees its own). GnuTLS: gtls.c chains the session's
 * key-log function and hands the secrets here. A program's own OpenSSL
 * (inline.c) is not covered.
 */

/* 1: send keys, 0: do not, -1: the agent has not said yet; *flags: its word */
static int keys_wanted(struct ring_hdr **r, uint64_t now, uint32_t *flags)
{
	uint32_t epoch;
	*r = cap_ring(now, &epoch);
	*flags = 0;
	if (!*r)
		return 0;
	uint32_t f = __atomic_load_n(&(*r)->consumer_flags, __ATOMIC_ACQUIRE);
	if (!(f & RING_CONSUMER_SEEN))
		return -1;
	*flags = f;
	return (f & RING_CONSUMER_KEYS) ? 1 : 0;
}

static void put_rec(struct ring_hdr *r, uint16_t type, uint64_t conn_id, uint64_t ts,
		    const void *p, size_t n)
{
	struct ring_reservation res;
	if (ring_reserve_ctrl(r, n, &res) < 0) {
		ring_count_drop(r, RING_DROP_FULL, 0);
		return;
	}
	memcpy(res.data, p, n);
	ring_commit(&res, type, 0, conn_id, ts, 0, (uint32_t)n);
}

/* Secrets (and tuples) made before the agent said whether it wants them. */
#define KEYS_PENDING 64
static struct {
	union {
		struct ring_key k;
		struct ring_tuple t;
	} u;
	uint8_t tuple;
	uint64_t conn_id, ts;
} pend[KEYS_PENDING];
static unsigned npend;
static pthread_mutex_t pend_mu = PTHREAD_MUTEX_INITIALIZER;

/* The agent has said (its flags f, RING_CONSUMER_KEYS set or not): what waits is sent or forgotten. */
static void flush_pending(struct ring_hdr *r, uint32_t f)
{
	if (!__atomic_load_n(&npend, __ATOMIC_RELAXED) || pthread_mutex_trylock(&pend_mu))
		return; /* nothing, or another thread is at it */
	for (unsigned i = 0; (f & RING_CONSUMER_KEYS) && i < npend; i++) {
		if (!pend[i].tuple)
			put_rec(r, RING_REC_KEY, pend[i].conn_id, pend[i].ts, &pend[i].u.k,
				sizeof(pend[i].u.k));
		else if (f & RING_CONSUMER_TUPLES)
			put_rec(r, RING_REC_TUPLE, pend[i].conn_id, pend[i].ts, &pend[i].u.t,
				sizeof(pend[i].u.t));
	}
	memset(pend, 0, sizeof(pend)); /* no secret stays in memory longer than needed */
	__atomic_store_n(&npend, 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&pend_mu);
}

void keys_poll(void)
{
	struct ring_hdr *r;
	uint32_t f;
	if (!__atomic_load_n(&npend, __ATOMIC_RELAXED))
		return;
	int want = keys_wanted(&r, cap_now_ns(), &f);
	if (want >= 0 && r) {
		flush_pending(r, f);
		cap_doorbell(r);
	}
}

/* Kept until the agent says (never waited for: a busy or full table drops it). */
static void pend_add(const void *p, size_t n, int tuple, uint64_t conn_id, uint64_t now)
{
	if (pthread_mutex_trylock(&pend_mu))
		return;
	if (npend < KEYS_PENDING) {
		memcpy(&pend[npend].u, p, n);
		pend[npend].tuple = (uint8_t)tuple;
		pend[npend].conn_id = conn_id;
		pend[npend].ts = now;
		__atomic_store_n(&npend, npend + 1, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&pend_mu);
}

/*
 * The # TUPLE record of a handshake: once, before its first secret that
 * comes after the ServerHello (early secrets come before it: the client has
 * no server random then). A handshake runs on one thread, so the thread's
 * last client random tells the first secret from the next ones.
 */
static __thread uint8_t tuple_cr[32] __attribute__((tls_model("initial-exec")));

void keys_tuple(const struct cap_tls_ops *ops, void *sess, uint64_t conn_id, unsigned label,
		const uint8_t client_random[32])
{
	struct ring_hdr *r;
	uint32_t f;
	if (label == RING_KEY_CLIENT_EARLY_TRAFFIC_SECRET || label == RING_KEY_EARLY_EXPORTER_SECRET ||
	    !memcmp(tuple_cr, client_random, 32) || !ops->server_hello)
		return;
	uint64_t now = cap_now_ns();
	int want = keys_wanted(&r, now, &f);
	if (!want || (want > 0 && !(f & RING_CONSUMER_TUPLES)))
		return;
	struct ring_tuple t;
	memset(&t, 0, sizeof(t));
	if (ops->server_hello(sess, t.server_random, &t.version, &t.suite) < 0)
		return;
	memcpy(tuple_cr, client_random, 32);
	memcpy(t.client_random, client_random, 32);
	int server = ops->is_server(sess);
	t.side = server == 1 ? RING_SIDE_SERVER : RING_SIDE_CLIENT;
	int fd = ops->get_fd(sess);
	if (server < 0 || fd < 0 ||
	    cap_names_of(fd, server == 0, &t.family, t.client_addr, &t.client_port, t.server_addr,
			 &t.server_port) < 0) {
		t.family = 0; /* the decryptor cannot place it: the randoms still help nobody */
		memset(t.client_addr, 0, sizeof(t.client_addr) + sizeof(t.server_addr));
		t.client_port = t.server_port = 0;
	}
	if (want < 0) {
		pend_add(&t, sizeof(t), 1, conn_id, now);
	} else {
		flush_pending(r, f);
		put_rec(r, RING_REC_TUPLE, conn_id, now, &t, sizeof(t));
	}
}

void keys_send(uint64_t conn_id, unsigned label, const uint8_t client_random[32],
	       const uint8_t *secret, size_t len)
{
	struct ring_hdr *r;
	uint32_t f;
	uint64_t now = cap_now_ns();
	if (label >= RING_KEY_NLABELS || !len || len > RING_KEY_MAX_SECRET)
		return;
	int want = keys_wanted(&r, now, &f);
	if (!want)
		return;
	struct ring_key k;
	memset(&k, 0, sizeof(k));
	k.label = (uint8_t)label;
	k.secret_len = (uint8_t)len;
	memcpy(k.client_random, client_random, 32);
	memcpy(k.secret, secret, len);
	if (want < 0) {
		pend_add(&k, sizeof(k), 0, conn_id, now);
	} else {
		flush_pending(r, f);
		put_rec(r, RING_REC_KEY, conn_id, now, &k, sizeof(k));
		cap_doorbell(r);
	}
	memset(&k, 0, sizeof(k));
}

int keys_label(const char *name, size_t n)
{
	for (unsigned l = 0; l < RING_KEY_NLABELS; l++) {
		const char *s = ring_key_label_name(l);
		if (strlen(s) == n && !memcmp(s, name, n))
			return (int)l;
	}
	return -1;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
		return (c | 0x20) - 'a' + 10;
	return -1;
}

/* 2n hex digits at s into out; the end, or NULL */
static const char *unhex(const char *s, uint8_t *out, size_t max, size_t *n)
{
	size_t k = 0;
	while (hexval(s[0]) >= 0 && hexval(s[1]) >= 0) {
		if (k == max)
			return NULL;
		out[k++] = (uint8_t)(hexval(s[0]) << 4 | hexval(s[1]));
		s += 2;
	}
	*n = k;
	return s;
}

/* An NSS key-log line ("LABEL <client random> <secret>"), as OpenSSL's
 * callback gives it. Anything else is ignored. */
static void keys_line(void *ssl, uint64_t conn_id, const char *line)
{
	const char *sp = strchr(line, ' ');
	int label = sp ? keys_label(line, (size_t)(sp - line)) : -1;
	uint8_t cr[32], secret[RING_KEY_MAX_SECRET];
	size_t ncr = 0, ns = 0;
	if (label < 0)
		return;
	const char *p = unhex(sp + 1, cr, sizeof(cr), &ncr);
	if (!p || ncr != 32 || *p != ' ')
		return;
	p = unhex(p + 1, secret, sizeof(secret), &ns);
	if (!p || !ns || (*p && *p != '\n'))
		return;
	keys_tuple(&cap_tls_openssl, ssl, conn_id, (unsigned)label, cr);
	keys_send(conn_id, (unsigned)label, cr, secret, ns);
}

/* ---- OpenSSL: a callback per SSL_CTX, the application's chained ---- */

typedef void (*kl_fn)(const struct ssl_st *ssl, const char *line);

static struct {
	struct ssl_ctx_st *(*get_ctx)(const struct ssl_st *ssl);
	kl_fn (*get_kl)(const struct ssl_ctx_st *ctx);
	void (*set_kl)(struct ssl_ctx_st *ctx, kl_fn cb);
	int ok;
} kf;
static pthread_once_t kf_once = PTHREAD_ONCE_INIT;

static void kf_resolve(void)
{
	kf.get_ctx = sym_ssl("SSL_get_SSL_CTX");
	kf.get_kl = sym_ssl("SSL_CTX_get_keylog_callback");
	kf.set_kl = sym_ssl("SSL_CTX_set_keylog_callback");
	kf.ok = kf.get_ctx && kf.get_kl && kf.set_kl;
}

/* The application's callback per context: entries are claimed once (ctx
 * stored last, with release) and read without a lock; a context freed and
 * another made at its address is told apart by its real callback. */
#define KL_SLOTS 1024
static struct kl_ent {
	struct ssl_ctx_st *ctx;
	kl_fn prev;
} kl_tab[KL_SLOTS];
static pthread_mutex_t kl_mu = PTHREAD_MUTEX_INITIALIZER;

static struct kl_ent *kl_find(struct ssl_ctx_st *ctx, int make)
{
	size_t h = ((uintptr_t)ctx >> 4) % KL_SLOTS;
	for (size_t i = 0; i < KL_SLOTS; i++) {
		struct kl_ent *e = &kl_tab[(h + i) % KL_SLOTS];
		struct ssl_ctx_st *c = __atomic_load_n(&e->ctx, __ATOMIC_ACQUIRE);
		if (c == ctx)
			return e;
		if (c)
			continue;
		if (!make)
			return NULL;
		pthread_mutex_lock(&kl_mu);
		c = __atomic_load_n(&e->ctx, __ATOMIC_ACQUIRE);
		if (!c) {
			__atomic_store_n(&e->prev, NULL, __ATOMIC_RELAXED);
			__atomic_store_n(&e->ctx, ctx, __ATOMIC_RELEASE);
			c = ctx;
		}
		pthread_mutex_unlock(&kl_mu);
		if (c == ctx)
			return e;
	}
	return NULL; /* full: that context's keys are not exported */
}

static void kl_cb(const struct ssl_st *ssl, const char *line)
{
	int saved = errno;
	struct kl_ent *e = kf.get_ctx ? kl_find(kf.get_ctx(ssl), 0) : NULL;
	kl_fn prev = e ? __atomic_load_n(&e->prev, __ATOMIC_ACQUIRE) : NULL;
	if (prev && prev != kl_cb)
		prev(ssl, line);
	if (line) {
		struct cap_conn *c = cap_tls_openssl.state((void *)ssl, 0);
		keys_line((void *)ssl, c ? c->id : 0, line);
	}
	errno = saved;
}

/* Our callback on ctx, the one there before kept to be called first. */
static void kl_install(struct ssl_ctx_st *ctx)
{
	if (!ctx)
		return;
	kl_fn cur = kf.get_kl(ctx);
	if (cur == kl_cb)
		return;
	struct kl_ent *e = kl_find(ctx, 1);
	if (!e)
		return;
	__atomic_store_n(&e->prev, cur, __ATOMIC_RELEASE);
	kf.set_kl(ctx, kl_cb);
}

void keys_openssl_prepare(struct ssl_st *ssl)
{
	struct ring_hdr *r;
	keys_poll();
	uint32_t f;
	if (!keys_wanted(&r, cap_now_ns(), &f))
		return; /* the agent said no (not said yet: installed, the secrets wait) */
	pthread_once(&kf_once, kf_resolve);
	if (kf.ok)
		kl_install(kf.get_ctx(ssl));
}

EXPORT void SSL_CTX_set_keylog_callback(struct ssl_ctx_st *ctx, kl_fn cb)
{
	static void *slot;
	void (*real)(struct ssl_ctx_st *, kl_fn) = sym_real(&slot, "SSL_CTX_set_keylog_callback");
	if (!real)
		return;
	pthread_once(&kf_once, kf_resolve);
	if (kf.ok && ctx && cb != kl_cb && kf.get_kl(ctx) == kl_cb) {
		/* ours is there: the application's is called from it */
		struct kl_ent *e = kl_find(ctx, 1);
		if (e) {
			__atomic_store_n(&e->prev, cb, __ATOMIC_RELEASE);
			return;
		}
	}
	real(ctx, cb);
}

EXPORT kl_fn SSL_CTX_get_keylog_callback(const struct ssl_ctx_st *ctx)
{
	static void *slot;
	kl_fn (*real)(const struct ssl_ctx_st *) = sym_real(&slot, "SSL_CTX_get_keylog_callback");
	if (!real)
		return NULL;
	kl_fn cb = real(ctx);
	if (cb != kl_cb)
		return cb;
	struct kl_ent *e = kl_find((struct ssl_ctx_st *)ctx, 0);
	return e ? __atomic_load_n(&e->prev, __ATOMIC_ACQUIRE) : NULL; /* the application's */
}

EXPORT struct ssl_ctx_st *SSL_set_SSL_CTX(struct ssl_st *ssl, struct ssl_ctx_st *ctx)
{
	static void *slot;
	struct ssl_ctx_st *(*real)(struct ssl_st *, struct ssl_ctx_st *) =
		sym_real(&slot, "SSL_set_SSL_CTX");
	if (!real)
		return NULL;
	struct ssl_ctx_st *ret = real(ssl, ctx);
	int saved = errno;
	struct ring_hdr *r;
	uint32_t f;
	if (ret && keys_wanted(&r, cap_now_ns(), &f) != 0) {
		pthread_once(&kf_once, kf_resolve);
		if (kf.ok)
			kl_install(ret);
	}
	errno = saved;
	return ret;
}
