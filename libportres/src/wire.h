/*
 * wire.h: the broker's messages (docs/PROTOCOL.md), encoded and decoded
 * without allocation. Internal to libportres; the fuzz tests and the
 * differential test against the Go decoder include it.
 */
#ifndef PORTRES_WIRE_H
#define PORTRES_WIRE_H

#include <stddef.h>
#include <stdint.h>

#pragma GCC visibility push(hidden)

#define WIRE_MAGIC 'P'
#define WIRE_VERSION 1
#define WIRE_MAX_MESSAGE (64 * 1024)

enum wire_op {
	WIRE_OP_ACQUIRE = 1,
	WIRE_OP_RELEASE = 2,
	WIRE_OP_ASSOCIATE = 3,
	WIRE_OP_BIND = 4,
	WIRE_OP_SHOW = 5,
	WIRE_OP_CANCEL = 6,
	WIRE_OP_PERSISTENT_CREATE = 7,
	WIRE_OP_PERSISTENT_DELETE = 8,
	WIRE_OP_PERSISTENT_LOOKUP = 9,
	WIRE_OP_DYNAMIC_SHOW = 10,
	WIRE_OP_DYNAMIC_SET = 11,
	WIRE_OP_STATUS = 12,
	WIRE_OP_RECLAIM = 13,
};

/* Request flags. */
#define WIRE_FLAG_DELEGATE 0x0001
#define WIRE_FLAG_BIND 0x0002
/* Response flags. */
#define WIRE_MORE 0x0001
#define WIRE_NOT_EXCLUDED 0x0002
/* Entry flags. */
#define WIRE_ENTRY_DELEGATED 0x0001
#define WIRE_ENTRY_MINE 0x0002
#define WIRE_ENTRY_DELETED 0x0004
#define WIRE_ENTRY_RESTORED 0x0008

/* Fixed sizes. */
#define WIRE_REQUEST_FIXED 29 /* without the address bytes */
#define WIRE_RESPONSE_FIXED 33
#define WIRE_ENTRY_MIN 28

struct wire_request {
	uint32_t id;
	uint8_t op, proto;
	uint16_t flags, start, count, port;
	uint64_t token;
	uint32_t target;
	uint8_t addr_len; /* 0, 4 or 16 */
	uint8_t addr[16];
};

struct wire_response {
	uint32_t id, code;
	uint16_t flags;
	uint8_t proto;
	uint16_t start, count, port;
	uint64_t token;
	const char *msg; /* points into the datagram; not NUL-terminated */
	uint16_t msg_len;
	uint32_t nentries;
	const uint8_t *entries; /* the encoded entries, walked with wire_next_entry */
	size_t entries_len;
};

struct wire_entry {
	uint8_t proto, kind;
	uint16_t flags, start, count;
	int32_t pid;
	uint32_t uid;
	uint64_t token;
	const char *command; /* into the datagram; not NUL-terminated */
	uint16_t command_len;
	const uint8_t *bitmap; /* bound ports: bit i = start+i; NULL if none */
	uint16_t bitmap_len;
	uint16_t nbound;
};

/* wire_encode_request writes r to buf (at least WIRE_REQUEST_FIXED+16
 * bytes) and returns the length. */
size_t wire_encode_request(uint8_t *buf, const struct wire_request *r);

/* wire_decode_request parses one request datagram; 0 if valid, -1 if
 * malformed (the broker's rules: known op, address length 0/4/16, no
 * trailing bytes). */
int wire_decode_request(const uint8_t *b, size_t n, struct wire_request *r);

/* wire_decode_response parses one response datagram. It checks every
 * entry (wire_next_entry will not fail afterwards). 0 if valid, -1 if
 * malformed. r points into b. */
int wire_decode_response(const uint8_t *b, size_t n, struct wire_response *r);

/* wire_next_entry decodes the entry at *p (of the response's entries,
 * *left bytes remaining) and advances. 0, or -1 if malformed. */
int wire_next_entry(const uint8_t **p, size_t *left, struct wire_entry *e);

/* wire_bound_ports writes e's bound ports, ascending, to out (room for
 * e->nbound) and returns how many. */
uint16_t wire_bound_ports(const struct wire_entry *e, uint16_t *out);

/* wire_encode_response writes r with entries already encoded (tests and
 * the fuzzer's seed corpus). buf needs WIRE_RESPONSE_FIXED + msg_len +
 * entries_len bytes. */
size_t wire_encode_response(uint8_t *buf, const struct wire_response *r);

#pragma GCC visibility pop

#endif
