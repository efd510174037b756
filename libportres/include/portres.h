/*
 * portres.h: the C client of portresd, the port reservation broker.
 *
 * libportres speaks the broker's wire protocol (docs/PROTOCOL.md) itself:
 * no Go runtime, no threads of its own, no allocation on the request path
 * except where a call returns a list (portres_show). A portres_client is
 * one connection to the broker; the runtime reservations acquired on it
 * last until they are released or the connection is closed (or the
 * process ends), as Windows' last until their socket is closed.
 *
 * Every call returns 0 on success or the Winsock/Win32 error number
 * (WSAEADDRINUSE 10048, ERROR_NOT_FOUND 1168, ...; PORTRES_* below), and
 * fills *err, when err is not NULL, with that number and a message saying
 * what failed: the operation, the ports or token, and the broker's reason.
 *
 * Thread safety: a portres_client may be used by several threads at once;
 * its requests are then served one after another (one request in flight
 * per connection). Open one client per thread for parallel requests.
 * Different clients share nothing.
 */
#ifndef PORTRES_H
#define PORTRES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PORTRES_VERSION_MAJOR 1
#define PORTRES_VERSION_MINOR 0
/* The wire protocol version this library speaks (docs/PROTOCOL.md). */
#define PORTRES_PROTOCOL_VERSION 1

/* Protocols: the IP protocol numbers. */
#define PORTRES_TCP 6
#define PORTRES_UDP 17

/* Kinds of reservation in a portres_entry. */
#define PORTRES_RUNTIME 1
#define PORTRES_PERSISTENT 2

/* Error numbers, as Windows reports them for the port reservation API. */
#define PORTRES_NO_ERROR 0
#define PORTRES_ERROR_ACCESS_DENIED 5
#define PORTRES_ERROR_SHARING_VIOLATION 32
#define PORTRES_ERROR_INVALID_PARAMETER 87
#define PORTRES_WSA_OPERATION_ABORTED 995
#define PORTRES_ERROR_NOT_FOUND 1168
#define PORTRES_WSAEINTR 10004
#define PORTRES_WSAEACCES 10013
#define PORTRES_WSAEFAULT 10014
#define PORTRES_WSAEINVAL 10022
#define PORTRES_WSAEMFILE 10024
#define PORTRES_WSAENOTSOCK 10038
#define PORTRES_WSAEOPNOTSUPP 10045
#define PORTRES_WSAEAFNOSUPPORT 10047
#define PORTRES_WSAEADDRINUSE 10048
#define PORTRES_WSAEADDRNOTAVAIL 10049
#define PORTRES_WSAENETDOWN 10050
#define PORTRES_WSAENOBUFS 10055
#define PORTRES_WSAEDQUOT 10069

/* The error of a call: its number and what failed. */
typedef struct portres_error {
	int code;          /* 0, or a Winsock/Win32 number */
	char message[512]; /* "acquire tcp ports 5000-5019: WSAEADDRINUSE (10048): ..." */
} portres_error;

/* A block of ports and its token. */
typedef struct portres_reservation {
	uint8_t proto;  /* PORTRES_TCP or PORTRES_UDP */
	uint16_t start; /* first port, host byte order */
	uint16_t count; /* number of ports */
	uint64_t token;
	/* Nonzero if the broker may not keep the block out of the kernel's
	 * automatic assignment (it cannot write ip_local_reserved_ports). */
	int not_excluded;
} portres_reservation;

/* One reservation of portres_show. */
typedef struct portres_entry {
	uint8_t proto, kind; /* PORTRES_TCP/UDP, PORTRES_RUNTIME/PERSISTENT */
	uint16_t start, count;
	int32_t pid;     /* owner (runtime), 0 for persistent */
	uint32_t uid;    /* owner (runtime) or creator (persistent) */
	uint64_t token;  /* 0 unless the caller may use it */
	int mine;        /* the caller's own runtime reservation */
	int delegated;   /* handed to another process (portres run) */
	int restored;    /* kept across a broker restart, not reclaimed yet */
	const char *command; /* the owner's command line, NUL-terminated, never NULL */
	uint16_t nbound;
	const uint16_t *bound; /* the bound ports, ascending */
} portres_entry;

/* A connection to the broker. */
typedef struct portres_client portres_client;

/* Flags of portres_acquire. */
#define PORTRES_DELEGATE 1u /* the ports will be bound by another process (no placeholders) */

/* portres_default_socket writes the path clients use by default to buf:
 * $PORTRES_SOCKET, else /run/portres/portres.sock for root, else the
 * per-user broker's $XDG_RUNTIME_DIR/portres.sock when it exists, else
 * the system socket. Returns 0, or PORTRES_WSAEFAULT if it does not fit. */
int portres_default_socket(char *buf, size_t len);

/* portres_connect connects to the broker at path (NULL: the default).
 * Returns PORTRES_WSAENETDOWN if no broker listens there, or the
 * broker's refusal (WSAEDQUOT: too many connections of this user). */
int portres_connect(const char *path, portres_client **out, portres_error *err);

/* portres_close closes the connection: the broker releases every runtime
 * reservation acquired on it, and portres_close returns once it has (it
 * waits for the broker to close its end, at most 5 s), so the ports are
 * free when it returns, as after Windows' closesocket. NULL is ignored. */
void portres_close(portres_client *c);

/* portres_fd is the connection's descriptor (for poll: it becomes
 * readable with end-of-file when the broker goes). */
int portres_fd(const portres_client *c);

/* portres_acquire reserves count ports of proto from start, or a block
 * the broker places in the dynamic range if start is 0
 * (SIO_ACQUIRE_PORT_RESERVATION). flags: 0 or PORTRES_DELEGATE. */
int portres_acquire(portres_client *c, int proto, uint16_t start, uint16_t count, unsigned flags,
		    portres_reservation *out, portres_error *err);

/* portres_release ends the runtime reservation token
 * (SIO_RELEASE_PORT_RESERVATION). proto 0 releases whatever protocol the
 * token is; PORTRES_TCP or PORTRES_UDP releases only a reservation of
 * that protocol (WSAEINVAL otherwise, nothing released). out, if not
 * NULL, receives the block. */
int portres_release(portres_client *c, int proto, uint64_t token, portres_reservation *out, portres_error *err);

/* portres_associate checks that this process may consume token (its own
 * runtime reservation, or a persistent one if it has the right:
 * SIO_ASSOCIATE_PORT_RESERVATION) and returns the block in *out. */
int portres_associate(portres_client *c, uint64_t token, portres_reservation *out, portres_error *err);

/* portres_bind binds fd, an unbound TCP or UDP socket of the caller's, to
 * a port of reservation token: the broker receives the socket (SCM_RIGHTS),
 * binds it and closes its copy. addr gives the local address and port (a
 * sockaddr_in or sockaddr_in6; port 0 = any free port of the block); NULL
 * binds any free port on the unspecified address of fd's family. The
 * caller keeps fd. *port, if not NULL, receives the port bound. */
int portres_bind(portres_client *c, uint64_t token, int fd, const struct sockaddr *addr, socklen_t addrlen,
		 uint16_t *port, portres_error *err);

/* The most sockets portres_bind_many sends in one request. */
#define PORTRES_MAX_BIND 64

/* portres_bind_many binds n unbound sockets of the caller's to ports of
 * reservation token, in one round trip per PORTRES_MAX_BIND of them: to
 * consecutive ports from addr's port, or each to any free port if that
 * port is 0 or addr is NULL; addr's address applies to all. A run of
 * ports past 65535 is refused before anything is sent (WSAEINVAL). The
 * broker checks every socket of a request, and that the request's run of
 * ports lies in the block, before it binds any of them: an unfit socket
 * (not a socket: WSAENOTSOCK; neither TCP nor UDP: WSAEOPNOTSUPP; of the
 * other protocol or another network namespace, or a run past the block:
 * WSAEINVAL) binds none of that request, but the sockets of earlier
 * requests stay bound. ports, if not NULL, receives the ports bound;
 * *nbound, if not NULL, how many sockets were bound (the first ones: n on
 * success, fewer on error). The caller keeps every descriptor. */
int portres_bind_many(portres_client *c, uint64_t token, const int *fds, size_t n, const struct sockaddr *addr,
		      socklen_t addrlen, uint16_t *ports, size_t *nbound, portres_error *err);

/* portres_acquire_bind acquires count ports of proto from start (0: a
 * block the broker places in the dynamic range) and binds fd, an unbound
 * socket of proto, to a port of it in the same request: the one round
 * trip form of portres_acquire and portres_bind for "a socket on a port
 * nobody else can take". addr as for portres_bind (a nonzero port must
 * lie in the block). All or nothing: if the bind fails, the block is
 * released. *out receives the block and its token, *port (if not NULL)
 * the port bound. */
int portres_acquire_bind(portres_client *c, int proto, uint16_t start, uint16_t count, int fd,
			 const struct sockaddr *addr, socklen_t addrlen, portres_reservation *out, uint16_t *port,
			 portres_error *err);

/* Persistent reservations (CreatePersistentTcpPortReservation and its
 * siblings), ports in host byte order. Create and delete need root or the
 * broker's admin group (ERROR_ACCESS_DENIED); lookup is open to all.
 * ERROR_SHARING_VIOLATION: overlaps a reservation or a port in use;
 * ERROR_NOT_FOUND: no persistent reservation is exactly start/count;
 * ERROR_INVALID_PARAMETER: zero start or count, or past 65535. */
int portres_persistent_create(portres_client *c, int proto, uint16_t start, uint16_t count, uint64_t *token,
			      portres_error *err);
int portres_persistent_delete(portres_client *c, int proto, uint16_t start, uint16_t count, portres_error *err);
int portres_persistent_lookup(portres_client *c, int proto, uint16_t start, uint16_t count, uint64_t *token,
			      portres_error *err);

/* portres_dynamic_range returns the range wildcard blocks of proto come from. */
int portres_dynamic_range(portres_client *c, int proto, uint16_t *start, uint16_t *count, portres_error *err);

/* portres_show lists every reservation on the host. *out is one
 * allocation, freed with portres_entries_free; *n is its length. Other
 * processes' tokens are 0. */
int portres_show(portres_client *c, portres_entry **out, size_t *n, portres_error *err);
void portres_entries_free(portres_entry *entries);

/* portres_error_name is the Windows name of code ("WSAEADDRINUSE"), or
 * "UNKNOWN_ERROR" for a number this library does not know. */
const char *portres_error_name(int code);
/* portres_error_text is a short description of code ("address already in use"). */
const char *portres_error_text(int code);

/* portres_wsa_from_errno is the Winsock number of a Linux errno
 * (EADDRINUSE: WSAEADDRINUSE), as Windows reports the same failure;
 * WSAEINVAL for one without a counterpart. */
int portres_wsa_from_errno(int errnum);

#ifdef __cplusplus
}
#endif

#endif /* PORTRES_H */
