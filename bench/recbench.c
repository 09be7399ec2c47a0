/* Micro-benchmark: the cost of an HTTP record (parse, build, hand to its sink) per exchange, in one process, no I/O. */
#include "http/records.h"
#include "pipeline/conn.h"
#include "pipeline/pipeline.h"
#include "sinks/sink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * The exchange of bench part k (bench/run.sh): h2load's GET of a 4 KiB file
 * from nginx over one keep-alive connection, the response as nginx writes it
 * (head and body in one write). The body: JSON text (escaped in the record),
 * or random bytes (base64). Modes, timed in turn over the same exchanges:
 *   plain    the chain without records (the flow engine, no sink)
 *   records  with --http-log (default 64 KiB body cap)
 *   headers  with --http-body-max 0
 * Each record is copied once into a 1 MiB buffer, as a sink queue does.
 * Prints ns per exchange per mode and records' ns above plain: the part of
 * bench part k's figures that is the records' own work, without the noise
 * of nginx, h2load and a shared machine.
 * Usage: recbench [EXCHANGES] [text|bin]
 */

static uint8_t sinkbuf[1u << 20];
static size_t sinkpos;
static uint64_t lines, line_bytes;

static void emit(void *arg, const uint8_t *line, size_t n, uint64_t ts)
{
	(void)arg;
	(void)ts;
	if (sinkpos + n > sizeof(sinkbuf))
		sinkpos = 0;
	if (n <= sizeof(sinkbuf))
		memcpy(sinkbuf + sinkpos, line, n);
	sinkpos += n;
	lines++;
	line_bytes += n;
}

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); /* steal time apart */
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static size_t make_body(uint8_t *b, size_t n, int text)
{
	uint32_t x = 1;
	size_t k = 0;
	if (!text) {
		for (size_t i = 0; i < n; i++) {
			x = x * 1103515245u + 12345u;
			b[i] = (uint8_t)(x >> 16);
		}
		return n;
	}
	for (unsigned i = 0; k + 120 < n; i++) {
		x = x * 1103515245u + 12345u;
		k += (size_t)snprintf((char *)b + k, n - k,
				      "%s{\"id\": %u, \"name\": \"user%u\", \"email\": \"u%u@example.com\", "
				      "\"active\": %s, \"score\": 0.%u}", i ? ", " : "[", i,
				      (x >> 8) % 1000000, i, i % 2 ? "true" : "false", x % 1000000007u);
	}
	b[k++] = ']';
	return k;
}

static double run(int mode, size_t n, const uint8_t *req, size_t reqn, const uint8_t *resp,
		  size_t respn)
{
	struct rec_config rc = { .body_max = mode == 2 ? 0 : REC_DEFAULT_BODY_MAX, .emit = emit };
	struct rec_builder *rec = mode ? rec_new(&rc) : NULL;
	struct sink_set none = { 0 };
	struct pipeline_opts po = { .flow = { .mss = 1460, .sinks = &none }, .records = rec };
	const char *why = "";
	struct pipeline *pl = pipeline_new(&po, &why);
	if (!pl || (mode && !rec)) {
		fprintf(stderr, "recbench: %s\n", why);
		exit(1);
	}
	uint64_t origin = pipeline_origin_new(pl);
	struct conn_meta *m = conn_meta_new();
	snprintf(m->alpn, sizeof(m->alpn), "http/1.1");
	snprintf(m->comm, sizeof(m->comm), "nginx");
	struct conn_open o = { .id = { origin, 1 }, .ts_ns = 1, .family = 4, .side = 1,
			       .client_port = 40000, .server_port = 443, .meta = m };
	memcpy(o.client_addr, "\x7f\x00\x00\x01", 4);
	memcpy(o.server_addr, "\x7f\x00\x00\x01", 4);
	if (pipeline_open(pl, &o)) {
		fprintf(stderr, "recbench: open failed\n");
		exit(1);
	}
	conn_meta_unref(m);
	uint64_t before = lines, ts = 2, off[2] = { 0, 0 }, t0 = now_ns();
	for (size_t i = 0; i < n; i++) {
		pipeline_data(pl, &o.id, 0, ts++, off[0], req, reqn, NULL);
		pipeline_data(pl, &o.id, 1, ts++, off[1], resp, respn, NULL);
		off[0] += reqn;
		off[1] += respn;
	}
	uint64_t t1 = now_ns();
	if (getenv("RECBENCH_DEBUG"))
		for (size_t i = 0; i < pipeline_n_stages(pl); i++) {
			struct kv kv[STAGE_MAX_COUNTERS];
			size_t k = pipeline_stage_counters(pl, i, kv, STAGE_MAX_COUNTERS);
			for (size_t j = 0; j < k; j++)
				fprintf(stderr, "%s %s=%llu\n", pipeline_stage_name(pl, i), kv[j].key,
					(unsigned long long)kv[j].v);
		}
	pipeline_close_all(pl, ts);
	pipeline_free(pl);
	if (rec)
		rec_free(rec);
	if (mode && lines - before != n) {
		fprintf(stderr, "recbench: %llu records for %zu exchanges\n",
			(unsigned long long)(lines - before), n);
		exit(1);
	}
	return (double)(t1 - t0) / (double)n;
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
	int text = !(argc > 2 && !strcmp(argv[2], "bin"));
	static uint8_t body[4096], resp[8192];
	const char *req = "GET /4k HTTP/1.1\r\nHost: 127.0.0.1:8443\r\nUser-Agent: h2load nghttp2/1.52.0\r\n"
			  "Accept: */*\r\n\r\n";
	size_t bn = make_body(body, sizeof(body) - 1, text);
	int hn = snprintf((char *)resp, sizeof(resp),
			  "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 03 Dec 2026 14:00:00 GMT\r\n"
			  "Content-Type: application/octet-stream\r\nContent-Length: %zu\r\n"
			  "Last-Modified: Thu, 03 Dec 2026 13:59:00 GMT\r\nConnection: keep-alive\r\n"
			  "ETag: \"692f6f2c-fff\"\r\nAccept-Ranges: bytes\r\n\r\n", bn);
	memcpy(resp + hn, body, bn);
	size_t respn = (size_t)hn + bn;
	static const char *const names[] = { "plain", "records", "headers" };
	double best[3] = { 0, 0, 0 };
	const char *only = getenv("RECBENCH_MODE"); /* profiling: one mode only */
	for (int round = 0; round < 7; round++)
		for (int mode = 0; mode < 3; mode++) {
			if (only && strcmp(only, names[mode]))
				continue;
			double t = run(mode, n, (const uint8_t *)req, strlen(req), resp, respn);
			if (!round || t < best[mode])
				best[mode] = t;
		}
	for (int mode = 0; mode < 3; mode++)
		printf("%-8s %8.0f ns per exchange\n", names[mode], best[mode]);
	printf("records' own: %.0f ns per record (%s body), headers only %.0f ns; %.0f bytes per record\n",
	       best[1] - best[0], text ? "text" : "binary", best[2] - best[0],
	       lines ? (double)line_bytes / (double)lines : 0.0);
	return 0;
}
