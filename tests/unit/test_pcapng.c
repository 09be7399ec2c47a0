/* Unit tests for sinks/pcapng.c and sinks/sink_pcapng.c: block bytes, the comment, and files tshark reads. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pipeline/conn.h"
#include "sinks/pcapng.h"
#include "sinks/sink.h"
#include "transport/ring.h"
#include "unit.h"

static uint32_t host32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static uint16_t host16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static const char *tmp_path(const char *name)
{
	static char buf[4][256];
	static int i;
	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", unit_tmpdir(), name);
	return buf[i];
}

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

/* Runs a shell command, returns its stdout (NUL-terminated, caller frees). */
static char *run(const char *cmd)
{
	FILE *f = popen(cmd, "r");
	if (!f)
		return NULL;
	size_t cap = 1 << 20, n = 0;
	char *out = malloc(cap);
	while (out && n + 1 < cap) {
		size_t r = fread(out + n, 1, cap - 1 - n, f);
		if (!r)
			break;
		n += r;
	}
	int rc = pclose(f);
	if (!out || rc != 0) {
		free(out);
		return NULL;
	}
	out[n] = 0;
	return out;
}

static struct conn_meta meta_nginx(void)
{
	struct conn_meta m = { .refs = 1, .kind = CONN_KIND_CAPTURE, .side = 1,
			       .map_method = RING_MAP_FD, .tls_version = 0x0304,
			       .real_server_port = 443, .pid = 123, .uid = 33 };
	strcpy(m.comm, "nginx");
	strcpy(m.sni, "example.com");
	strcpy(m.alpn, "h2");
	strcpy(m.cipher, "TLS_AES_128_GCM_SHA256");
	return m;
}

TEST(pcapng_shb_bytes)
{
	uint8_t b[256];
	memset(b, 0xee, sizeof(b));
	size_t n = pcapng_put_shb(b, sizeof(b), "x86_64", "Linux 6.1", "tlsmirror 1", NULL);
	/* 28 fixed + hardware 4+8 + os 4+12 + userappl 4+12 + endofopt 4 */
	if (!CHECK_EQ(n, 28 + 12 + 16 + 16 + 4))
		return;
	CHECK_EQ(host32(b), 0x0A0D0D0A);      /* block type */
	CHECK_EQ(host32(b + 4), n);           /* total length */
	CHECK_EQ(host32(b + 8), 0x1A2B3C4D);  /* byte-order magic */
	CHECK_EQ(host16(b + 12), 1);          /* major */
	CHECK_EQ(host16(b + 14), 0);          /* minor */
	CHECK_EQ(host32(b + 16), 0xffffffff); /* section length -1 */
	CHECK_EQ(host32(b + 20), 0xffffffff);
	CHECK_EQ(host16(b + 24), 2);          /* shb_hardware */
	CHECK_EQ(host16(b + 26), 6);
	CHECK_MEM(b + 28, "x86_64\0\0", 8);   /* value, zero padding to 32 bits */
	CHECK_EQ(host16(b + 36), 3);          /* shb_os */
	CHECK_EQ(host16(b + 38), 9);
	CHECK_MEM(b + 40, "Linux 6.1\0\0\0", 12);
	CHECK_EQ(host16(b + 52), 4);          /* shb_userappl */
	CHECK_EQ(host16(b + 54), 11);
	CHECK_EQ(host32(b + 68), 0);          /* opt_endofopt */
	CHECK_EQ(host32(b + n - 4), n);       /* total length repeated */
	CHECK_EQ(b[n], 0xee);                 /* nothing beyond */
	CHECK_EQ(pcapng_put_shb(b, n - 1, "x86_64", "Linux 6.1", "tlsmirror 1", NULL), 0);
}

TEST(pcapng_idb_bytes)
{
	uint8_t b[128];
	size_t n = pcapng_put_idb(b, sizeof(b), PCAPNG_LINKTYPE_ETHERNET, 262144, "web1", "d");
	/* 20 fixed + if_name 4+4 + if_description 4+4 + if_tsresol 4+4 + endofopt 4 */
	if (!CHECK_EQ(n, 20 + 8 + 8 + 8 + 4))
		return;
	CHECK_EQ(host32(b), 1);
	CHECK_EQ(host32(b + 4), n);
	CHECK_EQ(host16(b + 8), 1);       /* link type Ethernet */
	CHECK_EQ(host16(b + 10), 0);      /* reserved */
	CHECK_EQ(host32(b + 12), 262144); /* snaplen */
	CHECK_EQ(host16(b + 16), 2);      /* if_name */
	CHECK_EQ(host16(b + 18), 4);
	CHECK_MEM(b + 20, "web1", 4);
	CHECK_EQ(host16(b + 24), 3);      /* if_description */
	CHECK_MEM(b + 28, "d\0\0\0", 4);
	CHECK_EQ(host16(b + 32), 9);      /* if_tsresol */
	CHECK_EQ(host16(b + 34), 1);
	CHECK_EQ(b[36], 9);               /* 10^-9 s */
	CHECK_EQ(host32(b + 40), 0);      /* opt_endofopt */
	CHECK_EQ(host32(b + n - 4), n);
}

TEST(pcapng_epb_bytes)
{
	static const uint8_t hdr[3] = { 1, 2, 3 }, pay[2] = { 4, 5 };
	uint8_t b[128];
	uint64_t ts = 0x0000000123456789ull;
	size_t n = pcapng_put_epb(b, sizeof(b), 7, ts, hdr, 3, pay, 2, NULL, 0, 9, "hi", 2);
	/* 32 fixed + 5 bytes padded to 8 + comment 4+4 + endofopt 4 */
	if (!CHECK_EQ(n, 32 + 8 + 8 + 4) || !CHECK_EQ(n, pcapng_epb_len(5, 2)))
		return;
	CHECK_EQ(host32(b), 6);
	CHECK_EQ(host32(b + 8), 7);          /* interface */
	CHECK_EQ(host32(b + 12), 0x1);       /* timestamp, high 32 bits */
	CHECK_EQ(host32(b + 16), 0x23456789); /* low 32 bits */
	CHECK_EQ(host32(b + 20), 5);         /* captured */
	CHECK_EQ(host32(b + 24), 9);         /* original */
	CHECK_MEM(b + 28, "\1\2\3\4\5\0\0\0", 8);
	CHECK_EQ(host16(b + 36), 1);         /* opt_comment */
	CHECK_EQ(host16(b + 38), 2);
	CHECK_MEM(b + 40, "hi\0\0", 4);
	CHECK_EQ(host32(b + 44), 0);
	CHECK_EQ(host32(b + n - 4), n);
	/* without a comment: no options at all */
	CHECK_EQ(pcapng_put_epb(b, sizeof(b), 0, ts, hdr, 3, pay, 1, NULL, 0, 4, NULL, 0), 32 + 4);
	CHECK_EQ(host32(b + 32), 36);
	CHECK_EQ(pcapng_put_epb(b, 35, 0, ts, hdr, 3, pay, 1, NULL, 0, 4, NULL, 0), 0);
}

TEST(pcapng_comment_every_field)
{
	struct conn_meta m = meta_nginx();
	char out[PCAPNG_COMMENT_MAX];
	size_t n = pcapng_format_meta(out, sizeof(out), &m);
	const char *want = "tlsmirror: process=nginx pid=123 uid=33 side=server sni=example.com "
			   "alpn=h2 tls=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256 server_port=443 "
			   "map=fd source=capture";
	CHECK_EQ(n, strlen(want));
	if (!CHECK(!strcmp(out, want)))
		printf("  got: %s\n", out);
	/* at a collector, a synthetic stream: host and parent; unknown ones left out */
	struct conn_meta s = { .kind = CONN_KIND_SYNTHETIC, .tls_version = 0x0303,
			       .parent = { 5, 9 } };
	strcpy(s.host, "agent-1");
	pcapng_format_meta(out, sizeof(out), &s);
	want = "tlsmirror: side=client host=agent-1 tls=TLSv1.2 source=synthetic parent=5/9";
	if (!CHECK(!strcmp(out, want)))
		printf("  got: %s\n", out);
}

TEST(pcapng_comment_escapes)
{
	struct conn_meta m = { .kind = CONN_KIND_CAPTURE, .tls_version = 0x7f1c };
	strcpy(m.comm, "Web Content");         /* a blank in a process name */
	strcpy(m.sni, "a\\b\x01\xc3\xa9");     /* backslash, control byte, UTF-8 */
	char out[PCAPNG_COMMENT_MAX];
	pcapng_format_meta(out, sizeof(out), &m);
	const char *want = "tlsmirror: process=Web\\x20Content side=client "
			   "sni=a\\x5cb\\x01\\xc3\\xa9 tls=0x7f1c source=capture";
	if (!CHECK(!strcmp(out, want)))
		printf("  got: %s\n", out);
	/* the longest metadata fits; a small buffer is cut, NUL-terminated */
	memset(m.sni, 1, sizeof(m.sni) - 1);
	memset(m.host, 2, sizeof(m.host) - 1);
	memset(m.alpn, 3, sizeof(m.alpn) - 1);
	memset(m.cipher, 4, sizeof(m.cipher) - 1);
	memset(m.comm, 5, sizeof(m.comm) - 1);
	size_t n = pcapng_format_meta(out, sizeof(out), &m);
	CHECK(n < sizeof(out) - 1 && strstr(out, " source=capture"));
	char small[40];
	n = pcapng_format_meta(small, sizeof(small), &m);
	CHECK(n < sizeof(small) && strlen(small) == n);
}

/* A frame: 14 bytes of Ethernet header, then len payload bytes starting at seed. */
static uint8_t frames[8][200];

static struct pkt mkpkt(int i, uint64_t ts_ns, uint32_t len, const struct conn_tag *t)
{
	uint8_t *f = frames[i % 8];
	for (int k = 0; k < 200; k++)
		f[k] = (uint8_t)(i * 31 + k);
	f[12] = 0x88; /* an EtherType no dissector claims: the bytes stay data */
	f[13] = 0xb5;
	struct pkt p = { .ts_ns = ts_ns, .hdr = f, .hdr_len = 14, .payload = f + 14,
			 .payload_len = len, .conn = t };
	return p;
}

static struct conn_tag *mktag(uint64_t conn, const struct conn_meta *m)
{
	struct conn_id id = { 1, conn };
	uint8_t a[16] = { 127, 0, 0, 1 };
	struct conn_meta *copy = conn_meta_new();
	if (!copy)
		return NULL;
	uint32_t refs = copy->refs;
	*copy = *m;
	copy->refs = refs;
	struct conn_tag *t = conn_tag_new(&id, 4, a, 40000, a, 443, copy);
	conn_meta_unref(copy);
	return t;
}

static int open_png(struct sink_set *set, const char *path, const struct sink_opts *o)
{
	const char *err = NULL;
	memset(set, 0, sizeof(*set));
	return sink_set_add(set, &sink_pcapng_ops, path, o, &err);
}

/* tshark's view of a file: one line per frame, "comment|interface|epoch ns". */
static char *tshark_view(const char *path)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "tshark -n -r '%s' -T fields -E separator='|' "
		 "-e frame.comment -e frame.interface_name -e frame.time_epoch 2>/dev/null", path);
	return run(cmd);
}

/* The frames tshark reads, rewritten by tshark as nanosecond classic pcap. */
static uint8_t *tshark_frames(const char *path, size_t *len)
{
	char cmd[1024];
	const char *out = tmp_path("via-tshark.pcap");
	snprintf(cmd, sizeof(cmd), "tshark -n -r '%s' -F nsecpcap -w '%s' 2>/dev/null", path, out);
	char *r = run(cmd);
	if (!r)
		return NULL;
	free(r);
	return slurp(out, len);
}

TEST(pcapng_file_tshark_reads_comments_and_frames)
{
	struct sink_set set;
	struct sink_opts o = { 0 };
	const char *path = tmp_path("one.pcapng");
	if (!CHECK_EQ(open_png(&set, path, &o), 0))
		return;
	struct conn_meta m = meta_nginx();
	struct conn_tag *t = mktag(1, &m);
	struct pkt k[3] = { mkpkt(0, 1700000000123456789ull, 40, t),
			    mkpkt(1, 1700000000223456789ull, 0, t),
			    mkpkt(2, 1700000000323456789ull, 186, NULL) };
	sink_set_conn_begin(&set, t, k[0].ts_ns);
	sink_set_write(&set, k, 3);
	sink_set_conn_end(&set, t, k[1].ts_ns);
	sink_set_close(&set);
	conn_tag_unref(t);
	struct stat st;
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);

	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	char *v = tshark_view(path);
	if (!CHECK(v))
		return;
	char want[2048];
	snprintf(want, sizeof(want),
		 "tlsmirror: process=nginx pid=123 uid=33 side=server sni=example.com alpn=h2 "
		 "tls=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256 server_port=443 map=fd "
		 "source=capture|%s|1700000000.123456789\n"
		 "|%s|1700000000.223456789\n|%s|1700000000.323456789\n", host, host, host);
	if (!CHECK(!strcmp(v, want)))
		printf("  tshark:\n%s  want:\n%s", v, want);
	free(v);

	size_t len = 0;
	uint8_t *b = tshark_frames(path, &len);
	if (!CHECK(b))
		return;
	size_t at = 24;
	for (int i = 0; i < 3; i++) {
		uint32_t n = 14 + k[i].payload_len;
		if (!CHECK(at + 16 + n <= len))
			break;
		CHECK_EQ((uint64_t)host32(b + at) * 1000000000ull + host32(b + at + 4), k[i].ts_ns);
		CHECK_EQ(host32(b + at + 8), n);
		CHECK_MEM(b + at + 16, frames[i], n);
		at += 16 + n;
	}
	CHECK_EQ(at, len);
	free(b);
}

/* Counts the lines of s that start with prefix. */
static int count_lines(const char *s, const char *prefix)
{
	int n = 0;
	for (const char *l = s; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		n += !strncmp(l, prefix, strlen(prefix));
	return n;
}

TEST(pcapng_rotation_reannounces_open_connections)
{
	struct sink_set set;
	struct sink_opts o = { .rotate_bytes = 4096 };
	const char *path = tmp_path("rot.pcapng");
	if (!CHECK_EQ(open_png(&set, path, &o), 0))
		return;
	struct conn_meta a = meta_nginx(), b = meta_nginx();
	strcpy(b.sni, "other.example");
	struct conn_tag *ta = mktag(1, &a), *tb = mktag(2, &b);
	uint64_t ts = 1700000000000000000ull;
	sink_set_conn_begin(&set, ta, ts);
	sink_set_conn_begin(&set, tb, ts);
	/* 30 packets of about 250 bytes: two files, a spans both, b ends in the first */
	for (int i = 0; i < 30; i++) {
		struct pkt k = mkpkt(i, ts + (uint64_t)i, 186, i < 5 && (i & 1) ? tb : ta);
		sink_set_write(&set, &k, 1);
		if (i == 5)
			sink_set_conn_end(&set, tb, ts + (uint64_t)i);
	}
	sink_set_conn_end(&set, ta, ts + 30);
	CHECK_EQ(set.v[0]->ctr.files, 2);
	sink_set_close(&set);
	conn_tag_unref(ta);
	conn_tag_unref(tb);

	char second[300];
	snprintf(second, sizeof(second), "%s.1", path);
	char *v1 = tshark_view(path), *v2 = tshark_view(second);
	if (CHECK(v1 && v2)) {
		CHECK_EQ(count_lines(v1, "tlsmirror: process=nginx"), 2); /* a and b, once each */
		CHECK_EQ(count_lines(v1, "tlsmirror: process=nginx pid=123 uid=33 side=server "
					  "sni=other.example"), 1);
		/* the second file: its first packet is a's, announced again */
		CHECK_EQ(count_lines(v2, "tlsmirror: process=nginx pid=123 uid=33 side=server "
					  "sni=example.com"), 1);
		CHECK_EQ(count_lines(v2, "tlsmirror"), 1);
		CHECK(!strncmp(v2, "tlsmirror:", 10));
		CHECK_EQ(count_lines(v1, "") + count_lines(v2, ""), 30);
	}
	free(v1);
	free(v2);
	/* each file starts with a Section Header, then the Interface Description */
	size_t len = 0;
	uint8_t *f = slurp(second, &len);
	if (CHECK(f && len > 64)) {
		CHECK_EQ(host32(f), 0x0A0D0D0A);
		CHECK_EQ(host32(f + host32(f + 4)), 1);
		CHECK(len <= 4096);
	}
	free(f);
}

TEST(pcapng_one_interface_per_agent_host)
{
	struct sink_set set;
	struct sink_opts o = { .rotate_bytes = 8192 };
	const char *path = tmp_path("hosts.pcapng");
	if (!CHECK_EQ(open_png(&set, path, &o), 0))
		return;
	struct conn_meta a = { .kind = CONN_KIND_TUNNEL }, b = a;
	strcpy(a.host, "agent-a");
	strcpy(b.host, "agent b"); /* shown as it is in if_name */
	struct conn_tag *ta = mktag(1, &a), *tb = mktag(2, &b);
	uint64_t ts = 1700000000000000000ull;
	sink_set_conn_begin(&set, ta, ts);
	sink_set_conn_begin(&set, tb, ts);
	for (int i = 0; i < 40; i++) {
		struct pkt k = mkpkt(i, ts + (uint64_t)i, 186, (i & 1) ? ta : tb); /* b first */
		sink_set_write(&set, &k, 1);
	}
	sink_set_conn_end(&set, ta, ts + 40);
	sink_set_conn_end(&set, tb, ts + 40);
	CHECK_EQ(set.v[0]->ctr.files, 2);
	char stats[512] = "";
	sink_set_format(&set, stats, sizeof(stats), 0);
	CHECK(strstr(stats, " interfaces=3 comments=4 comments_untracked=0"));
	sink_set_close(&set);
	conn_tag_unref(ta);
	conn_tag_unref(tb);
	char second[300];
	snprintf(second, sizeof(second), "%s.1", path);
	const char *files[2] = { path, second };
	for (int i = 0; i < 2; i++) {
		char *v = tshark_view(files[i]);
		if (!CHECK(v))
			continue;
		CHECK_EQ(count_lines(v, "tlsmirror: side=client host=agent-a source=tunnel|agent-a|"), 1);
		CHECK_EQ(count_lines(v, "tlsmirror: side=client host=agent\\x20b source=tunnel|agent b|"), 1);
		/* every other packet is on one of the two, without a comment */
		CHECK_EQ(count_lines(v, "|agent-a|") + count_lines(v, "|agent b|") + 2,
			 count_lines(v, ""));
		free(v);
	}
}

TEST(pcapng_stdout_and_bad_target)
{
	struct sink_set set;
	struct sink_opts o = { 0 };
	const char *err = NULL;
	memset(&set, 0, sizeof(set));
	CHECK_EQ(sink_set_add(&set, &sink_pcapng_ops, "/nonexistent-dir/x.pcapng", &o, &err),
		 -ENOENT);
	CHECK(err && strstr(err, "cannot create"));
	CHECK_EQ(set.n, 0);
	sink_set_close(&set);
	/* a packet whose tag was never announced: written, no comment, counted */
	const char *path = tmp_path("untracked.pcapng");
	if (!CHECK_EQ(open_png(&set, path, &o), 0))
		return;
	struct conn_meta m = meta_nginx();
	struct conn_tag *t = mktag(3, &m);
	struct pkt k = mkpkt(0, 1, 10, t);
	sink_set_write(&set, &k, 1);
	char stats[512] = "";
	sink_set_format(&set, stats, sizeof(stats), 0);
	CHECK(strstr(stats, " comments=0 comments_untracked=1"));
	sink_set_close(&set);
	conn_tag_unref(t);
	char *v = tshark_view(path);
	CHECK(v && count_lines(v, "|") == 1);
	free(v);
}

TEST(pcapng_lost_buffer_starts_a_new_section)
{
	struct sink_set set;
	struct sink_opts o = { 0 };
	const char *path = tmp_path("lost.pcapng");
	if (!CHECK_EQ(open_png(&set, path, &o), 0))
		return;
	struct conn_meta m = meta_nginx();
	struct conn_tag *t = mktag(1, &m);
	uint64_t ts = 1700000000000000000ull;
	sink_set_conn_begin(&set, t, ts);
	struct pkt k = mkpkt(0, ts, 186, t);
	sink_set_write(&set, &k, 1);
	sink_set_flush(&set);
	struct stat st;
	if (!CHECK(stat(path, &st) == 0 && st.st_size > 0))
		return;
	/* the file may grow by 1000 bytes only: the next buffer is written in part */
	struct rlimit old, lim;
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = (rlim_t)st.st_size + 1000;
	void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
	CHECK_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
	for (int i = 1; i <= 20; i++) {
		k = mkpkt(i, ts + (uint64_t)i, 186, t);
		sink_set_write(&set, &k, 1);
	}
	sink_set_flush(&set);
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, old_sig);
	CHECK_EQ(set.v[0]->ctr.lost_packets, 20);
	k = mkpkt(21, ts + 21, 186, t);
	sink_set_write(&set, &k, 1);
	sink_set_conn_end(&set, t, ts + 21);
	sink_set_close(&set);
	conn_tag_unref(t);
	/* cut back to the first packet, then a new section: read cleanly, announced again */
	char *v = tshark_view(path);
	if (CHECK(v)) {
		CHECK_EQ(count_lines(v, ""), 2);
		CHECK_EQ(count_lines(v, "tlsmirror: process=nginx"), 2);
	}
	free(v);
}
