/*
 * wire.c: encoding and decoding of the broker's messages, little-endian
 * and fixed layout (docs/PROTOCOL.md). The decoders read only inside the
 * buffer they are given, whatever it holds; the differential fuzz test
 * (internal/cwire) checks that they accept and reject exactly what the
 * Go decoders of internal/wire do, and decode the same fields.
 */
#include "wire.h"

#include <string.h>

#define WIRE_OP_MAX 14 /* one past the last operation this version knows */

static void put16(uint8_t *b, uint16_t v)
{
	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *b, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *b, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
}

/* A reader over a buffer: every read past the end sets bad and yields 0. */
struct reader {
	const uint8_t *p;
	size_t left;
	int bad;
};

static const uint8_t *take(struct reader *r, size_t n)
{
	if (r->bad || r->left < n) {
		r->bad = 1;
		r->left = 0;
		return NULL;
	}
	const uint8_t *p = r->p;
	r->p += n;
	r->left -= n;
	return p;
}

static uint8_t get8(struct reader *r)
{
	const uint8_t *p = take(r, 1);
	return p ? p[0] : 0;
}

static uint16_t get16(struct reader *r)
{
	const uint8_t *p = take(r, 2);
	return p ? (uint16_t)(p[0] | p[1] << 8) : 0;
}

static uint32_t get32(struct reader *r)
{
	const uint8_t *p = take(r, 4);
	uint32_t v = 0;
	for (int i = 0; p && i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static uint64_t get64(struct reader *r)
{
	const uint8_t *p = take(r, 8);
	uint64_t v = 0;
	for (int i = 0; p && i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

size_t wire_encode_request(uint8_t *b, const struct wire_request *r)
{
	b[0] = WIRE_MAGIC;
	b[1] = WIRE_VERSION;
	b[2] = r->op;
	b[3] = r->proto;
	put16(b + 4, r->flags);
	put32(b + 6, r->id);
	put16(b + 10, r->start);
	put16(b + 12, r->count);
	put16(b + 14, r->port);
	put64(b + 16, r->token);
	put32(b + 24, r->target);
	uint8_t n = r->addr_len == 4 || r->addr_len == 16 ? r->addr_len : 0;
	b[28] = n;
	memcpy(b + 29, r->addr, n);
	return WIRE_REQUEST_FIXED + n;
}

int wire_decode_request(const uint8_t *b, size_t n, struct wire_request *r)
{
	if (n < WIRE_REQUEST_FIXED || b[0] != WIRE_MAGIC || b[1] != WIRE_VERSION)
		return -1;
	struct reader rd = {b + 2, n - 2, 0};
	memset(r, 0, sizeof *r);
	r->op = get8(&rd);
	r->proto = get8(&rd);
	r->flags = get16(&rd);
	r->id = get32(&rd);
	r->start = get16(&rd);
	r->count = get16(&rd);
	r->port = get16(&rd);
	r->token = get64(&rd);
	r->target = get32(&rd);
	if (r->op == 0 || r->op >= WIRE_OP_MAX)
		return -1;
	r->addr_len = get8(&rd);
	if (r->addr_len != 0 && r->addr_len != 4 && r->addr_len != 16)
		return -1;
	const uint8_t *a = take(&rd, r->addr_len);
	if (rd.bad || rd.left != 0)
		return -1;
	if (r->addr_len)
		memcpy(r->addr, a, r->addr_len);
	return 0;
}

/* entry reads one entry; -1 if malformed. */
static int entry(struct reader *rd, struct wire_entry *e)
{
	e->proto = get8(rd);
	e->kind = get8(rd);
	e->flags = get16(rd);
	e->start = get16(rd);
	e->count = get16(rd);
	e->pid = (int32_t)get32(rd);
	e->uid = get32(rd);
	e->token = get64(rd);
	e->command_len = get16(rd);
	e->command = (const char *)take(rd, e->command_len);
	e->bitmap_len = get16(rd);
	e->bitmap = take(rd, e->bitmap_len);
	e->nbound = 0;
	if (rd->bad)
		return -1;
	if (e->bitmap_len == 0) {
		e->bitmap = NULL;
		return 0;
	}
	if (e->bitmap_len != ((uint32_t)e->count + 7) / 8)
		return -1;
	for (uint32_t off = 0; off < (uint32_t)e->bitmap_len * 8; off++) {
		if (!(e->bitmap[off / 8] & (1u << (off % 8))))
			continue;
		if (off >= e->count || (uint32_t)e->start + off > 65535)
			return -1;
		e->nbound++;
	}
	return e->nbound ? 0 : -1; /* a bitmap with no port set is not sent */
}

int wire_decode_response(const uint8_t *b, size_t n, struct wire_response *r)
{
	if (n < WIRE_RESPONSE_FIXED || b[0] != WIRE_MAGIC || b[1] != WIRE_VERSION)
		return -1;
	struct reader rd = {b + 2, n - 2, 0};
	memset(r, 0, sizeof *r);
	r->id = get32(&rd);
	r->code = get32(&rd);
	r->flags = get16(&rd);
	r->proto = get8(&rd);
	r->start = get16(&rd);
	r->count = get16(&rd);
	r->port = get16(&rd);
	r->token = get64(&rd);
	r->msg_len = get16(&rd);
	r->msg = (const char *)take(&rd, r->msg_len);
	r->nentries = get32(&rd);
	if (rd.bad || (uint64_t)r->nentries * WIRE_ENTRY_MIN > rd.left)
		return -1;
	r->entries = rd.p;
	for (uint32_t i = 0; i < r->nentries; i++) {
		struct wire_entry e;
		if (entry(&rd, &e) < 0)
			return -1;
	}
	if (rd.left != 0)
		return -1;
	r->entries_len = (size_t)(rd.p - r->entries);
	return 0;
}

int wire_next_entry(const uint8_t **p, size_t *left, struct wire_entry *e)
{
	struct reader rd = {*p, *left, 0};
	if (entry(&rd, e) < 0)
		return -1;
	*p = rd.p;
	*left = rd.left;
	return 0;
}

uint16_t wire_bound_ports(const struct wire_entry *e, uint16_t *out)
{
	uint16_t n = 0;
	for (uint32_t off = 0; off < (uint32_t)e->bitmap_len * 8 && off < e->count; off++)
		if (e->bitmap[off / 8] & (1u << (off % 8)))
			out[n++] = (uint16_t)(e->start + off);
	return n;
}

size_t wire_encode_response(uint8_t *b, const struct wire_response *r)
{
	b[0] = WIRE_MAGIC;
	b[1] = WIRE_VERSION;
	put32(b + 2, r->id);
	put32(b + 6, r->code);
	put16(b + 10, r->flags);
	b[12] = r->proto;
	put16(b + 13, r->start);
	put16(b + 15, r->count);
	put16(b + 17, r->port);
	put64(b + 19, r->token);
	put16(b + 27, r->msg_len);
	if (r->msg_len)
		memcpy(b + 29, r->msg, r->msg_len);
	put32(b + 29 + r->msg_len, r->nentries);
	if (r->entries_len)
		memcpy(b + 33 + r->msg_len, r->entries, r->entries_len);
	return WIRE_RESPONSE_FIXED + r->msg_len + r->entries_len;
}
