/*
 * winsock_test.c: the Winsock layer against a real broker
 * ($PORTRES_SOCKET), run by internal/clib's TestWinsockLayer, plain and
 * under sanitizers. Each check provokes one documented behaviour or
 * error code and prints "ok NAME" or "FAIL NAME: why"; the exit status
 * is the number of failures.
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <winsock2.h>
#include <mstcpip.h>
#include <ws2ipdef.h>
#include <iphlpapi.h>

#include <string.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <unistd.h>

#define CHECK_DETAIL() printf(" (last error %d: %s)", WSAGetLastError(), portres_ws_last_message())
#include "check.h"

static void never_called(DWORD e, DWORD n, LPWSAOVERLAPPED ov, DWORD f)
{
	(void)e, (void)n, (void)ov, (void)f;
	abort();
}

static int acquire(SOCKET s, USHORT start, USHORT n, INET_PORT_RESERVATION_INSTANCE *out, DWORD *bytes)
{
	INET_PORT_RANGE r = {htons(start), n};
	return WSAIoctl(s, SIO_ACQUIRE_PORT_RESERVATION, &r, sizeof r, out, sizeof *out, bytes, NULL, NULL);
}

static void not_started(void)
{
	SOCKET s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
	CHECK("socket before WSAStartup: WSANOTINITIALISED", s == INVALID_SOCKET && WSAGetLastError() == WSANOTINITIALISED, "got %lu", (unsigned long)s);
	CHECK("WSACleanup before WSAStartup: WSANOTINITIALISED", WSACleanup() == SOCKET_ERROR && WSAGetLastError() == WSANOTINITIALISED, "-");
}

static void ioctl_checks(void)
{
	SOCKET s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
	INET_PORT_RESERVATION_INSTANCE inst;
	INET_PORT_RANGE r = {htons(40000), 10};
	DWORD bytes = 77;
	int rc = WSAIoctl(s, 0x98000099u, &r, sizeof r, &inst, sizeof inst, &bytes, NULL, NULL);
	CHECK("unknown control code: WSAEINVAL", rc == SOCKET_ERROR && WSAGetLastError() == WSAEINVAL, "rc %d", rc);
	rc = WSAIoctl(s, SIO_ACQUIRE_PORT_RESERVATION, NULL, sizeof r, &inst, sizeof inst, &bytes, NULL, NULL);
	CHECK("no input buffer: WSAEFAULT", rc == SOCKET_ERROR && WSAGetLastError() == WSAEFAULT, "rc %d", rc);
	rc = WSAIoctl(s, SIO_ACQUIRE_PORT_RESERVATION, &r, 2, &inst, sizeof inst, &bytes, NULL, NULL);
	CHECK("short input buffer: WSAEFAULT", rc == SOCKET_ERROR && WSAGetLastError() == WSAEFAULT, "rc %d", rc);
	bytes = 77;
	rc = WSAIoctl(s, SIO_ACQUIRE_PORT_RESERVATION, &r, sizeof r, &inst, 8, &bytes, NULL, NULL);
	CHECK("short output buffer: WSAEINVAL, bytesReturned 0", rc == SOCKET_ERROR && WSAGetLastError() == WSAEINVAL && bytes == 0,
	      "rc %d bytes %u", rc, bytes);
	ULONG64 t = 0;
	rc = WSAIoctl(s, SIO_RELEASE_PORT_RESERVATION, &t, sizeof t, NULL, 0, &bytes, NULL, NULL);
	CHECK("INVALID_PORT_RESERVATION_TOKEN: WSAEINVAL", rc == SOCKET_ERROR && WSAGetLastError() == WSAEINVAL, "rc %d", rc);
	t = 12345;
	rc = WSAIoctl(s, SIO_RELEASE_PORT_RESERVATION, &t, sizeof t, &inst, 4, &bytes, NULL, NULL);
	CHECK("RELEASE with an output buffer: WSAEINVAL", rc == SOCKET_ERROR && WSAGetLastError() == WSAEINVAL, "rc %d", rc);
	rc = WSAIoctl(s, SIO_RELEASE_PORT_RESERVATION, &t, sizeof t, NULL, 0, NULL, NULL, NULL);
	CHECK("no lpcbBytesReturned: WSAEFAULT", rc == SOCKET_ERROR && WSAGetLastError() == WSAEFAULT, "rc %d", rc);
	WSAOVERLAPPED ov = {0};
	rc = WSAIoctl(s, SIO_RELEASE_PORT_RESERVATION, &t, sizeof t, NULL, 0, &bytes, NULL, never_called);
	CHECK("completion routine without OVERLAPPED: WSAEFAULT", rc == SOCKET_ERROR && WSAGetLastError() == WSAEFAULT, "rc %d", rc);
	(void)ov;

	int p[2];
	if (pipe(p) == 0) {
		rc = acquire((SOCKET)p[0], 0, 1, &inst, &bytes);
		CHECK("not a socket: WSAENOTSOCK", rc == SOCKET_ERROR && WSAGetLastError() == WSAENOTSOCK, "rc %d", rc);
		close(p[0]);
		close(p[1]);
	}
	int ufd = (int)socket(AF_UNIX, SOCK_STREAM, 0);
	rc = acquire((SOCKET)ufd, 0, 1, &inst, &bytes);
	CHECK("a Unix socket: WSAEOPNOTSUPP", rc == SOCKET_ERROR && WSAGetLastError() == WSAEOPNOTSUPP, "rc %d", rc);
	closesocket((SOCKET)ufd);
	closesocket(s);
	rc = acquire(s, 0, 1, &inst, &bytes);
	CHECK("closed socket: WSAENOTSOCK", rc == SOCKET_ERROR && WSAGetLastError() == WSAENOTSOCK, "rc %d", rc);
}

static void reservations(void)
{
	SOCKET tcp = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP), udp = socket(AF_INET6, SOCK_DGRAM, IPPROTO_UDP);
	INET_PORT_RESERVATION_INSTANCE inst;
	memset(&inst, 0xaa, sizeof inst);
	DWORD bytes = 0;
	int rc = acquire(tcp, 41000, 10, &inst, &bytes);
	CHECK("ACQUIRE: 16 bytes, the block in network order, padding zeroed",
	      rc == 0 && bytes == 16 && ntohs(inst.Reservation.StartPort) == 41000 && inst.Reservation.NumberOfPorts == 10 &&
		      inst.Token.Token != 0 && ((unsigned char *)&inst)[4] == 0 && ((unsigned char *)&inst)[7] == 0,
	      "rc %d bytes %u start %u n %u", rc, bytes, ntohs(inst.Reservation.StartPort), inst.Reservation.NumberOfPorts);
	INET_PORT_RESERVATION_INSTANCE again;
	rc = acquire(udp, 41000, 10, &again, &bytes);
	CHECK("ACQUIRE the same ports for UDP: separate pools", rc == 0, "rc %d", rc);
	rc = acquire(udp, 41005, 2, &again, &bytes);
	CHECK("ACQUIRE overlapping: WSAEADDRINUSE", rc == SOCKET_ERROR && WSAGetLastError() == WSAEADDRINUSE, "rc %d", rc);
	rc = acquire(tcp, 0, 0, &again, &bytes);
	CHECK("ACQUIRE zero ports: WSAEINVAL", rc == SOCKET_ERROR && WSAGetLastError() == WSAEINVAL, "rc %d", rc);

	ULONG64 t = inst.Token.Token;
	rc = WSAIoctl(udp, SIO_RELEASE_PORT_RESERVATION, &t, sizeof t, NULL, 0, &bytes, NULL, NULL);
	CHECK("RELEASE a TCP token on a UDP socket: WSAEINVAL", rc == SOCKET_ERROR && WSAGetLastError() == WSAEINVAL, "rc %d", rc);
	rc = WSAIoctl(udp, SIO_ASSOCIATE_PORT_RESERVATION, &t, sizeof t, NULL, 0, &bytes, NULL, NULL);
	CHECK("ASSOCIATE a TCP token with a UDP socket: WSAEINVAL", rc == SOCKET_ERROR && WSAGetLastError() == WSAEINVAL, "rc %d", rc);

	SOCKET b = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
	bytes = 5;
	rc = WSAIoctl(b, SIO_ASSOCIATE_PORT_RESERVATION, &t, sizeof t, NULL, 0, &bytes, NULL, NULL);
	CHECK("ASSOCIATE: 0 bytes", rc == 0 && bytes == 0, "rc %d bytes %u", rc, bytes);
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	rc = bind(b, (SOCKADDR *)&sin, 8);
	CHECK("bind with a short address: WSAEFAULT", rc == SOCKET_ERROR && WSAGetLastError() == WSAEFAULT, "rc %d", rc);
	sin.sin_port = htons(41003);
	rc = bind(b, (SOCKADDR *)&sin, sizeof sin);
	struct sockaddr_in got;
	int len = sizeof got;
	getsockname(b, (SOCKADDR *)&got, &len);
	CHECK("bind of an associated socket: the port asked, from the block", rc == 0 && ntohs(got.sin_port) == 41003, "rc %d port %u",
	      rc, ntohs(got.sin_port));
	len = 4;
	rc = getsockname(b, (SOCKADDR *)&got, &len);
	CHECK("getsockname into a short buffer: WSAEFAULT", rc == SOCKET_ERROR && WSAGetLastError() == WSAEFAULT, "rc %d", rc);
	rc = WSAIoctl(b, SIO_ASSOCIATE_PORT_RESERVATION, &t, sizeof t, NULL, 0, &bytes, NULL, NULL);
	CHECK("ASSOCIATE a bound socket: WSAEINVAL", rc == SOCKET_ERROR && WSAGetLastError() == WSAEINVAL, "rc %d", rc);

	bytes = 9;
	rc = WSAIoctl(tcp, SIO_RELEASE_PORT_RESERVATION, &t, sizeof t, NULL, 0, &bytes, NULL, NULL);
	CHECK("RELEASE: 0 bytes", rc == 0 && bytes == 0, "rc %d bytes %u", rc, bytes);
	rc = WSAIoctl(tcp, SIO_RELEASE_PORT_RESERVATION, &t, sizeof t, NULL, 0, &bytes, NULL, NULL);
	CHECK("RELEASE twice: WSAEINVAL", rc == SOCKET_ERROR && WSAGetLastError() == WSAEINVAL, "rc %d", rc);
	closesocket(b);

	/* A runtime reservation ends with the socket that acquired it. */
	t = again.Token.Token;
	closesocket(udp);
	SOCKET u2 = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
	rc = acquire(u2, 41000, 10, &again, &bytes);
	CHECK("closesocket ends the socket's reservations", rc == 0, "rc %d", rc);
	closesocket(u2);
	closesocket(tcp);
}

static void overlapped(void)
{
	SOCKET s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
	WSAEVENT ev = WSACreateEvent();
	WSAOVERLAPPED ov;
	memset(&ov, 0, sizeof ov);
	ov.hEvent = ev;
	INET_PORT_RANGE r = {htons(42000), 5};
	INET_PORT_RESERVATION_INSTANCE inst;
	DWORD bytes = 0, flags = 9;
	int rc = WSAIoctl(s, SIO_ACQUIRE_PORT_RESERVATION, &r, sizeof r, &inst, sizeof inst, &bytes, &ov, NULL);
	CHECK("overlapped ACQUIRE: WSA_IO_PENDING", rc == SOCKET_ERROR && WSAGetLastError() == WSA_IO_PENDING, "rc %d", rc);
	DWORD w = WSAWaitForMultipleEvents(1, &ev, TRUE, 10000, FALSE);
	CHECK("the event is signalled", w == WSA_WAIT_EVENT_0, "wait %u", w);
	BOOL ok = WSAGetOverlappedResult(s, &ov, &bytes, FALSE, &flags);
	CHECK("WSAGetOverlappedResult: 16 bytes, flags 0", ok && bytes == 16 && flags == 0 && ntohs(inst.Reservation.StartPort) == 42000,
	      "ok %d bytes %u flags %u", ok, bytes, flags);
	ov.Internal = WSA_IO_PENDING; /* as while an operation runs */
	ok = WSAGetOverlappedResult(s, &ov, &bytes, FALSE, &flags);
	CHECK("WSAGetOverlappedResult without waiting on a pending operation: WSA_IO_INCOMPLETE",
	      !ok && WSAGetLastError() == WSA_IO_INCOMPLETE, "ok %d", ok);
	ov.Internal = 0;

	/* A failing overlapped operation reports through the result. */
	rc = WSAIoctl(s, SIO_ACQUIRE_PORT_RESERVATION, &r, sizeof r, &inst, sizeof inst, &bytes, &ov, NULL);
	ok = WSAGetOverlappedResult(s, &ov, &bytes, TRUE, &flags);
	CHECK("overlapped ACQUIRE of taken ports: WSAEADDRINUSE from WSAGetOverlappedResult", !ok && WSAGetLastError() == WSAEADDRINUSE,
	      "ok %d", ok);

	/* closesocket aborts what is pending: a large block is slow to place
	 * (a placeholder bound on each port, tens of milliseconds), but only
	 * if it fits the broker's descriptors: a block past them is refused
	 * at once with WSAEMFILE, which could answer before the close. Half
	 * the hard descriptor limit (the broker runs in the test's process,
	 * with the soft limit raised to it) fits. */
	struct rlimit rl;
	USHORT n = 8000;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY && rl.rlim_max / 2 < n)
		n = (USHORT)(rl.rlim_max / 2);
	SOCKET big = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
	WSAOVERLAPPED bov;
	memset(&bov, 0, sizeof bov);
	bov.hEvent = WSACreateEvent();
	INET_PORT_RANGE br = {htons(20000), n};
	rc = WSAIoctl(big, SIO_ACQUIRE_PORT_RESERVATION, &br, sizeof br, &inst, sizeof inst, &bytes, &bov, NULL);
	closesocket(big);
	ok = WSAGetOverlappedResult(big, &bov, &bytes, TRUE, &flags);
	CHECK("closesocket aborts a pending operation: WSA_OPERATION_ABORTED, also after the close",
	      rc == SOCKET_ERROR && !ok && WSAGetLastError() == WSA_OPERATION_ABORTED && bytes == 0, "ok %d last %d bytes %u", ok,
	      WSAGetLastError(), bytes);
	CHECK("the aborted operation's event is signalled", WSAWaitForMultipleEvents(1, &bov.hEvent, TRUE, 0, FALSE) == WSA_WAIT_EVENT_0, "-");
	SOCKET again = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
	INET_PORT_RANGE small = {htons(20000), 10};
	rc = WSAIoctl(again, SIO_ACQUIRE_PORT_RESERVATION, &small, sizeof small, &inst, sizeof inst, &bytes, NULL, NULL);
	CHECK("nothing of the aborted acquire is left", rc == 0, "rc %d", rc);
	closesocket(again);
	WSACloseEvent(bov.hEvent);

	/* A socket without the overlapped attribute ignores lpOverlapped. */
	SOCKET plain = WSASocketW(AF_INET, SOCK_DGRAM, IPPROTO_UDP, NULL, 0, 0);
	WSAOVERLAPPED pov;
	memset(&pov, 0, sizeof pov);
	INET_PORT_RANGE pr = {htons(43000), 2};
	bytes = 0;
	rc = WSAIoctl(plain, SIO_ACQUIRE_PORT_RESERVATION, &pr, sizeof pr, &inst, sizeof inst, &bytes, &pov, NULL);
	CHECK("non-overlapped socket: the call completes at once, OVERLAPPED untouched", rc == 0 && bytes == 16 && pov.Internal == 0,
	      "rc %d bytes %u", rc, bytes);
	closesocket(plain);

	/* Events. */
	WSAResetEvent(ev);
	CHECK("WSAWaitForMultipleEvents: a reset event times out", WSAWaitForMultipleEvents(1, &ev, TRUE, 20, FALSE) == WSA_WAIT_TIMEOUT, "-");
	WSAEVENT two[2] = {ev, WSACreateEvent()};
	WSASetEvent(two[1]);
	CHECK("WSAWaitForMultipleEvents, any: the index of the set one", WSAWaitForMultipleEvents(2, two, FALSE, 0, FALSE) == WSA_WAIT_EVENT_0 + 1, "-");
	CHECK("WSAWaitForMultipleEvents, all: not yet", WSAWaitForMultipleEvents(2, two, TRUE, 0, FALSE) == WSA_WAIT_TIMEOUT, "-");
	WSACloseEvent(two[1]);
	WSAEVENT bogus = (WSAEVENT)&pov;
	CHECK("WSAWaitForMultipleEvents on a non-event: WSA_INVALID_HANDLE",
	      WSAWaitForMultipleEvents(1, &bogus, TRUE, 0, FALSE) == WSA_WAIT_FAILED && WSAGetLastError() == WSA_INVALID_HANDLE, "-");
	CHECK("WSASetEvent on a non-event: WSA_INVALID_HANDLE", !WSASetEvent(bogus) && WSAGetLastError() == WSA_INVALID_HANDLE, "-");
	WSACloseEvent(ev);
	closesocket(s);
}

static void persistent(void)
{
	CHECK("CreatePersistent with a NULL token: ERROR_INVALID_PARAMETER",
	      CreatePersistentTcpPortReservation(htons(44000), 5, NULL) == ERROR_INVALID_PARAMETER, "-");
	ULONG64 t = 0;
	CHECK("CreatePersistent of port 0: ERROR_INVALID_PARAMETER", CreatePersistentUdpPortReservation(0, 5, &t) == ERROR_INVALID_PARAMETER, "-");
	CHECK("CreatePersistentUdp", CreatePersistentUdpPortReservation(htons(44000), 5, &t) == NO_ERROR && t != 0, "-");
	CHECK("CreatePersistentUdp overlapping: ERROR_SHARING_VIOLATION",
	      CreatePersistentUdpPortReservation(htons(44004), 5, &t) == ERROR_SHARING_VIOLATION, "-");
	ULONG64 l = 0;
	CHECK("LookupPersistentUdp of another block: ERROR_NOT_FOUND", LookupPersistentUdpPortReservation(htons(44000), 4, &l) == ERROR_NOT_FOUND, "-");
	CHECK("DeletePersistentUdp", DeletePersistentUdpPortReservation(htons(44000), 5) == NO_ERROR, "-");
	CHECK("DeletePersistentUdp again: ERROR_NOT_FOUND", DeletePersistentUdpPortReservation(htons(44000), 5) == ERROR_NOT_FOUND, "-");
}

static void cleanup_closes(void)
{
	SOCKET s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
	INET_PORT_RESERVATION_INSTANCE inst;
	DWORD bytes;
	acquire(s, 45000, 3, &inst, &bytes);
	WSACleanup();
	int rc = acquire(s, 45000, 3, &inst, &bytes);
	CHECK("after the last WSACleanup: WSANOTINITIALISED", rc == SOCKET_ERROR && WSAGetLastError() == WSANOTINITIALISED, "rc %d", rc);
	WSADATA d;
	WSAStartup(MAKEWORD(2, 2), &d);
	SOCKET s2 = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
	rc = acquire(s2, 45000, 3, &inst, &bytes);
	CHECK("WSACleanup closed the sockets and ended their reservations", rc == 0, "rc %d", rc);
	closesocket(s2);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	not_started();
	WSADATA d;
	int rc = WSAStartup(MAKEWORD(2, 2), &d);
	CHECK("WSAStartup 2.2", rc == 0 && d.wVersion == MAKEWORD(2, 2), "rc %d version %#x", rc, d.wVersion);
	ioctl_checks();
	reservations();
	overlapped();
	persistent();
	cleanup_closes();
	WSACleanup();
	printf("%d failures\n", failures);
	return failures;
}
