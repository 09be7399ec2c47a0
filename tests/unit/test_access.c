/* Unit tests for agent/access.c (who may attach) and the abstract socket name of transport/ctl.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/access.h"
#include "transport/ctl.h"
#include "unit.h"

TEST(access_add_lists)
{
	static struct access_policy ap;
	memset(&ap, 0, sizeof(ap));
	const char *bad = NULL;
	CHECK_EQ(access_add(&ap, "root,33,1000", 0, &bad), 0);
	CHECK_EQ(ap.n_uids, 3);
	CHECK_EQ(ap.uids[0], 0);
	CHECK_EQ(ap.uids[1], 33);
	CHECK_EQ(ap.uids[2], 1000);
	CHECK(ap.extra);
	CHECK_EQ(access_add(&ap, "33", 0, &bad), 0); /* no duplicates */
	CHECK_EQ(ap.n_uids, 3);
	CHECK_EQ(access_add(&ap, "root", 1, &bad), 0);
	CHECK_EQ(ap.n_gids, 1);
	CHECK_EQ(access_add(&ap, "33,no-such-user-tlsmirror", 0, &bad), -EINVAL);
	CHECK(bad && !strcmp(bad, "no-such-user-tlsmirror"));
	CHECK_EQ(access_add(&ap, "a,,b", 0, &bad), -EINVAL);
	CHECK_EQ(access_add(&ap, "-1", 0, &bad), -EINVAL);
}

TEST(access_add_cap)
{
	static struct access_policy ap;
	memset(&ap, 0, sizeof(ap));
	const char *bad = NULL;
	char num[16];
	for (int i = 0; i < ACCESS_MAX_IDS; i++) {
		snprintf(num, sizeof(num), "%d", 5000 + i);
		CHECK_EQ(access_add(&ap, num, 0, &bad), 0);
	}
	CHECK_EQ(access_add(&ap, "9999", 0, &bad), -ENOSPC);
}

/* The peer of a socketpair is this process: allowed or refused by our own uid/gids
 * (the first refusal is logged on stderr, as in the agent). */
TEST(access_check_peer)
{
	static struct access_policy ap;
	memset(&ap, 0, sizeof(ap));
	int sv[2];
	if (!CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0))
		return;
	uid_t uid;
	pid_t pid;
	CHECK_EQ(access_check(&ap, sv[0], &uid, &pid), 0);
	CHECK_EQ(uid, geteuid());
	CHECK_EQ(pid, getpid());
	CHECK_EQ(access_check(&ap, sv[0], &uid, &pid), 0);
	CHECK_EQ(ap.refused_total, 2);
	CHECK_EQ(ap.n_refused, 1);
	CHECK_EQ(ap.refused[0].count, 2);
	char buf[128];
	size_t n = access_stats_format(&ap, buf, sizeof(buf), 0);
	char want[64];
	snprintf(want, sizeof(want), "refused uid=%u attaches=2\n", (unsigned)geteuid());
	CHECK_EQ(n, strlen(want));
	CHECK(!strcmp(buf, want));
	ap.gids[ap.n_gids++] = (uint32_t)getegid(); /* a group we are in */
	CHECK_EQ(access_check(&ap, sv[0], &uid, &pid), 1);
	ap.n_gids = 0;
	ap.uids[ap.n_uids++] = (uint32_t)geteuid();
	CHECK_EQ(access_check(&ap, sv[0], &uid, &pid), 1);
	CHECK_EQ(ap.refused_total, 2);
	close(sv[0]);
	close(sv[1]);
}

TEST(ctl_abstract_name)
{
	struct sockaddr_un sa;
	socklen_t len;
	CHECK_EQ(ctl_abstract_addr("/run/tlsmirror.sock", &sa, &len), 0);
	static const char want[] = "\0tlsmirror:/run/tlsmirror.sock";
	CHECK_EQ(len, offsetof(struct sockaddr_un, sun_path) + sizeof(want) - 1);
	CHECK_MEM(sa.sun_path, want, sizeof(want) - 1);
	char longp[sizeof(sa.sun_path)];
	memset(longp, 'a', sizeof(longp) - 1);
	longp[sizeof(longp) - 1] = 0;
	CHECK_EQ(ctl_abstract_addr(longp, &sa, &len), -ENAMETOOLONG);
}
