/* Deterministic test payloads shared by the test programs (OpenSSL and GnuTLS alike). */
#ifndef TLSMIRROR_GEN_H
#define TLSMIRROR_GEN_H

#include <stddef.h>
#include <stdint.h>

/* n pseudo-random bytes from seed, never 0x03 (so no TLS record header can
 * appear by accident: 0x16 0x03 / 0x17 0x03 in a payload would look like a leak). */
static void gen(unsigned char *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (unsigned char)(x >> 32);
		if (p[i] == 0x03)
			p[i] = 0xfc;
	}
}

#endif
