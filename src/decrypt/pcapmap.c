/* Classic pcap files read in place (pcapmap.h): the file mapped read-only, each record header checked against the file's end and a sane length before its frame is handed out. */
#include "decrypt/pcapmap.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FRAME 262144u

static uint32_t rd32(const struct pcap_map *m, const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return m->swap ? __builtin_bswap32(v) : v;
}

int pcap_map_open(struct pcap_map *m, const char *path, const char **why)
{
	memset(m, 0, sizeof(*m));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		*why = strerror(errno);
		return -errno;
	}
	struct stat st;
	uint8_t h[24];
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < 24 ||
	    pread(fd, h, 24, 0) != 24) {
		close(fd);
		return 1;
	}
	uint32_t magic;
	memcpy(&magic, h, 4);
	if (magic == 0xa1b2c3d4 || magic == 0xa1b23c4d) {
		m->nsec = magic == 0xa1b23c4d;
	} else if (magic == 0xd4c3b2a1 || magic == 0x4d3cb2a1) {
		m->swap = 1;
		m->nsec = magic == 0x4d3cb2a1;
	} else {
		close(fd);
		return 1; /* pcapng, or not a capture: libpcap says which */
	}
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return 1;
	madvise(p, (size_t)st.st_size, MADV_SEQUENTIAL);
	m->p = p;
	m->len = (size_t)st.st_size;
	m->at = 24;
	m->snaplen = rd32(m, h + 16);
	m->dlt = (int)(rd32(m, h + 20) & 0x0fffffff);
	return 0;
}

int pcap_map_next(struct pcap_map *m, uint64_t *ts_ns, const uint8_t **frame, size_t *caplen,
		  size_t *wirelen, const char **why)
{
	if (m->at == m->len)
		return 0;
	if (m->len - m->at < 16) {
		*why = "the file ends inside a record header (cut short?)";
		return -1;
	}
	const uint8_t *h = m->p + m->at;
	uint32_t sec = rd32(m, h), frac = rd32(m, h + 4), incl = rd32(m, h + 8), orig = rd32(m, h + 12);
	if (incl > MAX_FRAME || incl > m->len - m->at - 16) {
		*why = incl > MAX_FRAME ? "a record longer than 256 KiB (damaged file)" :
		       "the file ends inside a frame (cut short?)";
		return -1;
	}
	*ts_ns = (uint64_t)sec * 1000000000ULL + (m->nsec ? frac : (uint64_t)frac * 1000ULL);
	*frame = h + 16;
	*caplen = incl;
	*wirelen = orig < incl ? incl : orig;
	m->at += 16 + (size_t)incl;
	return 1;
}

void pcap_map_close(struct pcap_map *m)
{
	if (m->p)
		munmap((void *)m->p, m->len);
	memset(m, 0, sizeof(*m));
}

#define BT_SHB 0x0a0d0d0aU
#define BT_DSB 0x0000000aU
#define DSB_TLSK 0x544c534bU

static void split_lines(const uint8_t *p, size_t n, void (*line)(void *arg, const char *s, size_t n),
			void *arg)
{
	while (n) {
		const uint8_t *nl = memchr(p, '\n', n);
		size_t k = nl ? (size_t)(nl - p) : n;
		line(arg, (const char *)p, k);
		k += nl ? 1 : 0;
		p += k;
		n -= k;
	}
}

int pcapng_secrets(const char *path, void (*line)(void *arg, const char *s, size_t n), void *arg,
		   const char **why)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < 28) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	const uint8_t *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return 0;
	size_t len = (size_t)st.st_size, at = 0;
	int blocks = 0;
	struct pcap_map m = { 0 }; /* only its byte order */
	uint32_t t0;
	memcpy(&t0, p, 4);
	if (t0 != BT_SHB)
		goto out;
	while (at + 12 <= len) {
		uint32_t type, bl, magic;
		memcpy(&type, p + at, 4);
		if (type == BT_SHB) { /* a section: its own byte order */
			memcpy(&magic, p + at + 8, 4);
			if (magic != 0x1a2b3c4d && magic != 0x4d3c2b1a) {
				*why = "a section header with a bad byte-order magic";
				blocks = -1;
				break;
			}
			m.swap = magic == 0x4d3c2b1a;
		}
		type = rd32(&m, p + at);
		bl = rd32(&m, p + at + 4);
		if (bl < 12 || bl % 4 || bl > len - at) {
			*why = "a block whose length runs past the file's end";
			blocks = -1;
			break;
		}
		if (type == BT_DSB && bl >= 20) {
			uint32_t stype = rd32(&m, p + at + 8), sl = rd32(&m, p + at + 12);
			if (sl <= bl - 20 && stype == DSB_TLSK) {
				split_lines(p + at + 16, sl, line, arg);
				blocks++;
			}
		}
		at += bl;
	}
out:
	munmap((void *)p, len);
	return blocks;
}
