/* Fan-out of packets to every open sink; one failing sink never stops the others. */
#include "sinks/sink.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * Counters: each sink implementation keeps its own struct sink_counters
 * (only it knows which packets reached the file and which were lost when a
 * buffered write failed). The set only dispatches.
 */

int sink_set_add(struct sink_set *set, const struct sink_ops *ops,
		 const char *target, const struct sink_opts *o,
		 const char **err_msg)
{
	static const struct sink_opts no_opts;
	struct sink *s = NULL;
	int ret = -ENOMEM;

	*err_msg = "out of memory";
	struct sink **v = realloc(set->v, (set->n + 1) * sizeof(*v));
	if (!v)
		goto out;
	set->v = v;
	s = calloc(1, sizeof(*s));
	if (!s)
		goto out;
	s->ops = ops;
	s->target = strdup(target);
	if (!s->target)
		goto out;
	*err_msg = NULL;
	ret = ops->open(s, target, o ? o : &no_opts, err_msg);
	if (ret < 0)
		goto out;
	set->v[set->n++] = s;
	s = NULL;
	ret = 0;
out:
	if (s) {
		free(s->target);
		free(s);
	}
	return ret;
}

void sink_set_write(struct sink_set *set, const struct pkt *pkts, size_t n)
{
	if (!n)
		return;
	for (size_t i = 0; i < set->n; i++) {
		struct sink *s = set->v[i];
		s->ops->write(s, pkts, n); /* errors are counted by the sink */
	}
}

void sink_set_flush(struct sink_set *set)
{
	for (size_t i = 0; i < set->n; i++) {
		struct sink *s = set->v[i];
		if (s->ops->flush)
			s->ops->flush(s);
	}
}

void sink_set_close(struct sink_set *set)
{
	for (size_t i = 0; i < set->n; i++) {
		struct sink *s = set->v[i];
		if (s->ops->close)
			s->ops->close(s);
		free(s->target);
		free(s);
	}
	free(set->v);
	set->v = NULL;
	set->n = 0;
}
