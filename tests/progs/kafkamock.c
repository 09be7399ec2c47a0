/* A Kafka cluster for the tests: librdkafka's mock cluster (no broker is packaged here), its address on stdout, brokers taken down and up by lines on stdin. */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Usage: kafkamock TOPIC [BROKERS]
 * Prints "bootstrap HOST:PORT[,...]" once the cluster listens, then reads
 * commands: "down" takes every broker down (connections refused and cut),
 * "up" brings them back; EOF ends it. The topic has one partition, one
 * replica. Producers (the agent) and consumers (kcat) connect to it as to
 * real brokers.
 */
int main(int argc, char **argv)
{
	char err[512];
	if (argc < 2) {
		fprintf(stderr, "usage: kafkamock TOPIC [BROKERS]\n");
		return 2;
	}
	int brokers = argc > 2 ? atoi(argv[2]) : 1;
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
	rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	if (!rk) {
		fprintf(stderr, "kafkamock: %s\n", err);
		return 1;
	}
	rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
	if (!mc) {
		fprintf(stderr, "kafkamock: cannot create the mock cluster\n");
		return 1;
	}
	if (rd_kafka_mock_topic_create(mc, argv[1], 1, 1)) {
		fprintf(stderr, "kafkamock: cannot create topic %s\n", argv[1]);
		return 1;
	}
	printf("bootstrap %s\n", rd_kafka_mock_cluster_bootstraps(mc));
	fflush(stdout);
	char line[64];
	while (fgets(line, sizeof(line), stdin)) {
		int down = !strncmp(line, "down", 4);
		if (!down && strncmp(line, "up", 2))
			continue;
		for (int b = 1; b <= brokers; b++)
			down ? rd_kafka_mock_broker_set_down(mc, b) : rd_kafka_mock_broker_set_up(mc, b);
		printf("%s\n", down ? "is down" : "is up");
		fflush(stdout);
	}
	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(rk);
	return 0;
}
