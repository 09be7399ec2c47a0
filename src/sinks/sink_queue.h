/* The generic bounded per-sink queue: the agent copies frames in, a worker thread writes them out. */
#ifndef TLSMIRROR_SINK_QUEUE_H
#define TLSMIRROR_SINK_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "sinks/sink.h"

#define SINK_QUEUE_DEFAULT (64u << 20) /* bytes per sink when --queue-size is not given */
#define SINK_QUEUE_MIN (64u << 10)

/* Starts s->queue of `bytes` (0: the default) and its worker thread; from
 * then on only the worker calls s->ops write and flush. Returns 0 or -errno. */
int sink_queue_start(struct sink *s, uint64_t bytes);
/* Copies the frames into the queue; what does not fit is dropped and counted
 * in s->ctr.queue_drops. Never blocks on the sink. */
void sink_queue_push(struct sink *s, const struct pkt *pkts, size_t n);
/* Queues a conn_begin (end 0) or conn_end (end 1) of t in order with the
 * packets; the queue holds a reference to t until the worker has called the
 * sink. Never dropped: its record is small and reserved (see sink_queue.c). */
void sink_queue_push_conn(struct sink *s, const struct conn_tag *t, uint64_t ts_ns, int end);
/* Asks the worker to flush the sink soon (it also does when it runs dry). */
void sink_queue_kick(struct sink *s);
/* Waits until everything pushed so far is written and flushed. A worker that
 * makes no progress for SINK_DRAIN_STALL_MS is cancelled (s->cancel: the
 * sink gives up its blocked write, counts the rest lost): -ETIMEDOUT. */
int sink_queue_drain(struct sink *s);
/* Drains, stops the worker and frees the queue (s->queue becomes NULL). */
void sink_queue_stop(struct sink *s);
/* Frames queued and not yet written (for tests). */
uint64_t sink_queue_pending_bytes(const struct sink *s);

#endif
