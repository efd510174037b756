/*
 * fuzz_wire.c: the decoders on N mutated and random inputs (default
 * 100000): they must never read outside their buffer (run under ASan by
 * `make check`), and whatever they accept must re-encode to the same
 * bytes. Coverage-guided, differential fuzzing against the Go decoder is
 * internal/cwire's FuzzDecodeResponse; this driver needs no toolchain but
 * the C compiler. The same entry point builds with libFuzzer
 * (clang -fsanitize=fuzzer -DLIBFUZZER).
 */
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t re[WIRE_MAX_MESSAGE + 64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Copy into an exact-size allocation, so ASan sees any overread. */
	uint8_t *b = malloc(size ? size : 1);
	if (!b)
		return 0;
	memcpy(b, data, size);
	struct wire_request q;
	if (wire_decode_request(b, size, &q) == 0) {
		size_t n = wire_encode_request(re, &q);
		if (n != size || memcmp(re, b, n) != 0) {
			fprintf(stderr, "request re-encodes differently\n");
			abort();
		}
	}
	struct wire_response r;
	if (wire_decode_response(b, size, &r) == 0) {
		const uint8_t *p = r.entries;
		size_t left = r.entries_len;
		uint16_t *ports = malloc(65536 * sizeof *ports);
		for (uint32_t i = 0; i < r.nentries; i++) {
			struct wire_entry e;
			if (wire_next_entry(&p, &left, &e) < 0) {
				fprintf(stderr, "entry %u of an accepted response refused\n", i);
				abort();
			}
			if (ports && e.bitmap && wire_bound_ports(&e, ports) != e.nbound) {
				fprintf(stderr, "bound port count differs\n");
				abort();
			}
		}
		free(ports);
		size_t n = wire_encode_response(re, &r);
		if (n != size || memcmp(re, b, n) != 0) {
			fprintf(stderr, "response re-encodes differently\n");
			abort();
		}
	}
	free(b);
	return 0;
}

#ifndef LIBFUZZER
/* xorshift: reproducible without a seed file. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

int main(int argc, char **argv)
{
	long iters = argc > 1 ? atol(argv[1]) : 100000;
	/* Seeds: a valid request, a valid response with entries. */
	static uint8_t seeds[2][512];
	size_t seedlen[2];
	struct wire_request q = {.id = 1, .op = WIRE_OP_BIND, .proto = 6, .start = 5000, .count = 20, .port = 5003,
				 .token = 77, .addr_len = 4, .addr = {127, 0, 0, 1}};
	seedlen[0] = wire_encode_request(seeds[0], &q);
	uint8_t ents[128] = {6, 1, 0, 0, 0x88, 0x13, 20, 0, 42, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2, 0, 's', 'h', 3, 0, 0x09, 0, 4};
	struct wire_response r = {.id = 1, .proto = 6, .start = 5000, .count = 20, .msg = "m", .msg_len = 1, .nentries = 1,
				  .entries = ents, .entries_len = 33};
	seedlen[1] = wire_encode_response(seeds[1], &r);
	struct wire_response chk;
	if (wire_decode_response(seeds[1], seedlen[1], &chk) != 0) {
		fprintf(stderr, "fuzz_wire: the response seed does not decode\n");
		return 1;
	}
	static uint8_t buf[1024];
	for (long i = 0; i < iters; i++) {
		size_t n;
		uint64_t how = next();
		if (how % 4 == 0) { /* random bytes */
			n = next() % 200;
			for (size_t j = 0; j < n; j++)
				buf[j] = (uint8_t)next();
		} else { /* a seed with a few bytes changed, cut or grown */
			int s = (int)(next() % 2);
			n = seedlen[s];
			memcpy(buf, seeds[s], n);
			int edits = 1 + (int)(next() % 4);
			for (int k = 0; k < edits; k++) {
				switch (next() % 4) {
				case 0: buf[next() % n] = (uint8_t)next(); break;
				case 1: buf[next() % n] ^= (uint8_t)(1u << (next() % 8)); break;
				case 2: n = n ? next() % n : 0; break;
				default: if (n < sizeof buf) buf[n++] = (uint8_t)next();
				}
				if (n == 0)
					break;
			}
		}
		LLVMFuzzerTestOneInput(buf, n);
	}
	printf("fuzz_wire: %ld inputs, no fault\n", iters);
	return 0;
}
#endif
