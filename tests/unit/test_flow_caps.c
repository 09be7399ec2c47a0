/* Unit tests for the caps of flows/flow.c: open flows in total and per origin, refusals and orphan bytes counted. */
#include <errno.h>
#include <string.h>

#include "flows/flow.h"
#include "unit.h"

/* A table without sinks and with the given caps. */
static struct flow_table *capped(size_t total, size_t per_origin)
{
	struct flow_config cfg = { .max_flows = total, .max_flows_per_origin = per_origin };
	return flow_table_new(&cfg);
}

/* Opens connection conn of proc (a 4-tuple of its own). */
static int open_conn(struct flow_table *t, uint64_t proc, uint64_t conn)
{
	struct conn_open in = {
		.id.origin = proc, .id.conn = conn, .ts_ns = 1000, .family = 4, .side = 1,
		.client_port = (uint16_t)(1000 + conn), .server_port = 443,
		.client_addr = { 10, 0, (uint8_t)proc, 1 }, .server_addr = { 10, 0, 0, 2 },
	};
	return flow_open(t, &in);
}

TEST(flow_cap_per_origin_refuses_and_counts)
{
	struct flow_table *t = capped(100, 3);
	if (!CHECK(t))
		return;
	for (uint64_t c = 1; c <= 3; c++)
		CHECK_EQ(open_conn(t, 1, c), 0);
	CHECK_EQ(open_conn(t, 1, 4), -EMFILE);
	CHECK_EQ(open_conn(t, 1, 5), -EMFILE);
	CHECK_EQ(open_conn(t, 2, 1), 0); /* another origin is not held back */
	struct flow_origin_stats s = flow_origin_stats(t, 1);
	CHECK_EQ(s.open, 3);
	CHECK_EQ(s.refused, 2);
	CHECK_EQ(flow_origin_stats(t, 2).refused, 0);
	CHECK_EQ(flow_counters(t)->flows_refused, 2);
	CHECK_EQ(flow_counters(t)->flows_open, 4);
	/* the refused connection's data is counted, not mirrored */
	CHECK_EQ(flow_data(t, 1, 4, 0, 0, 0, (const uint8_t *)"hello", 5, NULL), -ENOENT);
	CHECK_EQ(flow_origin_stats(t, 1).orphan_bytes, 5);
	CHECK_EQ(flow_counters(t)->orphan_bytes, 5);
	/* a close makes room again */
	CHECK_EQ(flow_close(t, 1, 2, 0), 0);
	CHECK_EQ(open_conn(t, 1, 4), 0);
	CHECK_EQ(flow_origin_stats(t, 1).open, 3);
	flow_table_free(t);
}

TEST(flow_cap_total_refuses_every_origin)
{
	struct flow_table *t = capped(4, 3);
	if (!CHECK(t))
		return;
	for (uint64_t c = 1; c <= 3; c++)
		CHECK_EQ(open_conn(t, 1, c), 0);
	CHECK_EQ(open_conn(t, 2, 1), 0);
	CHECK_EQ(open_conn(t, 3, 1), -ENFILE);
	CHECK_EQ(open_conn(t, 2, 2), -ENFILE);
	CHECK_EQ(flow_origin_stats(t, 3).refused, 1);
	CHECK_EQ(flow_origin_stats(t, 2).refused, 1);
	CHECK_EQ(flow_counters(t)->flows_refused, 2);
	flow_close_proc(t, 1, 0);
	CHECK_EQ(flow_counters(t)->flows_open, 1);
	CHECK_EQ(open_conn(t, 3, 1), 0);
	flow_table_free(t);
}

TEST(flow_cap_lets_a_known_connection_be_announced_again)
{
	struct flow_table *t = capped(2, 2);
	if (!CHECK(t))
		return;
	CHECK_EQ(open_conn(t, 1, 1), 0);
	CHECK_EQ(open_conn(t, 1, 2), 0);
	CHECK_EQ(open_conn(t, 1, 2), -EEXIST); /* the same connection, not a new one */
	struct conn_open in = {
		.id.origin = 1, .id.conn = 1, .ts_ns = 2000, .family = 4, .side = 1,
		.client_port = 5555, .server_port = 443,
	};
	CHECK_EQ(flow_open(t, &in), 0); /* replaces flow (1, 1): the count stays */
	CHECK_EQ(flow_counters(t)->flows_refused, 0);
	CHECK_EQ(flow_counters(t)->flows_open, 2);
	flow_table_free(t);
}

TEST(flow_origin_is_kept_until_forgotten)
{
	struct flow_table *t = capped(0, 1); /* 0: the default total */
	if (!CHECK(t))
		return;
	CHECK_EQ(flow_origin_label(t, 7, "pid 7 (test)"), 0);
	CHECK_EQ(open_conn(t, 7, 1), 0);
	CHECK_EQ(open_conn(t, 7, 2), -EMFILE);
	CHECK_EQ(flow_origin_forget(t, 7), -EBUSY);
	flow_close_proc(t, 7, 0);
	CHECK_EQ(flow_origin_stats(t, 7).refused, 1); /* counters outlive the flows */
	CHECK_EQ(flow_origin_forget(t, 7), 0);
	CHECK_EQ(flow_origin_stats(t, 7).refused, 0);
	CHECK_EQ(flow_origin_forget(t, 7), 0);
	flow_table_free(t);
}

TEST(flow_default_caps_hold_many_origins)
{
	struct flow_table *t = capped(0, 0);
	if (!CHECK(t))
		return;
	int bad = 0;
	for (uint64_t p = 1; p <= 600; p++)
		bad |= open_conn(t, p, 1) != 0;
	CHECK(!bad);
	CHECK_EQ(flow_counters(t)->flows_open, 600);
	flow_close_all(t, 0);
	for (uint64_t p = 1; p <= 600; p++)
		bad |= flow_origin_forget(t, p) != 0;
	CHECK(!bad);
	flow_table_free(t);
}

TEST(flow_cap_on_unused_announcements_per_origin)
{
	struct flow_table *t = capped(100000, 10000);
	if (!CHECK(t))
		return;
	/* a producer announces connections that never carry anything */
	for (uint64_t c = 1; c <= FLOW_MAX_UNUSED_PER_ORIGIN; c++)
		if (!CHECK_EQ(open_conn(t, 1, c), 0))
			break;
	CHECK_EQ(flow_origin_stats(t, 1).unused, FLOW_MAX_UNUSED_PER_ORIGIN);
	CHECK_EQ(open_conn(t, 1, 5000), -EMFILE);
	CHECK_EQ(flow_origin_stats(t, 1).refused, 1);
	CHECK_EQ(open_conn(t, 2, 1), 0); /* another origin is not held back */
	/* one carries data: room for one more; a closed unused one makes room too */
	CHECK_EQ(flow_data(t, 1, 7, 0, 0, 0, (const uint8_t *)"x", 1, NULL), 0);
	CHECK_EQ(flow_origin_stats(t, 1).unused, FLOW_MAX_UNUSED_PER_ORIGIN - 1);
	CHECK_EQ(open_conn(t, 1, 5000), 0);
	CHECK_EQ(open_conn(t, 1, 5001), -EMFILE);
	CHECK_EQ(flow_close(t, 1, 9, 0), 0);
	CHECK_EQ(flow_origin_stats(t, 1).unused, FLOW_MAX_UNUSED_PER_ORIGIN - 1);
	CHECK_EQ(open_conn(t, 1, 5001), 0);
	/* a gap counts as use as well */
	CHECK_EQ(flow_gap(t, 1, 11, 1, 0, 100), 0);
	CHECK_EQ(flow_origin_stats(t, 1).unused, FLOW_MAX_UNUSED_PER_ORIGIN - 1);
	flow_table_free(t);
}
