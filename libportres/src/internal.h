/*
 * internal.h: what libportres's files share. Not installed.
 */
#ifndef PORTRES_INTERNAL_H
#define PORTRES_INTERNAL_H

#include <stdarg.h>

#include "../include/portres.h"
#include "wire.h"

#pragma GCC visibility push(hidden)

/* portres_each_fn sees each answer of a request (all of a show); a
 * nonzero return ends the request with that code. */
typedef int (*portres_each_fn)(void *arg, const struct wire_response *r, portres_error *err);

/* portres_transact sends q (with the nfds descriptors fds, at most
 * PORTRES_MAX_BIND) and reads its answers, calling each for every
 * successful one; *last receives the final answer's fixed fields.
 * Returns 0 or the error code (err filled). */
int portres_transact(portres_client *c, struct wire_request *q, const int *fds, size_t nfds, portres_each_fn each,
		     void *arg, struct wire_response *last, portres_error *err);

/* portres_seterr fills err with code and "portres: " + the message, and
 * returns code. */
int portres_seterr(portres_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* portres_op_name is the wire operation's name in messages ("acquire"). */
const char *portres_op_name(int op);


#pragma GCC visibility pop

#endif
