/* Who may feed the mirror: root, group tlsmirror, --allow-user/--allow-group, by SO_PEERCRED. */
#include "agent/access.h"
#include "common/log.h"
#include "common/text.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

#define PEER_GROUPS_STACK 64

static int add_id(uint32_t *tab, size_t *n, uint32_t id)
{
	for (size_t i = 0; i < *n; i++)
		if (tab[i] == id)
			return 0;
	if (*n >= ACCESS_MAX_IDS)
		return -ENOSPC;
	tab[(*n)++] = id;
	return 0;
}

/* A user or group name, or a number. Returns 0 or -EINVAL. */
static int resolve(const char *s, int group, uint32_t *id)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (*s && *s != '-' && !*end && !errno && v < 0xffffffffUL) {
		*id = (uint32_t)v;
		return 0;
	}
	if (group) {
		struct group *g = getgrnam(s);
		if (!g)
			return -EINVAL;
		*id = g->gr_gid;
	} else {
		struct passwd *p = getpwnam(s);
		if (!p)
			return -EINVAL;
		*id = p->pw_uid;
	}
	return 0;
}

int access_add(struct access_policy *ap, const char *list, int group, const char **bad)
{
	static char item[256];
	const char *s = list;
	while (*s) {
		size_t n = strcspn(s, ",");
		if (n == 0 || n >= sizeof(item)) {
			*bad = n ? "(too long)" : "(empty)";
			return -EINVAL;
		}
		memcpy(item, s, n);
		item[n] = 0;
		uint32_t id;
		*bad = item;
		if (resolve(item, group, &id) < 0)
			return -EINVAL;
		int err = group ? add_id(ap->gids, &ap->n_gids, id) : add_id(ap->uids, &ap->n_uids, id);
		if (err < 0)
			return err;
		ap->extra = 1;
		s += n;
		if (*s == ',')
			s++;
	}
	return 0;
}

void access_init(struct access_policy *ap)
{
	add_id(ap->uids, &ap->n_uids, 0);
	add_id(ap->uids, &ap->n_uids, (uint32_t)geteuid());
	struct group *g = getgrnam(ACCESS_GROUP);
	if (g) {
		ap->have_group = 1;
		ap->group = g->gr_gid;
		add_id(ap->gids, &ap->n_gids, g->gr_gid);
	}
}

static int has_id(const uint32_t *tab, size_t n, uint32_t id)
{
	for (size_t i = 0; i < n; i++)
		if (tab[i] == id)
			return 1;
	return 0;
}

/* The peer's groups at connect time (primary and supplementary). */
static int peer_in_groups(const struct access_policy *ap, int fd, gid_t primary)
{
	if (has_id(ap->gids, ap->n_gids, primary))
		return 1;
	if (!ap->n_gids)
		return 0;
	gid_t stack[PEER_GROUPS_STACK], *g = stack;
	socklen_t len = sizeof(stack);
	int r = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len);
	if (r < 0 && errno == ERANGE && len > sizeof(stack) && (g = malloc(len)))
		r = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len);
	int found = 0;
	for (size_t i = 0; r == 0 && i < len / sizeof(gid_t) && !found; i++)
		found = has_id(ap->gids, ap->n_gids, g[i]);
	if (g && g != stack)
		free(g);
	return found;
}

/* Counts a refusal; returns 1 the first time this uid is refused. */
static int count_refused(struct access_policy *ap, uid_t uid)
{
	ap->refused_total++;
	for (size_t i = 0; i < ap->n_refused; i++) {
		if (ap->refused[i].uid == uid) {
			ap->refused[i].count++;
			return 0;
		}
	}
	if (ap->n_refused >= ACCESS_MAX_REFUSED) {
		ap->refused_other++;
		return -1;
	}
	ap->refused[ap->n_refused++] = (struct access_refused){ .uid = uid, .count = 1 };
	return 1;
}

int access_check(struct access_policy *ap, int fd, uid_t *uid, pid_t *pid)
{
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0)
		cred = (struct ucred){ .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	*uid = cred.uid;
	*pid = cred.pid;
	if (cred.uid != (uid_t)-1 && (has_id(ap->uids, ap->n_uids, cred.uid) ||
				      peer_in_groups(ap, fd, cred.gid)))
		return 1;
	static struct log_limit lim;
	int first = count_refused(ap, cred.uid);
	if (first > 0)
		log_warn("refused a connection from uid %u (pid %d): only root, group %s%s may "
			 "attach (add the user to group %s, or --allow-user); logged once per uid",
			 (unsigned)cred.uid, (int)cred.pid, ACCESS_GROUP,
			 ap->extra ? " and the --allow-user/--allow-group lists" : "", ACCESS_GROUP);
	else if (first < 0)
		log_limited(&lim, 10, "refused a connection from uid %u (pid %d)",
			    (unsigned)cred.uid, (int)cred.pid);
	return 0;
}

void access_secure_path(const struct access_policy *ap, const char *path)
{
	mode_t mode = ap->have_group ? 0660 : 0600;
	if (ap->extra)
		mode = 0666; /* --allow-* users need not be in the group: SO_PEERCRED decides */
	if (ap->have_group && chown(path, (uid_t)-1, ap->group) < 0) {
		log_warn("cannot give %s to group %s: %s; only its owner may attach through the path",
			 path, ACCESS_GROUP, strerror(errno));
		if (!ap->extra)
			mode = 0600;
	}
	chmod(path, mode);
	if (!ap->have_group)
		log_info("group %s does not exist: only root%s may attach; create it with "
			 "'groupadd --system %s' (make install does) and add users with "
			 "'usermod -aG %s USER'", ACCESS_GROUP, ap->extra ? " and --allow-*" : "",
			 ACCESS_GROUP, ACCESS_GROUP);
}

size_t access_stats_format(const struct access_policy *ap, char *buf, size_t len, size_t at)
{
	for (size_t i = 0; i < ap->n_refused; i++)
		at = text_add(buf, len, at, "refused uid=%u attaches=%llu\n",
			      (unsigned)ap->refused[i].uid,
			      (unsigned long long)ap->refused[i].count);
	if (ap->refused_other)
		at = text_add(buf, len, at, "refused uid=other attaches=%llu\n",
			      (unsigned long long)ap->refused_other);
	return at;
}
