/* Reference counting of connection metadata and the tags sinks see (contract in conn.h). */
#include "pipeline/conn.h"

#include <stdlib.h>
#include <string.h>

/* Refcounts are atomic: the sink queue's worker threads drop tags too. The
 * empty block stands in for connections without metadata; never freed. */
static struct conn_meta empty_meta = { .refs = 1 };

struct conn_meta *conn_meta_new(void)
{
	struct conn_meta *m = calloc(1, sizeof(*m));
	if (m)
		m->refs = 1;
	return m;
}

const struct conn_meta *conn_meta_ref(const struct conn_meta *m)
{
	if (m && m != &empty_meta)
		__atomic_add_fetch(&((struct conn_meta *)m)->refs, 1, __ATOMIC_RELAXED);
	return m;
}

int conn_meta_sole(const struct conn_meta *m)
{
	return __atomic_load_n(&m->refs, __ATOMIC_ACQUIRE) == 1;
}

void conn_meta_unref(const struct conn_meta *m)
{
	if (!m || m == &empty_meta)
		return;
	if (__atomic_sub_fetch(&((struct conn_meta *)m)->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free((struct conn_meta *)m);
}

struct conn_tag *conn_tag_new(const struct conn_id *id, uint8_t family,
			      const uint8_t client_addr[16], uint16_t client_port,
			      const uint8_t server_addr[16], uint16_t server_port,
			      const struct conn_meta *meta)
{
	struct conn_tag *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->refs = 1;
	t->family = family;
	t->client_port = client_port;
	t->server_port = server_port;
	memcpy(t->client_addr, client_addr, 16);
	memcpy(t->server_addr, server_addr, 16);
	static uint64_t serials;
	t->id = *id;
	t->serial = __atomic_add_fetch(&serials, 1, __ATOMIC_RELAXED);
	t->meta = meta ? conn_meta_ref(meta) : &empty_meta;
	return t;
}

const struct conn_tag *conn_tag_ref(const struct conn_tag *t)
{
	if (t)
		__atomic_add_fetch(&((struct conn_tag *)t)->refs, 1, __ATOMIC_RELAXED);
	return t;
}

void conn_tag_unref(const struct conn_tag *t)
{
	if (!t)
		return;
	if (__atomic_sub_fetch(&((struct conn_tag *)t)->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		conn_meta_unref(t->meta);
		free((struct conn_tag *)t);
	}
}

const char *conn_kind_name(unsigned kind)
{
	static const char *const kinds[] = {
		[CONN_KIND_CAPTURE] = "capture", [CONN_KIND_TUNNEL] = "tunnel",
		[CONN_KIND_DECRYPT] = "decrypt", [CONN_KIND_PROXY] = "proxy",
		[CONN_KIND_SYNTHETIC] = "synthetic" };
	return kind < sizeof(kinds) / sizeof(kinds[0]) && kinds[kind] ? kinds[kind] : "unknown";
}

const char *conn_tls_name(unsigned v)
{
	static const char *const minor[] = { "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3" };
	return v >= 0x0300 && v <= 0x0304 ? minor[v - 0x0300] : NULL;
}
