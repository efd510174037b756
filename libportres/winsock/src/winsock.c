/*
 * winsock.c: WSAStartup and WSACleanup, the thread's last error, the
 * socket table, and socket, bind, getsockname and closesocket with
 * Windows' error reporting.
 *
 * The table is Winsock's own global state: which descriptors are
 * sockets of this layer, their broker connection (opened by the first
 * SIO_ACQUIRE_PORT_RESERVATION, so that closing the socket ends its
 * runtime reservations) and the reservation associated for the next
 * bind. Nothing else is global but the shared broker connection, the
 * events and the completion queues.
 */
#include "ws.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#undef socket
#undef bind
#undef getsockname

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond;
static pthread_once_t cond_once = PTHREAD_ONCE_INIT;
static int startups;                 /* WSAStartup calls not yet matched by WSACleanup */
static struct ws_socket **table;     /* by descriptor */
static size_t table_len;
static portres_client *shared;

static __thread int last_error;
static __thread char last_message[512];

static void cond_init(void)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(&cond, &a);
	pthread_condattr_destroy(&a);
}

void ws_lock(void)
{
	pthread_once(&cond_once, cond_init);
	pthread_mutex_lock(&mu);
}

void ws_unlock(void) { pthread_mutex_unlock(&mu); }

void ws_wait(const struct timespec *deadline)
{
	if (deadline)
		pthread_cond_timedwait(&cond, &mu, deadline);
	else
		pthread_cond_wait(&cond, &mu);
}

void ws_broadcast(void) { pthread_cond_broadcast(&cond); }

int ws_started(void)
{
	ws_lock();
	int n = startups;
	ws_unlock();
	return n > 0;
}

int WSAGetLastError(void) { return last_error; }

void WSASetLastError(int code)
{
	last_error = code;
	last_message[0] = 0;
}

/* portres_ws_last_message is what went wrong in the thread's last failed
 * call, in words (the broker's reason included); "" if nothing was said.
 * A portres extension: Windows has no such call. */
const char *portres_ws_last_message(void) { return last_message; }

int ws_fail(int code, const char *fmt, ...)
{
	last_error = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_message, sizeof last_message, fmt, ap);
	va_end(ap);
	return SOCKET_ERROR;
}

void ws_fail_err(const portres_error *err)
{
	last_error = err->code;
	snprintf(last_message, sizeof last_message, "%s", err->message);
}

int WSAStartup(WORD version, LPWSADATA data)
{
	if (!data)
		return WSAEFAULT;
	if (LOBYTE(version) < 1 || (LOBYTE(version) == 1 && HIBYTE(version) < 1))
		return WSAVERNOTSUPPORTED;
	memset(data, 0, sizeof *data);
	data->wHighVersion = MAKEWORD(2, 2);
	data->wVersion = LOBYTE(version) > 2 || (LOBYTE(version) == 2 && HIBYTE(version) >= 2) ? MAKEWORD(2, 2) : version;
	snprintf(data->szDescription, sizeof data->szDescription, "portres Winsock port reservations on Linux");
	snprintf(data->szSystemStatus, sizeof data->szSystemStatus, "Running");
	ws_lock();
	startups++;
	ws_unlock();
	return 0;
}

static int close_socket(struct ws_socket *ws);

int WSACleanup(void)
{
	ws_lock();
	if (startups == 0) {
		ws_unlock();
		return ws_fail(WSANOTINITIALISED, "WSACleanup: WSAStartup was not called");
	}
	if (--startups > 0) {
		ws_unlock();
		return 0;
	}
	/* The last cleanup: sockets still open are closed as by closesocket. */
	for (size_t i = 0; i < table_len; i++) {
		struct ws_socket *ws = table[i];
		if (!ws || ws->closing)
			continue;
		ws->closing = 1;
		ws->busy++;
		ws_unlock();
		close_socket(ws);
		ws_lock();
	}
	portres_client *c = shared;
	shared = NULL;
	ws_unlock();
	portres_close(c);
	return 0;
}

static struct ws_socket *add(int fd, int overlapped)
{
	if ((size_t)fd >= table_len) {
		size_t n = table_len ? table_len : 64;
		while (n <= (size_t)fd)
			n *= 2;
		struct ws_socket **t = realloc(table, n * sizeof *t);
		if (!t)
			return NULL;
		memset(t + table_len, 0, (n - table_len) * sizeof *t);
		table = t;
		table_len = n;
	}
	struct ws_socket *ws = calloc(1, sizeof *ws);
	if (!ws)
		return NULL;
	ws->fd = fd;
	ws->overlapped = overlapped;
	free(table[fd]); /* a stale entry of a descriptor closed with close(2) */
	table[fd] = ws;
	return ws;
}

struct ws_socket *ws_get(SOCKET s)
{
	ws_lock(); /* one lock for the WSAStartup check and the table */
	if (startups == 0) {
		ws_unlock();
		ws_fail(WSANOTINITIALISED, "WSAStartup was not called");
		return NULL;
	}
	if (s == INVALID_SOCKET || s > (SOCKET)INT32_MAX) {
		ws_unlock();
		ws_fail(WSAENOTSOCK, "descriptor %lld is not a socket", (long long)s);
		return NULL;
	}
	int fd = (int)s;
	struct ws_socket *ws = (size_t)fd < table_len ? table[fd] : NULL;
	if (ws && ws->closing) {
		ws_unlock();
		ws_fail(WSAENOTSOCK, "socket %d is being closed", fd);
		return NULL;
	}
	if (!ws) {
		int type;
		socklen_t len = sizeof type;
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
			int e = errno;
			ws_unlock();
			ws_fail(WSAENOTSOCK, "descriptor %d: %s", fd, strerror(e));
			return NULL;
		}
		if (!(ws = add(fd, 1))) {
			ws_unlock();
			ws_fail(WSAENOBUFS, "out of memory");
			return NULL;
		}
	}
	ws->busy++;
	ws_unlock();
	return ws;
}

void ws_put(struct ws_socket *ws)
{
	ws_lock();
	ws->busy--;
	ws_broadcast();
	ws_unlock();
}

static SOCKET new_socket(int af, int type, int protocol, int overlapped)
{
	if (!ws_started()) {
		ws_fail(WSANOTINITIALISED, "socket: WSAStartup was not called");
		return INVALID_SOCKET;
	}
	int fd = socket(af, type | SOCK_CLOEXEC, protocol);
	if (fd < 0) {
		int e = errno;
		ws_fail(portres_wsa_from_errno(e), "socket(%d, %d, %d): %s", af, type, protocol, strerror(e));
		return INVALID_SOCKET;
	}
	ws_lock();
	struct ws_socket *ws = add(fd, overlapped);
	ws_unlock();
	if (!ws) {
		close(fd);
		ws_fail(WSAENOBUFS, "socket: out of memory");
		return INVALID_SOCKET;
	}
	return (SOCKET)fd;
}

SOCKET portres_ws_socket(int af, int type, int protocol) { return new_socket(af, type, protocol, 1); }

SOCKET WSASocketW(int af, int type, int protocol, void *info, unsigned g, DWORD flags)
{
	if (info || g) {
		ws_fail(WSAEINVAL, "WSASocketW: protocol info and socket groups are not supported");
		return INVALID_SOCKET;
	}
	return new_socket(af, type, protocol, (flags & WSA_FLAG_OVERLAPPED) != 0);
}

portres_client *ws_shared(portres_error *err)
{
	ws_lock();
	portres_client *c = shared;
	ws_unlock();
	if (c)
		return c;
	if (portres_connect(NULL, &c, err) != 0)
		return NULL;
	ws_lock();
	if (shared) { /* another thread dialled first */
		portres_client *won = shared;
		ws_unlock();
		portres_close(c);
		return won;
	}
	shared = c;
	ws_unlock();
	return c;
}

void ws_shared_broken(portres_client *c, int code)
{
	if (code != WSAENETDOWN)
		return;
	ws_lock();
	int mine = shared == c;
	if (mine)
		shared = NULL;
	ws_unlock();
	if (mine)
		portres_close(c); /* no other call is in it: a broken connection answers at once */
}

portres_client *ws_own(struct ws_socket *ws, portres_error *err)
{
	ws_lock();
	portres_client *c = ws->own;
	ws_unlock();
	if (c)
		return c;
	if (portres_connect(NULL, &c, err) != 0)
		return NULL;
	ws_lock();
	if (ws->closing) {
		ws_unlock();
		portres_close(c);
		err->code = WSA_OPERATION_ABORTED;
		snprintf(err->message, sizeof err->message, "portres: the socket was closed");
		return NULL;
	}
	if (ws->own) {
		portres_client *won = ws->own;
		ws_unlock();
		portres_close(c);
		return won;
	}
	ws->own = c;
	ws_unlock();
	return c;
}

static int family_of(int fd)
{
	int family;
	socklen_t len = sizeof family;
	return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) < 0 ? -1 : family;
}

int portres_ws_bind(SOCKET s, const struct sockaddr *name, int namelen)
{
	struct ws_socket *ws = ws_get(s);
	if (!ws)
		return SOCKET_ERROR;
	int rc = 0;
	int family = family_of(ws->fd);
	if (!name || namelen < (int)sizeof(struct sockaddr_in) ||
	    (name->sa_family == AF_INET6 && namelen < (int)sizeof(struct sockaddr_in6))) {
		rc = ws_fail(WSAEFAULT, "bind: the address (%d bytes) is too short for its family", namelen);
		goto out;
	}
	if (name->sa_family != family) {
		rc = ws_fail(WSAEFAULT, "bind: an address of family %d on a socket of family %d", name->sa_family, family);
		goto out;
	}
	ws_lock();
	uint64_t token = ws->token;
	portres_client *c = ws->own;
	ws_unlock();
	if (token == 0) {
		if (bind(ws->fd, name, (socklen_t)namelen) < 0) {
			int e = errno;
			rc = ws_fail(portres_wsa_from_errno(e), "bind: %s", strerror(e));
		}
		goto out;
	}
	portres_error err;
	int shared_conn = c == NULL;
	if (!c && !(c = ws_shared(&err))) {
		ws_fail_err(&err);
		rc = SOCKET_ERROR;
		goto out;
	}
	int code = portres_bind(c, token, ws->fd, name, (socklen_t)namelen, NULL, &err);
	if (code) {
		if (shared_conn)
			ws_shared_broken(c, code);
		ws_fail_err(&err);
		rc = SOCKET_ERROR;
	}
out:
	ws_put(ws);
	return rc;
}

int portres_ws_getsockname(SOCKET s, struct sockaddr *name, int *namelen)
{
	if (!name || !namelen || *namelen < 0)
		return ws_fail(WSAEFAULT, "getsockname: no buffer");
	struct ws_socket *ws = ws_get(s);
	if (!ws)
		return SOCKET_ERROR;
	socklen_t len = (socklen_t)*namelen;
	int rc = 0;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof ss;
	if (getsockname(ws->fd, (struct sockaddr *)&ss, &sslen) < 0) {
		int e = errno;
		rc = ws_fail(portres_wsa_from_errno(e), "getsockname: %s", strerror(e));
	} else if (sslen > len) {
		rc = ws_fail(WSAEFAULT, "getsockname: the address needs %u bytes, the buffer has %d", (unsigned)sslen, *namelen);
	} else {
		memcpy(name, &ss, sslen);
		*namelen = (int)sslen;
	}
	ws_put(ws);
	return rc;
}

/* close_socket ends ws, which the caller marked closing and holds a
 * reference on: pending calls on its own broker connection are woken
 * (they complete with WSA_OPERATION_ABORTED), the connection is closed
 * once they are done (the broker ends the socket's runtime
 * reservations), then the descriptor. */
static int close_socket(struct ws_socket *ws)
{
	ws_lock();
	portres_client *c = ws->own;
	if (c && ws->busy > 1)
		shutdown(portres_fd(c), SHUT_RDWR); /* wakes the calls waiting for their answers */
	while (ws->busy > 1)
		ws_wait(NULL);
	ws->own = NULL;
	if ((size_t)ws->fd < table_len && table[ws->fd] == ws)
		table[ws->fd] = NULL;
	ws_unlock();
	portres_close(c); /* returns once the broker released the socket's reservations */
	int rc = close(ws->fd);
	int e = errno;
	free(ws);
	if (rc < 0 && e != EINTR)
		return ws_fail(portres_wsa_from_errno(e), "closesocket: %s", strerror(e));
	return 0;
}

int closesocket(SOCKET s)
{
	struct ws_socket *ws = ws_get(s);
	if (!ws)
		return SOCKET_ERROR;
	ws_lock();
	if (ws->closing) {
		ws->busy--;
		ws_broadcast();
		ws_unlock();
		return ws_fail(WSAENOTSOCK, "closesocket: socket %d is already being closed", ws->fd);
	}
	ws->closing = 1;
	ws_unlock();
	return close_socket(ws);
}
