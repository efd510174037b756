/*
 * client.c: a connection to portresd and the requests of portres.h.
 *
 * One request is in flight per connection: a mutex covers send and the
 * answers. The datagram buffer is the client's own, allocated once by
 * portres_connect, so requests allocate nothing (portres_show returns one
 * allocation). Signals do not interrupt a request: EINTR is retried, as
 * a blocking Winsock call is not interrupted either.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <netinet/in.h>

struct portres_client {
	int fd;
	pthread_mutex_t mu;
	uint32_t next_id;
	uint8_t buf[WIRE_MAX_MESSAGE];
};

static const char *const op_names[] = {
	"", "acquire", "release", "associate", "bind", "show", "cancel",
	"persistent create", "persistent delete", "persistent lookup",
	"dynamicport show", "dynamicport set", "status", "reclaim",
};

const char *portres_op_name(int op)
{
	return op > 0 && op < (int)(sizeof op_names / sizeof op_names[0]) ? op_names[op] : "request";
}

/* The per-user socket's directory is trusted if it is $XDG_RUNTIME_DIR
 * (the user's own by contract) or /tmp/portres-UID owned by the user,
 * mode 0700, not a symbolic link: anyone could have made it first. */
static int trusted_dir(const char *dir, uid_t uid)
{
	char fallback[64];
	snprintf(fallback, sizeof fallback, "/tmp/portres-%u", (unsigned)uid);
	if (strcmp(dir, fallback) != 0)
		return 1;
	struct stat st;
	return lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == uid && (st.st_mode & 077) == 0;
}

int portres_default_socket(char *buf, size_t len)
{
	const char *env = getenv("PORTRES_SOCKET");
	const char *sys = "/run/portres/portres.sock";
	char user[PATH_MAX], dir[PATH_MAX];
	const char *pick = sys;
	uid_t uid = geteuid();
	if (env && *env) {
		pick = env;
	} else if (uid != 0) {
		const char *xdg = getenv("XDG_RUNTIME_DIR");
		if (xdg && *xdg)
			snprintf(dir, sizeof dir, "%s", xdg);
		else
			snprintf(dir, sizeof dir, "/tmp/portres-%u", (unsigned)uid);
		if ((size_t)snprintf(user, sizeof user, "%s/portres.sock", dir) >= sizeof user)
			user[0] = 0;
		struct stat st;
		if (stat(user, &st) == 0 && trusted_dir(dir, uid))
			pick = user;
	}
	if (strlen(pick) + 1 > len)
		return PORTRES_WSAEFAULT;
	memcpy(buf, pick, strlen(pick) + 1);
	return 0;
}

int portres_seterr(portres_error *err, int code, const char *fmt, ...)
{
	if (err) {
		char what[384];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(what, sizeof what, fmt, ap);
		va_end(ap);
		err->code = code;
		snprintf(err->message, sizeof err->message, "portres: %s", what);
	}
	return code;
}

/* lower_strerror is strerror with a lowercase first letter, as Go
 * spells errno texts, so that both clients' messages read the same. */
static const char *lower_strerror(int e, char *buf, size_t n)
{
	snprintf(buf, n, "%s", strerror(e));
	if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
		buf[0] = (char)(buf[0] - 'A' + 'a');
	return buf;
}

static int dial_error(portres_error *err, const char *what, const char *path, int e)
{
	char es[128];
	return portres_seterr(err, PORTRES_WSAENETDOWN, "dial: %s (%d): %s: is portresd running? %s%s%s: %s",
			      portres_error_name(PORTRES_WSAENETDOWN), PORTRES_WSAENETDOWN,
			      portres_error_text(PORTRES_WSAENETDOWN), what, path ? " " : "", path ? path : "",
			      lower_strerror(e, es, sizeof es));
}

int portres_connect(const char *path, portres_client **out, portres_error *err)
{
	char def[PATH_MAX];
	*out = NULL;
	if (!path) {
		if (portres_default_socket(def, sizeof def) != 0)
			return portres_seterr(err, PORTRES_WSAEFAULT, "dial: $PORTRES_SOCKET is too long");
		path = def;
	}
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sa.sun_path)
		return dial_error(err, "connect", path, ENAMETOOLONG);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	portres_client *c = malloc(sizeof *c);
	if (!c)
		return portres_seterr(err, PORTRES_WSAENOBUFS, "dial %s: out of memory", path);
	c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		int e = errno;
		free(c);
		return dial_error(err, "socket", NULL, e);
	}
	int rc;
	do
		rc = connect(c->fd, (struct sockaddr *)&sa, sizeof sa);
	while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		int e = errno;
		close(c->fd);
		free(c);
		return dial_error(err, "connect", path, e);
	}
	pthread_mutex_init(&c->mu, NULL);
	c->next_id = 0;
	*out = c;
	return 0;
}

/* drain shuts down the sending side of the connection and waits (at
 * most 5 s) for the broker to close its end, which it does after
 * releasing the connection's runtime reservations. */
static void drain(int fd)
{
	if (shutdown(fd, SHUT_WR) < 0)
		return;
	uint8_t buf[256];
	for (int waited = 0; waited < 5000;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int n = poll(&p, 1, 100);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return;
		if (n == 0) {
			waited += 100;
			continue;
		}
		ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
			return; /* end-of-file: released */
	}
}

void portres_close(portres_client *c)
{
	if (!c)
		return;
	drain(c->fd);
	close(c->fd);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

int portres_fd(const portres_client *c) { return c->fd; }

/* describe writes "acquire tcp ports 5000-5019 port 5003 reservation 0x..."
 * for the error of request q answered by r (NULL: no answer). */
static void describe(char *b, size_t n, const struct wire_request *q, const struct wire_response *r)
{
	int proto = q->proto, port = q->port;
	unsigned start = q->start, count = q->count;
	if (r && r->count) {
		start = r->start;
		count = r->count;
	}
	if (r && r->proto)
		proto = r->proto;
	if (r && r->port)
		port = r->port;
	size_t k = (size_t)snprintf(b, n, "%s", portres_op_name(q->op));
	if (k < n && proto == PORTRES_TCP)
		k += (size_t)snprintf(b + k, n - k, " tcp");
	else if (k < n && proto == PORTRES_UDP)
		k += (size_t)snprintf(b + k, n - k, " udp");
	else if (k < n && proto)
		k += (size_t)snprintf(b + k, n - k, " proto(%d)", proto);
	if (k < n && count > 1)
		k += (size_t)snprintf(b + k, n - k, " ports %u-%u", start, start + count - 1);
	else if (k < n && count == 1)
		k += (size_t)snprintf(b + k, n - k, " ports %u", start);
	else if (k < n && start)
		k += (size_t)snprintf(b + k, n - k, " start %u", start);
	if (k < n && port)
		k += (size_t)snprintf(b + k, n - k, " port %d", port);
	if (k < n && q->token)
		snprintf(b + k, n - k, " reservation %#llx", (unsigned long long)q->token);
}

/* broker_error fills err from a failed answer. */
static int broker_error(portres_error *err, const struct wire_request *q, const struct wire_response *r)
{
	char what[160];
	describe(what, sizeof what, q, r);
	int code = (int)r->code;
	if (r->msg_len)
		return portres_seterr(err, code, "%s: %s (%d): %s: %.*s", what, portres_error_name(code), code,
				      portres_error_text(code), (int)r->msg_len, r->msg);
	return portres_seterr(err, code, "%s: %s (%d): %s", what, portres_error_name(code), code, portres_error_text(code));
}

static int conn_error(portres_error *err, const struct wire_request *q, const char *why)
{
	return portres_seterr(err, PORTRES_WSAENETDOWN, "%s: %s (%d): %s: lost the connection to portresd (%s)",
			      portres_op_name(q->op), portres_error_name(PORTRES_WSAENETDOWN), PORTRES_WSAENETDOWN,
			      portres_error_text(PORTRES_WSAENETDOWN), why);
}

static void close_rights(struct msghdr *m)
{
	for (struct cmsghdr *h = CMSG_FIRSTHDR(m); h; h = CMSG_NXTHDR(m, h)) {
		if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
			continue;
		size_t nfd = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int *fds = (int *)CMSG_DATA(h);
		for (size_t i = 0; i < nfd; i++) {
			int fd;
			memcpy(&fd, fds + i, sizeof fd);
			close(fd);
		}
	}
}

/* recv_one reads one datagram into c->buf; returns its length, 0 at the
 * end of the stream, -1 with errno on error. timeout_ms < 0 blocks. The
 * broker never sends descriptors; any that come are closed. */
static ssize_t recv_one(portres_client *c, int timeout_ms)
{
	union {
		char b[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	for (;;) {
		if (timeout_ms >= 0) {
			struct pollfd p = {.fd = c->fd, .events = POLLIN};
			int n = poll(&p, 1, timeout_ms);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				errno = n == 0 ? ETIMEDOUT : errno;
				return -1;
			}
		}
		struct iovec iov = {.iov_base = c->buf, .iov_len = sizeof c->buf};
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
		ssize_t n = recvmsg(c->fd, &m, MSG_CMSG_CLOEXEC | (timeout_ms >= 0 ? MSG_DONTWAIT : 0));
		if (n < 0 && errno == EINTR)
			continue;
		if (n >= 0) {
			close_rights(&m);
			if (m.msg_flags & MSG_TRUNC) {
				errno = EMSGSIZE;
				return -1;
			}
		}
		return n;
	}
}

/* refusal reads the reason a broker left when it closed the connection
 * (a per-user limit): one answer with ID 0. Returns its code, or 0. */
static int refusal(portres_client *c, const struct wire_request *q, portres_error *err)
{
	for (int tries = 0; tries < 2; tries++) {
		ssize_t n = recv_one(c, 100);
		if (n < 0 && errno == ECONNRESET)
			continue; /* reported once before the answer the broker left */
		struct wire_response r;
		if (n <= 0 || wire_decode_response(c->buf, (size_t)n, &r) < 0 || r.id != 0 || r.code == 0)
			return 0;
		return broker_error(err, q, &r);
	}
	return 0;
}

int portres_transact(portres_client *c, struct wire_request *q, const int *fds, size_t nfds, portres_each_fn each,
		     void *arg, struct wire_response *last, portres_error *err)
{
	uint8_t msg[WIRE_REQUEST_FIXED + 16];
	int code = 0;
	pthread_mutex_lock(&c->mu);
	q->id = ++c->next_id;
	if (q->id == 0) /* ID 0 is the broker's connection-level answer */
		q->id = ++c->next_id;
	size_t len = wire_encode_request(msg, q);
	union {
		char b[CMSG_SPACE(PORTRES_MAX_BIND * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {.iov_base = msg, .iov_len = len};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
	if (nfds > 0) {
		memset(&ctl, 0, sizeof ctl);
		m.msg_control = ctl.b;
		m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		struct cmsghdr *h = CMSG_FIRSTHDR(&m);
		h->cmsg_level = SOL_SOCKET;
		h->cmsg_type = SCM_RIGHTS;
		h->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(h), fds, nfds * sizeof(int));
	}
	ssize_t sent;
	do
		sent = sendmsg(c->fd, &m, MSG_NOSIGNAL);
	while (sent < 0 && errno == EINTR);
	if (sent < 0) {
		int e = errno;
		if (e == EBADF && nfds > 0) {
			/* A descriptor to pass is not open: the caller's mistake, not
			 * a broken connection. */
			code = portres_seterr(err, PORTRES_WSAENOTSOCK, "%s: a descriptor to pass is not open", portres_op_name(q->op));
			goto out;
		}
		if (!(code = refusal(c, q, err)))
			code = conn_error(err, q, strerror(e));
		goto out;
	}
	for (;;) {
		ssize_t n = recv_one(c, -1);
		if (n < 0 && errno == ECONNRESET && (code = refusal(c, q, err)))
			goto out;
		if (n < 0) {
			code = errno == EMSGSIZE ? portres_seterr(err, PORTRES_WSAEINVAL, "%s: bad answer from broker: truncated",
								  portres_op_name(q->op))
						 : conn_error(err, q, strerror(errno));
			goto out;
		}
		if (n == 0) {
			code = conn_error(err, q, "the broker closed the connection");
			goto out;
		}
		struct wire_response r;
		if (wire_decode_response(c->buf, (size_t)n, &r) < 0) {
			code = portres_seterr(err, PORTRES_WSAEINVAL, "%s: bad answer from broker: malformed message",
					      portres_op_name(q->op));
			goto out;
		}
		if (r.id != q->id && r.id != 0)
			continue; /* the answer to an earlier request this client gave up */
		if (r.code != 0) {
			code = broker_error(err, q, &r);
			goto out;
		}
		if (each && (code = each(arg, &r, err)) != 0)
			goto out;
		if (!(r.flags & WIRE_MORE)) {
			if (last) {
				*last = r;
				last->msg = NULL; /* the buffer is reused after the lock */
				last->msg_len = 0;
				last->entries = NULL;
				last->entries_len = 0;
			}
			break;
		}
	}
out:
	pthread_mutex_unlock(&c->mu);
	if (code == 0 && err) {
		err->code = 0;
		err->message[0] = 0;
	}
	return code;
}

static void fill(portres_reservation *out, const struct wire_response *r, uint64_t token)
{
	if (!out)
		return;
	out->proto = r->proto;
	out->start = r->start;
	out->count = r->count;
	out->token = token;
	out->not_excluded = (r->flags & WIRE_NOT_EXCLUDED) != 0;
}

int portres_acquire(portres_client *c, int proto, uint16_t start, uint16_t count, unsigned flags,
		    portres_reservation *out, portres_error *err)
{
	if (flags & ~PORTRES_DELEGATE)
		return portres_seterr(err, PORTRES_WSAEINVAL, "acquire: unknown flags %#x", flags);
	struct wire_request q = {.op = WIRE_OP_ACQUIRE, .proto = (uint8_t)proto, .start = start, .count = count,
				 .flags = (flags & PORTRES_DELEGATE) ? WIRE_FLAG_DELEGATE : 0};
	struct wire_response r;
	int code = portres_transact(c, &q, NULL, 0, NULL, NULL, &r, err);
	if (code == 0) {
		fill(out, &r, r.token);
		if (out)
			out->proto = (uint8_t)proto; /* the answer carries it too; this is what was asked */
	}
	return code;
}

int portres_release(portres_client *c, int proto, uint64_t token, portres_reservation *out, portres_error *err)
{
	struct wire_request q = {.op = WIRE_OP_RELEASE, .proto = (uint8_t)proto, .token = token};
	struct wire_response r;
	int code = portres_transact(c, &q, NULL, 0, NULL, NULL, &r, err);
	if (code == 0)
		fill(out, &r, token);
	return code;
}

int portres_associate(portres_client *c, uint64_t token, portres_reservation *out, portres_error *err)
{
	struct wire_request q = {.op = WIRE_OP_ASSOCIATE, .token = token};
	struct wire_response r;
	int code = portres_transact(c, &q, NULL, 0, NULL, NULL, &r, err);
	if (code == 0)
		fill(out, &r, token);
	return code;
}

/* set_addr puts addr (NULL: none) into q's address and port; returns 0,
 * or -1 if it is neither a sockaddr_in nor a sockaddr_in6. */
static int set_addr(struct wire_request *q, const struct sockaddr *addr, socklen_t addrlen)
{
	if (!addr)
		return 0;
	if (addr->sa_family == AF_INET && addrlen >= (socklen_t)sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
		q->addr_len = 4;
		memcpy(q->addr, &in->sin_addr, 4);
		q->port = ntohs(in->sin_port);
		return 0;
	}
	if (addr->sa_family == AF_INET6 && addrlen >= (socklen_t)sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
		q->addr_len = 16;
		memcpy(q->addr, &in6->sin6_addr, 16);
		q->port = ntohs(in6->sin6_port);
		return 0;
	}
	return -1;
}

int portres_bind(portres_client *c, uint64_t token, int fd, const struct sockaddr *addr, socklen_t addrlen,
		 uint16_t *port, portres_error *err)
{
	return portres_bind_many(c, token, &fd, 1, addr, addrlen, port, NULL, err);
}

/* bound_port is portres_bind_many's each: it notes the port of one
 * socket bound, and refuses more answers than sockets sent (max). */
struct bound {
	uint16_t *ports;
	size_t n, max;
};

static int bound_port(void *arg, const struct wire_response *r, portres_error *err)
{
	struct bound *b = arg;
	if (b->n == b->max)
		return portres_seterr(err, PORTRES_WSAEINVAL, "bind: bad answer from broker: more sockets bound than sent");
	if (b->ports)
		b->ports[b->n] = r->port;
	b->n++;
	return 0;
}

int portres_bind_many(portres_client *c, uint64_t token, const int *fds, size_t n, const struct sockaddr *addr,
		      socklen_t addrlen, uint16_t *ports, size_t *nbound, portres_error *err)
{
	struct wire_request q = {.op = WIRE_OP_BIND, .token = token};
	if (nbound)
		*nbound = 0;
	if (set_addr(&q, addr, addrlen) < 0)
		return portres_seterr(err, PORTRES_WSAEFAULT, "bind reservation %#llx: address of family %d and %u bytes: want a sockaddr_in or sockaddr_in6",
				      (unsigned long long)token, addr->sa_family, (unsigned)addrlen);
	if (n > 0 && !fds)
		return portres_seterr(err, PORTRES_WSAEFAULT, "bind reservation %#llx: no descriptors", (unsigned long long)token);
	if (q.port && (size_t)q.port + n - 1 > 65535) /* else a later request's port would wrap to 0: any port */
		return portres_seterr(err, PORTRES_WSAEINVAL, "bind reservation %#llx: %zu sockets from port %u run past port 65535",
				      (unsigned long long)token, n, q.port);
	for (size_t i = 0; i < n; i++) /* one that is closed fails its request's sendmsg: EBADF */
		if (fds[i] < 0)
			return portres_seterr(err, PORTRES_WSAENOTSOCK, "bind reservation %#llx: descriptor %d (socket %zu of %zu) is not open",
					      (unsigned long long)token, fds[i], i + 1, n);
	struct bound b = {.ports = ports};
	int code = 0;
	for (size_t done = 0; done < n && code == 0;) {
		size_t k = n - done < PORTRES_MAX_BIND ? n - done : PORTRES_MAX_BIND;
		b.max = done + k;
		code = portres_transact(c, &q, fds + done, k, bound_port, &b, NULL, err);
		done += k;
		if (q.port)
			q.port = (uint16_t)(q.port + k);
	}
	if (nbound)
		*nbound = b.n;
	return code;
}

int portres_acquire_bind(portres_client *c, int proto, uint16_t start, uint16_t count, int fd,
			 const struct sockaddr *addr, socklen_t addrlen, portres_reservation *out, uint16_t *port,
			 portres_error *err)
{
	struct wire_request q = {.op = WIRE_OP_ACQUIRE, .flags = WIRE_FLAG_BIND, .proto = (uint8_t)proto, .start = start,
				 .count = count};
	if (set_addr(&q, addr, addrlen) < 0)
		return portres_seterr(err, PORTRES_WSAEFAULT, "acquire and bind: address of family %d and %u bytes: want a sockaddr_in or sockaddr_in6",
				      addr->sa_family, (unsigned)addrlen);
	if (fd < 0) /* one that is closed fails the sendmsg: EBADF */
		return portres_seterr(err, PORTRES_WSAENOTSOCK, "acquire and bind: descriptor %d is not open", fd);
	struct wire_response r;
	int code = portres_transact(c, &q, &fd, 1, NULL, NULL, &r, err);
	if (code == 0) {
		fill(out, &r, r.token);
		if (port)
			*port = r.port;
	}
	return code;
}

static int persistent(portres_client *c, int op, int proto, uint16_t start, uint16_t count, uint64_t *token,
		      portres_error *err)
{
	struct wire_request q = {.op = (uint8_t)op, .proto = (uint8_t)proto, .start = start, .count = count};
	struct wire_response r;
	int code = portres_transact(c, &q, NULL, 0, NULL, NULL, &r, err);
	if (code == 0 && token)
		*token = r.token;
	return code;
}

int portres_persistent_create(portres_client *c, int proto, uint16_t start, uint16_t count, uint64_t *token,
			      portres_error *err)
{
	return persistent(c, WIRE_OP_PERSISTENT_CREATE, proto, start, count, token, err);
}

int portres_persistent_delete(portres_client *c, int proto, uint16_t start, uint16_t count, portres_error *err)
{
	return persistent(c, WIRE_OP_PERSISTENT_DELETE, proto, start, count, NULL, err);
}

int portres_persistent_lookup(portres_client *c, int proto, uint16_t start, uint16_t count, uint64_t *token,
			      portres_error *err)
{
	return persistent(c, WIRE_OP_PERSISTENT_LOOKUP, proto, start, count, token, err);
}

int portres_dynamic_range(portres_client *c, int proto, uint16_t *start, uint16_t *count, portres_error *err)
{
	struct wire_request q = {.op = WIRE_OP_DYNAMIC_SHOW, .proto = (uint8_t)proto};
	struct wire_response r;
	int code = portres_transact(c, &q, NULL, 0, NULL, NULL, &r, err);
	if (code == 0) {
		*start = r.start;
		*count = r.count;
	}
	return code;
}
