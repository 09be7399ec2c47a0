/* Reaching processes not started under tlsmirror run: `tlsmirror attach` and `tlsmirror scan`. */
#ifndef TLSMIRROR_REACH_H
#define TLSMIRROR_REACH_H

/* tlsmirror scan [PID...]: prints one line per TLS stack found in each
 * process (none given: every process) with the verdict; asks the agent on
 * sock which processes it reads. Exit status: 0, 1 (a PID unreadable), 2 (usage). */
int scan_main(int argc, char **argv, const char *sock);

/* tlsmirror attach PID...: loads lib (an absolute path) into each process
 * and points it at the agent on sock. Exit status: 0 when every PID was
 * attached, 1 otherwise (each refusal explained on stderr), 2 usage. */
int attach_main(int argc, char **argv, const char *sock, const char *lib);

#endif
