/*
 * check.h: the CHECK of the C tests run against a broker. A test defines
 * CHECK_DETAIL(), what a failure adds after its own message (the last
 * error, say), then includes this. CHECK(name, cond, fmt, ...) prints
 * "ok NAME", or "FAIL NAME: " and the message and counts the failure in
 * failures, which the test returns as its exit status.
 */
#ifndef PORTRES_TESTS_CHECK_H
#define PORTRES_TESTS_CHECK_H

#include <stdio.h>

static int failures;

#define CHECK(name, cond, ...)                     \
	do {                                       \
		if (cond) {                        \
			printf("ok %s\n", name);   \
		} else {                           \
			printf("FAIL %s: ", name); \
			printf(__VA_ARGS__);       \
			CHECK_DETAIL();            \
			printf("\n");              \
			failures++;                \
		}                                  \
	} while (0)

#endif
