/*
 * persistent_overlapped.c: a Windows-style program of the port
 * reservation API beyond the documented samples, built on Linux with
 * libportres-winsock:
 *
 *   1. creates a persistent TCP reservation (CreatePersistentTcpPortReservation),
 *      and looks it up again by its block;
 *   2. associates a socket with it through an OVERLAPPED WSAIoctl that
 *      signals an event, waits for the event, reads the result with
 *      WSAGetOverlappedResult, and binds the socket: it gets the block's
 *      first port;
 *   3. acquires a runtime reservation overlapped with a completion
 *      routine, which runs in this thread's alertable wait (SleepEx);
 *   4. deletes the persistent reservation, and shows that a lookup then
 *      fails with ERROR_NOT_FOUND.
 *
 * Usage: persistent_overlapped START COUNT (creating persistent
 * reservations needs root or portresd's admin group).
 *
 *   cc persistent_overlapped.c $(pkg-config --cflags --libs portres-winsock)
 */
#ifndef UNICODE
#define UNICODE
#endif
#define WIN32_LEAN_AND_MEAN

#include <windows.h>
#include <winsock2.h>
#include <mstcpip.h>
#include <iphlpapi.h>
#include <stdio.h>

static volatile int routine_ran;

static void acquired(DWORD error, DWORD bytes, LPWSAOVERLAPPED ov, DWORD flags)
{
	INET_PORT_RESERVATION_INSTANCE *res = (INET_PORT_RESERVATION_INSTANCE *)ov->Pointer;
	if (error == 0)
		wprintf(L"completion routine: acquired runtime ports %u-%u, %u bytes\n", ntohs(res->Reservation.StartPort),
			ntohs(res->Reservation.StartPort) + res->Reservation.NumberOfPorts - 1, bytes);
	else
		wprintf(L"completion routine: acquire failed with error = %u\n", error);
	routine_ran = 1;
	(void)flags;
}

int wmain(int argc, WCHAR **argv)
{
	if (argc != 3) {
		wprintf(L"usage: %ws <StartingPort> <NumberOfPorts>\n", argv[0]);
		return 1;
	}
	USHORT start = (USHORT)_wtoi(argv[1]), count = (USHORT)_wtoi(argv[2]);
	WSADATA wsa;
	int rc = WSAStartup(MAKEWORD(2, 2), &wsa);
	if (rc != 0) {
		wprintf(L"WSAStartup failed with error = %d\n", rc);
		return 1;
	}

	/* 1. A persistent reservation, and its lookup. */
	ULONG64 token = 0, again = 0;
	ULONG status = CreatePersistentTcpPortReservation(htons(start), count, &token);
	if (status != NO_ERROR) {
		wprintf(L"CreatePersistentTcpPortReservation failed with error = %lu (%hs)\n", status,
			portres_ws_last_message());
		WSACleanup();
		return 1;
	}
	wprintf(L"CreatePersistentTcpPortReservation succeeded: ports %u-%u\n", start, start + count - 1);
	status = LookupPersistentTcpPortReservation(htons(start), count, &again);
	wprintf(L"LookupPersistentTcpPortReservation: %lu, same token: %ws\n", status,
		again == token ? L"yes" : L"no");

	/* 2. Associate a socket with it, overlapped, completion by event. */
	SOCKET s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
	WSAEVENT ev = WSACreateEvent();
	WSAOVERLAPPED ov = {0};
	ov.hEvent = ev;
	DWORD bytes = 0, flags = 0;
	rc = WSAIoctl(s, SIO_ASSOCIATE_PORT_RESERVATION, &token, sizeof token, NULL, 0, &bytes, &ov, NULL);
	if (rc == SOCKET_ERROR && WSAGetLastError() != WSA_IO_PENDING) {
		wprintf(L"WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION) failed with error = %d\n", WSAGetLastError());
		return 1;
	}
	wprintf(L"WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION) %ws\n", rc == 0 ? L"completed at once" : L"is pending");
	DWORD w = WSAWaitForMultipleEvents(1, &ev, TRUE, 10000, FALSE);
	if (w != WSA_WAIT_EVENT_0) {
		wprintf(L"WSAWaitForMultipleEvents returned %lu\n", w);
		return 1;
	}
	if (!WSAGetOverlappedResult(s, &ov, &bytes, FALSE, &flags)) {
		wprintf(L"WSAGetOverlappedResult: error = %d\n", WSAGetLastError());
		return 1;
	}
	wprintf(L"event signalled: associate done, bytesReturned = %lu\n", bytes);
	struct sockaddr_in sin = {0};
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(s, (SOCKADDR *)&sin, sizeof sin) == SOCKET_ERROR) {
		wprintf(L"bind failed with error = %d\n", WSAGetLastError());
		return 1;
	}
	int len = sizeof sin;
	getsockname(s, (SOCKADDR *)&sin, &len);
	wprintf(L"bound to persistent port %u\n", ntohs(sin.sin_port));

	/* 3. A runtime reservation, overlapped, with a completion routine. */
	SOCKET r = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
	INET_PORT_RANGE range = {0, 4}; /* StartPort 0: the broker places the block */
	INET_PORT_RESERVATION_INSTANCE res = {0};
	WSAOVERLAPPED ov2 = {0};
	ov2.Pointer = &res; /* the routine finds the result through it */
	rc = WSAIoctl(r, SIO_ACQUIRE_PORT_RESERVATION, &range, sizeof range, &res, sizeof res, &bytes, &ov2, acquired);
	if (rc == SOCKET_ERROR && WSAGetLastError() != WSA_IO_PENDING) {
		wprintf(L"WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION) failed with error = %d\n", WSAGetLastError());
		return 1;
	}
	while (!routine_ran)
		if (SleepEx(10000, TRUE) != WAIT_IO_COMPLETION)
			break;
	wprintf(L"SleepEx returned after the completion routine: %ws\n", routine_ran ? L"yes" : L"no");
	closesocket(r); /* ends the runtime reservation */

	/* 4. Delete the persistent reservation. */
	closesocket(s);
	status = DeletePersistentTcpPortReservation(htons(start), count);
	wprintf(L"DeletePersistentTcpPortReservation: %lu\n", status);
	status = LookupPersistentTcpPortReservation(htons(start), count, &again);
	wprintf(L"LookupPersistentTcpPortReservation after delete: %lu (ERROR_NOT_FOUND is %d)\n", status,
		ERROR_NOT_FOUND);
	WSACloseEvent(ev);
	WSACleanup();
	return 0;
}
