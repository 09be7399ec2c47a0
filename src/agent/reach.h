/* Reaching processes not started under tlsmirror run: `tlsmirror attach` and `tlsmirror scan`. */
#ifndef TLSMIRROR_REACH_H
#define TLSMIRROR_REACH_H

#include <stddef.h>
#include <sys/types.h>

/* tlsmirror scan [PID...]: prints one line per TLS stack found in each
 * process (none given: every process) with the verdict; asks the agent on
 * sock which processes it reads. Exit status: 0, 1 (a PID unreadable), 2 (usage). */
int scan_main(int argc, char **argv, const char *sock);

/* For the agent's log, once per attached process: how the library came in
 * and each TLS stack pid carries, hooked or not (inline_hooked: its ring says
 * the program's own OpenSSL is hooked in place). Reads /proc and ELF files
 * (bounded). Returns the length written (always NUL-terminated). */
size_t scan_summary(pid_t pid, int inline_hooked, char *buf, size_t len);

/* tlsmirror attach PID...: loads lib (an absolute path) into each process
 * and points it at the agent on sock. Exit status: 0 when every PID was
 * attached, 1 otherwise (each refusal explained on stderr), 2 usage. */
int attach_main(int argc, char **argv, const char *sock, const char *lib);

#endif
