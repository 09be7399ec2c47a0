/* Interface sink (-o IFACE): frames replayed onto a network interface with AF_PACKET, batched, qdisc bypassed. */
#include "sinks/sink.h"

#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * A SOCK_RAW packet socket bound to the interface (protocol 0: it receives
 * nothing), PACKET_QDISC_BYPASS so frames go straight to the driver, and
 * sendmmsg batches of up to 64 frames. The interface needs no address and
 * no ARP (dummy, veth, a switch's mirror port); it must exist and be up.
 * The sink reports the interface MTU: the agent sizes segments so no frame
 * is larger than MTU + 14; a frame that still is (an --mss forced larger)
 * is not sent and counted in lost_packets, as are frames the driver refuses
 * (ENOBUFS when its queue is full).
 */

#define AFP_BATCH 64

struct afp_sink {
	int fd;
	int ifindex;
	uint32_t max_frame;
	struct sockaddr_ll sll;
};

static char open_err[512]; /* why the last open failed (opens run on the main thread) */

static int fail(const char **err_msg, int err, const char *fmt, const char *ifname)
{
	snprintf(open_err, sizeof(open_err), fmt, ifname);
	*err_msg = open_err;
	return err;
}

static int afp_open(struct sink *s, const char *target, const struct sink_opts *o,
		    const char **err_msg)
{
	struct ifreq ifr;
	int ret;
	struct afp_sink *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->fd = -1;
	if (strlen(target) >= IFNAMSIZ || !target[0]) {
		ret = fail(err_msg, -EINVAL, "cannot open %s: not an interface name", target);
		goto out;
	}
	a->fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (a->fd < 0) {
		ret = -errno;
		if (ret == -EPERM || ret == -EACCES)
			fail(err_msg, ret, "cannot open %s: sending raw frames needs root or "
			     "CAP_NET_RAW", target);
		goto out;
	}
	a->ifindex = (int)if_nametoindex(target);
	if (!a->ifindex) {
		ret = fail(err_msg, -ENODEV, "cannot open %s: no such interface (see 'ip link')",
			   target);
		goto out;
	}
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, target, strlen(target));
	if (ioctl(a->fd, SIOCGIFFLAGS, &ifr) == 0 && !(ifr.ifr_flags & IFF_UP)) {
		ret = -ENETDOWN;
		*err_msg = open_err;
		snprintf(open_err, sizeof(open_err), "cannot open %s: the interface is down "
			 "(ip link set %s up)", target, target);
		goto out;
	}
	if (ioctl(a->fd, SIOCGIFMTU, &ifr) < 0) {
		ret = -errno;
		goto out;
	}
	s->mtu = (uint32_t)ifr.ifr_mtu;
	a->max_frame = s->mtu + 14;
	int one = 1, sb = 4 << 20;
	setsockopt(a->fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	setsockopt(a->fd, SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb));
	a->sll.sll_family = AF_PACKET;
	a->sll.sll_ifindex = a->ifindex;
	a->sll.sll_halen = ETH_ALEN;
	if (bind(a->fd, (struct sockaddr *)&a->sll, sizeof(a->sll)) < 0) {
		ret = -errno;
		goto out;
	}
	s->priv = a;
	a = NULL;
	ret = 0;
out:
	if (a) {
		if (a->fd >= 0)
			close(a->fd);
		free(a);
	}
	return ret;
}

/* Sends k prepared messages; counts what went and what was refused. */
static int send_batch(struct sink *s, struct afp_sink *a, struct mmsghdr *mm,
		      const uint32_t *len, size_t k)
{
	size_t done = 0;
	int ret = 0;
	while (done < k) {
		int r = sendmmsg(a->fd, mm + done, (unsigned)(k - done), 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			ret = -errno;
			sink_ctr_add(&s->ctr.lost_packets, 1);
			done++;
			continue;
		}
		for (size_t i = done; i < done + (size_t)r; i++) {
			sink_ctr_add(&s->ctr.packets, 1);
			sink_ctr_add(&s->ctr.bytes, len[i]);
		}
		done += (size_t)r;
	}
	return ret;
}

static int afp_write(struct sink *s, const struct pkt *pkts, size_t n)
{
	struct afp_sink *a = s->priv;
	struct mmsghdr mm[AFP_BATCH];
	struct iovec iov[AFP_BATCH][3];
	uint32_t len[AFP_BATCH];
	int ret = 0;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t l = pkt_frame_len(&pkts[i]);
		if (l > a->max_frame) {
			sink_ctr_add(&s->ctr.lost_packets, 1);
			ret = -EMSGSIZE;
			continue;
		}
		iov[k][0] = (struct iovec){ (void *)pkts[i].hdr, pkts[i].hdr_len };
		iov[k][1] = (struct iovec){ (void *)pkts[i].payload, pkts[i].payload_len };
		iov[k][2] = (struct iovec){ (void *)pkts[i].more, pkts[i].more_len };
		memset(&mm[k], 0, sizeof(mm[k]));
		mm[k].msg_hdr.msg_iov = iov[k];
		mm[k].msg_hdr.msg_iovlen = pkts[i].more_len ? 3 : pkts[i].payload_len ? 2 : 1;
		len[k++] = (uint32_t)l;
		if (k == AFP_BATCH) {
			int r = send_batch(s, a, mm, len, k);
			ret = r < 0 ? r : ret;
			k = 0;
		}
	}
	if (k) {
		int r = send_batch(s, a, mm, len, k);
		ret = r < 0 ? r : ret;
	}
	return ret;
}

static void afp_close(struct sink *s)
{
	struct afp_sink *a = s->priv;
	if (!a)
		return;
	close(a->fd);
	free(a);
	s->priv = NULL;
}

const struct sink_ops sink_afpacket_ops = {
	.name = "interface",
	.open = afp_open,
	.write = afp_write,
	.close = afp_close,
};
