/* Reading /proc/PID/maps for scan and attach. */
#include "agent/procmap.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int procmap_is_lib(const char *path, const char *stem)
{
	const char *b = strrchr(path, '/');
	b = b ? b + 1 : path;
	return !strncmp(b, stem, strlen(stem));
}

/* "lo-hi perms off dev inode   path" */
static int parse_line(char *line, struct procmap_ent *m)
{
	int pos = 0;
	unsigned maj, min;
	if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s %" SCNx64 " %x:%x %" SCNu64 " %n",
		   &m->lo, &m->hi, m->perms, &m->off, &maj, &min, &m->inode, &pos) < 7)
		return -EINVAL;
	char *p = line + pos;
	size_t n = strcspn(p, "\n");
	if (n >= sizeof(m->path))
		return -ENAMETOOLONG;
	memcpy(m->path, p, n);
	m->path[n] = 0;
	return 0;
}

int procmap_each(pid_t pid, int (*fn)(const struct procmap_ent *m, void *arg), void *arg)
{
	char name[64];
	snprintf(name, sizeof(name), "/proc/%d/maps", (int)pid);
	FILE *f = fopen(name, "re");
	if (!f)
		return errno == ENOENT ? -ESRCH : -errno;
	char line[PROCMAP_PATH + 128];
	struct procmap_ent m;
	int rc = 0, cut = 0;
	while (!rc && fgets(line, sizeof(line), f)) {
		int whole = strchr(line, '\n') != NULL;
		if (cut || !whole) { /* a line longer than the buffer: skip all of it */
			cut = !whole;
			continue;
		}
		memset(&m, 0, sizeof(m));
		if (parse_line(line, &m) == 0)
			rc = fn(&m, arg);
	}
	if (!rc && ferror(f))
		rc = -EIO;
	fclose(f);
	return rc;
}
