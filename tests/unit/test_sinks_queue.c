/* Unit tests for sinks/sink_queue.c, the fan-out counters and the VXLAN / PCAP-over-IP sinks' bytes. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sinks/sink.h"
#include "sinks/sink_queue.h"
#include "unit.h"

/* A sink that records what it was given; it can be held (a stalled output). */
struct rec_sink {
	pthread_mutex_t mu;
	int hold;
	size_t n;
	uint8_t frames[64][64];
	uint32_t lens[64];
	uint64_t ts[64];
	unsigned flushes;
};

static struct rec_sink rec;

static int rec_open(struct sink *s, const char *t, const struct sink_opts *o, const char **e)
{
	s->priv = &rec;
	return 0;
}

static int rec_write(struct sink *s, const struct pkt *p, size_t n)
{
	for (;;) {
		pthread_mutex_lock(&rec.mu);
		int hold = rec.hold;
		pthread_mutex_unlock(&rec.mu);
		if (!hold)
			break;
		usleep(1000);
	}
	for (size_t i = 0; i < n; i++) {
		if (rec.n < 64 && p[i].hdr_len + p[i].payload_len <= sizeof(rec.frames[0])) {
			memcpy(rec.frames[rec.n], p[i].hdr, p[i].hdr_len);
			if (p[i].payload_len)
				memcpy(rec.frames[rec.n] + p[i].hdr_len, p[i].payload, p[i].payload_len);
			rec.lens[rec.n] = p[i].hdr_len + p[i].payload_len;
			rec.ts[rec.n] = p[i].ts_ns;
			rec.n++;
		}
		s->ctr.packets++;
	}
	return 0;
}

static int rec_flush(struct sink *s)
{
	rec.flushes++;
	return 0;
}

static const struct sink_ops rec_ops = {
	.name = "rec", .open = rec_open, .write = rec_write, .flush = rec_flush,
};

static void rec_reset(void)
{
	memset(&rec, 0, sizeof(rec));
	pthread_mutex_init(&rec.mu, NULL);
}

static void set_hold(int h)
{
	pthread_mutex_lock(&rec.mu);
	rec.hold = h;
	pthread_mutex_unlock(&rec.mu);
}

TEST(queue_delivers_frames_in_order_byte_exact)
{
	rec_reset();
	struct sink_set set = { 0 };
	const char *why;
	if (!CHECK(sink_set_add(&set, &rec_ops, "x", NULL, &why) == 0))
		return;
	CHECK(sink_set_start_queues(&set, NULL) == 0);
	uint8_t hdr[10], pay[20];
	for (int k = 0; k < 40; k++) {
		for (int i = 0; i < 10; i++)
			hdr[i] = (uint8_t)(k + i);
		for (int i = 0; i < 20; i++)
			pay[i] = (uint8_t)(100 + k + i);
		struct pkt p = { .ts_ns = 1000u + (uint64_t)k, .hdr = hdr, .hdr_len = 10,
				 .payload = pay, .payload_len = (uint32_t)(k % 21) };
		sink_set_write(&set, &p, 1); /* the queue copies: the buffers may change now */
	}
	sink_set_drain(&set);
	CHECK_EQ(rec.n, 40);
	for (int k = 0; k < 40 && k < (int)rec.n; k++) {
		CHECK_EQ(rec.lens[k], 10 + k % 21);
		CHECK_EQ(rec.ts[k], 1000 + k);
		CHECK_EQ(rec.frames[k][0], k);
		if (k % 21)
			CHECK_EQ(rec.frames[k][10], 100 + k);
	}
	CHECK(rec.flushes >= 1);
	CHECK_EQ(set.v[0]->ctr.queue_drops, 0);
	sink_set_close(&set);
}

TEST(queue_full_drops_and_counts_without_blocking)
{
	rec_reset();
	set_hold(1);
	struct sink_set set = { 0 };
	const char *why;
	struct sink_opts o = { .queue_bytes = SINK_QUEUE_MIN };
	if (!CHECK(sink_set_add(&set, &rec_ops, "x", &o, &why) == 0))
		return;
	CHECK(sink_set_start_queues(&set, &o) == 0);
	static uint8_t big[1500];
	struct pkt p = { .ts_ns = 1, .hdr = big, .hdr_len = sizeof(big) };
	for (int k = 0; k < 200; k++) /* 200 * 1.5 KB > 64 KiB: most must drop */
		sink_set_write(&set, &p, 1);
	uint64_t drops = set.v[0]->ctr.queue_drops;
	CHECK(drops > 100 && drops < 200);
	set_hold(0);
	sink_set_drain(&set);
	CHECK_EQ(set.v[0]->ctr.packets + drops, 200);
	char buf[512];
	size_t n = sink_set_format(&set, buf, sizeof(buf), 0);
	CHECK(n > 0 && strstr(buf, "sink name=rec target=x ") && strstr(buf, "queue_drops="));
	sink_set_close(&set);
}

TEST(queue_wraps_around_many_times)
{
	rec_reset();
	struct sink_set set = { 0 };
	const char *why;
	struct sink_opts o = { .queue_bytes = SINK_QUEUE_MIN };
	if (!CHECK(sink_set_add(&set, &rec_ops, "x", &o, &why) == 0))
		return;
	CHECK(sink_set_start_queues(&set, &o) == 0);
	static uint8_t f[999];
	struct pkt p = { .ts_ns = 1, .hdr = f, .hdr_len = sizeof(f) };
	uint64_t sent = 0;
	for (int k = 0; k < 5000; k++) {
		sink_set_write(&set, &p, 1);
		sent++;
		if (k % 32 == 0)
			sink_set_drain(&set);
	}
	sink_set_drain(&set);
	CHECK_EQ(set.v[0]->ctr.packets + set.v[0]->ctr.queue_drops, sent);
	CHECK(set.v[0]->ctr.packets > 4000);
	sink_set_close(&set);
}

TEST(vxlan_datagram_is_header_plus_frame)
{
	int rx = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	if (!CHECK(rx >= 0 && bind(rx, (struct sockaddr *)&sa, sl) == 0 &&
		   getsockname(rx, (struct sockaddr *)&sa, &sl) == 0))
		return;
	char target[64];
	snprintf(target, sizeof(target), "127.0.0.1:%u", ntohs(sa.sin_port));
	struct sink_set set = { 0 };
	struct sink_opts o = { .vni = 0x123456 };
	const char *why = NULL;
	if (!CHECK(sink_set_add(&set, &sink_vxlan_ops, target, &o, &why) == 0))
		goto out;
	uint8_t hdr[4] = { 1, 2, 3, 4 }, pay[3] = { 9, 8, 7 };
	struct pkt p = { .hdr = hdr, .hdr_len = 4, .payload = pay, .payload_len = 3 };
	sink_set_write(&set, &p, 1);
	uint8_t got[64];
	ssize_t n = recv(rx, got, sizeof(got), 0);
	const uint8_t want[] = { 0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, 1, 2, 3, 4, 9, 8, 7 };
	CHECK_EQ(n, sizeof(want));
	CHECK_MEM(got, want, sizeof(want));
	CHECK_EQ(set.v[0]->ctr.packets, 1);
	CHECK_EQ(set.v[0]->ctr.bytes, 7);
	sink_set_close(&set);
out:
	close(rx);
}

TEST(vxlan_bad_target_says_why)
{
	struct sink_set set = { 0 };
	struct sink_opts o = { 0 };
	const char *why = NULL;
	CHECK(sink_set_add(&set, &sink_vxlan_ops, "[::1", &o, &why) < 0);
	CHECK(why && strstr(why, "HOST[:PORT]"));
	CHECK_EQ(set.n, 0);
	sink_set_close(&set);
}

TEST(poip_client_gets_header_then_records)
{
	struct sink_set set = { 0 };
	struct sink_opts o = { 0 };
	const char *why = NULL;
	/* a free port (port 0 is refused: nobody would be told which one) */
	int probe = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in pa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t pl = sizeof(pa);
	char target[32];
	if (!CHECK(probe >= 0 && bind(probe, (struct sockaddr *)&pa, pl) == 0 &&
		   getsockname(probe, (struct sockaddr *)&pa, &pl) == 0))
		return;
	snprintf(target, sizeof(target), "127.0.0.1:%u", (unsigned)ntohs(pa.sin_port));
	close(probe);
	CHECK(sink_set_add(&set, &sink_poip_ops, "127.0.0.1:0", &o, &why) < 0);
	if (!CHECK(sink_set_add(&set, &sink_poip_ops, target, &o, &why) == 0))
		return;
	int lfd = *(int *)set.v[0]->priv; /* struct poip_sink starts with the listening fd */
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (!CHECK(getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0 &&
		   connect(c, (struct sockaddr *)&sa, sl) == 0))
		goto out;
	sink_set_flush(&set); /* accepts */
	uint8_t hdr[4] = { 1, 2, 3, 4 };
	struct pkt p = { .ts_ns = 5000000007ull, .hdr = hdr, .hdr_len = 4 };
	sink_set_write(&set, &p, 1);
	uint8_t got[24 + 16 + 4];
	size_t have = 0;
	while (have < sizeof(got)) {
		struct pollfd pfd = { .fd = c, .events = POLLIN };
		if (poll(&pfd, 1, 2000) <= 0)
			break;
		ssize_t n = recv(c, got + have, sizeof(got) - have, 0);
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	if (!CHECK_EQ(have, sizeof(got)))
		goto out;
	uint32_t v;
	memcpy(&v, got, 4);
	CHECK_EQ(v, 0xa1b23c4du);
	memcpy(&v, got + 20, 4);
	CHECK_EQ(v, 1);
	memcpy(&v, got + 24, 4);
	CHECK_EQ(v, 5);
	memcpy(&v, got + 28, 4);
	CHECK_EQ(v, 7);
	memcpy(&v, got + 32, 4);
	CHECK_EQ(v, 4);
	CHECK_MEM(got + 40, hdr, 4);
out:
	close(c);
	sink_set_close(&set);
}

/* ---- connection tags through the queue ---- */

/* What the worker saw, in order: 'B' conn_begin, 'E' conn_end, 'P' a packet
 * whose tag was alive and named its connection. */
static char seen[256];
static size_t nseen;

static int tag_write(struct sink *s, const struct pkt *p, size_t n)
{
	for (size_t i = 0; i < n && nseen < sizeof(seen) - 1; i++)
		seen[nseen++] = p[i].conn && p[i].conn->refs > 0 &&
				p[i].conn->client_port == 40000 ? 'P' : '?';
	return 0;
}

static void tag_begin(struct sink *s, const struct conn_tag *t, uint64_t ts)
{
	for (;;) { /* held: the worker waits here, the queue keeps the rest */
		pthread_mutex_lock(&rec.mu);
		int hold = rec.hold;
		pthread_mutex_unlock(&rec.mu);
		if (!hold)
			break;
		usleep(1000);
	}
	if (nseen < sizeof(seen) - 1)
		seen[nseen++] = 'B';
}

static void tag_end(struct sink *s, const struct conn_tag *t, uint64_t ts)
{
	if (nseen < sizeof(seen) - 1)
		seen[nseen++] = t->refs > 0 ? 'E' : '?';
}

static const struct sink_ops tag_ops = {
	.name = "tag", .open = rec_open, .write = tag_write, .conn_begin = tag_begin,
	.conn_end = tag_end,
};

TEST(queue_keeps_tags_alive_and_announcements_in_order)
{
	rec_reset();
	nseen = 0;
	memset(seen, 0, sizeof(seen));
	struct sink_set set = { 0 };
	const char *why;
	if (!CHECK(sink_set_add(&set, &tag_ops, "x", NULL, &why) == 0))
		return;
	CHECK(sink_set_start_queues(&set, NULL) == 0);
	uint8_t a[16] = { 0 }, b[16] = { 0 };
	struct conn_id id = { 1, 1 };
	struct conn_tag *t = conn_tag_new(&id, 4, a, 40000, b, 443, NULL);
	if (!CHECK(t))
		return;
	uint8_t hdr[54] = { 0 };
	struct pkt p[3];
	for (int i = 0; i < 3; i++)
		p[i] = (struct pkt){ .ts_ns = 1, .hdr = hdr, .hdr_len = 54, .conn = t };
	set_hold(1); /* the worker waits: everything stays queued */
	sink_set_conn_begin(&set, t, 1);
	sink_set_write(&set, p, 3);
	sink_set_write(&set, p, 1);
	sink_set_conn_end(&set, t, 2);
	/* the queue holds references: one per run of packets, one per announcement */
	CHECK_EQ(__atomic_load_n(&t->refs, __ATOMIC_ACQUIRE), 5);
	conn_tag_unref(t); /* the flow engine lets go at once */
	set_hold(0);
	sink_set_drain(&set);
	CHECK(!strcmp(seen, "BPPPPE"));
	sink_set_close(&set); /* the last reference went with the worker: ASan would see a leak */
}
