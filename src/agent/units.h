/* tlsmirror enable|disable UNIT, tlsmirror status: systemd drop-ins that preload the capture library. */
#ifndef TLSMIRROR_UNITS_H
#define TLSMIRROR_UNITS_H

#include <stddef.h>

#define UNITS_DIR "/etc/systemd/system"      /* $TLSMIRROR_SYSTEMD_DIR overrides (tests) */
#define UNITS_DROPIN "tlsmirror.conf"

/* Checks a unit name and completes it ("nginx" -> "nginx.service").
 * Returns 0, or -EINVAL with *why the reason. */
int unit_name_check(const char *in, char *out, size_t len, const char **why);

/* The subcommands: lib is the capture library's path, sock the agent's socket. */
int units_enable(int argc, char **argv, const char *lib, const char *sock);
int units_disable(int argc, char **argv);
/* stats: the agent's `tlsmirror stats` text, NULL if no agent answered. */
int units_status(const char *sock, const char *stats);

#endif
