/*
 * show.c: portres_show, the one call that returns a list. The answer
 * comes in several datagrams (WIRE_MORE); entries are gathered with
 * their strings and bound ports as offsets into one growing buffer, then
 * handed out as a single allocation with the pointers fixed up.
 */
#include "internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct gather {
	portres_entry *ents; /* command and bound hold offsets into data until the end */
	size_t n, cap;
	uint8_t *data;
	size_t len, dcap;
};

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	size_t c = *cap ? *cap : 16;
	while (c < need)
		c *= 2;
	void *q = realloc(*p, c * size);
	if (!q)
		return -1;
	*p = q;
	*cap = c;
	return 0;
}

/* put appends n bytes of b (aligned to align; b NULL: zeros) and returns
 * their offset. */
static long put(struct gather *g, const void *b, size_t n, size_t align)
{
	size_t off = (g->len + align - 1) / align * align;
	if (grow((void **)&g->data, &g->dcap, off + n + 1, 1) < 0)
		return -1;
	memset(g->data + g->len, 0, off - g->len);
	if (n && b)
		memcpy(g->data + off, b, n);
	else if (n)
		memset(g->data + off, 0, n); /* room the caller fills */
	g->len = off + n;
	return (long)off;
}

static int each(void *arg, const struct wire_response *r, portres_error *err)
{
	struct gather *g = arg;
	const uint8_t *p = r->entries;
	size_t left = r->entries_len;
	for (uint32_t i = 0; i < r->nentries; i++) {
		struct wire_entry e;
		if (wire_next_entry(&p, &left, &e) < 0) /* checked by the decoder already */
			return portres_seterr(err, PORTRES_WSAEINVAL, "show: bad answer from broker: malformed entry");
		if (grow((void **)&g->ents, &g->cap, g->n + 1, sizeof *g->ents) < 0)
			return portres_seterr(err, PORTRES_WSAENOBUFS, "show: out of memory");
		long cmd = put(g, e.command, e.command_len, 1);
		if (cmd >= 0)
			g->data[g->len++] = 0; /* NUL */
		long bound = put(g, NULL, (size_t)e.nbound * sizeof(uint16_t), sizeof(uint16_t));
		if (cmd < 0 || bound < 0)
			return portres_seterr(err, PORTRES_WSAENOBUFS, "show: out of memory");
		wire_bound_ports(&e, (uint16_t *)(g->data + bound));
		portres_entry *o = &g->ents[g->n++];
		memset(o, 0, sizeof *o);
		o->proto = e.proto;
		o->kind = e.kind;
		o->start = e.start;
		o->count = e.count;
		o->pid = e.pid;
		o->uid = e.uid;
		o->token = e.token;
		o->mine = (e.flags & WIRE_ENTRY_MINE) != 0;
		o->delegated = (e.flags & WIRE_ENTRY_DELEGATED) != 0;
		o->restored = (e.flags & WIRE_ENTRY_RESTORED) != 0;
		o->command = (const char *)(uintptr_t)cmd;
		o->nbound = e.nbound;
		o->bound = (const uint16_t *)(uintptr_t)bound;
	}
	return 0;
}

int portres_show(portres_client *c, portres_entry **out, size_t *n, portres_error *err)
{
	struct gather g = {0};
	*out = NULL;
	*n = 0;
	struct wire_request q = {.op = WIRE_OP_SHOW};
	int code = portres_transact(c, &q, NULL, 0, each, &g, NULL, err);
	if (code == 0) {
		size_t head = g.n * sizeof(portres_entry);
		head = (head + 7) / 8 * 8;
		portres_entry *all = malloc(head + g.len + 1);
		if (!all) {
			code = portres_seterr(err, PORTRES_WSAENOBUFS, "show: out of memory");
		} else {
			uint8_t *data = (uint8_t *)all + head;
			if (g.len)
				memcpy(data, g.data, g.len);
			for (size_t i = 0; i < g.n; i++) {
				all[i] = g.ents[i];
				all[i].command = (const char *)(data + (uintptr_t)g.ents[i].command);
				all[i].bound = (const uint16_t *)(data + (uintptr_t)g.ents[i].bound);
			}
			*out = all;
			*n = g.n;
		}
	}
	free(g.ents);
	free(g.data);
	return code;
}

void portres_entries_free(portres_entry *entries) { free(entries); }
