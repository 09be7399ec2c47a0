/* Unit tests for agent/metrics.c (stats lines as Prometheus samples, escapes, JSON) and agent/units.c (unit names). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/metrics.h"
#include "agent/units.h"
#include "unit.h"

static const char lines[] =
	"pid=1 uid=0 comm=x state=attached conns=3\n"        /* not a KIND line: the table does these */
	"sink name=pcap target=/a\"b\\c packets=5 queued_bytes=3 broken=0\n"
	"tunnel target=h:1 state=connected tls=yes connects=2\n"
	"refused uid=33 attaches=4\n"
	"collector_agent name=x host=h state=gone peer=1.2.3.4:5 vlan=7 frames=1\n"
	"metrics listen=9100 scrapes=2\n"
	"garbage\n"
	"\n"
	"stage name=flows open=1";                            /* no newline at the end */

TEST(metrics_lines_to_prometheus)
{
	struct metric_set set;
	CHECK_EQ(metrics_set_init(&set), 0);
	metrics_parse_lines(&set, lines);
	metrics_sort(&set);
	size_t len = 0;
	char *p = metrics_prometheus(&set, &len);
	CHECK(p != NULL);
	CHECK_EQ(strlen(p), len);
	CHECK(strstr(p, "# TYPE tlsmirror_sink_packets_total counter\n"
			"tlsmirror_sink_packets_total{name=\"pcap\",target=\"/a\\\"b\\\\c\"} 5\n"));
	CHECK(strstr(p, "# TYPE tlsmirror_sink_queued_bytes gauge\n"));
	CHECK(strstr(p, "tlsmirror_tunnel_state{target=\"h:1\",tls=\"yes\",state=\"connected\"} 1\n"));
	CHECK(strstr(p, "tlsmirror_tunnel_connects_total{target=\"h:1\",tls=\"yes\"} 2\n"));
	CHECK(strstr(p, "tlsmirror_refused_attaches_total{uid=\"33\"} 4\n"));
	CHECK(strstr(p, "tlsmirror_collector_agent_frames_total{name=\"x\",host=\"h\",vlan=\"7\"} 1\n"));
	CHECK(strstr(p, "tlsmirror_collector_agent_state{name=\"x\",host=\"h\",vlan=\"7\",state=\"gone\"} 1\n"));
	CHECK(strstr(p, "tlsmirror_metrics_scrapes_total{listen=\"9100\"} 2\n"));
	CHECK(strstr(p, "tlsmirror_stage_open{name=\"flows\"} 1\n"));
	CHECK(!strstr(p, "peer"));
	CHECK(!strstr(p, "conns"));
	CHECK(!strstr(p, "garbage"));
	char *j = metrics_json(&set, &len);
	CHECK(j != NULL);
	CHECK(strstr(j, "{\"name\":\"tlsmirror_sink_packets_total\",\"type\":\"counter\","
			"\"labels\":{\"name\":\"pcap\",\"target\":\"/a\\\"b\\\\c\"},\"value\":5}"));
	free(p);
	free(j);
	metrics_free(&set);
}

TEST(metrics_label_bytes_and_caps)
{
	struct metric_set set;
	CHECK_EQ(metrics_set_init(&set), 0);
	/* control and non-ASCII bytes in a label value become '_' */
	metrics_parse_lines(&set, "sink name=a\x01\xc3\xa9 packets=1\n");
	CHECK_EQ(set.n, 1);
	CHECK(!strcmp(set.v[0].lv[0], "a___"));
	/* more lines than samples allowed: counted, not shown */
	char line[64];
	for (int i = 0; i < METRICS_MAX_SAMPLES + 10; i++) {
		snprintf(line, sizeof(line), "x n=%d v=1\n", i);
		metrics_parse_lines(&set, line);
	}
	CHECK_EQ(set.n, METRICS_MAX_SAMPLES);
	CHECK(set.truncated >= 10);
	metrics_free(&set);
}

TEST(units_names)
{
	char out[256];
	const char *why;
	CHECK_EQ(unit_name_check("nginx", out, sizeof(out), &why), 0);
	CHECK(!strcmp(out, "nginx.service"));
	CHECK_EQ(unit_name_check("php8.2-fpm.service", out, sizeof(out), &why), 0);
	CHECK(!strcmp(out, "php8.2-fpm.service"));
	CHECK_EQ(unit_name_check("getty@tty1.service", out, sizeof(out), &why), 0);
	CHECK_EQ(unit_name_check("php8.2-fpm", out, sizeof(out), &why), 0);
	CHECK(!strcmp(out, "php8.2-fpm.service"));
	static const char *const bad[] = { "", "../x", "a/b", "x.socket", "x.timer", "-x", ".x",
					   "@.service", "a b", "a\nb", "a%i" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_EQ(unit_name_check(bad[i], out, sizeof(out), &why), -EINVAL);
	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	CHECK_EQ(unit_name_check(longname, out, sizeof(out), &why), -EINVAL);
}
