/* Capture files shared by the pcap and pcapng sinks: buffering, stdout, rotation, naming, write errors. */
#include "sinks/sink_file.h"
#include "common/log.h"
#include "sinks/repair.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * The format (file header, one record per packet) is the sink's; this file
 * decides where the bytes go.
 *
 * Target "-" is stdout: never rotated, never closed.
 *
 * Rotation (files only). Before a packet would make the current file exceed
 * rotate_bytes, or when a packet's timestamp is rotate_seconds or more after
 * the first packet of the current file, a new file is started; every file
 * starts with its own header and holds at least one packet. Names:
 *   - target without '%': the first file is the target itself, then
 *     TARGET.1, TARGET.2, ... (each new file takes the next number);
 *   - target with '%': an strftime(3) pattern in local time, like tcpdump -G,
 *     expanded with the time the file is started (the open for the first
 *     file, the timestamp of its first packet for later ones). If the
 *     expansion repeats the previous file's name, ".1", ".2", ... is
 *     appended, so a file is never overwritten by its successor.
 * With rotate_count N (targets without '%'), the sink keeps N files and
 * reuses them in turn: TARGET, TARGET.1, ... TARGET.<N-1>, then TARGET again,
 * like tcpdump -W; a new agent goes on after the newest file of the ring it
 * finds, cut to its last whole record (resume_ring). A reused file is
 * overwritten in place, not truncated
 * first, and cut to its new length when it is closed: on tmpfs that reuses
 * its pages, which costs the kernel a third of writing fresh ones. (After a
 * SIGKILL the current file may end with bytes of its previous lap.)
 * Files are created mode 0600: they hold decrypted traffic (an existing
 * file of ours opened for a capture is made 0600, or stricter, too). In a
 * directory others may write to (/tmp, /var/tmp, a world-writable one), a
 * name is created with O_EXCL|O_NOFOLLOW, and an existing one is used only
 * if it is a regular file of ours with one link, opened with O_NOFOLLOW: a
 * symbolic or hard link planted there is refused, its target untouched.
 *
 * Errors: a failed write loses the packets buffered at that moment (counted
 * in lost_packets and, as frame bytes, lost_bytes). A regular file is
 * truncated back to its last complete record so it stays readable (packets
 * and bytes count only what the file holds); a pipe that broke mid-record (or
 * EPIPE) is given up and every later packet is counted lost. An episode of
 * losses (a full disk until space is freed) is logged once when it starts,
 * with the system's reason, and once when it ends, with the packets and
 * bytes it lost: when writes have worked for EPISODE_QUIET_NS without a loss
 * (a disk on the edge of full lets a small write through now and then), or
 * at exit. `failing` shows it in the stats.
 *
 * A pipe's write waits for its reader; the agent gives such a sink a queue
 * (sink->blocks) so only the queue's worker waits. At exit the agent may
 * cancel it (sink->cancel, with a signal that interrupts the write): the
 * write gives up and the rest is counted lost.
 */

#define NSEC 1000000000ull
#define EPISODE_QUIET_NS NSEC

static void buf_put_file_hdr(struct sink_file *p)
{
	size_t n = p->header(p->arg, p->buf + p->used, SINK_FILE_BUF_SIZE - p->used);
	p->used += n;
	p->file_bytes += n;
}

static int cancelled(const struct sink_file *p)
{
	return p->cancel && __atomic_load_n(p->cancel, __ATOMIC_RELAXED);
}

/* Writes the buffer's bytes, then the referenced records (one writev),
 * looping on short writes, EINTR and EAGAIN (waits), until the sink is
 * cancelled (-ECANCELED). *done: the bytes that went out. */
static int write_all(struct sink_file *p, size_t *done)
{
	struct iovec v[SINK_FILE_MAX_REFS + 1], *iv = v;
	size_t n = 0, left = p->used + p->ref_bytes;
	if (p->used)
		v[n++] = (struct iovec){ p->buf, p->used };
	memcpy(v + n, p->refs, p->nrefs * sizeof(v[0]));
	n += p->nrefs;
	*done = 0;
	while (left) {
		if (cancelled(p))
			return -ECANCELED;
		ssize_t k = writev(p->fd, iv, (int)n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pfd = { .fd = p->fd, .events = POLLOUT };
			poll(&pfd, 1, 100);
			continue;
		}
		if (k <= 0)
			return k < 0 ? -errno : -EIO;
		*done += (size_t)k;
		left -= (size_t)k;
		for (size_t w = (size_t)k; w;) { /* past what went out */
			size_t c = w < iv->iov_len ? w : iv->iov_len;
			iv->iov_base = (uint8_t *)iv->iov_base + c;
			iv->iov_len -= c;
			w -= c;
			if (!iv->iov_len) {
				iv++;
				n--;
			}
		}
	}
	return 0;
}

static const char *out_name(const struct sink_file *p)
{
	return p->is_stdout ? "stdout" : p->path ? p->path : p->target;
}

/* Packets are being lost: an episode starts (logged once) unless one is on. */
static void episode_start(struct sink_file *p, int err)
{
	if (p->ctr->failing)
		return;
	p->ep_start_ns = log_now_ns();
	p->ep_pkts = p->ctr->lost_packets;
	p->ep_bytes = p->ctr->lost_bytes;
	__atomic_store_n(&p->ctr->failing, 1, __ATOMIC_RELAXED);
	sink_ctr_add(&p->ctr->loss_episodes, 1);
	if (err != -EPIPE && err != -ECANCELED) /* the agent says those itself */
		log_warn("%s: cannot write: %s; losing packets until writes work again "
			 "(counted in the stats: errors, lost_bytes)", out_name(p),
			 strerror(err < 0 ? -err : EIO));
}

/* The episode's end (writes work again, or the exit): what it lost. */
static void episode_end(struct sink_file *p, const char *how)
{
	if (!p->ctr->failing)
		return;
	p->ep_ok = 0;
	__atomic_store_n(&p->ctr->failing, 0, __ATOMIC_RELAXED);
	double s = (double)(log_now_ns() - p->ep_start_ns) / 1e9;
	log_warn("%s: %s after losing %llu packets (%llu bytes) in %.1f s", out_name(p), how,
		 (unsigned long long)(p->ctr->lost_packets - p->ep_pkts),
		 (unsigned long long)(p->ctr->lost_bytes - p->ep_bytes), s);
}

/* Packets lost: counted, and an episode starts. */
static void count_lost(struct sink_file *p, uint64_t pkts, uint64_t bytes, int err)
{
	episode_start(p, err);
	sink_ctr_add(&p->ctr->lost_packets, pkts);
	sink_ctr_add(&p->ctr->lost_bytes, bytes);
	p->ep_fail_ns = log_now_ns();
	p->ep_ok = 0;
}

/* Writes worked: the episode ends once they have for EPISODE_QUIET_NS. */
static void episode_check(struct sink_file *p)
{
	if (p->ctr->failing && p->ep_ok && log_now_ns() - p->ep_fail_ns >= EPISODE_QUIET_NS)
		episode_end(p, "writing again");
}

/* The buffer could not be written: count its packets lost, keep the file valid. */
static void buf_lost(struct sink_file *p, size_t done, int err)
{
	p->last_err = err;
	p->file_pkts -= p->buf_pkts;
	if (p->fd >= 0 && p->seekable) {
		if (ftruncate(p->fd, (off_t)p->good_off) < 0 ||
		    lseek(p->fd, (off_t)p->good_off, SEEK_SET) < 0)
			p->dead = 1;
	} else if (done || err == -EPIPE) {
		p->dead = 1; /* a pipe holds half a record now, or no reader */
		__atomic_store_n(&p->ctr->broken, 1, __ATOMIC_RELAXED);
	}
	p->used = 0;
	p->nrefs = p->ref_bytes = 0;
	p->file_bytes = p->good_off;
	if ((p->good_off == 0 || p->rehead) && !p->dead)
		buf_put_file_hdr(p); /* the header went with the lost buffer */
}

static int buf_flush(struct sink_file *p)
{
	size_t done = 0;
	episode_check(p);
	if ((!p->used && !p->nrefs) || p->fd < 0) {
		p->nrefs = p->ref_bytes = 0; /* no file: they were counted lost */
		return 0;
	}
	int ret = p->dead ? p->last_err : write_all(p, &done);
	if (ret < 0) {
		count_lost(p, p->buf_pkts, p->buf_bytes, ret);
		buf_lost(p, p->dead ? 0 : done, ret);
	} else {
		p->ep_ok |= p->buf_pkts > 0;
		p->good_off += p->used + p->ref_bytes;
		p->used = 0;
		p->nrefs = p->ref_bytes = 0;
		sink_ctr_add(&p->ctr->packets, p->buf_pkts);
		sink_ctr_add(&p->ctr->bytes, p->buf_bytes);
	}
	p->buf_pkts = 0;
	p->buf_bytes = 0;
	return ret;
}

/* A regular file can be truncated after a failed write; a pipe's write may wait. */
static void kind_of_fd(struct sink_file *p)
{
	struct stat st;
	int ok = fstat(p->fd, &st) == 0;
	p->seekable = ok && S_ISREG(st.st_mode);
	p->pipe = ok && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
}

/* Is the directory of path writable by others (/tmp, /var/tmp)? There
 * anyone may have put a link or a file of theirs at the name. */
static int in_shared_dir(const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) : 0;
	if (n >= sizeof(dir))
		return 1;
	if (slash && !n)
		n = 1; /* "/x" */
	memcpy(dir, slash ? path : ".", slash ? n : 2);
	dir[slash ? n : 1] = 0;
	struct stat st;
	return stat(dir, &st) == 0 && (st.st_mode & S_IWOTH);
}

/* Opens a capture file (see the top: links in shared directories, 0600).
 * Returns the descriptor or a negative errno with *why set when it is ours. */
int sink_file_open_private(const char *path, int trunc, const char **why)
{
	int shared = in_shared_dir(path), fd;
	*why = NULL;
	if (!shared) {
		fd = open(path, O_WRONLY | O_CREAT | trunc | O_CLOEXEC, 0600);
	} else {
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && errno == EEXIST)
			fd = open(path, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | (trunc & O_APPEND));
		if (fd < 0 && errno == ELOOP) {
			*why = "a symbolic link in a directory others may write to: refusing to follow it";
			return -ELOOP;
		}
	}
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	if (shared && (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || st.st_nlink != 1)) {
		close(fd);
		*why = "a file in a directory others may write to that is not a plain file of ours "
		       "with one link: refusing to write into it";
		return -EPERM;
	}
	if (shared) {
		int fl = fcntl(fd, F_GETFL);
		if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0 ||
		    ((trunc & O_TRUNC) && ftruncate(fd, 0) < 0)) {
			int e = -errno;
			close(fd);
			return e;
		}
	}
	/* decrypted traffic: only its owner reads it, even in a file made before */
	if (S_ISREG(st.st_mode) && st.st_uid == geteuid() && (st.st_mode & 077))
		fchmod(fd, st.st_mode & 0700);
	return fd;
}

/* The agent's clock (sink_opts.clock_ns): rotation and names never follow
 * the packets' timestamps, which a producer writes. */
static uint64_t file_now(const struct sink_file *p)
{
	if (p->o.clock_ns)
		return p->o.clock_ns();
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	return (uint64_t)now.tv_sec * NSEC + (uint64_t)now.tv_nsec;
}

/* Picks the next file name (see the naming rules at the top). */
static int next_name(struct sink_file *p, const char *target, uint64_t ts_ns)
{
	char *base, *path;
	if (strchr(target, '%')) {
		char tmp[4096];
		time_t t = (time_t)(ts_ns / NSEC);
		struct tm tm;
		if (!localtime_r(&t, &tm) || !strftime(tmp, sizeof(tmp), target, &tm))
			return -ENAMETOOLONG;
		base = strdup(tmp);
	} else {
		base = strdup(target);
	}
	if (!base)
		return -ENOMEM;
	if (p->base && !strcmp(base, p->base)) {
		free(base);
		p->seq++;
		if (p->o.rotate_count && p->seq >= p->o.rotate_count)
			p->seq = 0;
	} else {
		free(p->base);
		p->base = base;
		p->seq = 0;
	}
	if (p->seq) {
		if (asprintf(&path, "%s.%u", p->base, p->seq) < 0)
			return -ENOMEM;
	} else {
		path = strdup(p->base);
		if (!path)
			return -ENOMEM;
	}
	free(p->path);
	p->path = path;
	return 0;
}

/* Starts the next file; the buffer must be empty. */
static int file_open(struct sink_file *p, const char *target, uint64_t ts_ns)
{
	int ret = next_name(p, target, ts_ns);
	if (ret < 0)
		return ret;
	/* a ring of files overwrites in place (see the top); else start empty */
	int fd = sink_file_open_private(p->path, p->o.rotate_count ? 0 : O_TRUNC, &p->open_why);
	if (fd < 0)
		return fd;
	p->fd = fd;
	kind_of_fd(p);
	p->dead = 0;
	p->good_off = 0;
	p->file_bytes = 0;
	p->file_pkts = 0;
	p->file_start_ns = 0;
	buf_put_file_hdr(p);
	sink_ctr_add(&p->ctr->files, 1);
	return 0;
}

/* Closes the current file; a file overwritten in place is cut to what we wrote. */
static void file_close(struct sink_file *p)
{
	if (p->fd < 0 || p->is_stdout)
		return;
	if (p->o.rotate_count && p->seekable && ftruncate(p->fd, (off_t)p->good_off) < 0)
		p->last_err = -errno;
	close(p->fd);
	p->fd = -1;
}

/* Closes the current file (if any) and starts the next one. */
static int rotate(struct sink_file *p, uint64_t ts_ns)
{
	buf_flush(p); /* losses are counted there */
	p->used = 0;
	file_close(p);
	p->fd = -1;
	int ret = file_open(p, p->target, ts_ns);
	if (ret < 0) {
		p->last_err = ret;
		p->retry_ns = ts_ns + NSEC;
	}
	return ret;
}

static int want_rotate(const struct sink_file *p, uint64_t ts_ns, size_t rec)
{
	if (p->is_stdout)
		return 0;
	if (p->fd < 0)
		return ts_ns >= p->retry_ns; /* the last open failed: retry now and then */
	if (!p->file_pkts)
		return 0;
	if (p->o.rotate_bytes && p->file_bytes + rec > p->o.rotate_bytes)
		return 1;
	if (p->o.rotate_seconds && ts_ns >= p->file_start_ns &&
	    ts_ns - p->file_start_ns >= p->o.rotate_seconds * NSEC)
		return 1;
	return 0;
}

uint8_t *sink_file_reserve(struct sink_file *p, uint64_t ts_ns, size_t rec, uint64_t frame,
			   int *err)
{
	int ret = 0;
	(void)ts_ns; /* a producer's clock: not ours to rotate by */
	/* the clock only where a rule needs it (a time limit, an open to retry):
	 * not one clock_gettime per packet */
	uint64_t now = p->o.rotate_seconds || p->fd < 0 ? file_now(p) : 0;
	if (want_rotate(p, now, rec))
		ret = rotate(p, now ? now : file_now(p));
	if (p->nrefs || rec > SINK_FILE_BUF_SIZE - p->used ||
	    (p->used && p->used + rec > SINK_FILE_FLUSH_AT)) {
		int r = buf_flush(p); /* referenced records first: they come before */
		ret = ret ? ret : r;
	}
	*err = ret;
	if (p->fd < 0 || p->dead || rec > SINK_FILE_BUF_SIZE - p->used) {
		*err = ret ? ret : p->last_err ? p->last_err : -EMSGSIZE;
		count_lost(p, 1, frame, *err);
		return NULL;
	}
	return p->buf + p->used;
}

/* A record of len bytes for a packet of frame bytes goes into the file. */
static void account(struct sink_file *p, size_t len, uint64_t frame)
{
	if (!p->file_pkts)
		p->file_start_ns = file_now(p);
	p->file_pkts++;
	p->file_bytes += len;
	p->buf_pkts++;
	p->buf_bytes += frame;
}

void sink_file_commit(struct sink_file *p, uint64_t ts_ns, size_t used, uint64_t frame)
{
	(void)ts_ns;
	p->used += used;
	account(p, used, frame);
}

int sink_file_put_ref(struct sink_file *p, uint64_t ts_ns, const uint8_t *rec, size_t len,
		      uint64_t frame)
{
	int ret = 0;
	uint64_t now = p->o.rotate_seconds || p->fd < 0 ? file_now(p) : 0;
	if (want_rotate(p, now, len))
		ret = rotate(p, now ? now : file_now(p));
	if (p->nrefs == SINK_FILE_MAX_REFS || p->used + p->ref_bytes + len > SINK_FILE_FLUSH_AT) {
		int r = buf_flush(p);
		ret = ret ? ret : r;
	}
	if (p->fd < 0 || p->dead) {
		ret = ret ? ret : p->last_err ? p->last_err : -EIO;
		count_lost(p, 1, frame, ret);
		return ret;
	}
	p->refs[p->nrefs++] = (struct iovec){ (void *)rec, len };
	p->ref_bytes += len;
	account(p, len, frame);
	(void)ts_ns;
	return ret;
}

int sink_file_flush(struct sink_file *p)
{
	return buf_flush(p);
}

void sink_file_close(struct sink_file *p)
{
	if (p->buf)
		buf_flush(p);
	if (p->ctr)
		episode_end(p, "still failing at exit");
	file_close(p);
	free(p->buf);
	free(p->base);
	free(p->path);
	p->buf = NULL;
	p->base = p->path = NULL;
}

/*
 * A ring of files (rotate_count) that an earlier agent wrote: the sink goes
 * on after its newest file (latest mtime) instead of overwriting TARGET
 * first, and cuts that file to its last whole record (an agent killed while
 * writing leaves a partial one), saying what it cut. A newest file that is
 * no pcap/pcapng: the ring starts at TARGET as without an earlier agent.
 */
static void resume_ring(struct sink_file *p, const char *target)
{
	struct timespec newest = { 0, 0 };
	int found = -1;
	for (unsigned i = 0; i < p->o.rotate_count; i++) {
		char *name = NULL;
		if (i ? asprintf(&name, "%s.%u", target, i) < 0 : !(name = strdup(target)))
			return;
		struct stat st;
		if (lstat(name, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
		    (found < 0 || st.st_mtim.tv_sec > newest.tv_sec ||
		     (st.st_mtim.tv_sec == newest.tv_sec && st.st_mtim.tv_nsec > newest.tv_nsec))) {
			newest = st.st_mtim;
			found = (int)i;
		}
		free(name);
	}
	char *name = NULL;
	if (found < 0 || (found ? asprintf(&name, "%s.%d", target, found) < 0 :
			  !(name = strdup(target))))
		return;
	struct repair_result r;
	const char *why = NULL;
	int err = capture_repair(name, 0, &r, &why);
	if (err < 0) {
		free(name); /* no capture of ours: the ring starts at TARGET, as always */
		return;
	}
	if (r.keep < r.size)
		log_warn("%s: ended mid-record (the previous agent stopped while writing): cut the "
			 "last %llu bytes from offset %llu, %llu whole records kept", name,
			 (unsigned long long)(r.size - r.keep), (unsigned long long)r.keep,
			 (unsigned long long)r.records);
	free(name);
	p->base = strdup(target); /* the next name is the one after it */
	p->seq = p->base ? (unsigned)found : 0;
}

int sink_file_open(struct sink_file *p, const char *target, const struct sink_opts *o,
		   const char **err_msg)
{
	*err_msg = "out of memory";
	p->fd = -1;
	p->o = *o;
	p->target = target;
	if (posix_memalign((void **)&p->buf, 4096, SINK_FILE_BUF_SIZE)) {
		p->buf = NULL;
		return -ENOMEM;
	}
	if (!strcmp(target, "-")) {
		p->fd = STDOUT_FILENO;
		p->is_stdout = 1;
		kind_of_fd(p);
		p->seekable = 0; /* never truncated: a file opened by the shell may be shared */
		buf_put_file_hdr(p);
		sink_ctr_add(&p->ctr->files, 1);
		return 0;
	}
	if (p->o.rotate_count && strchr(target, '%')) {
		*err_msg = "a file count needs a plain file name, not a '%' pattern";
		return -EINVAL;
	}
	if (p->o.rotate_count)
		resume_ring(p, target);
	int ret = file_open(p, target, file_now(p));
	if (ret < 0 && p->open_why)
		*err_msg = p->open_why;
	else if (ret == -ENAMETOOLONG)
		*err_msg = "the file name pattern expands to nothing or to a name too long";
	else if (ret < 0 && ret != -ENOMEM)
		*err_msg = "cannot create the capture file (does the directory exist and is it writable?)";
	return ret;
}

int sink_file_sink_open(struct sink *s, const struct sink_opts *o,
			size_t (*header)(void *arg, uint8_t *dst, size_t room),
			uint32_t max_snaplen, const char **err_msg)
{
	struct sink_file *f = calloc(1, sizeof(*f));
	*err_msg = "out of memory";
	if (!f)
		return -ENOMEM;
	s->priv = f;
	f->ctr = &s->ctr;
	f->cancel = &s->cancel;
	f->header = header;
	f->arg = f;
	struct sink_opts so = *o;
	if (!so.snaplen || so.snaplen > max_snaplen)
		so.snaplen = max_snaplen;
	int ret = sink_file_open(f, s->target, &so, err_msg);
	if (ret < 0)
		sink_file_sink_close(s);
	else
		s->blocks = (uint8_t)f->pipe;
	return ret;
}

int sink_file_sink_flush(struct sink *s)
{
	return sink_file_flush(s->priv);
}

void sink_file_sink_close(struct sink *s)
{
	struct sink_file *f = s->priv;
	if (!f)
		return;
	sink_file_close(f);
	free(f);
	s->priv = NULL;
}
