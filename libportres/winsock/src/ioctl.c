/*
 * ioctl.c: WSAIoctl with the three port reservation control codes, and
 * overlapped completion (an event, or a completion routine run by the
 * starting thread's next alertable wait), and WSAGetOverlappedResult.
 *
 * A call is checked at once, in the Go winsock package's order (README,
 * "The Winsock layer"); what is left talks to portresd, on the caller's
 * thread, or on a thread of its own for an overlapped call, which
 * returns SOCKET_ERROR with WSA_IO_PENDING.
 */
#include "ws.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#undef getsockname

struct op {
	struct ws_socket *ws; /* referenced */
	DWORD code;
	uint8_t proto;
	uint16_t start, count; /* ACQUIRE, host order */
	uint64_t token;        /* RELEASE, ASSOCIATE */
	INET_PORT_RESERVATION_INSTANCE *out;
	/* overlapped */
	LPWSAOVERLAPPED ov;
	LPWSAOVERLAPPED_COMPLETION_ROUTINE completion;
	struct ws_apcs *apcs;
};

static const char *ioctl_name(DWORD code)
{
	switch (code) {
	case SIO_ACQUIRE_PORT_RESERVATION: return "WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION)";
	case SIO_RELEASE_PORT_RESERVATION: return "WSAIoctl(SIO_RELEASE_PORT_RESERVATION)";
	case SIO_ASSOCIATE_PORT_RESERVATION: return "WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION)";
	}
	return "WSAIoctl";
}

/* sock_proto: PORTRES_TCP or PORTRES_UDP, or a Winsock error code < 0. */
static int sock_proto(int fd, const char *name)
{
	int v[3];
	const int opts[3] = {SO_DOMAIN, SO_TYPE, SO_PROTOCOL};
	for (int i = 0; i < 3; i++) {
		socklen_t len = sizeof v[i];
		if (getsockopt(fd, SOL_SOCKET, opts[i], &v[i], &len) < 0) {
			int e = errno, wsa = portres_wsa_from_errno(e);
			ws_fail(wsa, "%s: getsockopt: %s", name, strerror(e));
			return -wsa;
		}
	}
	if (v[0] != AF_INET && v[0] != AF_INET6) {
		ws_fail(WSAEOPNOTSUPP, "%s: address family %d is neither IPv4 nor IPv6", name, v[0]);
		return -WSAEOPNOTSUPP;
	}
	if (v[1] == SOCK_STREAM && v[2] == IPPROTO_TCP)
		return PORTRES_TCP;
	if (v[1] == SOCK_DGRAM && v[2] == IPPROTO_UDP)
		return PORTRES_UDP;
	ws_fail(WSAEOPNOTSUPP, "%s: the socket is neither TCP nor UDP (type %d, protocol %d)", name, v[1], v[2]);
	return -WSAEOPNOTSUPP;
}

/* run does what is left of op; returns 0 and the bytes stored, or the
 * Winsock code (the thread's last message says why). */
static int run(struct op *op, DWORD *bytes)
{
	struct ws_socket *ws = op->ws;
	const char *name = ioctl_name(op->code);
	portres_error err = {0};
	int code = 0;
	*bytes = 0;
	if (op->code == SIO_ACQUIRE_PORT_RESERVATION) {
		portres_client *c = ws_own(ws, &err);
		portres_reservation r;
		if (!c || (code = portres_acquire(c, op->proto, op->start, op->count, 0, &r, &err)) != 0) {
			code = err.code;
		} else {
			INET_PORT_RESERVATION_INSTANCE inst;
			memset(&inst, 0, sizeof inst);
			inst.Reservation.StartPort = htons(r.start);
			inst.Reservation.NumberOfPorts = r.count;
			inst.Token.Token = r.token;
			memcpy(op->out, &inst, sizeof inst);
			*bytes = sizeof inst;
		}
	} else {
		ws_lock();
		portres_client *c = ws->own;
		ws_unlock();
		int shared = c == NULL;
		if (!c)
			c = ws_shared(&err);
		portres_reservation r;
		if (!c) {
			code = err.code;
		} else if (op->code == SIO_RELEASE_PORT_RESERVATION) {
			code = portres_release(c, op->proto, op->token, NULL, &err);
		} else if ((code = portres_associate(c, op->token, &r, &err)) == 0 && r.proto != op->proto) {
			code = WSAEINVAL;
			snprintf(err.message, sizeof err.message,
				 "portres: %s: a %s socket cannot take its port from the %s reservation %u-%u", name,
				 op->proto == PORTRES_TCP ? "tcp" : "udp", r.proto == PORTRES_TCP ? "tcp" : "udp", r.start,
				 r.start + r.count - 1);
		} else if (code == 0) {
			ws_lock();
			ws->token = op->token;
			ws_unlock();
		}
		if (code && c && shared)
			ws_shared_broken(c, code);
	}
	ws_lock();
	int closing = ws->closing;
	ws_unlock();
	if (closing) { /* closesocket aborts what was in progress */
		*bytes = 0;
		ws_fail(WSA_OPERATION_ABORTED, "%s: the socket was closed", name);
		return WSA_OPERATION_ABORTED;
	}
	if (code) {
		err.code = code;
		ws_fail_err(&err);
	}
	return code;
}

static void *overlapped_main(void *arg)
{
	struct op *op = arg;
	DWORD bytes;
	int code = run(op, &bytes);
	ws_lock();
	op->ov->InternalHigh = bytes;
	__atomic_store_n(&op->ov->Internal, (ULONG_PTR)code, __ATOMIC_RELEASE);
	if (op->completion)
		ws_queue_apc(op->apcs, op->completion, (DWORD)code, bytes, op->ov);
	else if (op->ov->hEvent)
		ws_event_set_locked(op->ov->hEvent);
	op->ws->busy--;
	ws_broadcast();
	ws_unlock();
	if (op->apcs)
		ws_apcs_unref(op->apcs);
	free(op);
	return NULL;
}

int WSAIoctl(SOCKET s, DWORD code, LPVOID in, DWORD cbIn, LPVOID out, DWORD cbOut, LPDWORD bytesReturned,
	     LPWSAOVERLAPPED ov, LPWSAOVERLAPPED_COMPLETION_ROUTINE completion)
{
	const char *name = ioctl_name(code);
	struct ws_socket *ws = ws_get(s);
	if (!ws)
		return SOCKET_ERROR;
	struct op op = {.ws = ws, .code = code};
	int rc;
	if (code != SIO_ACQUIRE_PORT_RESERVATION && code != SIO_RELEASE_PORT_RESERVATION &&
	    code != SIO_ASSOCIATE_PORT_RESERVATION) {
		rc = ws_fail(WSAEINVAL, "WSAIoctl: control code %#x is not one this layer implements", (unsigned)code);
		goto fail;
	}
	int proto = sock_proto(ws->fd, name);
	if (proto < 0) {
		rc = SOCKET_ERROR;
		goto fail;
	}
	op.proto = (uint8_t)proto;
	if (!ws->overlapped)
		ov = NULL, completion = NULL; /* ignored for a socket without the overlapped attribute */
	if (!in) {
		rc = ws_fail(WSAEFAULT, "%s: no input buffer", name);
		goto fail;
	}
	if (code == SIO_ACQUIRE_PORT_RESERVATION) {
		if (cbIn < sizeof(INET_PORT_RANGE)) {
			rc = ws_fail(WSAEFAULT, "%s: input buffer of %u bytes, INET_PORT_RANGE needs %zu", name, (unsigned)cbIn,
				     sizeof(INET_PORT_RANGE));
			goto fail;
		}
		INET_PORT_RANGE r;
		memcpy(&r, in, sizeof r);
		op.start = ntohs(r.StartPort);
		op.count = r.NumberOfPorts;
		if (!out || cbOut < sizeof(INET_PORT_RESERVATION_INSTANCE)) {
			if (bytesReturned)
				*bytesReturned = 0;
			rc = ws_fail(WSAEINVAL, "%s: output buffer of %u bytes, INET_PORT_RESERVATION_INSTANCE needs %zu", name,
				     out ? (unsigned)cbOut : 0u, sizeof(INET_PORT_RESERVATION_INSTANCE));
			goto fail;
		}
		op.out = out;
	} else {
		if (cbIn < sizeof(INET_PORT_RESERVATION_TOKEN)) {
			rc = ws_fail(WSAEFAULT, "%s: input buffer of %u bytes, INET_PORT_RESERVATION_TOKEN needs %zu", name,
				     (unsigned)cbIn, sizeof(INET_PORT_RESERVATION_TOKEN));
			goto fail;
		}
		if (cbOut != 0) {
			rc = ws_fail(WSAEINVAL, "%s: output buffer of %u bytes, cbOutBuffer must be 0", name, (unsigned)cbOut);
			goto fail;
		}
		memcpy(&op.token, in, sizeof op.token);
		if (op.token == INVALID_PORT_RESERVATION_TOKEN) {
			rc = ws_fail(WSAEINVAL, "%s: INVALID_PORT_RESERVATION_TOKEN", name);
			goto fail;
		}
		if (code == SIO_ASSOCIATE_PORT_RESERVATION) {
			struct sockaddr_storage ss;
			socklen_t len = sizeof ss;
			if (getsockname(ws->fd, (struct sockaddr *)&ss, &len) == 0 &&
			    ((ss.ss_family == AF_INET && ((struct sockaddr_in *)&ss)->sin_port) ||
			     (ss.ss_family == AF_INET6 && ((struct sockaddr_in6 *)&ss)->sin6_port))) {
				rc = ws_fail(WSAEINVAL, "%s: the socket is already bound", name);
				goto fail;
			}
		}
	}
	if (!ov && completion) {
		rc = ws_fail(WSAEFAULT, "%s: a completion routine needs an overlapped structure", name);
		goto fail;
	}
	if (!ov) {
		if (!bytesReturned) {
			rc = ws_fail(WSAEFAULT, "%s: lpcbBytesReturned is NULL", name);
			goto fail;
		}
		DWORD n;
		int c = run(&op, &n);
		*bytesReturned = n;
		ws_put(ws);
		return c ? SOCKET_ERROR : 0;
	}
	if (__atomic_load_n(&ov->Internal, __ATOMIC_ACQUIRE) == WSA_IO_PENDING) {
		rc = ws_fail(WSAEINVAL, "%s: the overlapped structure is in use by a pending operation", name);
		goto fail;
	}
	struct op *o = malloc(sizeof *o);
	if (!o) {
		rc = ws_fail(WSAENOBUFS, "%s: out of memory", name);
		goto fail;
	}
	*o = op;
	o->ov = ov;
	o->completion = completion;
	o->apcs = completion ? ws_my_apcs() : NULL;
	ov->InternalHigh = 0;
	__atomic_store_n(&ov->Internal, (ULONG_PTR)WSA_IO_PENDING, __ATOMIC_RELEASE);
	if (!completion && ov->hEvent) {
		ws_lock();
		ws_event_reset_locked(ov->hEvent);
		ws_unlock();
	}
	if (bytesReturned)
		*bytesReturned = 0;
	pthread_t t;
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	int e = pthread_create(&t, &a, overlapped_main, o);
	pthread_attr_destroy(&a);
	if (e != 0) {
		__atomic_store_n(&ov->Internal, (ULONG_PTR)0, __ATOMIC_RELEASE);
		if (o->apcs)
			ws_apcs_unref(o->apcs);
		free(o);
		rc = ws_fail(WSAENOBUFS, "%s: cannot start the overlapped operation: %s", name, strerror(e));
		goto fail;
	}
	/* The operation's thread keeps the socket's reference. */
	return ws_fail(WSA_IO_PENDING, "%s: pending", name);
fail:
	ws_put(ws);
	return rc;
}

BOOL WSAGetOverlappedResult(SOCKET s, LPWSAOVERLAPPED ov, LPDWORD transfer, BOOL wait, LPDWORD flags)
{
	if (!ov || !transfer || !flags) {
		ws_fail(WSAEFAULT, "WSAGetOverlappedResult: lpOverlapped, lpcbTransfer and lpdwFlags must not be NULL");
		return FALSE;
	}
	if (__atomic_load_n(&ov->Internal, __ATOMIC_ACQUIRE) == WSA_IO_PENDING) {
		struct ws_socket *ws = ws_get(s);
		if (!ws)
			return FALSE;
		ws_put(ws);
		if (!wait) {
			ws_fail(WSA_IO_INCOMPLETE, "WSAGetOverlappedResult: the operation is still pending");
			return FALSE;
		}
		ws_lock();
		while (__atomic_load_n(&ov->Internal, __ATOMIC_ACQUIRE) == WSA_IO_PENDING)
			ws_wait(NULL);
		ws_unlock();
	}
	ws_lock(); /* InternalHigh is written under the lock */
	*transfer = (DWORD)ov->InternalHigh;
	int code = (int)__atomic_load_n(&ov->Internal, __ATOMIC_ACQUIRE);
	ws_unlock();
	*flags = 0;
	if (code == 0)
		return TRUE;
	ws_fail(code, "WSAGetOverlappedResult: the operation failed with %s (%d)", portres_error_name(code), code);
	return FALSE;
}
