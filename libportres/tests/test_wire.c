/*
 * test_wire.c: the wire codec against hand-made messages: round trips,
 * every malformation the Go decoder refuses, and the limits.
 * Run by `make check`, plain and under ASan+UBSan.
 */
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failed;
#define CHECK(cond, ...)                                                         \
	do {                                                                     \
		if (!(cond)) {                                                   \
			fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                            \
			fputc('\n', stderr);                                     \
			failed++;                                                \
		}                                                                \
	} while (0)

/* entry appends one encoded entry to b at *n. */
static void entry(uint8_t *b, size_t *n, uint8_t proto, uint16_t start, uint16_t count, const char *cmd,
		  const uint8_t *bm, uint16_t bmlen)
{
	uint8_t *p = b + *n;
	memset(p, 0, 28);
	p[0] = proto;
	p[1] = 1;
	p[4] = (uint8_t)start;
	p[5] = (uint8_t)(start >> 8);
	p[6] = (uint8_t)count;
	p[7] = (uint8_t)(count >> 8);
	p[8] = 42; /* pid */
	p[16] = 0xef; /* token low byte */
	size_t cl = strlen(cmd);
	p[24] = (uint8_t)cl;
	p[25] = (uint8_t)(cl >> 8);
	if (cl)
		memcpy(p + 26, cmd, cl);
	p[26 + cl] = (uint8_t)bmlen;
	p[27 + cl] = (uint8_t)(bmlen >> 8);
	if (bmlen)
		memcpy(p + 28 + cl, bm, bmlen);
	*n += 28 + cl + bmlen;
}

static size_t response(uint8_t *b, uint32_t nentries, const uint8_t *ents, size_t elen, const char *msg)
{
	struct wire_response r = {.id = 7, .code = 0, .flags = WIRE_MORE, .proto = 6, .start = 5000, .count = 20,
				  .port = 5003, .token = 0x1122334455667788ull, .msg = msg, .msg_len = (uint16_t)strlen(msg),
				  .nentries = nentries, .entries = ents, .entries_len = elen};
	return wire_encode_response(b, &r);
}

static void test_request_round_trip(void)
{
	uint8_t b[64];
	struct wire_request q = {.id = 9, .op = WIRE_OP_BIND, .proto = 17, .flags = 3, .start = 1, .count = 2, .port = 3,
				 .token = 0xfedcba9876543210ull, .target = 4, .addr_len = 16};
	for (int i = 0; i < 16; i++)
		q.addr[i] = (uint8_t)i;
	size_t n = wire_encode_request(b, &q);
	CHECK(n == 45, "encoded %zu bytes", n);
	struct wire_request d;
	CHECK(wire_decode_request(b, n, &d) == 0, "decode");
	CHECK(memcmp(&d, &q, sizeof q) == 0, "round trip differs");
	CHECK(wire_decode_request(b, n - 1, &d) < 0, "truncated address accepted");
	b[28] = 5;
	CHECK(wire_decode_request(b, n, &d) < 0, "address length 5 accepted");
	b[28] = 16;
	b[2] = 0;
	CHECK(wire_decode_request(b, n, &d) < 0, "op 0 accepted");
	b[2] = 14;
	CHECK(wire_decode_request(b, n, &d) < 0, "op 14 accepted");
	b[2] = WIRE_OP_RECLAIM;
	CHECK(wire_decode_request(b, n, &d) == 0, "op 13 refused");
	uint8_t extra[64];
	memcpy(extra, b, n);
	extra[n] = 0;
	CHECK(wire_decode_request(extra, n + 1, &d) < 0, "trailing byte accepted");
	b[1] = 2;
	CHECK(wire_decode_request(b, n, &d) < 0, "version 2 accepted");
}

static void test_response(void)
{
	uint8_t ents[256], b[512];
	size_t elen = 0;
	uint8_t bm[3] = {0x09, 0x00, 0x04}; /* ports +0, +3, +18 of 20 */
	entry(ents, &elen, 6, 5000, 20, "nginx -g daemon off;", bm, 3);
	entry(ents, &elen, 17, 65535, 1, "", NULL, 0);
	size_t n = response(b, 2, ents, elen, "hello");
	struct wire_response r;
	CHECK(wire_decode_response(b, n, &r) == 0, "decode");
	CHECK(r.id == 7 && r.flags == WIRE_MORE && r.proto == 6 && r.start == 5000 && r.count == 20 && r.port == 5003 &&
		      r.token == 0x1122334455667788ull && r.msg_len == 5 && memcmp(r.msg, "hello", 5) == 0 && r.nentries == 2,
	      "fields");
	const uint8_t *p = r.entries;
	size_t left = r.entries_len;
	struct wire_entry e;
	CHECK(wire_next_entry(&p, &left, &e) == 0 && e.nbound == 3 && e.pid == 42 && e.token == 0xef &&
		      e.command_len == 20 && memcmp(e.command, "nginx", 5) == 0, "entry 1");
	uint16_t ports[3];
	CHECK(wire_bound_ports(&e, ports) == 3 && ports[0] == 5000 && ports[1] == 5003 && ports[2] == 5018, "bound %u %u %u",
	      ports[0], ports[1], ports[2]);
	CHECK(wire_next_entry(&p, &left, &e) == 0 && e.nbound == 0 && e.bitmap == NULL && e.start == 65535, "entry 2");
	CHECK(left == 0, "left %zu", left);

	/* Malformations the Go decoder refuses. */
	CHECK(wire_decode_response(b, n - 1, &r) < 0, "truncated accepted");
	CHECK(wire_decode_response(b, 32, &r) < 0, "short accepted");
	uint8_t big[600];
	memcpy(big, b, n);
	big[n] = 0;
	CHECK(wire_decode_response(big, n + 1, &r) < 0, "trailing accepted");
	n = response(b, 3, ents, elen, "");
	CHECK(wire_decode_response(b, n, &r) < 0, "entry count past the data accepted");
	n = response(b, 0xffffffffu, ents, elen, "");
	CHECK(wire_decode_response(b, n, &r) < 0, "huge entry count accepted");
	elen = 0;
	uint8_t empty[3] = {0, 0, 0};
	entry(ents, &elen, 6, 5000, 20, "", empty, 3);
	n = response(b, 1, ents, elen, "");
	CHECK(wire_decode_response(b, n, &r) < 0, "empty bitmap accepted");
	elen = 0;
	uint8_t past[3] = {0, 0, 0x10}; /* +20: outside a 20-port block */
	entry(ents, &elen, 6, 5000, 20, "", past, 3);
	n = response(b, 1, ents, elen, "");
	CHECK(wire_decode_response(b, n, &r) < 0, "bound port outside the block accepted");
	elen = 0;
	entry(ents, &elen, 6, 5000, 20, "", bm, 2);
	n = response(b, 1, ents, elen, "");
	CHECK(wire_decode_response(b, n, &r) < 0, "bitmap of the wrong length accepted");
	elen = 0;
	uint8_t top[1] = {0x02}; /* 65535+1 */
	entry(ents, &elen, 6, 65535, 2, "", top, 1);
	n = response(b, 1, ents, elen, "");
	CHECK(wire_decode_response(b, n, &r) < 0, "bound port past 65535 accepted");
	b[0] = 'Q';
	CHECK(wire_decode_response(b, n, &r) < 0, "bad magic accepted");
}

static void test_max_message(void)
{
	/* A show answer of maximal size: entries with long commands. */
	static uint8_t ents[WIRE_MAX_MESSAGE], b[WIRE_MAX_MESSAGE + 64];
	size_t elen = 0;
	char cmd[1001];
	memset(cmd, 'x', 1000);
	cmd[1000] = 0;
	uint32_t k = 0;
	while (elen + 28 + 1000 < WIRE_MAX_MESSAGE - 64) {
		entry(ents, &elen, 6, (uint16_t)(1000 + k * 10), 10, cmd, NULL, 0);
		k++;
	}
	size_t n = response(b, k, ents, elen, "");
	struct wire_response r;
	CHECK(wire_decode_response(b, n, &r) == 0 && r.nentries == k, "max message of %u entries", k);
}

int main(void)
{
	test_request_round_trip();
	test_response();
	test_max_message();
	if (failed) {
		fprintf(stderr, "test_wire: %d failures\n", failed);
		return 1;
	}
	printf("test_wire: ok\n");
	return 0;
}
