/* Who may feed the mirror: the control socket's SO_PEERCRED policy and its refusals. */
#ifndef TLSMIRROR_ACCESS_H
#define TLSMIRROR_ACCESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ACCESS_GROUP "tlsmirror"   /* members may attach by default */
#define ACCESS_MAX_IDS 64          /* --allow-user / --allow-group entries each */
#define ACCESS_MAX_REFUSED 256     /* uids counted one by one; the rest as "other" */

struct access_refused {
	uid_t uid;
	uint64_t count;
};

struct access_policy {
	uint32_t uids[ACCESS_MAX_IDS];    /* always allowed: root, the agent's user, --allow-user */
	size_t n_uids;
	uint32_t gids[ACCESS_MAX_IDS];    /* group tlsmirror (if it exists), --allow-group */
	size_t n_gids;
	int have_group;                /* group tlsmirror exists */
	gid_t group;
	int extra;                     /* --allow-user/--allow-group given */
	struct access_refused refused[ACCESS_MAX_REFUSED];
	size_t n_refused;
	uint64_t refused_other;        /* refusals of uids beyond the table */
	uint64_t refused_total;
};

/* Adds a comma list of user names or uids (group names or gids when
 * group is set). Returns 0, or -EINVAL with *bad the entry not found. */
int access_add(struct access_policy *ap, const char *list, int group, const char **bad);
/* Root, the agent's own user and group tlsmirror if it exists. */
void access_init(struct access_policy *ap);
/* Is the peer of the accepted control connection fd allowed? 1 yes, 0 no
 * (counted and logged once per uid). *uid and *pid get SO_PEERCRED's. */
int access_check(struct access_policy *ap, int fd, uid_t *uid, pid_t *pid);
/* Owner and mode of the socket file: root:tlsmirror 0660 when the group
 * exists, else 0600 (0666 with --allow-*: SO_PEERCRED decides). Logs. */
void access_secure_path(const struct access_policy *ap, const char *path);
/* Appends the "refused uid=U attaches=N" lines at buf+at; returns the new length. */
size_t access_stats_format(const struct access_policy *ap, char *buf, size_t len, size_t at);

#endif
