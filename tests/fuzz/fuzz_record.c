/* Fuzz target: bytes a collector reads from an agent's socket after the handshake; the record reader must open or refuse them safely. */
#include "tunnel/record.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Input: a script of pieces, each [op][len lo][len hi][len bytes]. op & 3:
 * 0 a record the agent's writer seals (inner content type op >> 2, so
 * alerts, handshake messages, unknown types and type 0 too, under the keys
 * in use, KeyUpdates every 3 records included); 1 raw bytes (headers,
 * forged or cut records); 2 the writer's buffer flushed. Everything goes
 * through a socket pair (at most 48 KiB, so it never blocks); then the
 * reader reads in steps of the first byte's size until the end or an
 * error, checking what it delivers is within what was asked.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t secret[32] = "tlsmirror fuzz secret 0123456789";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 48 * 1024)
		return 0;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		return 0;
	int big = 1 << 20;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	size_t step = (size_t)data[0] * 131 + 1;
	struct tls13w w;
	struct tls13r r;
	if (tls13w_init(&w, "TLS_AES_128_GCM_SHA256", secret, sizeof(secret), sv[0], 3) ||
	    tls13r_init(&r, "TLS_AES_128_GCM_SHA256", secret, sizeof(secret), sv[1])) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	size_t at = 1, wrote = 0;
	while (at + 3 <= size && wrote < 40 * 1024) {
		uint8_t op = data[at];
		size_t len = (size_t)data[at + 1] | (size_t)data[at + 2] << 8;
		at += 3;
		if (len > size - at)
			len = size - at;
		const uint8_t *p = data + at;
		at += len;
		switch (op & 3) {
		case 0:
			if (len > 16384)
				len = 16384;
			if (tls13w_seal(&w, (uint8_t)(op >> 2), p, len) == 0)
				wrote += len + 22;
			break;
		case 1:
			tls13w_flush(&w);
			if (write(sv[0], p, len) > 0)
				wrote += len;
			break;
		default:
			tls13w_flush(&w);
		}
	}
	tls13w_flush(&w);
	shutdown(sv[0], SHUT_WR);
	static uint8_t out[1 << 17];
	if (step > sizeof(out))
		step = sizeof(out);
	for (int i = 0; i < 10000; i++) {
		long n = tls13r_read(&r, out, step);
		if (n > (long)step)
			abort();
		if (n <= 0 && n != -EAGAIN)
			break;
	}
	tls13w_free(&w);
	tls13r_free(&r);
	close(sv[0]);
	close(sv[1]);
	return 0;
}
