/* Unit tests for sinks/sink_pcap.c and the sink fan-out: header bytes, records, rotation, errors. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sinks/sink.h"
#include "unit.h"

static uint8_t fake_hdr[54];
static uint8_t fake_payload[1500];

static struct pkt mkpkt(uint64_t ts_ns, uint32_t payload_len)
{
	for (size_t i = 0; i < sizeof(fake_hdr); i++)
		fake_hdr[i] = (uint8_t)(0xa0 + i);
	for (size_t i = 0; i < sizeof(fake_payload); i++)
		fake_payload[i] = (uint8_t)i;
	struct pkt p = { .ts_ns = ts_ns, .hdr = fake_hdr, .hdr_len = sizeof(fake_hdr),
			 .payload = fake_payload, .payload_len = payload_len };
	return p;
}

static char *path_in_tmp(const char *name)
{
	static char buf[4][256];
	static int i;
	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", unit_tmpdir(), name);
	return buf[i];
}

/* Reads a whole file; NULL if missing. */
static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	uint8_t *b = malloc(1 << 22);
	*len = b ? fread(b, 1, 1 << 22, f) : 0;
	fclose(f);
	return b;
}

static uint32_t host32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

/* Number of records if the file is a complete, valid pcap; -1 otherwise. */
static long pcap_records(const char *path, size_t *size)
{
	size_t len = 0;
	uint8_t *b = slurp(path, &len);
	long n = -1;
	if (size)
		*size = len;
	if (!b || len < 24 || host32(b) != 0xa1b23c4d || host32(b + 20) != 1)
		goto out;
	size_t at = 24;
	n = 0;
	while (at + 16 <= len) {
		uint32_t cap = host32(b + at + 8);
		if (at + 16 + cap > len || cap > host32(b + at + 12))
			break;
		at += 16 + cap;
		n++;
	}
	if (at != len)
		n = -1;
out:
	free(b);
	return n;
}

static int open_one(struct sink_set *set, const char *target, const struct sink_opts *o)
{
	const char *err = NULL;
	memset(set, 0, sizeof(*set));
	return sink_set_add(set, &sink_pcap_ops, target, o, &err);
}

TEST(pcap_file_header_bytes)
{
	static const uint8_t want_le[24] = {
		0x4d, 0x3c, 0xb2, 0xa1, /* magic 0xa1b23c4d: nanosecond timestamps */
		0x02, 0x00, 0x04, 0x00, /* version 2.4 */
		0x00, 0x00, 0x00, 0x00, /* thiszone */
		0x00, 0x00, 0x00, 0x00, /* sigfigs */
		0x00, 0x00, 0x04, 0x00, /* snaplen 262144 (0 in the options) */
		0x01, 0x00, 0x00, 0x00, /* link type 1: Ethernet */
	};
	struct sink_set set;
	struct sink_opts o = { 0 };
	const char *path = path_in_tmp("hdr.pcap");
	if (!CHECK_EQ(open_one(&set, path, &o), 0))
		return;
	sink_set_close(&set);
	size_t len = 0;
	uint8_t *b = slurp(path, &len);
	CHECK_EQ(len, 24);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	if (b)
		CHECK_MEM(b, want_le, sizeof(want_le));
#endif
	free(b);
	struct stat st;
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
}

TEST(pcap_record_fields)
{
	struct sink_set set;
	struct sink_opts o = { 0 };
	const char *path = path_in_tmp("rec.pcap");
	if (!CHECK_EQ(open_one(&set, path, &o), 0))
		return;
	struct pkt p = mkpkt(1500000001ull, 10);
	sink_set_write(&set, &p, 1);
	CHECK_EQ(set.v[0]->ctr.packets, 0); /* still buffered */
	sink_set_flush(&set);
	CHECK_EQ(set.v[0]->ctr.packets, 1);
	CHECK_EQ(set.v[0]->ctr.bytes, 64);
	sink_set_close(&set);
	size_t len = 0;
	uint8_t *b = slurp(path, &len);
	if (!CHECK(b && len == 24 + 16 + 64))
		return;
	CHECK_EQ(host32(b + 24), 1);         /* seconds */
	CHECK_EQ(host32(b + 28), 500000001); /* nanoseconds */
	CHECK_EQ(host32(b + 32), 64);        /* captured */
	CHECK_EQ(host32(b + 36), 64);        /* on the wire */
	CHECK_MEM(b + 40, fake_hdr, 54);
	CHECK_MEM(b + 94, fake_payload, 10);
	free(b);
}

TEST(pcap_snaplen_truncates)
{
	struct sink_set set;
	struct sink_opts o = { .snaplen = 60 };
	const char *path = path_in_tmp("snap.pcap");
	if (!CHECK_EQ(open_one(&set, path, &o), 0))
		return;
	struct pkt p = mkpkt(0, 100);
	sink_set_write(&set, &p, 1);
	sink_set_close(&set);
	size_t len = 0;
	uint8_t *b = slurp(path, &len);
	if (!CHECK(b && len == 24 + 16 + 60))
		return;
	CHECK_EQ(host32(b + 16), 60);
	CHECK_EQ(host32(b + 32), 60);
	CHECK_EQ(host32(b + 36), 154);
	CHECK_MEM(b + 40 + 54, fake_payload, 6);
	free(b);
}

TEST(pcap_rotation_by_size_gives_valid_files)
{
	struct sink_set set;
	size_t rec = 16 + 54 + 100;
	struct sink_opts o = { .rotate_bytes = 24 + 3 * rec };
	const char *path = path_in_tmp("rot.pcap");
	if (!CHECK_EQ(open_one(&set, path, &o), 0))
		return;
	for (int i = 0; i < 10; i++) {
		struct pkt p = mkpkt((uint64_t)i, 100);
		sink_set_write(&set, &p, 1);
	}
	CHECK_EQ(set.v[0]->ctr.files, 4);
	sink_set_close(&set);
	char name[300];
	long total = 0;
	for (int i = 0; i < 4; i++) {
		size_t size = 0;
		if (i)
			snprintf(name, sizeof(name), "%s.%d", path, i);
		else
			snprintf(name, sizeof(name), "%s", path);
		long n = pcap_records(name, &size);
		CHECK_EQ(n, i < 3 ? 3 : 1);
		CHECK(size <= o.rotate_bytes);
		total += n;
	}
	CHECK_EQ(total, 10);
	CHECK(access(path_in_tmp("rot.pcap.4"), F_OK) != 0);
}

TEST(pcap_rotation_count_reuses_files_in_place)
{
	struct sink_set set;
	size_t rec = 16 + 54 + 100;
	struct sink_opts o = { .rotate_bytes = 24 + 3 * rec, .rotate_count = 3 };
	const char *path = path_in_tmp("ring.pcap");
	/* a stale, longer file from an earlier run must end up cut to size */
	FILE *f = fopen(path, "wb");
	if (!CHECK(f != NULL))
		return;
	for (int i = 0; i < 4096; i++)
		fputc(0x5a, f);
	fclose(f);
	if (!CHECK_EQ(open_one(&set, path, &o), 0))
		return;
	for (int i = 0; i < 25; i++) { /* 9 files' worth: 3 laps of the ring */
		struct pkt p = mkpkt((uint64_t)i, 100);
		sink_set_write(&set, &p, 1);
	}
	CHECK_EQ(set.v[0]->ctr.files, 9);
	sink_set_close(&set);
	char name[300];
	for (int i = 0; i < 3; i++) {
		size_t size = 0;
		if (i)
			snprintf(name, sizeof(name), "%s.%d", path, i);
		else
			snprintf(name, sizeof(name), "%s", path);
		long n = pcap_records(name, &size);
		/* the ring's last lap: ring.pcap got packets 18-20, .1 21-23, .2 24 */
		CHECK_EQ(n, i < 2 ? 3 : 1);
		CHECK(size <= o.rotate_bytes);
	}
	CHECK(access(path_in_tmp("ring.pcap.3"), F_OK) != 0);
}

TEST(pcap_rotation_count_resumes_after_a_killed_agent)
{
	struct sink_set set;
	size_t rec = 16 + 54 + 100;
	struct sink_opts o = { .rotate_bytes = 24 + 3 * rec, .rotate_count = 3 };
	const char *path = path_in_tmp("resume.pcap");
	char name[300];
	/* a first agent fills resume.pcap and resume.pcap.1 ... */
	if (!CHECK_EQ(open_one(&set, path, &o), 0))
		return;
	for (int i = 0; i < 5; i++) {
		struct pkt p = mkpkt((uint64_t)i, 100);
		sink_set_write(&set, &p, 1);
	}
	sink_set_close(&set);
	snprintf(name, sizeof(name), "%s.1", path);
	/* ... and is killed while writing a record of .1: 7 bytes of it */
	FILE *f = fopen(name, "ab");
	if (!CHECK(f != NULL))
		return;
	fwrite("\x01\x02\x03\x04\x05\x06\x07", 1, 7, f);
	fclose(f);
	size_t size = 0;
	CHECK_EQ(pcap_records(path, &size), 3);
	/* the next agent cuts .1 back to its 2 whole records, leaves resume.pcap
	 * alone and goes on in .2 */
	if (!CHECK_EQ(open_one(&set, path, &o), 0))
		return;
	struct pkt p = mkpkt(100, 100);
	sink_set_write(&set, &p, 1);
	sink_set_close(&set);
	CHECK_EQ(pcap_records(path, &size), 3);
	CHECK_EQ(pcap_records(name, &size), 2);
	CHECK_EQ(size, 24 + 2 * rec);
	snprintf(name, sizeof(name), "%s.2", path);
	CHECK_EQ(pcap_records(name, &size), 1);
}

TEST(pcap_rotation_count_refuses_patterns)
{
	struct sink_set set;
	struct sink_opts o = { .rotate_bytes = 4096, .rotate_count = 2 };
	CHECK_EQ(open_one(&set, path_in_tmp("x-%s.pcap"), &o), -EINVAL);
	sink_set_close(&set);
}

/* the agent's clock, driven by the tests below (sink_opts.clock_ns) */
static uint64_t test_clock;
static uint64_t test_clock_ns(void)
{
	return test_clock;
}

TEST(pcap_rotation_by_time)
{
	struct sink_set set;
	struct sink_opts o = { .rotate_seconds = 1, .clock_ns = test_clock_ns };
	test_clock = 5000000000ull;
	const char *path = path_in_tmp("time.pcap");
	if (!CHECK_EQ(open_one(&set, path, &o), 0))
		return;
	static const uint64_t ts[] = { 5000000000ull, 5900000000ull, 6000000000ull, 6100000000ull };
	for (int i = 0; i < 4; i++) {
		struct pkt p = mkpkt(ts[i], 1);
		test_clock = ts[i];
		sink_set_write(&set, &p, 1);
	}
	sink_set_close(&set);
	CHECK_EQ(pcap_records(path, NULL), 2);
	CHECK_EQ(pcap_records(path_in_tmp("time.pcap.1"), NULL), 2);
}

TEST(pcap_strftime_pattern_names_files)
{
	struct sink_set set;
	struct sink_opts o = { .rotate_bytes = 24 + 16 + 55, .clock_ns = test_clock_ns };
	test_clock = 0;
	if (!CHECK_EQ(open_one(&set, path_in_tmp("pat-%Y.pcap"), &o), 0))
		return;
	struct pkt p = mkpkt(0, 1);
	sink_set_write(&set, &p, 1);
	test_clock = 2000000000ull * 1000000000ull; /* 2033 on the agent's clock: a new name */
	sink_set_write(&set, &p, 1);
	sink_set_write(&set, &p, 1); /* same name again: gets a suffix */
	sink_set_close(&set);
	CHECK_EQ(pcap_records(path_in_tmp("pat-2033.pcap"), NULL), 1);
	CHECK_EQ(pcap_records(path_in_tmp("pat-2033.pcap.1"), NULL), 1);
}

TEST(pcap_open_failure_reports)
{
	struct sink_set set = { 0 };
	struct sink_opts o = { 0 };
	const char *err = NULL;
	int r = sink_set_add(&set, &sink_pcap_ops, "/nonexistent-dir/x.pcap", &o, &err);
	CHECK_EQ(r, -ENOENT);
	CHECK(err != NULL);
	CHECK_EQ(set.n, 0);
	sink_set_close(&set);
}

TEST(pcap_write_error_counts_lost_and_other_sinks_go_on)
{
	struct sink_set set = { 0 };
	struct sink_opts o = { 0 };
	const char *err = NULL;
	const char *good = path_in_tmp("good.pcap");
	if (!CHECK_EQ(sink_set_add(&set, &sink_pcap_ops, "/dev/full", &o, &err), 0))
		return;
	CHECK_EQ(sink_set_add(&set, &sink_pcap_ops, good, &o, &err), 0);
	struct pkt p = mkpkt(0, 1000);
	for (int i = 0; i < 3000; i++) /* more than the 1 MiB buffer */
		sink_set_write(&set, &p, 1);
	sink_set_flush(&set);
	CHECK_EQ(set.v[0]->ctr.packets, 0);
	CHECK_EQ(set.v[0]->ctr.lost_packets, 3000);
	CHECK_EQ(set.v[1]->ctr.packets, 3000);
	CHECK_EQ(set.v[1]->ctr.lost_packets, 0);
	sink_set_close(&set);
	CHECK_EQ(pcap_records(good, NULL), 3000);
}

TEST(pcap_stdout_target)
{
	const char *path = path_in_tmp("stdout.pcap");
	FILE *f = fopen(path, "wb");
	if (!CHECK(f))
		return;
	fflush(stdout);
	int saved = dup(STDOUT_FILENO);
	dup2(fileno(f), STDOUT_FILENO);
	struct sink_set set;
	struct sink_opts o = { .rotate_bytes = 100 }; /* ignored for stdout */
	int r = open_one(&set, "-", &o);
	if (r == 0) {
		struct pkt p = mkpkt(0, 100);
		sink_set_write(&set, &p, 1);
		sink_set_write(&set, &p, 1);
		sink_set_flush(&set);
		sink_set_close(&set);
	}
	dup2(saved, STDOUT_FILENO);
	close(saved);
	fclose(f);
	CHECK_EQ(r, 0);
	CHECK_EQ(pcap_records(path, NULL), 2);
}

/* Issue 15 item 2: a producer's forged timestamps (6 records a second apart,
 * written within a millisecond) must not rotate a ring of 5 files: rotation
 * follows the agent's clock (sink_opts.clock_ns, here the real one). */
TEST(pcap_forged_timestamps_do_not_rotate)
{
	struct sink_set set;
	struct sink_opts o = { .rotate_seconds = 1, .rotate_count = 5 };
	const char *path = path_in_tmp("forged.pcap");
	if (!CHECK_EQ(open_one(&set, path, &o), 0))
		return;
	for (int i = 0; i < 6; i++) {
		struct pkt p = mkpkt(5000000000ull + (uint64_t)i * 1000000000ull, 1);
		sink_set_write(&set, &p, 1);
	}
	sink_set_close(&set);
	CHECK_EQ(pcap_records(path, NULL), 6);
	CHECK(access(path_in_tmp("forged.pcap.1"), F_OK) != 0);
}

/* JSON Lines (sink_jsonl.c): lines are written from where they are (writev,
 * sink_file_put_ref), not copied: to stdout as a non-blocking pipe whose
 * reader takes small bites (short writes, resumed mid-iovec), with rotation
 * by size (whole lines per file), and to /dev/full (counted lost). */
struct pipe_reader {
	int fd;
	uint8_t *got;
	size_t n, cap;
};

static void *read_pipe(void *arg)
{
	struct pipe_reader *r = arg;
	ssize_t k;
	while (r->n < r->cap && (k = read(r->fd, r->got + r->n, 777)) != 0) {
		if (k > 0)
			r->n += (size_t)k;
		usleep(100);
	}
	return NULL;
}

static void mkline(uint8_t *b, size_t len, int i)
{
	for (size_t j = 0; j < len - 1; j++)
		b[j] = (uint8_t)('a' + (j * 7 + (size_t)i) % 26);
	b[len - 1] = '\n';
}

TEST(jsonl_lines_written_in_place)
{
	enum { N = 100, LEN = 9000 };
	static uint8_t lines[N][LEN], want[N * LEN];
	struct pkt pk[N];
	for (int i = 0; i < N; i++) {
		mkline(lines[i], LEN, i);
		memcpy(want + (size_t)i * LEN, lines[i], LEN);
		pk[i] = (struct pkt){ .ts_ns = (uint64_t)i, .hdr = lines[i], .hdr_len = LEN };
	}
	/* a non-blocking pipe and a slow reader: the writes come back short */
	int pfd[2];
	if (!CHECK_EQ(pipe2(pfd, O_NONBLOCK), 0))
		return;
	struct pipe_reader r = { .fd = pfd[0], .got = malloc(N * LEN + 1), .cap = N * LEN + 1 };
	pthread_t th;
	if (!CHECK(r.got) || !CHECK_EQ(pthread_create(&th, NULL, read_pipe, &r), 0))
		return;
	fflush(stdout);
	int saved = dup(STDOUT_FILENO);
	dup2(pfd[1], STDOUT_FILENO);
	close(pfd[1]);
	struct sink_set set = { 0 };
	struct sink_opts o = { 0 };
	const char *err = NULL;
	int added = sink_set_add(&set, &sink_jsonl_ops, "-", &o, &err);
	if (!added) {
		sink_set_write(&set, pk, 64);
		sink_set_write(&set, pk + 64, N - 64);
		sink_set_flush(&set);
	}
	uint64_t sent = added ? 0 : set.v[0]->ctr.packets, lost = added ? 0 : set.v[0]->ctr.lost_packets;
	sink_set_close(&set);
	dup2(saved, STDOUT_FILENO); /* the pipe's last writer gone: the reader sees its end */
	close(saved);
	pthread_join(th, NULL);
	close(pfd[0]);
	CHECK_EQ(added, 0);
	CHECK_EQ(sent, N);
	CHECK_EQ(lost, 0);
	CHECK_EQ(r.n, (size_t)N * LEN);
	CHECK(r.n == (size_t)N * LEN && !memcmp(r.got, want, r.n));
	free(r.got);

	/* rotation by size: 3 lines per file, each file whole lines */
	const char *path = path_in_tmp("rot.jsonl");
	struct sink_opts ro = { .rotate_bytes = 3 * LEN + 10 };
	memset(&set, 0, sizeof(set));
	if (CHECK_EQ(sink_set_add(&set, &sink_jsonl_ops, path, &ro, &err), 0)) {
		sink_set_write(&set, pk, 10);
		sink_set_flush(&set);
		CHECK_EQ(set.v[0]->ctr.files, 4);
	}
	sink_set_close(&set);
	size_t total = 0;
	for (int i = 0; i < 4; i++) {
		char name[300];
		size_t len = 0;
		snprintf(name, sizeof(name), i ? "%s.%d" : "%s", path, i);
		uint8_t *b = slurp(name, &len);
		CHECK_EQ(len, (size_t)(i < 3 ? 3 : 1) * LEN);
		if (b && len)
			CHECK(!memcmp(b, want + total, len));
		total += len;
		free(b);
	}
	CHECK_EQ(total, (size_t)10 * LEN);

	/* a full disk: every line counted lost, nothing else breaks */
	memset(&set, 0, sizeof(set));
	if (CHECK_EQ(sink_set_add(&set, &sink_jsonl_ops, "/dev/full", &o, &err), 0)) {
		sink_set_write(&set, pk, 64);
		sink_set_flush(&set);
		CHECK_EQ(set.v[0]->ctr.packets, 0);
		CHECK_EQ(set.v[0]->ctr.lost_packets, 64);
	}
	sink_set_close(&set);
}
