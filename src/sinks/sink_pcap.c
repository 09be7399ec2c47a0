/* pcap sink: classic pcap with nanosecond timestamps, buffered, with size/time rotation. */
#include "sinks/sink.h"
#include "sinks/sink_file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * File format: the classic pcap header (magic 0xa1b23c4d = nanosecond
 * timestamps, version 2.4, link type 1 = Ethernet) and one 16-byte record
 * header per packet, all in host byte order as libpcap writes them (readers
 * detect the order from the magic). Buffering, stdout ("-"), rotation, file
 * names and write errors: sink_file.c.
 */

#define PCAP_FILE_HDR 24
#define PCAP_REC_HDR 16
#define PCAP_MAGIC_NS 0xa1b23c4du
#define PCAP_LINKTYPE_ETHERNET 1
#define PCAP_DEFAULT_SNAPLEN 262144u
#define NSEC 1000000000ull

static void put_host32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, sizeof(v));
}

static void put_host16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, sizeof(v));
}

static size_t put_file_hdr(void *arg, uint8_t *h, size_t room)
{
	const struct sink_file *f = arg;
	put_host32(h, PCAP_MAGIC_NS);
	put_host16(h + 4, 2);
	put_host16(h + 6, 4);
	put_host32(h + 8, 0);  /* thiszone */
	put_host32(h + 12, 0); /* sigfigs */
	put_host32(h + 16, f->o.snaplen);
	put_host32(h + 20, PCAP_LINKTYPE_ETHERNET);
	return PCAP_FILE_HDR;
}

static void put_rec(uint8_t *r, const struct pkt *k, uint32_t cap, uint64_t frame)
{
	put_host32(r, (uint32_t)(k->ts_ns / NSEC));
	put_host32(r + 4, (uint32_t)(k->ts_ns % NSEC));
	put_host32(r + 8, cap);
	put_host32(r + 12, frame > UINT32_MAX ? UINT32_MAX : (uint32_t)frame);
	r += PCAP_REC_HDR;
	uint32_t h = k->hdr_len < cap ? k->hdr_len : cap;
	memcpy(r, k->hdr, h);
	if (cap > h)
		pkt_copy_payload(r + h, k, cap - h);
}

static int pcap_write(struct sink *s, const struct pkt *pkts, size_t n)
{
	struct sink_file *f = s->priv;
	int ret = 0;
	for (size_t i = 0; i < n; i++) {
		const struct pkt *k = &pkts[i];
		uint64_t frame = pkt_frame_len(k);
		uint32_t cap = frame < f->o.snaplen ? (uint32_t)frame : f->o.snaplen;
		int r;
		uint8_t *rec = sink_file_reserve(f, k->ts_ns, PCAP_REC_HDR + cap, frame, &r);
		if (rec) {
			put_rec(rec, k, cap, frame);
			sink_file_commit(f, k->ts_ns, PCAP_REC_HDR + cap, frame);
		}
		if (r < 0 && !ret)
			ret = r;
	}
	return ret;
}

static int pcap_open(struct sink *s, const char *target,
		     const struct sink_opts *o, const char **err_msg)
{
	(void)target;
	return sink_file_sink_open(s, o, put_file_hdr, PCAP_DEFAULT_SNAPLEN, err_msg);
}

const struct sink_ops sink_pcap_ops = {
	.name = "pcap",
	.open = pcap_open,
	.write = pcap_write,
	.flush = sink_file_sink_flush,
	.close = sink_file_sink_close,
};
