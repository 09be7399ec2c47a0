/* VXLAN sink (RFC 7348): every frame in a UDP datagram to a remote sensor, sent in sendmmsg batches. */
#include "sinks/sink.h"
#include "common/text.h"
#include "common/bytes.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Target HOST[:PORT] (port 4789 by default; an IPv6 address in brackets:
 * [::1]:4789). The UDP socket is connected to the first address HOST
 * resolves to. Each datagram is the 8-byte VXLAN header (flags 0x08 = VNI
 * valid, 24-bit VNI from --vni, default 0) followed by the Ethernet frame.
 * The sink reports an mtu that keeps the datagram within the route's MTU
 * (minus 50 bytes over IPv4, 70 over IPv6), so the agent caps the MSS and
 * nothing is fragmented. Send errors (an ICMP port unreachable, a full
 * socket buffer) lose those packets, counted in lost_packets.
 */

#define VXLAN_PORT "4789"
#define VXLAN_HDR 8
#define VXLAN_BATCH 64

struct vxlan_sink {
	int fd;
	uint8_t vxh[VXLAN_HDR];
};

static char open_err[512]; /* why the last open failed (opens run on the main thread) */

/* Splits HOST[:PORT] / [V6]:PORT into host and port strings. */
static int split_host_port(const char *t, char *host, size_t hl, char *port, size_t pl,
			   const char *def_port)
{
	const char *colon;
	size_t n;
	if (t[0] == '[') {
		const char *end = strchr(t, ']');
		if (!end)
			return -EINVAL;
		n = (size_t)(end - t - 1);
		colon = end[1] == ':' ? end + 1 : NULL;
		if (end[1] && !colon)
			return -EINVAL;
		t++;
	} else {
		colon = strrchr(t, ':');
		if (colon && strchr(t, ':') != colon)
			colon = NULL; /* a bare IPv6 address */
		n = colon ? (size_t)(colon - t) : strlen(t);
	}
	if (n == 0 || n >= hl)
		return -EINVAL;
	memcpy(host, t, n);
	host[n] = 0;
	snprintf(port, pl, "%s", colon ? colon + 1 : def_port);
	return text_port(port) > 0 ? 0 : -EINVAL; /* 1..65535, never taken modulo 65536 */
}

static int vxlan_open(struct sink *s, const char *target, const struct sink_opts *o,
		      const char **err_msg)
{
	char host[256], port[16];
	struct addrinfo hints = { .ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	int ret = -ENOMEM;
	struct vxlan_sink *v = calloc(1, sizeof(*v));
	if (!v)
		goto out;
	v->fd = -1;
	ret = split_host_port(target, host, sizeof(host), port, sizeof(port), VXLAN_PORT);
	if (ret < 0) {
		*err_msg = "expected HOST[:PORT] with PORT 1..65535 (IPv6: [ADDR]:PORT)";
		goto out;
	}
	int gai = getaddrinfo(host, port, &hints, &ai);
	if (gai) {
		snprintf(open_err, sizeof(open_err), "cannot resolve %s port %s: %s", host, port,
			 gai_strerror(gai));
		*err_msg = open_err;
		ret = -EHOSTUNREACH;
		goto out;
	}
	v->fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (v->fd < 0 || connect(v->fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		ret = -errno;
		goto out;
	}
	int mtu = 0;
	socklen_t ml = sizeof(mtu);
	int v6 = ai->ai_family == AF_INET6;
	if (getsockopt(v->fd, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_MTU : IP_MTU, &mtu, &ml) == 0 &&
	    mtu > 0)
		s->mtu = (uint32_t)mtu > 1000u ? (uint32_t)mtu - (v6 ? 70u : 50u) : 0;
	int sb = 4 << 20;
	setsockopt(v->fd, SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb));
	v->vxh[0] = 0x08;
	put_be32(v->vxh + 4, (o->vni & 0xffffff) << 8);
	s->priv = v;
	v = NULL;
	ret = 0;
out:
	if (ai)
		freeaddrinfo(ai);
	if (v) {
		if (v->fd >= 0)
			close(v->fd);
		free(v);
	}
	return ret;
}

static int vxlan_write(struct sink *s, const struct pkt *pkts, size_t n)
{
	struct vxlan_sink *v = s->priv;
	struct mmsghdr mm[VXLAN_BATCH];
	struct iovec iov[VXLAN_BATCH][4];
	int ret = 0;
	while (n) {
		size_t k = n < VXLAN_BATCH ? n : VXLAN_BATCH;
		for (size_t i = 0; i < k; i++) {
			iov[i][0] = (struct iovec){ v->vxh, VXLAN_HDR };
			iov[i][1] = (struct iovec){ (void *)pkts[i].hdr, pkts[i].hdr_len };
			iov[i][2] = (struct iovec){ (void *)pkts[i].payload, pkts[i].payload_len };
			iov[i][3] = (struct iovec){ (void *)pkts[i].more, pkts[i].more_len };
			memset(&mm[i], 0, sizeof(mm[i]));
			mm[i].msg_hdr.msg_iov = iov[i];
			mm[i].msg_hdr.msg_iovlen = pkts[i].more_len ? 4 : pkts[i].payload_len ? 3 : 2;
		}
		size_t done = 0;
		while (done < k) {
			int r = sendmmsg(v->fd, mm + done, (unsigned)(k - done), 0);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				ret = -errno;
				sink_ctr_add(&s->ctr.lost_packets, 1); /* skip the one that failed */
				done++;
				continue;
			}
			for (size_t i = done; i < done + (size_t)r; i++) {
				sink_ctr_add(&s->ctr.packets, 1);
				sink_ctr_add(&s->ctr.bytes, pkt_frame_len(&pkts[i]));
			}
			done += (size_t)r;
		}
		pkts += k;
		n -= k;
	}
	return ret;
}

static void vxlan_close(struct sink *s)
{
	struct vxlan_sink *v = s->priv;
	if (!v)
		return;
	close(v->fd);
	free(v);
	s->priv = NULL;
}

const struct sink_ops sink_vxlan_ops = {
	.name = "vxlan",
	.open = vxlan_open,
	.write = vxlan_write,
	.close = vxlan_close,
};
