/* Kafka sink: HTTP records produced to a topic through librdkafka (--kafka BROKERS --kafka-topic T), delivery reports counted, bounded. */
#include "sinks/sink.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Records reach it through the sink's queue (a struct pkt whose hdr is the
 * line), in the queue's worker thread, which hands each to librdkafka
 * (copied, its trailing newline left out: one record a message) and serves
 * the delivery reports when it is idle (flush, every 50 ms at most). The
 * producer's own buffer is bounded (queue.buffering.max.messages 100000,
 * max.kbytes 65536) and a message not delivered within message.timeout.ms
 * (30 s) fails: a broker outage costs at most that memory and is counted
 * (failed=), never waited for; when librdkafka's buffer is full a record is
 * dropped there (queue_full=). --kafka-conf KEY=VALUE sets any librdkafka
 * property (security.protocol, sasl.*, ssl.ca.location, acks...). At exit
 * what is still in flight gets at most 5 s, the rest counts as lost.
 */

#define KAFKA_EXIT_MS 5000

struct kafka {
	rd_kafka_t *rk;
	rd_kafka_topic_t *topic;
	uint64_t produced;       /* handed to librdkafka */
	uint64_t delivered;      /* acknowledged by the brokers */
	uint64_t failed;         /* delivery failed (timeout, broker error) */
	uint64_t queue_full;     /* librdkafka's buffer was full: dropped */
	uint64_t lost_at_exit;   /* still in flight when it gave up at exit */
	uint64_t broker_errors;  /* error events (brokers down, all brokers down...) */
	char errstr[512];
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct kafka *k = opaque;
	(void)rk;
	if (m->err)
		sink_ctr_add(&k->failed, 1);
	else
		sink_ctr_add(&k->delivered, 1);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct kafka *k = opaque;
	(void)rk;
	(void)err;
	(void)reason;
	/* called from librdkafka's threads: the counter is atomic */
	__atomic_fetch_add(&k->broker_errors, 1, __ATOMIC_RELAXED);
}

static int set(rd_kafka_conf_t *c, const char *key, const char *val, struct kafka *k)
{
	return rd_kafka_conf_set(c, key, val, k->errstr, sizeof(k->errstr)) == RD_KAFKA_CONF_OK ? 0 : -1;
}

static void kafka_close(struct sink *s)
{
	struct kafka *k = s->priv;
	if (!k)
		return;
	if (k->rk) {
		rd_kafka_flush(k->rk, KAFKA_EXIT_MS);
		int left = rd_kafka_outq_len(k->rk);
		if (left > 0)
			k->lost_at_exit += (uint64_t)left;
		if (k->topic)
			rd_kafka_topic_destroy(k->topic);
		rd_kafka_destroy(k->rk);
	}
	free(k);
	s->priv = NULL;
}

/* The open failed: *err_msg says what and librdkafka's reason (a buffer of
 * its own: the sink is gone when the caller prints it). */
static int fail(struct sink *s, struct kafka *k, const char *what, const char **err_msg)
{
	static __thread char msg[600];
	snprintf(msg, sizeof(msg), "%s: %s", what, k->errstr);
	*err_msg = msg;
	kafka_close(s);
	return -EINVAL;
}

static int kafka_open(struct sink *s, const char *target, const struct sink_opts *o,
		      const char **err_msg)
{
	struct kafka *k = calloc(1, sizeof(*k));
	*err_msg = "out of memory";
	if (!k)
		return -ENOMEM;
	s->priv = k;
	if (!o->kafka_topic || !*o->kafka_topic) {
		kafka_close(s);
		*err_msg = "--kafka needs --kafka-topic TOPIC";
		return -EINVAL;
	}
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	if (!c) {
		kafka_close(s);
		return -ENOMEM;
	}
	rd_kafka_conf_set_opaque(c, k);
	rd_kafka_conf_set_dr_msg_cb(c, on_delivery);
	rd_kafka_conf_set_error_cb(c, on_error);
	if (set(c, "bootstrap.servers", target, k) || set(c, "queue.buffering.max.messages", "100000", k) ||
	    set(c, "queue.buffering.max.kbytes", "65536", k) || set(c, "message.timeout.ms", "30000", k) ||
	    set(c, "linger.ms", "5", k) || set(c, "client.id", "tlsmirror", k) ||
	    set(c, "log_level", "3", k)) {
		rd_kafka_conf_destroy(c);
		return fail(s, k, "librdkafka", err_msg);
	}
	for (size_t i = 0; i < o->n_kafka_conf; i++) {
		char kv[1024];
		snprintf(kv, sizeof(kv), "%s", o->kafka_conf[i]);
		char *eq = strchr(kv, '=');
		if (!eq || eq == kv) {
			rd_kafka_conf_destroy(c);
			snprintf(k->errstr, sizeof(k->errstr), "%s: not KEY=VALUE", o->kafka_conf[i]);
			return fail(s, k, "--kafka-conf", err_msg);
		}
		*eq = 0;
		if (set(c, kv, eq + 1, k)) {
			rd_kafka_conf_destroy(c);
			return fail(s, k, "--kafka-conf", err_msg);
		}
	}
	k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, k->errstr, sizeof(k->errstr));
	if (!k->rk) {
		rd_kafka_conf_destroy(c);
		return fail(s, k, "cannot start the Kafka producer", err_msg);
	}
	k->topic = rd_kafka_topic_new(k->rk, o->kafka_topic, NULL);
	if (!k->topic) {
		snprintf(k->errstr, sizeof(k->errstr), "%s", rd_kafka_err2str(rd_kafka_last_error()));
		return fail(s, k, "--kafka-topic", err_msg);
	}
	return 0;
}

static int kafka_write(struct sink *s, const struct pkt *pkts, size_t n)
{
	struct kafka *k = s->priv;
	for (size_t i = 0; i < n; i++) {
		const struct pkt *p = &pkts[i];
		size_t len = p->hdr_len;
		if (len && p->hdr[len - 1] == '\n')
			len--;
		if (rd_kafka_produce(k->topic, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
				     (void *)p->hdr, len, NULL, 0, NULL) < 0) {
			if (rd_kafka_last_error() == RD_KAFKA_RESP_ERR__QUEUE_FULL)
				sink_ctr_add(&k->queue_full, 1);
			else
				sink_ctr_add(&k->failed, 1);
			sink_ctr_add(&s->ctr.lost_packets, 1);
			sink_ctr_add(&s->ctr.lost_bytes, len);
			continue;
		}
		sink_ctr_add(&k->produced, 1);
		sink_ctr_add(&s->ctr.packets, 1);
		sink_ctr_add(&s->ctr.bytes, len);
	}
	rd_kafka_poll(k->rk, 0); /* delivery reports */
	return 0;
}

static int kafka_flush(struct sink *s)
{
	struct kafka *k = s->priv;
	rd_kafka_poll(k->rk, 0);
	return 0;
}

static size_t kafka_counters(const struct sink *s, struct kv *out, size_t max)
{
	const struct kafka *k = s->priv;
	size_t n = sink_record_counters(s, out, max);
	if (!k)
		return n;
#define ROW(name, x) n = kv_put(out, max, n, name, __atomic_load_n(&k->x, __ATOMIC_RELAXED), 0)
	ROW("delivered", delivered);
	ROW("failed", failed);
	ROW("queue_full", queue_full);
	ROW("lost_at_exit", lost_at_exit);
	ROW("broker_errors", broker_errors);
#undef ROW
	uint64_t inflight = k->produced - k->delivered - k->failed;
	return kv_put(out, max, n, "in_flight", inflight < k->produced ? inflight : 0, 1);
}

const struct sink_ops sink_kafka_ops = {
	.name = "kafka",
	.open = kafka_open,
	.write = kafka_write,
	.flush = kafka_flush,
	.close = kafka_close,
	.counters = kafka_counters,
};
