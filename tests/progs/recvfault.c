/* Fault injection preloaded into the agent: a hello marked FAULT_GEN makes recvmsg fail after leaving forged SCM_RIGHTS data in the control buffer. */
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/ctl.h"

/*
 * The kernel gives no guarantee about msg_control after a failed recvmsg.
 * For a hello whose attach_gen is FAULT_GEN this wrapper consumes the
 * message, writes an SCM_RIGHTS header naming descriptors 3..6 (the agent's
 * event loop, listening socket, output file...) into the caller's control
 * buffer and fails with ECONNRESET. An agent that walks control data after a
 * failed recvmsg closes those descriptors. Every other call is passed on.
 */
#define FAULT_GEN 0xfa17edu
#define FAULT_FDS 4

typedef ssize_t (*recvmsg_fn)(int, struct msghdr *, int);

static int marked(recvmsg_fn real, int fd)
{
	struct ctl_hello h;
	struct iovec iov = {.iov_base = &h, .iov_len = sizeof(h)};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
	int saved = errno;
	ssize_t n = real(fd, &m, MSG_PEEK | MSG_DONTWAIT);
	errno = saved;
	return n == (ssize_t)sizeof(h) && h.magic == CTL_MAGIC && h.attach_gen == FAULT_GEN;
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	static recvmsg_fn real;
	if (!real)
		real = (recvmsg_fn)dlsym(RTLD_NEXT, "recvmsg");
	if (!msg->msg_control || msg->msg_controllen < CMSG_SPACE(FAULT_FDS * sizeof(int)) ||
	    !marked(real, fd))
		return real(fd, msg, flags);
	char junk[sizeof(struct ctl_hello)];
	(void)!read(fd, junk, sizeof(junk)); /* consumed (the hello carries no descriptor) */
	struct cmsghdr *c = (struct cmsghdr *)msg->msg_control;
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(FAULT_FDS * sizeof(int));
	for (int i = 0; i < FAULT_FDS; i++) {
		int victim = 3 + i;
		memcpy(CMSG_DATA(c) + i * sizeof(int), &victim, sizeof(int));
	}
	/* msg_controllen as the caller set it: a failed call does not update it */
	errno = ECONNRESET;
	return -1;
}
