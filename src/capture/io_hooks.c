/* Socket I/O wrappers: which socket a TLS call uses, ClientHellos for memory BIOs, close(). */
#include "capture/capture.h"

#include <errno.h>

#define EXPORT __attribute__((visibility("default")))

static inline void libc_ready(void)
{
	if (__builtin_expect(!__atomic_load_n(&cap_libc.close, __ATOMIC_ACQUIRE), 0))
		sym_init_libc();
}

static void *real_libc(void **slot, const char *name)
{
	void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
	if (!p) {
		p = sym_libc(name);
		__atomic_store_n(slot, p, __ATOMIC_RELEASE);
	}
	return p;
}

/* Looks at bytes that moved on fd; errno is preserved by the callees. */
static inline void seen(int fd, const void *buf, ssize_t n, int sent)
{
	if (n <= 0)
		return;
	conn_note_io_fd(fd);
	const unsigned char *b = buf;
	if (n >= 43 && b[0] == 0x16)
		conn_note_client_hello(fd, b, (size_t)n, sent);
}

static inline void seen_iov(int fd, const struct iovec *iov, int cnt, ssize_t n, int sent)
{
	if (n <= 0 || cnt <= 0 || !iov)
		return;
	size_t first = iov[0].iov_len < (size_t)n ? iov[0].iov_len : (size_t)n;
	seen(fd, iov[0].iov_base, (ssize_t)first, sent);
	if (!first)
		conn_note_io_fd(fd);
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	libc_ready();
	ssize_t r = cap_libc.write(fd, buf, n);
	seen(fd, buf, r, 1);
	return r;
}

EXPORT ssize_t read(int fd, void *buf, size_t n)
{
	libc_ready();
	ssize_t r = cap_libc.read(fd, buf, n);
	seen(fd, buf, r, 0);
	return r;
}

EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	static void *slot;
	ssize_t (*real)(int, void *, size_t, size_t) = real_libc(&slot, "__read_chk");
	ssize_t r = real(fd, buf, n, buflen);
	seen(fd, buf, r, 0);
	return r;
}

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
	libc_ready();
	ssize_t r = cap_libc.send(fd, buf, n, flags);
	seen(fd, buf, r, 1);
	return r;
}

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
	libc_ready();
	ssize_t r = cap_libc.recv(fd, buf, n, flags);
	seen(fd, buf, r, 0);
	return r;
}

EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
	static void *slot;
	ssize_t (*real)(int, void *, size_t, size_t, int) = real_libc(&slot, "__recv_chk");
	ssize_t r = real(fd, buf, n, buflen, flags);
	seen(fd, buf, r, 0);
	return r;
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags,
		      const struct sockaddr *to, socklen_t tolen)
{
	static void *slot;
	ssize_t (*real)(int, const void *, size_t, int, const struct sockaddr *, socklen_t) =
		real_libc(&slot, "sendto");
	ssize_t r = real(fd, buf, n, flags, to, tolen);
	seen(fd, buf, r, 1);
	return r;
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags,
			struct sockaddr *from, socklen_t *fromlen)
{
	static void *slot;
	ssize_t (*real)(int, void *, size_t, int, struct sockaddr *, socklen_t *) =
		real_libc(&slot, "recvfrom");
	ssize_t r = real(fd, buf, n, flags, from, fromlen);
	seen(fd, buf, r, 0);
	return r;
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	libc_ready();
	ssize_t r = cap_libc.sendmsg(fd, msg, flags);
	if (msg)
		seen_iov(fd, msg->msg_iov, (int)msg->msg_iovlen, r, 1);
	return r;
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	static void *slot;
	ssize_t (*real)(int, struct msghdr *, int) = real_libc(&slot, "recvmsg");
	ssize_t r = real(fd, msg, flags);
	if (msg)
		seen_iov(fd, msg->msg_iov, (int)msg->msg_iovlen, r, 0);
	return r;
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	static void *slot;
	ssize_t (*real)(int, const struct iovec *, int) = real_libc(&slot, "writev");
	ssize_t r = real(fd, iov, cnt);
	seen_iov(fd, iov, cnt, r, 1);
	return r;
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
	static void *slot;
	ssize_t (*real)(int, const struct iovec *, int) = real_libc(&slot, "readv");
	ssize_t r = real(fd, iov, cnt);
	seen_iov(fd, iov, cnt, r, 0);
	return r;
}

EXPORT int close(int fd)
{
	libc_ready();
	if (cap_is_own_fd(fd))
		cap_fd_closed(fd);
	else
		conn_fd_closed(fd);
	return cap_libc.close(fd);
}
