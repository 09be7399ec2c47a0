/* Control socket messages between the capture library, the agent and `tlsmirror stats`. */
#ifndef TLSMIRROR_CTL_H
#define TLSMIRROR_CTL_H

/*
 * The agent listens on a Unix SOCK_SEQPACKET socket (default
 * CTL_DEFAULT_SOCKET, or --socket / TLSMIRROR_SOCKET). A capture library
 * attaches by sending one CTL_ATTACH message carrying the ring's memfd in
 * SCM_RIGHTS; afterwards it sends only one-byte doorbell messages, and the
 * agent sends nothing. EOF on either side ends the attachment. A stats
 * client sends CTL_STATS and reads one text reply. Host byte order (same
 * host). See docs/wire-format.md.
 *
 * The agent also listens on the Linux abstract name CTL_ABSTRACT_PREFIX +
 * path (reachable from a chroot); the same SO_PEERCRED rules guard both. The
 * attach message carries SCM_CREDENTIALS (the sender's own pid, uid, gid,
 * checked by the kernel): a socket connected by an authorised parent before
 * fork is used by the child, which the agent then records as itself.
 * See docs/security.md.
 */

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#define CTL_DEFAULT_SOCKET "/run/tlsmirror.sock"
/* A collector's (-C) default, so that an agent on the same host keeps the other. */
#define CTL_COLLECTOR_SOCKET "/run/tlsmirror-collector.sock"
/* The packaged systemd unit's (RuntimeDirectory=tlsmirror, docs/operations.md). */
#define CTL_SERVICE_DIR "/run/tlsmirror"
#define CTL_SERVICE_SOCKET CTL_SERVICE_DIR "/tlsmirror.sock"
#define CTL_SERVICE_COLLECTOR_SOCKET CTL_SERVICE_DIR "/collector.sock"
#define CTL_MAGIC 0x4c54434dU /* "MCTL" */
#define CTL_VERSION 1

enum ctl_type {
	CTL_ATTACH = 1, /* + memfd of the ring */
	CTL_STATS = 2,  /* agent replies with text, then closes */
	CTL_STATS_JSON = 3, /* the same counters as JSON samples (tlsmirror stats --json) */
};

struct ctl_hello {
	uint32_t magic;     /* CTL_MAGIC */
	uint16_t version;   /* CTL_VERSION */
	uint16_t type;      /* enum ctl_type */
	uint32_t pid;       /* claimed; the agent uses SO_PEERCRED */
	uint32_t attach_gen;/* how many times this process attached before */
	char comm[16];      /* process name, NUL-terminated */
	char exe[256];      /* /proc/self/exe target, NUL-terminated, may be cut */
};

/* Shared by processes built at different times: size and offsets pinned. */
#define CTL_LAYOUT(f, o) \
	_Static_assert(offsetof(struct ctl_hello, f) == (o), "ctl_hello." #f " moved: cross-process layout")
CTL_LAYOUT(magic, 0);
CTL_LAYOUT(version, 4);
CTL_LAYOUT(type, 6);
CTL_LAYOUT(pid, 8);
CTL_LAYOUT(attach_gen, 12);
CTL_LAYOUT(comm, 16);
CTL_LAYOUT(exe, 32);
_Static_assert(sizeof(struct ctl_hello) == 288, "struct ctl_hello size: cross-process layout");

#define CTL_STATS_MAX (256 * 1024)
#define CTL_STATS_JSON_MAX (8 * 1024 * 1024) /* one message; the agent raises its socket's buffer */

#define CTL_ABSTRACT_PREFIX "tlsmirror:"

/* The abstract-namespace address that goes with the socket path: "\0" +
 * CTL_ABSTRACT_PREFIX + path, no terminating NUL. Returns 0 or -ENAMETOOLONG. */
static inline int ctl_abstract_addr(const char *path, struct sockaddr_un *sa, socklen_t *len)
{
	size_t pl = strlen(CTL_ABSTRACT_PREFIX), n = strlen(path);
	if (1 + pl + n > sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path + 1, CTL_ABSTRACT_PREFIX, pl);
	memcpy(sa->sun_path + 1 + pl, path, n);
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + pl + n);
	return 0;
}

#endif
