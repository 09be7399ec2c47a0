/* Another process's memory map (/proc/PID/maps), line by line, bounded. */
#ifndef TLSMIRROR_PROCMAP_H
#define TLSMIRROR_PROCMAP_H

#include <stdint.h>
#include <sys/types.h>

#define PROCMAP_PATH 1024

struct procmap_ent {
	uint64_t lo, hi, off, inode;
	char perms[5];                 /* "r-xp" */
	char path[PROCMAP_PATH];       /* "" for anonymous; cut paths are skipped */
};

/* Calls fn for each mapping of pid until it returns nonzero (that value is
 * returned). -errno when the maps cannot be read (no such process: -ESRCH). */
int procmap_each(pid_t pid, int (*fn)(const struct procmap_ent *m, void *arg), void *arg);

/* Whether path names basename starting with stem ("libssl.so"). */
int procmap_is_lib(const char *path, const char *stem);

#endif
