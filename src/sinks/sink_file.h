/* Capture files shared by the pcap and pcapng sinks: buffering, stdout, rotation, naming, write errors. */
#ifndef TLSMIRROR_SINK_FILE_H
#define TLSMIRROR_SINK_FILE_H

#include "sinks/sink.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define SINK_FILE_BUF_SIZE (1u << 20)
/* Records go out once the buffer holds this much (a larger record still fits
 * an empty buffer): a write of 256 KiB costs the kernel no more per byte than
 * one of 1 MiB, and the buffer stays in the core's L2 cache between the copy
 * into it and the kernel's copy out (with the TLS and frame buffers of a
 * collector), which a 1 MiB one does not. */
#define SINK_FILE_FLUSH_AT (256u * 1024)

/*
 * The rules (file names, rotation, a ring of files, errors) are described at
 * the top of sink_file.c. The format is the caller's: header() writes the
 * file header into dst[0..room) (room is at least SINK_FILE_HDR_ROOM) and
 * returns its length; it is called at the start of every file, and after a
 * lost buffer when that took the header with it or when rehead is set (a
 * format like pcapng, where a new header may follow records: a new section).
 */
#define SINK_FILE_HDR_ROOM (SINK_FILE_BUF_SIZE / 2)
#define SINK_FILE_MAX_REFS 64 /* records referenced, not copied, until a flush */

struct sink_file {
	struct sink_counters *ctr; /* the owning sink's counters */
	size_t (*header)(void *arg, uint8_t *dst, size_t room);
	void *arg;
	int rehead;          /* put the header again after every lost buffer */
	const char *target;  /* the sink's target (owned by struct sink) */
	int fd;              /* -1 while no file could be opened */
	int is_stdout;
	int seekable;        /* regular file: a failed write can be truncated away */
	int dead;            /* output broken for good: drop everything */
	int last_err;        /* negative errno of the last failure */
	const char *open_why; /* why the last open was refused (static), or NULL */
	int pipe;            /* a pipe or socket (stdout too): a write may wait for a reader */
	const int *cancel;   /* the sink's cancel flag (struct sink): a blocked write gives up */
	/* the current episode of losses (logged at its start and its end) */
	uint64_t ep_start_ns;   /* CLOCK_MONOTONIC */
	uint64_t ep_pkts;       /* lost_packets when it started */
	uint64_t ep_bytes;      /* lost_bytes when it started */
	uint64_t ep_fail_ns;    /* its last loss */
	int ep_ok;              /* a write worked since then */
	struct sink_opts o;
	uint8_t *buf;
	size_t used;
	/* records written from where they are (sink_file_put_ref): after the
	 * buffer's bytes, in order, by the next flush */
	struct iovec refs[SINK_FILE_MAX_REFS];
	size_t nrefs, ref_bytes;
	uint64_t buf_pkts;   /* packets in buf */
	uint64_t buf_bytes;  /* frame bytes of those packets */
	uint64_t good_off;   /* bytes of the current file known to be written */
	uint64_t file_bytes; /* size of the current file including buf */
	uint64_t file_pkts;  /* packets in the current file including buf */
	uint64_t file_start_ns; /* timestamp of its first packet */
	uint64_t retry_ns;   /* after a failed open: next try at this packet time */
	unsigned seq;        /* numeric suffix of the current file, 0: none */
	char *base;          /* name before the suffix (the expanded pattern) */
	char *path;          /* current file */
};

/* Opens path for writing as a capture file is (mode 0600, an existing one
 * of ours made 0600; in a directory others may write to, no symbolic link
 * followed and only a plain file of ours with one link), with flags O_TRUNC
 * or O_APPEND. The fd, or a negative errno (*why: our reason, or NULL). */
int sink_file_open_private(const char *path, int flags, const char **why);

/* Opens target ("-": stdout) with f->ctr, f->cancel, header, arg and rehead set by the
 * caller. Returns 0 or a negative errno with *err_msg saying why; on error
 * the caller still calls sink_file_close. */
int sink_file_open(struct sink_file *f, const char *target, const struct sink_opts *o,
		   const char **err_msg);

/* Room for one record of at most rec bytes for a packet of frame bytes at
 * ts_ns, after starting a new file if the rules say so. Returns where to
 * write it, or NULL if the packet is lost (counted in lost_packets and
 * lost_bytes; *err says why). */
uint8_t *sink_file_reserve(struct sink_file *f, uint64_t ts_ns, size_t rec, uint64_t frame,
			   int *err);

/* Accounts the record of used bytes just written at sink_file_reserve's
 * pointer: a packet of frame bytes at ts_ns. */
void sink_file_commit(struct sink_file *f, uint64_t ts_ns, size_t used, uint64_t frame);

/* A record written from where it is (no copy into the buffer), after what
 * the buffer holds: the same rules as reserve and commit. rec must stay
 * valid until the next sink_file_flush, which the caller makes before its
 * memory goes (reserve and the rotation flush by themselves). Returns 0, or
 * a negative errno with the record counted lost. */
int sink_file_put_ref(struct sink_file *f, uint64_t ts_ns, const uint8_t *rec, size_t len,
		      uint64_t frame);

/* Writes the buffer out. Returns 0 or the negative errno of a failed write. */
int sink_file_flush(struct sink_file *f);

/* Flushes, closes the file and frees what sink_file_open allocated. */
void sink_file_close(struct sink_file *f);

/* For a sink whose priv is a struct sink_file of its own (pcap, JSON
 * Lines): allocates and opens it for s->target (header called with the
 * sink_file as arg; a snaplen of 0 or above max_snaplen becomes
 * max_snaplen) and sets s->blocks. 0 or -errno (*err_msg), nothing left
 * allocated on error. Its ops' flush and close are the two after it. */
int sink_file_sink_open(struct sink *s, const struct sink_opts *o,
			size_t (*header)(void *arg, uint8_t *dst, size_t room),
			uint32_t max_snaplen, const char **err_msg);
int sink_file_sink_flush(struct sink *s);
void sink_file_sink_close(struct sink *s);

#endif
