/* Fuzz target: input bytes are a ring's shared memory; the ring consumer and the flow engine must survive them. */
#include "agent/agent.h"
#include "common/log.h"
#include "sinks/sink.h"
#include "transport/ring.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/*
 * Input layout:
 *   [0, RING_HDR_SIZE)   the ring header as the producer left it (zero-padded
 *                        if the input is shorter)
 *   [RING_HDR_SIZE, ...) the data area as seen from the consumer's start
 *                        position (tail after ring_consumer_init), wrapping at
 *                        the end of the data area; the rest stays zero.
 * The mapping is RING_HDR_SIZE + RING_MIN_DATA bytes, so only a 64 KiB data
 * area validates. Placing the data at the start position lets short inputs
 * reach the wrap-around (PAD) path. The ring then goes through the agent's
 * own code: proc_drain (record checks, OPEN parsing) into the chain (the
 * h2 stage, the flow engine) that writes a pcap to /dev/null, and
 * proc_finish as if the process exited.
 */
#define FUZZ_MAP_LEN (RING_HDR_SIZE + RING_MIN_DATA)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct sink_set *fuzz_sinks(void)
{
	static struct sink_set set;
	static int ready;
	if (!ready) {
		struct sink_opts o = {.snaplen = 65535};
		const char *msg;
		ready = 1;
		log_quiet = 1;
		/* Without the sink the flow engine still runs: errors ignored. */
		(void)sink_set_add(&set, &sink_pcap_ops, "/dev/null", &o, &msg);
	}
	return &set;
}

/* Lays the input over a fresh mapping (the agent unmaps it when it rejects
 * the ring). Returns 0, or -1 if the header is refused (nothing mapped). */
static int map_input(const uint8_t *data, size_t size, struct proc *p)
{
	void *m = mmap(NULL, FUZZ_MAP_LEN, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		abort();
	memcpy(m, data, size < RING_HDR_SIZE ? size : RING_HDR_SIZE);
	if (ring_consumer_init(&p->cons, m, FUZZ_MAP_LEN)) {
		munmap(m, FUZZ_MAP_LEN);
		return -1;
	}
	p->ring = m;
	p->map_len = FUZZ_MAP_LEN;
	struct ring_consumer *c = &p->cons;
	if (size > RING_HDR_SIZE) {
		size_t n = size - RING_HDR_SIZE;
		size_t at = (size_t)(c->tail & (c->size - 1));
		if (n > c->size)
			n = (size_t)c->size;
		size_t first = n < c->size - at ? n : (size_t)c->size - at;
		memcpy(c->base + at, data + RING_HDR_SIZE, first);
		memcpy(c->base, data + RING_HDR_SIZE + first, n - first);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct agent a;
	static struct proc p;
	memset(&a, 0, sizeof(a));
	memset(&p, 0, sizeof(p));
	a.listen_fd = a.epfd = a.sig_fd = -1;
	a.sinks = *fuzz_sinks();
	p.fd = -1;
	p.state = PROC_ATTACHED;
	strcpy(p.comm, "fuzz");
	if (map_input(data, size, &p))
		return 0;
	/* the chain of an agent with --h2-to-h1 (flows last) */
	struct pipeline_opts po = { .flow = {.mss = 1460, .sinks = &a.sinks} };
	for (size_t i = 0; i < stage_table_len; i++)
		if (!strcmp(stage_table[i].name, "h2"))
			po.arg[i] = "";
	const char *why;
	a.pl = pipeline_new(&po, &why);
	if (!a.pl) {
		munmap(p.ring, p.map_len);
		return 0;
	}
	a.procs = &p;
	p.key = pipeline_origin_new(a.pl);
	proc_drain(&a, &p, 4096);
	if (p.ring)
		proc_finish(&a, &p, PROC_EXITED);
	pipeline_close_all(a.pl, 0);
	sink_set_flush(&a.sinks); /* the agent flushes whenever it goes idle */
	pipeline_free(a.pl);
	return 0;
}
