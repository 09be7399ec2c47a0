/* SSL BIOs (BIO_f_ssl): OpenSSL 3 reads and writes them without SSL_read/SSL_write. */
#include "capture/capture.h"

#include <errno.h>

#define EXPORT __attribute__((visibility("default")))
#define BIO_TYPE_SSL_ 0x0207   /* 7 | BIO_TYPE_FILTER */
#define BIO_C_GET_SSL_ 110

/* The SSL object behind an SSL BIO, NULL for every other kind of BIO. */
static struct ssl_st *ssl_of(struct bio_st *b)
{
	static void *mt_slot, *ctrl_slot;
	if (!b)
		return NULL;
	int (*mt)(const struct bio_st *) = sym_real(&mt_slot, "BIO_method_type");
	if (!mt || mt(b) != BIO_TYPE_SSL_)
		return NULL;
	long (*ctrl)(struct bio_st *, int, long, void *) = sym_real(&ctrl_slot, "BIO_ctrl");
	struct ssl_st *ssl = NULL;
	int saved = errno;
	if (ctrl)
		ctrl(b, BIO_C_GET_SSL_, 0, &ssl);
	errno = saved;
	return ssl;
}

EXPORT int BIO_read(struct bio_st *b, void *buf, int len)
{
	static void *slot;
	int (*real)(struct bio_st *, void *, int) = sym_real(&slot, "BIO_read");
	if (!real)
		return sym_missing();
	struct ssl_st *ssl = ssl_of(b);
	if (!ssl)
		return real(b, buf, len);
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_openssl, ssl);
	int ret = real(b, buf, len);
	conn_call_finish(&call, top, 0, buf, ret > 0 ? (size_t)ret : 0);
	return ret;
}

EXPORT int BIO_read_ex(struct bio_st *b, void *buf, size_t len, size_t *got)
{
	static void *slot;
	int (*real)(struct bio_st *, void *, size_t, size_t *) = sym_real(&slot, "BIO_read_ex");
	if (!real)
		return sym_missing();
	struct ssl_st *ssl = ssl_of(b);
	if (!ssl)
		return real(b, buf, len, got);
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_openssl, ssl);
	int ret = real(b, buf, len, got);
	conn_call_finish(&call, top, 0, buf, ret == 1 && got ? *got : 0);
	return ret;
}

EXPORT int BIO_write(struct bio_st *b, const void *buf, int len)
{
	static void *slot;
	int (*real)(struct bio_st *, const void *, int) = sym_real(&slot, "BIO_write");
	if (!real)
		return sym_missing();
	struct ssl_st *ssl = ssl_of(b);
	if (!ssl)
		return real(b, buf, len);
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_openssl, ssl);
	int ret = real(b, buf, len);
	conn_call_finish(&call, top, 1, buf, ret > 0 ? (size_t)ret : 0);
	return ret;
}

EXPORT int BIO_write_ex(struct bio_st *b, const void *buf, size_t len, size_t *done)
{
	static void *slot;
	int (*real)(struct bio_st *, const void *, size_t, size_t *) = sym_real(&slot, "BIO_write_ex");
	if (!real)
		return sym_missing();
	struct ssl_st *ssl = ssl_of(b);
	if (!ssl)
		return real(b, buf, len, done);
	struct cap_call call;
	int top = conn_call_begin(&call, &cap_tls_openssl, ssl);
	int ret = real(b, buf, len, done);
	conn_call_finish(&call, top, 1, buf, ret == 1 && done ? *done : 0);
	return ret;
}
