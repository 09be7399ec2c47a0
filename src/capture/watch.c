/* Bypass detection: ciphertext libssl moved while none of our hooks ran means clear text we never saw. */
#include "capture/capture.h"

#include <errno.h>
#include <pthread.h>

#define REC_MAX 16384u         /* TLS plaintext per record */
#define OVH_TLS13 22u          /* header 5 + inner type 1 + AEAD tag 16 */
#define OVH_TLS12 29u          /* header 5 + explicit nonce 8 + tag 16 (GCM) */
#define MIN_HOLE 16u           /* smaller: an alert or a key update, not data */

/* libssl/libcrypto calls used here (never hooked). These accessors never
 * set errno; what may (resolving them, the ring) saves it. */
static struct {
	struct bio_st *(*rbio)(const struct ssl_st *s);
	struct bio_st *(*wbio)(const struct ssl_st *s);
	uint64_t (*nread)(struct bio_st *b);
	uint64_t (*nwritten)(struct bio_st *b);
	int (*init_finished)(const struct ssl_st *s);
	int (*version)(const struct ssl_st *s);
	int (*is_server)(const struct ssl_st *s);
	int ok;
} w;
static pthread_once_t w_once = PTHREAD_ONCE_INIT;

static void w_resolve(void)
{
	w.rbio = sym_ssl("SSL_get_rbio");
	w.wbio = sym_ssl("SSL_get_wbio");
	w.nread = sym_ssl("BIO_number_read");
	w.nwritten = sym_ssl("BIO_number_written");
	w.init_finished = sym_ssl("SSL_is_init_finished");
	w.version = sym_ssl("SSL_version");
	w.is_server = sym_ssl("SSL_is_server");
	w.ok = w.rbio && w.wbio && w.nread && w.nwritten && w.init_finished && w.version &&
	       w.is_server;
}

/* Takes the BIOs' byte counts as the new baseline: [0] read from rbio,
 * [1] written to wbio. A new BIO (SSL_set_bio) simply starts over. */
static inline void baseline(struct ssl_st *ssl, struct cap_watch *wt)
{
	struct bio_st *r = w.rbio(ssl), *wb = w.wbio(ssl);
	wt->rbio = r;
	wt->wbio = wb;
	wt->seen[0] = r ? w.nread(r) : 0;
	wt->seen[1] = wb ? w.nwritten(wb) : 0;
}

/* Clear text carried by n ciphertext bytes of full records: an estimate. */
static uint64_t clear_of(uint64_t n, uint32_t ovh)
{
	uint64_t recs = (n + REC_MAX + ovh - 1) / (REC_MAX + ovh);
	return n > recs * ovh ? n - recs * ovh : 0;
}

static void count_bypass(struct cap_conn *c)
{
	uint32_t epoch;
	int saved = errno;
	struct ring_hdr *r = cap_ring(cap_now_ns(), &epoch);
	if (r)
		__atomic_fetch_add(&r->bypassed_conns, 1, __ATOMIC_RELAXED);
	errno = saved;
}

/* Ciphertext moved since our last look, outside any hooked call: the clear
 * text is lost, so the stream gets a hole of about that size where it
 * happened (the agent shows it as a gap), and the connection is counted. */
static __attribute__((noinline)) void account(struct ssl_st *ssl, struct cap_conn *c,
					      const uint64_t now[2])
{
	int server = c->map_method ? c->side == RING_SIDE_SERVER : w.is_server(ssl) == 1;
	uint32_t ovh = w.version(ssl) == 0x0304 ? OVH_TLS13 : OVH_TLS12;
	int hit = 0;
	for (int k = 0; k < 2; k++) {
		uint64_t moved = now[k] >= c->watch.seen[k] ? now[k] - c->watch.seen[k] : 0;
		c->watch.seen[k] = now[k];
		uint64_t lost = clear_of(moved, ovh);
		if (lost < MIN_HOLE)
			continue;
		/* k 1: the application wrote; 0: it read */
		int dir = k ? (server ? CAP_DIR_S2C : CAP_DIR_C2S) : (server ? CAP_DIR_C2S : CAP_DIR_S2C);
		c->off[dir] += lost;
		hit = 1;
	}
	if (hit && !c->watch.bypassed) {
		c->watch.bypassed = 1;
		count_bypass(c);
	}
}

/* Another thread inside a call on the same SSL (unsafe, but done: a reader
 * and a writer thread) moves ciphertext we can't attribute: then nothing is
 * accounted, only the last call out takes the new baseline. */
void watch_begin(struct cap_call *call)
{
	struct cap_watch *wt = &call->conn->watch;
	call->watched = 1;
	if (__atomic_fetch_add(&wt->inflight, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	struct bio_st *r = w.rbio(call->sess), *wb = w.wbio(call->sess);
	if (r != wt->rbio || wb != wt->wbio) {
		baseline(call->sess, wt);
		return;
	}
	uint64_t now[2] = { w.nread(r), w.nwritten(wb) };
	if (now[0] != wt->seen[0] || now[1] != wt->seen[1])
		account(call->sess, call->conn, now); /* rare: moved behind our back */
}

void watch_end(struct cap_call *call)
{
	struct cap_conn *c = call->conn;
	struct cap_watch *wt = &c->watch;
	if (call->watched) {
		/* what moved during our call is accounted by the call itself */
		if (__atomic_load_n(&wt->inflight, __ATOMIC_ACQUIRE) == 1)
			baseline(call->sess, wt);
		__atomic_fetch_sub(&wt->inflight, 1, __ATOMIC_ACQ_REL);
	} else if (__atomic_load_n(&wt->state, __ATOMIC_ACQUIRE) == WATCH_OFF) {
		int saved = errno;
		pthread_once(&w_once, w_resolve);
		errno = saved;
		if (!w.ok) {
			__atomic_store_n(&wt->state, WATCH_DONE, __ATOMIC_RELEASE);
		} else if (w.init_finished(call->sess) == 1) {
			/* handshake done: from now on libssl moves bytes only inside calls */
			baseline(call->sess, wt);
			if (wt->rbio && wt->wbio)
				__atomic_store_n(&wt->state, WATCH_ON, __ATOMIC_RELEASE);
		}
	}
}

void watch_close(struct cap_conn *c, void *ssl)
{
	if (!c || !ssl || __atomic_load_n(&c->closed, __ATOMIC_ACQUIRE))
		return;
	/* one last look, by one thread: close() in another may race with SSL_free */
	uint8_t on = WATCH_ON;
	if (!__atomic_compare_exchange_n(&c->watch.state, &on, WATCH_DONE, 0,
					 __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
		return;
	struct bio_st *r = w.rbio(ssl), *wb = w.wbio(ssl);
	if (!__atomic_load_n(&c->watch.inflight, __ATOMIC_ACQUIRE) && r && wb &&
	    r == c->watch.rbio && wb == c->watch.wbio) {
		uint64_t now[2] = { w.nread(r), w.nwritten(wb) };
		account(ssl, c, now);
	}
}
