/*
 * client_test.c: libportres's calls that bind several sockets or acquire
 * and bind in one request, against a real broker ($PORTRES_SOCKET), run
 * by internal/clib's TestClientCalls plain and under ASan+UBSan: batches
 * past PORTRES_MAX_BIND, a failure in a later batch, and each error the
 * calls check before sending. Prints "ok NAME" or "FAIL NAME: why"; the
 * exit status is the number of failures.
 */
#include <portres.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CHECK_DETAIL() printf(" (%s)", e.message)
#include "check.h"

#define N 70 /* more than PORTRES_MAX_BIND: two requests */

static uint16_t bound_port(int fd)
{
	struct sockaddr_in6 a;
	socklen_t len = sizeof a;
	memset(&a, 0, sizeof a);
	return getsockname(fd, (struct sockaddr *)&a, &len) == 0 ? ntohs(a.sin6_port) : 0;
}

static void sockets(int *fds, int n, int type)
{
	for (int i = 0; i < n; i++)
		fds[i] = socket(AF_INET6, type | SOCK_CLOEXEC, 0);
}

static void close_all(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	portres_client *c;
	portres_error e = {0};
	if (portres_connect(NULL, &c, &e) != 0) {
		printf("FAIL connect: %s\n", e.message);
		return 1;
	}
	portres_reservation r;
	int rc = portres_acquire(c, PORTRES_TCP, 40000, 80, 0, &r, &e);
	CHECK("acquire 80 ports", rc == 0, "rc %d", rc);

	/* 70 sockets from port 40005: one request of 64, one of 6, in order. */
	int fds[N];
	uint16_t ports[N];
	size_t nb = 99;
	sockets(fds, N, SOCK_STREAM);
	struct sockaddr_in6 any = {.sin6_family = AF_INET6, .sin6_port = htons(40005)};
	rc = portres_bind_many(c, r.token, fds, N, (struct sockaddr *)&any, sizeof any, ports, &nb, &e);
	int inorder = 1;
	for (int i = 0; i < N; i++)
		inorder &= ports[i] == 40005 + i && bound_port(fds[i]) == 40005 + i;
	CHECK("bind_many of 70 sockets: consecutive ports, two requests", rc == 0 && nb == N && inorder, "rc %d nbound %zu",
	      rc, nb);
	close_all(fds, N);

	/* A run past 65535 over two requests: refused before the first, not
	 * bound up to 65535 and then anywhere (the port would wrap to 0). */
	portres_reservation top;
	rc = portres_acquire(c, PORTRES_TCP, 65440, 96, 0, &top, &e);
	sockets(fds, N, SOCK_STREAM);
	struct sockaddr_in6 high = {.sin6_family = AF_INET6, .sin6_port = htons(65472)};
	rc = rc ? rc : portres_bind_many(c, top.token, fds, N, (struct sockaddr *)&high, sizeof high, ports, &nb, &e);
	CHECK("bind_many of 70 sockets from port 65472: WSAEINVAL, none bound", rc == PORTRES_WSAEINVAL && nb == 0 &&
	      bound_port(fds[0]) == 0, "rc %d nbound %zu", rc, nb);
	close_all(fds, N);
	portres_release(c, 0, top.token, NULL, &e);

	/* A UDP socket in the second request: the first 64 are bound, the
	 * error is the second request's, none of it bound. */
	sockets(fds, N, SOCK_STREAM);
	close(fds[66]);
	fds[66] = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	rc = portres_bind_many(c, r.token, fds, N, NULL, 0, ports, &nb, &e);
	CHECK("bind_many with a UDP socket in the second request: WSAEINVAL after 64", rc == PORTRES_WSAEINVAL && nb == 64 &&
	      bound_port(fds[63]) != 0 && bound_port(fds[64]) == 0, "rc %d nbound %zu", rc, nb);
	close_all(fds, N);

	/* Checked before anything is sent. */
	sockets(fds, 3, SOCK_STREAM);
	close(fds[1]);
	rc = portres_bind_many(c, r.token, fds, 3, NULL, 0, ports, &nb, &e);
	CHECK("bind_many with a closed descriptor: WSAENOTSOCK, none bound", rc == PORTRES_WSAENOTSOCK && nb == 0 &&
	      bound_port(fds[0]) == 0, "rc %d nbound %zu", rc, nb);
	fds[1] = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	rc = portres_bind_many(c, r.token, fds, 3, (struct sockaddr *)&un, sizeof un, ports, &nb, &e);
	CHECK("bind_many with a Unix address: WSAEFAULT", rc == PORTRES_WSAEFAULT && nb == 0, "rc %d", rc);
	rc = portres_bind_many(c, r.token, NULL, 2, NULL, 0, ports, &nb, &e);
	CHECK("bind_many without descriptors: WSAEFAULT", rc == PORTRES_WSAEFAULT, "rc %d", rc);
	rc = portres_bind_many(c, r.token, fds, 0, NULL, 0, NULL, &nb, &e);
	CHECK("bind_many of no sockets: nothing to do", rc == 0 && nb == 0, "rc %d", rc);
	rc = portres_bind(c, r.token, fds[0], NULL, 0, ports, &e);
	CHECK("bind (one socket through bind_many): any free port", rc == 0 && ports[0] == bound_port(fds[0]), "rc %d", rc);
	close_all(fds, 3);
	portres_release(c, 0, r.token, NULL, &e);

	/* acquire_bind: one request. */
	int s = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in6 at = {.sin6_family = AF_INET6, .sin6_port = htons(41000), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	uint16_t port = 0;
	rc = portres_acquire_bind(c, PORTRES_TCP, 41000, 1, s, (struct sockaddr *)&at, sizeof at, &r, &port, &e);
	CHECK("acquire_bind: the block, its token and the port", rc == 0 && r.start == 41000 && r.count == 1 && r.token != 0 &&
	      port == 41000 && bound_port(s) == 41000 && listen(s, 4) == 0, "rc %d port %u", rc, port);
	int s2 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	portres_reservation r2;
	rc = portres_acquire_bind(c, PORTRES_TCP, 41000, 1, s2, (struct sockaddr *)&at, sizeof at, &r2, &port, &e);
	CHECK("acquire_bind of a reserved port: WSAEADDRINUSE", rc == PORTRES_WSAEADDRINUSE && bound_port(s2) == 0, "rc %d", rc);
	rc = portres_release(c, 0, r.token, NULL, &e);
	CHECK("release the acquire_bind block", rc == 0, "rc %d", rc);
	close(s);
	int u = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	rc = portres_acquire_bind(c, PORTRES_TCP, 0, 4, u, NULL, 0, &r2, &port, &e);
	CHECK("acquire_bind of a UDP socket from TCP ports: WSAEINVAL", rc == PORTRES_WSAEINVAL && bound_port(u) == 0, "rc %d", rc);
	close(u);
	rc = portres_acquire_bind(c, PORTRES_TCP, 0, 4, s2, NULL, 0, &r2, &port, &e);
	CHECK("acquire_bind of a wildcard block: any port of it", rc == 0 && r2.count == 4 && port >= r2.start &&
	      port < r2.start + 4 && bound_port(s2) == port, "rc %d", rc);
	close(s2);
	portres_release(c, 0, r2.token, NULL, &e);
	rc = portres_acquire_bind(c, PORTRES_TCP, 41000, 1, s2, NULL, 0, &r2, &port, &e);
	CHECK("acquire_bind of a closed descriptor: WSAENOTSOCK", rc == PORTRES_WSAENOTSOCK, "rc %d", rc);
	rc = portres_acquire_bind(c, PORTRES_TCP, 41000, 1, -1, NULL, 0, &r2, &port, &e);
	CHECK("acquire_bind of descriptor -1: WSAENOTSOCK", rc == PORTRES_WSAENOTSOCK, "rc %d", rc);

	portres_close(c);
	printf("%d failures\n", failures);
	return failures;
}
