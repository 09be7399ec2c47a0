/* The interposed OpenSSL calls: each calls the real one, then mirrors what it moved. */
#include "capture/capture.h"

#include <errno.h>

#define EXPORT __attribute__((visibility("default")))

static inline void *real_fn(void **slot, const char *name)
{
	return sym_real(slot, name);
}

static inline int no_real(void)
{
	return sym_missing();
}

typedef int (*rw_fn)(struct ssl_st *, void *, int);
typedef int (*rw_ex_fn)(struct ssl_st *, void *, size_t, size_t *);
typedef int (*ssl1_fn)(struct ssl_st *);

/* The bodies, for the shared libssl's entry points below and the in-place
 * hooks of a program's own OpenSSL (inline.c) alike. */
static inline int hook_rw(const struct cap_tls_ops *ops, rw_fn real, int app_write,
			  struct ssl_st *ssl, void *buf, int num)
{
	struct cap_call call;
	int top = conn_call_begin(&call, ops, ssl);
	int ret = real(ssl, buf, num);
	conn_call_finish(&call, top, app_write, buf, ret > 0 ? (size_t)ret : 0);
	return ret;
}

static inline int hook_rw_ex(const struct cap_tls_ops *ops, rw_ex_fn real, int app_write,
			     struct ssl_st *ssl, void *buf, size_t num, size_t *done)
{
	struct cap_call call;
	int top = conn_call_begin(&call, ops, ssl);
	int ret = real(ssl, buf, num, done);
	conn_call_finish(&call, top, app_write, buf, ret == 1 && done ? *done : 0);
	return ret;
}

EXPORT int SSL_write(struct ssl_st *ssl, const void *buf, int num)
{
	static void *slot;
	rw_fn real = real_fn(&slot, "SSL_write");
	return real ? hook_rw(&cap_tls_openssl, real, 1, ssl, (void *)buf, num) : no_real();
}

EXPORT int SSL_write_ex(struct ssl_st *ssl, const void *buf, size_t num, size_t *written)
{
	static void *slot;
	rw_ex_fn real = real_fn(&slot, "SSL_write_ex");
	return real ? hook_rw_ex(&cap_tls_openssl, real, 1, ssl, (void *)buf, num, written) : no_real();
}

EXPORT int SSL_read(struct ssl_st *ssl, void *buf, int num)
{
	static void *slot;
	rw_fn real = real_fn(&slot, "SSL_read");
	return real ? hook_rw(&cap_tls_openssl, real, 0, ssl, buf, num) : no_real();
}

EXPORT int SSL_read_ex(struct ssl_st *ssl, void *buf, size_t num, size_t *readbytes)
{
	static void *slot;
	rw_ex_fn real = real_fn(&slot, "SSL_read_ex");
	return real ? hook_rw_ex(&cap_tls_openssl, real, 0, ssl, buf, num, readbytes) : no_real();
}

/* TLS 1.3 early data (0-RTT): clear text like any other, before the handshake ends.
 * Both return 1 (SSL_READ_EARLY_DATA_SUCCESS / success) with a byte count. */
EXPORT int SSL_read_early_data(struct ssl_st *ssl, void *buf, size_t num, size_t *readbytes)
{
	static void *slot;
	int (*real)(struct ssl_st *, void *, size_t, size_t *) = real_fn(&slot, "SSL_read_early_data");
	if (!real)
		return no_real();
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_openssl, ssl);
	int ret = real(ssl, buf, num, readbytes);
	conn_call_finish(&call, top, 0, buf, ret == 1 && readbytes ? *readbytes : 0);
	return ret;
}

EXPORT int SSL_write_early_data(struct ssl_st *ssl, const void *buf, size_t num, size_t *written)
{
	static void *slot;
	int (*real)(struct ssl_st *, const void *, size_t, size_t *) = real_fn(&slot, "SSL_write_early_data");
	if (!real)
		return no_real();
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_openssl, ssl);
	int ret = real(ssl, buf, num, written);
	conn_call_finish(&call, top, 1, buf, ret == 1 && written ? *written : 0);
	return ret;
}

/* Peeked bytes are mirrored when SSL_read consumes them, not here. The call
 * is still tracked: the socket it reads tells which connection this is. */
EXPORT int SSL_peek(struct ssl_st *ssl, void *buf, int num)
{
	static void *slot;
	int (*real)(struct ssl_st *, void *, int) = real_fn(&slot, "SSL_peek");
	if (!real)
		return no_real();
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_openssl, ssl);
	int ret = real(ssl, buf, num);
	conn_call_finish(&call, top, 0, buf, 0);
	return ret;
}

EXPORT int SSL_peek_ex(struct ssl_st *ssl, void *buf, size_t num, size_t *readbytes)
{
	static void *slot;
	int (*real)(struct ssl_st *, void *, size_t, size_t *) = real_fn(&slot, "SSL_peek_ex");
	if (!real)
		return no_real();
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_openssl, ssl);
	int ret = real(ssl, buf, num, readbytes);
	conn_call_finish(&call, top, 0, buf, 0);
	return ret;
}

/* Handshake entry points: announce the connection (SNI, ALPN, cipher) as soon
 * as it is established. SSL_connect reaches SSL_do_handshake through libssl's
 * own PLT: only the outermost call acts. */
static int hook_handshake(const struct cap_tls_ops *ops, ssl1_fn real, struct ssl_st *ssl)
{
	struct cap_call call;
	int top = conn_call_begin(&call, ops, ssl);
	int ret = real(ssl);
	int saved = errno;
	conn_call_end(&call);
	if (top && ret == 1) {
		/* objects loaded past our dlopen (RTLD_DEEPBIND): patch them
		 * before this connection's first SSL_read/SSL_write */
		got_check();
		conn_handshake_done(&call);
	}
	errno = saved;
	return ret;
}

static int handshake(void **slot, const char *name, struct ssl_st *ssl)
{
	ssl1_fn real = real_fn(slot, name);
	return real ? hook_handshake(&cap_tls_openssl, real, ssl) : no_real();
}

EXPORT int SSL_do_handshake(struct ssl_st *ssl)
{
	static void *slot;
	return handshake(&slot, "SSL_do_handshake", ssl);
}

EXPORT int SSL_connect(struct ssl_st *ssl)
{
	static void *slot;
	return handshake(&slot, "SSL_connect", ssl);
}

EXPORT int SSL_accept(struct ssl_st *ssl)
{
	static void *slot;
	return handshake(&slot, "SSL_accept", ssl);
}

static int hook_shutdown(const struct cap_tls_ops *ops, ssl1_fn real, struct ssl_st *ssl)
{
	struct cap_call call;
	int top = conn_call_begin(&call, ops, ssl);
	int ret = real(ssl);
	int saved = errno;
	conn_call_end(&call);
	if (top)
		conn_closed(&call);
	errno = saved;
	return ret;
}

static void hook_free(const struct cap_tls_ops *ops, void (*real)(struct ssl_st *), struct ssl_st *ssl)
{
	int saved = errno;
	conn_free(ops, ssl);
	errno = saved;
	real(ssl);
}

EXPORT int SSL_shutdown(struct ssl_st *ssl)
{
	static void *slot;
	ssl1_fn real = real_fn(&slot, "SSL_shutdown");
	return real ? hook_shutdown(&cap_tls_openssl, real, ssl) : no_real();
}

EXPORT void SSL_free(struct ssl_st *ssl)
{
	static void *slot;
	void (*real)(struct ssl_st *) = real_fn(&slot, "SSL_free");
	if (real)
		hook_free(&cap_tls_openssl, real, ssl);
}

/* Kernel TLS sends the file without SSL_write: read the range back. */
EXPORT long SSL_sendfile(struct ssl_st *ssl, int fd, off_t offset, size_t size, int flags)
{
	static void *slot;
	long (*real)(struct ssl_st *, int, off_t, size_t, int) = real_fn(&slot, "SSL_sendfile");
	if (!real)
		return no_real();
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_openssl, ssl);
	long ret = real(ssl, fd, offset, size, flags);
	int saved = errno;
	conn_call_end(&call);
	if (top && ret > 0)
		conn_sendfile(&call, fd, offset, (size_t)ret);
	errno = saved;
	return ret;
}

/* ---- a program's own OpenSSL, hooked in place (inline.c): its entries jump here ---- */

#define REAL(i) (inl_real[i])

static int st_read(struct ssl_st *ssl, void *buf, int num)
{
	return hook_rw(&cap_tls_openssl_static, (rw_fn)REAL(INL_SSL_READ), 0, ssl, buf, num);
}

static int st_read_ex(struct ssl_st *ssl, void *buf, size_t num, size_t *n)
{
	return hook_rw_ex(&cap_tls_openssl_static, (rw_ex_fn)REAL(INL_SSL_READ_EX), 0, ssl, buf, num, n);
}

static int st_write(struct ssl_st *ssl, const void *buf, int num)
{
	return hook_rw(&cap_tls_openssl_static, (rw_fn)REAL(INL_SSL_WRITE), 1, ssl, (void *)buf, num);
}

static int st_write_ex(struct ssl_st *ssl, const void *buf, size_t num, size_t *n)
{
	return hook_rw_ex(&cap_tls_openssl_static, (rw_ex_fn)REAL(INL_SSL_WRITE_EX), 1, ssl,
			  (void *)buf, num, n);
}

static int st_do_handshake(struct ssl_st *ssl)
{
	return hook_handshake(&cap_tls_openssl_static, (ssl1_fn)REAL(INL_SSL_DO_HANDSHAKE), ssl);
}

static int st_shutdown(struct ssl_st *ssl)
{
	return hook_shutdown(&cap_tls_openssl_static, (ssl1_fn)REAL(INL_SSL_SHUTDOWN), ssl);
}

static void st_free(struct ssl_st *ssl)
{
	hook_free(&cap_tls_openssl_static, (void (*)(struct ssl_st *))REAL(INL_SSL_FREE), ssl);
}

void *const inl_hooks[INL_NFN] = {
	[INL_SSL_READ] = (void *)st_read, [INL_SSL_READ_EX] = (void *)st_read_ex,
	[INL_SSL_WRITE] = (void *)st_write, [INL_SSL_WRITE_EX] = (void *)st_write_ex,
	[INL_SSL_DO_HANDSHAKE] = (void *)st_do_handshake, [INL_SSL_SHUTDOWN] = (void *)st_shutdown,
	[INL_SSL_FREE] = (void *)st_free,
};
