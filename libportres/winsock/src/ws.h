/*
 * ws.h: what the files of libportres-winsock share. Not installed.
 */
#ifndef PORTRES_WS_H
#define PORTRES_WS_H

#include <pthread.h>
#include <stdint.h>

#include "../../include/portres.h"
#include "winsock2.h"
#include "mstcpip.h"

#pragma GCC visibility push(hidden)

/* One socket known to the layer: made by socket/WSASocketW, or met first
 * in a call (a descriptor made with the POSIX socket()). */
struct ws_socket {
	int fd;
	int overlapped;          /* may run overlapped operations (socket() sockets do, as on Windows) */
	int closing;             /* closesocket has begun: new calls fail, pending ones abort */
	int busy;                /* calls in progress; closesocket waits for 0 */
	portres_client *own;     /* dialled by the first ACQUIRE; its runtime reservations end with it */
	uint64_t token;          /* associated reservation for the next bind, 0 if none */
};

/* ws_lock/ws_unlock guard the socket table, events, the shared client
 * and the completion queues; ws_cond is broadcast whenever an event is
 * set, an overlapped operation completes, a completion routine is queued
 * or a socket becomes idle. */
void ws_lock(void);
void ws_unlock(void);
void ws_wait(const struct timespec *deadline); /* with the lock held; NULL: no deadline */
void ws_broadcast(void);                        /* with the lock held */

/* ws_started says whether WSAStartup is in effect; calls that need it
 * fail with WSANOTINITIALISED otherwise. */
int ws_started(void);

/* ws_fail records code (and message) as the thread's last error and
 * returns SOCKET_ERROR. */
int ws_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ws_fail_err(const portres_error *err);

/* ws_get takes a reference on the socket s (busy++), creating its entry
 * for a descriptor first met here; NULL with the last error set if it is
 * not a socket, or is being closed. ws_put drops it. */
struct ws_socket *ws_get(SOCKET s);
void ws_put(struct ws_socket *ws);

/* ws_shared returns the process's shared broker connection (RELEASE,
 * ASSOCIATE, bind and the persistent functions when a socket has none of
 * its own), dialling it if needed; ws_shared_broken drops it after a
 * connection error so that the next call dials again. */
portres_client *ws_shared(portres_error *err);
void ws_shared_broken(portres_client *c, int code);

/* ws_own returns the socket's own broker connection, dialling it first. */
portres_client *ws_own(struct ws_socket *ws, portres_error *err);

/* Completion routines (APCs) queued to the thread that started the
 * operation, run by its next alertable wait. */
struct ws_apcs;
struct ws_apcs *ws_my_apcs(void); /* the calling thread's queue, referenced */
void ws_apcs_unref(struct ws_apcs *q);
void ws_queue_apc(struct ws_apcs *q, LPWSAOVERLAPPED_COMPLETION_ROUTINE fn, DWORD error, DWORD bytes,
		  LPWSAOVERLAPPED ov); /* with the lock held */
int ws_run_apcs(void); /* with the lock held (released while routines run); 1 if any ran */

/* ws_event_state: nonzero if h is a live event and is set; -1 if h is
 * not an event (with the lock held). */
int ws_event_state(WSAEVENT h);
void ws_event_set_locked(WSAEVENT h);
void ws_event_reset_locked(WSAEVENT h);

#pragma GCC visibility pop

#endif
