/* The agent: its sources (attached processes and their rings), the stage chain and the sinks. */
#ifndef TLSMIRROR_AGENT_H
#define TLSMIRROR_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent/access.h"
#include "common/text.h"
#include "pipeline/pipeline.h"
#include "sinks/sink.h"
#include "sources/source.h"
#include "transport/ring.h"

#define AGENT_MAX_OUTPUTS 8
#define AGENT_MAX_SINK_KINDS 8
#define AGENT_MAX_KAFKA_CONF 32
#define AGENT_MAX_DEC_FILES 256

/*
 * The kinds of output, one row each (outputs.c): the option that asks for
 * one (main.c builds the command line and the help from the rows), how many
 * it may be given, and the sink's ops. Adding a sink is its file and a row.
 */
struct sink_def {
	const char *option;          /* long option ("write") */
	int short_opt;               /* its letter ('w'), 0 if none */
	const char *metavar;         /* "FILE" */
	const char *help;            /* one line for --help */
	const struct sink_ops *ops;
	unsigned max;                /* 1, or up to AGENT_MAX_OUTPUTS (repeatable) */
	/* Checks the target at parse time (before any output is opened or a
	 * file created); *why says what is wrong. NULL: any. */
	int (*check)(const char *target, const char **why);
};

extern const struct sink_def sink_table[];
extern const size_t sink_table_len;
#define SINK_ROW_PCAP 0              /* sink_table[0]: -w (main.c's checks of -w) */
#define SINK_ROW_PCAPNG 1            /* sink_table[1]: --pcapng (the same checks) */
#define SINK_ROW_TUNNEL 5            /* sink_table[5]: -t (--send-keys needs it) */

struct agent_config {
	const char *socket_path;
	/* the targets of sink_table[i]'s option, in command-line order */
	const char *outputs[AGENT_MAX_SINK_KINDS][AGENT_MAX_OUTPUTS];
	size_t n_outputs[AGENT_MAX_SINK_KINDS];
	int collector;               /* -C: accept agents' tunnels: a source of connection events */
	const char *listen_addr;     /* -l ADDR:PORT: where the collector listens */
	const char *tag_agents;      /* --tag-agents vlan|vni: mark each agent's packets */
	uint16_t mss;
	struct sink_opts sink;
	unsigned idle_ms;            /* longest sleep when idle */
	/* the stages' options (--h2-to-h1, --port-map, ...): the argument of
	 * stage_table[i]'s option, "" for a flag, NULL when not given */
	const char *stage_arg[PIPELINE_MAX_STAGES];
	/* memory caps (docs/agent.md "Memory"); 0: the default */
	size_t max_conns;            /* --max-conns: open flows in total */
	size_t max_conns_per_proc;   /* --max-conns-per-proc */
	size_t max_procs;            /* --max-procs: attached processes (mapped rings) */
	uint64_t max_ring_size;      /* --max-ring-size: largest ring mapped (data bytes) */
	size_t max_h2_conns;         /* --max-h2-conns: connections converted at once */
	size_t max_h2_streams;       /* --max-h2-streams: open streams in total */
	size_t max_peers;            /* --max-peers: collector's agent connections */
	struct access_policy access; /* --allow-user/--allow-group (access.c adds the defaults) */
	const char *metrics_addr;    /* --metrics ADDR:PORT: Prometheus text over HTTP (metrics.c) */
	const char *keylog;          /* --keylog FILE: the TLS secrets as an NSS key log (keylog.c) */
	int send_keys;               /* --send-keys: the secrets to the collector over -t too */
	/* HTTP records (records_out.c, docs/http.md) */
	const char *http_log[AGENT_MAX_OUTPUTS]; /* --http-log FILE|- */
	size_t n_http_log;
	uint64_t http_body_max;      /* --http-body-max (http_body_max_set: given) */
	int http_body_max_set;
	const char *http_format;     /* --http-format tlsmirror|akto */
	const char *http_headers_only; /* --http-headers-only TYPE[,TYPE] */
	size_t max_http_conns;       /* --max-http-conns: connections followed at once */
	const char *http_post[AGENT_MAX_OUTPUTS]; /* --http-post URL */
	size_t n_http_post;
	const char *http_post_ca;    /* --http-post-ca FILE */
	const char *kafka;           /* --kafka BROKERS */
	const char *kafka_topic;     /* --kafka-topic T */
	const char *kafka_conf[AGENT_MAX_KAFKA_CONF]; /* --kafka-conf KEY=VALUE */
	size_t n_kafka_conf;
	/* tlsmirror decrypt (sources/decrypt.c, docs/decrypt.md) */
	int decrypt;                 /* the decrypt source instead of the rings */
	const char *dec_read[AGENT_MAX_DEC_FILES]; /* -r FILE, in order */
	size_t n_dec_read;
	const char *dec_iface;       /* -i IFACE */
	const char *dec_filter;      /* --filter BPF */
	const char *dec_keys[AGENT_MAX_OUTPUTS]; /* --keys FILE */
	size_t n_dec_keys;
	const char *dec_rsa_key;     /* --rsa-key FILE: TLS 1.2 RSA key exchange */
	uint64_t dec_key_wait_ms;    /* --key-wait (dec_key_wait_set: given) */
	int dec_key_wait_set;
	size_t max_keys;             /* --max-keys: client randoms kept */
};

#define AGENT_DEFAULT_MAX_PROCS 1024
#define AGENT_DEFAULT_MAX_RING ((uint64_t)RING_MAX_DATA)
#define AGENT_MAX_PENDING 256        /* control connections before their hello */
#define AGENT_PENDING_PER_UID 32     /* of them from one uid (its oldest goes) */
#define AGENT_PENDING_TIMEOUT_NS (2ULL * 1000000000ULL) /* a silent peer is closed after */
#define AGENT_FD_RESERVE 128         /* descriptors kept for outputs, stats, the tunnel */

/* A control connection waiting for its hello. */
struct pending {
	int fd;
	uid_t uid;                   /* SO_PEERCRED of who connected */
	uint64_t since_ns;           /* agent_now_ns() at accept */
};

enum proc_state { PROC_ATTACHED = 0, PROC_EXITED, PROC_REJECTED };

/* One attachment of a process (a process that re-attaches after an agent
 * restart is a new attachment of the new agent). */
struct proc {
	struct proc *next;
	uint64_t key;                /* its origin in the chain (pipeline_origin_new) */
	pid_t pid;                   /* the sender of the attach (SCM_CREDENTIALS) */
	uid_t uid;
	pid_t auth_pid;              /* who connected the socket (SO_PEERCRED): the */
	uid_t auth_uid;              /* process whose rights let it in, a parent before fork */
	char comm[16];
	char exe[256];
	int fd;                      /* control socket, -1 once gone */
	enum proc_state state;
	struct ring_hdr *ring;       /* NULL once unmapped */
	size_t map_len;
	dev_t ring_dev;
	ino_t ring_ino;
	struct ring_consumer cons;
	/* counters */
	uint64_t conns, open_conns;
	uint64_t bytes[2];
	uint64_t gap_bytes;
	uint64_t bad_records;        /* records rejected (the ring was detached) */
	uint64_t orphan_records;     /* data for a connection we never saw opened */
	uint64_t orphan_bytes;       /* their clear text (refused or never opened) */
	uint64_t refused_conns;      /* opens refused over a cap */
	uint64_t synthetic_conns;    /* opens whose real socket the library did not find */
	uint64_t clamped_ts;         /* records whose timestamp was outside the window (ring.c) */
	uint64_t duplicate_conns;    /* of conns: the other end of one shown for another producer */
	uint64_t midstream_conns;    /* opens of connections that began before the capture */
	uint64_t drop_last[RING_DROP_NREASONS]; /* last values read, kept after unmap */
	struct conn_meta *spare_meta; /* an OPEN's metadata nobody kept: reused by the next */
	uint64_t bypassed_last;      /* ring_hdr.bypassed_conns, last value read */
	uint64_t unpatched_last;     /* ring_hdr.unpatched_objs, last value read */
	uint32_t tls_last;           /* ring_hdr.tls_backends seen so far (RING_TLS_*) */
	int bypass_logged;
	uint64_t inline_hooks_last;  /* ring_hdr.inline_hooks: the program's own OpenSSL hooked in place */
	uint64_t inline_refused_last; /* ring_hdr.inline_refused: found, left alone */
	int inline_logged;
	int closing;                 /* its socket closed: drained up to stop_at, then finished */
	uint64_t stop_at;            /* ring position committed when the socket closed */
	uint64_t exited_ns;          /* when it left PROC_ATTACHED (metrics fold it later) */
	/* attached to an agent before (a restart): records of connections
	 * written before the library noticed come ahead of their OPEN again */
	uint64_t reannounce_wait_ns; /* until then the drain waits for such an OPEN */
	uint64_t reannounce_scan_ns; /* until then it looks ahead for one */
	uint64_t lookahead_left;     /* records it may still read ahead (a bound) */
	uint64_t continued_conns;    /* connections opened at records before their OPEN */
	int waiting;                 /* the drain waits for the OPEN of the record at the tail */
	uint64_t wait_pos;           /* scanned up to here for it (the record at the tail) */
	uint64_t wait_first[2];      /* the first stream offsets seen for it so far */
};

struct agent;

/* An extra file descriptor in the event loop (collector sockets, servers). */
struct agent_watch {
	int fd;
	void (*on_event)(struct agent *a, struct agent_watch *w, uint32_t events);
	void *arg;
};

/* Something to run every turn of the loop (timers: reconnects, timeouts). */
struct agent_tick {
	void (*run)(struct agent *a, uint64_t now_ns, void *arg);
	void *arg;
};

#define AGENT_MAX_TICKS 8
#define AGENT_MAX_SOURCES 4

struct agent {
	struct agent_config cfg;
	int listen_fd;
	unsigned long long listen_dev, listen_ino; /* the socket file we bound: the only one we unlink */
	int abstract_fd;             /* the same, on the abstract name (chroots); -1 if none */
	int epfd;
	int sig_fd;
	int stop;
	struct pipeline *pl;         /* the stage chain every source feeds */
	struct source src[AGENT_MAX_SOURCES];
	size_t n_src;
	struct sink_set sinks;
	struct sink_set records;     /* --http-log: where HTTP records go (records_out.c) */
	int keylog_fd;               /* --keylog (keylog.c), -1 if none */
	uint64_t keys_written, keys_lost, keys_sent, tuples_written;
	/* where secrets that come over the tunnel go besides --keylog (decrypt source) */
	void (*key_consumer)(void *arg, const char *line, size_t n);
	void *key_consumer_arg;
	struct rec_builder *rec;     /* NULL without --http-log */
	char *headers_only_copy;
	struct access_policy access; /* who may attach (access.c) */
	struct proc *procs;          /* newest first */
	uint64_t started_ns;
	uint64_t rejected_attach;
	uint64_t pending_dropped;    /* control connections closed before their hello (caps, timeout) */
	struct pending pending[AGENT_MAX_PENDING]; /* oldest first */
	size_t n_pending;
	int fd_limit;                /* RLIMIT_NOFILE after raising it */
	int spare_fd;                /* given up to accept-and-close when out of descriptors */
	uint64_t fd_refused;         /* control connections closed: descriptor budget */
	uint64_t exited_kept;
	struct agent_tick ticks[AGENT_MAX_TICKS];
	size_t n_ticks;
	struct metrics_server *metrics; /* --metrics, NULL if not asked */
};

/* keylog.c: --keylog */
int keylog_open(struct agent *a);
void keylog_close(struct agent *a);
/* A secret that came over the tunnel (collector.c): to --keylog, and to the
 * consumer a source registered (tlsmirror decrypt -C). Returns 0 or -EINVAL. */
int keylog_received(struct agent *a, unsigned label, const uint8_t cr[32], const uint8_t *secret,
		    size_t len);
/* What the agent asks of every ring it maps (ring_hdr.consumer_flags). */
uint32_t keylog_ring_flags(const struct agent *a);
struct ring_view;
int keylog_record(struct agent *a, const struct ring_view *v, const char **why);
/* One TUPLE record (the # TUPLE line before a handshake's keys): 0, or -EINVAL. */
int keylog_tuple(struct agent *a, const struct ring_view *v, const char **why);

/* records_out.c: --http-log, --http-post, --kafka */
int records_wanted(const struct agent_config *c);
int records_open(struct agent *a);
void records_drain(struct agent *a);
void records_close(struct agent *a);
/* 1 if every record sink's reader is gone (or there is none) */
int records_gone(const struct agent *a);

/* agent.c */
int agent_run(const struct agent_config *cfg);
/* Removes fd from the event loop and closes it. */
void agent_forget_fd(struct agent *a, int fd);
/* Adds w->fd to the event loop for events (EPOLLIN...): w->on_event runs
 * when one is ready. w stays owned by the caller. Returns 0 or -errno. */
int agent_watch_fd(struct agent *a, struct agent_watch *w, uint32_t events);
/* Removes w->fd from the event loop (does not close it). */
void agent_unwatch_fd(struct agent *a, struct agent_watch *w);
/* How many processes one uid other than root may have attached (a quarter of --max-procs). */
size_t agent_procs_per_uid(const struct agent *a);
/* Runs t.run(a, now, t.arg) every turn of the loop (at least every idle_ms). */
int agent_add_tick(struct agent *a, struct agent_tick t);

/* outputs.c: opens every sink the configuration asks for (-w, -o, --vxlan,
 * --pcap-over-ip, -t). Logs and returns -errno on error. */
int outputs_open(struct agent *a);
/* ADDR:PORT of -l, checked as -t's target (PORT 1..65535). */
int outputs_check_listen(const char *addr, const char **why);
/* A file target (-w, --pcapng, --http-log): '-', a name or a '%' pattern. */
int outputs_check_file(const char *t, const char **why);
/* gives up CAP_NET_RAW and CAP_NET_BIND_SERVICE unless the configuration needs them */
void outputs_reduce_caps(const struct agent_config *cfg);
/* CLOCK_REALTIME in ns: the timestamps packets carry. */
uint64_t agent_now_ns(void);

/* sources/ring.c: moves a process's ring records into the chain. Returns the
 * number of records handled; detaches the process if its ring is corrupt. */
size_t proc_drain(struct agent *a, struct proc *p, size_t budget);
/* The process is gone (EOF) or rejected: drain what is left, end its connections, unmap. */
void proc_finish(struct agent *a, struct proc *p, enum proc_state why);
/* Its control socket reached EOF: closes it; what the ring holds at this
 * moment is drained in the loop's budgeted turns (records committed later
 * are not read), then proc_finish. */
void proc_closing(struct agent *a, struct proc *p);
/* It attached to an agent before (hello attach_gen > 0, a claim that only
 * decides whether its drain looks ahead for re-announcements, docs/ring.md). */
void proc_reattached(struct proc *p, uint64_t now_ns);
/* Refreshes drop counters from the ring header. */
void proc_read_drops(struct proc *p);

/* stats.c: the text `tlsmirror stats` prints. Returns the length written. */
size_t stats_format(struct agent *a, char *buf, size_t len);
#define STATS_MAX_KV 64
/* A process's counters, in the order of its line (at most STATS_MAX_KV). */
size_t proc_fields(const struct proc *p, struct kv *kv);
/* The total line's counters. */
size_t stats_total(struct agent *a, struct kv *kv);
/* Appends " key=value"... and a newline at buf+at; returns the new length. */
size_t stats_kv_format(const struct kv *kv, size_t n, char *buf, size_t len, size_t at);
/* The lines after the total: the chain, its stages, access, sinks, tunnel, metrics server. */
size_t stats_components_format(struct agent *a, char *buf, size_t len, size_t at);
/* The same without the lines made of rows (stages, sinks: metrics.c takes
 * those from pipeline_stage_counters and sink_counters). */
size_t stats_text_lines_format(struct agent *a, char *buf, size_t len, size_t at);
/* sources/ring.c: "attached", "exited", "rejected". */
const char *proc_state_name(enum proc_state st);
/* tunnel/collector.c: appends the tunnel (-t) and collector (-C) counter
 * lines at buf+at; returns the new length. */
size_t tunnel_stats_format(struct agent *a, char *buf, size_t len, size_t at);

#endif
