/* A stage of the chain: its ops table and the calls it makes to emit downstream (docs/pipeline.md). */
#ifndef TLSMIRROR_STAGE_H
#define TLSMIRROR_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "common/text.h"
#include "pipeline/conn.h"

struct pipeline;
struct stage;

/* conn_close flags */
#define CONN_CLOSE_HANDOVER 0x1 /* the producer let go of a connection it forked
				 * with: another process may continue it */

/* stage_ops.origin events */
enum origin_event {
	ORIGIN_CLOSED = 1,   /* the producer went away: end its connections */
	ORIGIN_FORKED,       /* a process forks: its open connections may be inherited */
	ORIGIN_FORGOTTEN     /* nobody asks for its counters any more: free them */
};

/*
 * Every call gets the stage. Events for a connection reach only the stage
 * that took it over (the chain keeps the owner, one hash look-up per event).
 * Returns are 0 or a negative errno; -ENOENT from data/gap/close means the
 * stage does not know the connection (an inconsistency: counted).
 */
#define STAGE_WATCH 2 /* stage_ops.open: pass it on, and call ended when it ends */
#define STAGE_TAP 3   /* stage_ops.open: pass it on, read its data (tap_data,
		       * tap_gap) before its owner does, and call ended */

struct stage_ops {
	const char *name;
	/* A connection appears. 0: pass it on (the stage may rewrite *o for
	 * the stages after it); STAGE_WATCH: pass it on and be told (ended)
	 * when it ends, without owning it (no per-record cost); 1: take it
	 * over (all its events come here); -errno: refused (the source counts
	 * it; -EEXIST: it is open already). */
	int (*open)(struct stage *s, struct conn_open *o);
	/* A connection this stage watched or owned is gone: closed at its
	 * owner, replaced (its id reused), or refused by a stage after this
	 * one. o is the open as the source gave it (id, 4-tuple, side; ts_ns
	 * the time of the end). Not called for ORIGIN_CLOSED (every stage hears
	 * that) nor close_all. Optional (required if open returns STAGE_WATCH). */
	void (*ended)(struct stage *s, const struct conn_open *o);
	/* Clear text of one direction at stream offset off (*gap: bytes
	 * skipped before it, shown as a sequence gap). -ERANGE: wholly behind. */
	int (*data)(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		    uint64_t off, const uint8_t *p, size_t n, uint64_t *gap);
	/* The same for the concatenation of v[0..nv) (a stage's output in
	 * pieces: one write, so segments run across them). Optional: without
	 * it the chain calls data once per piece. */
	int (*datav)(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		     uint64_t off, const struct piece *v, size_t nv, uint64_t *gap);
	/* A connection the stage taps (STAGE_TAP): the clear text its owner
	 * gets, before the owner, read only (the bytes may be behind or ahead of
	 * what the tap had: it keeps its own offsets), and the gaps. Whatever
	 * the tap does, the owner gets the event as it came. Required for
	 * STAGE_TAP (a stage without it only watches); tap_gap optional. */
	void (*tap_data)(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
			 uint64_t off, const uint8_t *p, size_t n);
	void (*tap_gap)(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
			uint64_t n);
	/* n bytes that cannot be shown (sendfile). */
	int (*gap)(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		   uint64_t n);
	/* The connection ended (flags: CONN_CLOSE_*). The chain forgets the
	 * owner after it returns. */
	int (*close)(struct stage *s, const struct conn_id *id, uint64_t ts_ns, unsigned flags);
	/* Something happened to a whole origin (enum origin_event); every stage
	 * hears it, in chain order. Optional. */
	void (*origin)(struct stage *s, uint64_t origin, int ev, uint64_t ts_ns);
	/* Every turn of the loop (timers). Optional. */
	void (*tick)(struct stage *s, uint64_t now_ns);
	/* Its counters as rows (struct kv, at most max at out; returns how
	 * many): its stats line "stage name=X errors=N" then " key=value" per
	 * row, and its samples tlsmirror_stage_KEY_total{name="X"} in /metrics
	 * and `stats --json`, all from these rows. Optional. */
	size_t (*counters)(const struct stage *s, struct kv *out, size_t max);
	/* Ends what is open (exit): emits closes downstream. Optional. */
	void (*close_all)(struct stage *s, uint64_t ts_ns);
	/* Frees the stage's memory; emits nothing. */
	void (*free)(struct stage *s);
};

struct stage {
	const struct stage_ops *ops;
	void *priv;
	struct pipeline *pl;
	unsigned idx;            /* position in the chain */
	uint64_t errors;         /* calls into this stage that failed (counted by the chain) */
};

/*
 * Emitting from a stage: the event goes to the stages after s. An open of a
 * connection s owns hands it on (the taker owns it from then on: a fallback);
 * any other open must use an id of an origin s got from stage_origin (its
 * invented connections can never be confused with a real one). Data, gap and
 * close go to the connection's owner, which must be after s.
 */
int stage_emit_open(struct stage *s, struct conn_open *o);
/* Hands on a connection s owns, as stage_emit_open does, and s goes on
 * reading it as a tap (its tap_data and ended), as if its open had returned
 * STAGE_TAP. */
int stage_hand_on_tapped(struct stage *s, struct conn_open *o);
int stage_emit_data(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		    uint64_t off, const uint8_t *p, size_t n, uint64_t *gap);
/* Data in pieces (the owner's datav, else its data per piece). */
int stage_emit_datav(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		     uint64_t off, const struct piece *v, size_t nv, uint64_t *gap);
int stage_emit_gap(struct stage *s, const struct conn_id *id, int dir, uint64_t ts_ns,
		   uint64_t n);
int stage_emit_close(struct stage *s, const struct conn_id *id, uint64_t ts_ns, unsigned flags);
/* A new origin for the connections s invents (unique in this chain). */
uint64_t stage_origin(struct stage *s);

#endif
