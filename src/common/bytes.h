/* Explicit big-endian accessors and a bounds-checked reader for wire bytes. */
#ifndef TLSMIRROR_BYTES_H
#define TLSMIRROR_BYTES_H

#include <stddef.h>
#include <stdint.h>

static inline void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	       ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/* A cursor over untrusted bytes: every read checks the bound first. */
struct reader {
	const uint8_t *p;
	size_t left;
};

static inline int rd_skip(struct reader *r, size_t n)
{
	if (r->left < n)
		return -1;
	r->p += n;
	r->left -= n;
	return 0;
}

static inline int rd_u8(struct reader *r, uint8_t *v)
{
	if (r->left < 1)
		return -1;
	*v = r->p[0];
	r->p++;
	r->left--;
	return 0;
}

static inline int rd_be16(struct reader *r, uint16_t *v)
{
	if (r->left < 2)
		return -1;
	*v = get_be16(r->p);
	r->p += 2;
	r->left -= 2;
	return 0;
}

static inline int rd_be24(struct reader *r, uint32_t *v)
{
	if (r->left < 3)
		return -1;
	*v = ((uint32_t)r->p[0] << 16) | ((uint32_t)r->p[1] << 8) | r->p[2];
	r->p += 3;
	r->left -= 3;
	return 0;
}

#endif
