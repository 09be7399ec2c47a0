/* Cuts a pcap or pcapng file that ends mid-record (an agent killed while writing) to its last whole record. */
#include "sinks/repair.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PCAP_MAX_REC (256u * 1024) /* larger than any snaplen a reader accepts */
#define PCAPNG_MAX_BLOCK (16u * 1024 * 1024)

static uint32_t get32(const uint8_t *p, int swap)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return swap ? __builtin_bswap32(v) : v;
}

/* Exactly n bytes at off, or fewer at the end of the file: returns how many. */
static ssize_t read_at(int fd, void *buf, size_t n, uint64_t off)
{
	size_t got = 0;
	while (got < n) {
		ssize_t k = pread(fd, (uint8_t *)buf + got, n - got, (off_t)(off + got));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (!k)
			break;
		got += (size_t)k;
	}
	return (ssize_t)got;
}

static int walk_pcap(int fd, const uint8_t *hdr, struct repair_result *r)
{
	uint32_t magic;
	memcpy(&magic, hdr, 4);
	int swap = magic == 0xd4c3b2a1 || magic == 0x4d3cb2a1;
	r->format = "pcap";
	r->keep = 24;
	for (;;) {
		uint8_t rh[16];
		ssize_t n = read_at(fd, rh, sizeof(rh), r->keep);
		if (n < 0)
			return (int)n;
		if (n < (ssize_t)sizeof(rh))
			return 0;
		uint32_t incl = get32(rh + 8, swap);
		if (incl > PCAP_MAX_REC || r->keep + 16 + incl > r->size)
			return 0; /* cut short (or garbage from here on) */
		r->keep += 16 + incl;
		r->records++;
	}
}

static int walk_pcapng(int fd, struct repair_result *r, const char **why)
{
	r->format = "pcapng";
	r->keep = 0;
	int swap = 0;
	for (;;) {
		uint8_t bh[12];
		ssize_t n = read_at(fd, bh, sizeof(bh), r->keep);
		if (n < 0)
			return (int)n;
		if (n < (ssize_t)sizeof(bh))
			break;
		uint32_t type;
		memcpy(&type, bh, 4);
		if (type == 0x0A0D0D0A) { /* a section: its byte-order magic decides */
			uint32_t bom;
			memcpy(&bom, bh + 8, 4);
			if (bom == 0x1A2B3C4D)
				swap = 0;
			else if (bom == 0x4D3C2B1A)
				swap = 1;
			else
				break;
		}
		uint32_t len = get32(bh + 4, swap);
		if (len < 12 || (len & 3) || len > PCAPNG_MAX_BLOCK || r->keep + len > r->size)
			break;
		uint8_t tl[4];
		if (read_at(fd, tl, 4, r->keep + len - 4) != 4 || get32(tl, swap) != len)
			break;
		r->keep += len;
		r->records++;
	}
	if (!r->records) {
		*why = "no whole pcapng section header";
		return -EINVAL;
	}
	return 0;
}

int capture_repair(const char *path, int check_only, struct repair_result *r,
		   const char **why)
{
	memset(r, 0, sizeof(*r));
	*why = NULL;
	int fd = open(path, (check_only ? O_RDONLY : O_RDWR) | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	uint8_t hdr[24];
	int err = 0;
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		*why = "not a regular file";
		err = -EINVAL;
		goto out;
	}
	r->size = (uint64_t)st.st_size;
	ssize_t n = read_at(fd, hdr, sizeof(hdr), 0);
	if (n < 0) {
		err = (int)n;
		goto out;
	}
	uint32_t magic = 0;
	if (n >= 4)
		memcpy(&magic, hdr, 4);
	if (magic == 0xa1b2c3d4 || magic == 0xa1b23c4d || magic == 0xd4c3b2a1 ||
	    magic == 0x4d3cb2a1) {
		if (n < 24) {
			*why = "shorter than a pcap file header";
			err = -EINVAL;
			goto out;
		}
		err = walk_pcap(fd, hdr, r);
	} else if (magic == 0x0A0D0D0A) {
		err = walk_pcapng(fd, r, why);
	} else {
		*why = "neither pcap nor pcapng (unknown magic)";
		err = -EINVAL;
	}
	if (!err && !check_only && r->keep < r->size && ftruncate(fd, (off_t)r->keep) < 0)
		err = -errno;
out:
	close(fd);
	return err;
}
