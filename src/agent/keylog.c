/* --keylog FILE: the TLS secrets the capture libraries send (RING_REC_KEY) as an NSS key log (docs/capture.md, Keys). */
#include "agent/agent.h"
#include "common/log.h"
#include "common/text.h"
#include "sinks/sink_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/*
 * Keys are a liability: off by default, and with --keylog the agent asks
 * each ring for them (RING_CONSUMER_KEYS, set when it maps the ring).
 * Each record is read once into a private copy, checked (label, lengths)
 * and written as one line with one write(2) to a file opened for appending
 * with the capture files' rules (mode 0600, no link followed in a shared
 * directory): a line is in the file as soon as its connection's secret
 * is made, never half of one, and another tool reading the file (tshark -o
 * tls.keylog_file, tlsmirror decrypt --keys) sees it at once. A failed write is
 * counted (keys_lost) and logged once. Both ends of a connection mirrored
 * on this host (curl and nginx under capture) send the same secrets: a line
 * written among the last KEYLOG_RECENT is not written again.
 */

#define KEYLOG_RECENT 256

/* The same secret (label, client random) written lately? Then 1; else it is noted. */
static int seen_lately(const struct ring_key *k)
{
	static uint64_t recent[KEYLOG_RECENT];
	static unsigned next;
	uint64_t h = 1469598103934665603ull ^ k->label;
	for (int i = 0; i < 32; i++)
		h = (h ^ k->client_random[i]) * 1099511628211ull;
	for (int i = 0; i < k->secret_len; i++)
		h = (h ^ k->secret[i]) * 1099511628211ull;
	h |= 1; /* 0: an empty slot */
	for (unsigned i = 0; i < KEYLOG_RECENT; i++)
		if (recent[i] == h)
			return 1;
	recent[next++ % KEYLOG_RECENT] = h;
	return 0;
}

int keylog_open(struct agent *a)
{
	a->keylog_fd = -1;
	if (!a->cfg.keylog)
		return 0;
	const char *why = NULL;
	int fd = sink_file_open_private(a->cfg.keylog, O_APPEND, &why);
	if (fd < 0) {
		log_err("--keylog %s: %s", a->cfg.keylog, why ? why : strerror(-fd));
		return fd;
	}
	a->keylog_fd = fd;
	return 0;
}

void keylog_close(struct agent *a)
{
	if (a->keylog_fd >= 0)
		close(a->keylog_fd);
	a->keylog_fd = -1;
}

uint32_t keylog_ring_flags(const struct agent *a)
{
	return RING_CONSUMER_SEEN | (a->cfg.keylog ? RING_CONSUMER_KEYS : 0);
}

/* One KEY record of p: 0, or -EINVAL (what is wrong in *why). */
int keylog_record(struct agent *a, const struct ring_view *v, const char **why)
{
	struct ring_key k;
	if (a->keylog_fd < 0) {
		*why = "KEY record the agent did not ask for";
		return -EINVAL;
	}
	if (v->data_len != sizeof(k)) {
		*why = "KEY record of the wrong size";
		return -EINVAL;
	}
	memcpy(&k, v->data, sizeof(k)); /* one copy: the producer may still write */
	const char *label = ring_key_label_name(k.label);
	if (!label || !k.secret_len || k.secret_len > RING_KEY_MAX_SECRET) {
		*why = "KEY record with invalid fields";
		return -EINVAL;
	}
	if (seen_lately(&k))
		return 0;
	char line[64 + 1 + 64 + 1 + 2 * RING_KEY_MAX_SECRET + 1];
	size_t n = strlen(label);
	memcpy(line, label, n);
	line[n++] = ' ';
	n = (size_t)(text_hex(line + n, k.client_random, 32) - line);
	line[n++] = ' ';
	n = (size_t)(text_hex(line + n, k.secret, k.secret_len) - line);
	line[n++] = '\n';
	ssize_t w = write(a->keylog_fd, line, n);
	if (w == (ssize_t)n) {
		a->keys_written++;
		return 0;
	}
	if (!a->keys_lost++)
		log_warn("--keylog %s: cannot write: %s (keys lost from now on are counted: keys_lost)",
			 a->cfg.keylog, w < 0 ? strerror(errno) : "short write");
	return 0;
}
