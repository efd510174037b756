/*
 * threads_test.c: libportres and its Winsock layer used from many
 * threads at once, against a real broker ($PORTRES_SOCKET); run by
 * internal/clib's TestWinsockLayer under ThreadSanitizer. One portres
 * client shared by all threads (its requests take turns), and Winsock
 * sockets of each thread's own with blocking and overlapped calls.
 * Prints "ok" lines and exits with the number of failures.
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <winsock2.h>
#include <mstcpip.h>
#include <portres.h>

#include <pthread.h>
#include <string.h>

#define THREADS 8
#define ROUNDS 100

static portres_client *shared;
static int errors[THREADS];

static void *native(void *arg)
{
	int id = (int)(intptr_t)arg;
	for (int i = 0; i < ROUNDS; i++) {
		portres_reservation r;
		portres_error e;
		uint16_t start = (uint16_t)(30000 + id * 100 + i % 50);
		if (portres_acquire(shared, PORTRES_TCP, start, 1, 0, &r, &e) != 0 || r.start != start ||
		    portres_release(shared, PORTRES_TCP, r.token, NULL, &e) != 0) {
			fprintf(stderr, "thread %d: %s\n", id, e.message);
			errors[id]++;
		}
	}
	return NULL;
}

static void *winsock(void *arg)
{
	int id = (int)(intptr_t)arg;
	SOCKET s = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
	WSAEVENT ev = WSACreateEvent();
	for (int i = 0; i < ROUNDS / 4; i++) {
		INET_PORT_RANGE r = {htons((USHORT)(31000 + id * 100 + i % 50)), 1};
		INET_PORT_RESERVATION_INSTANCE inst;
		DWORD bytes, flags;
		WSAOVERLAPPED ov;
		memset(&ov, 0, sizeof ov);
		ov.hEvent = ev;
		int rc = WSAIoctl(s, SIO_ACQUIRE_PORT_RESERVATION, &r, sizeof r, &inst, sizeof inst, &bytes, i % 2 ? &ov : NULL, NULL);
		if (rc == SOCKET_ERROR && WSAGetLastError() == WSA_IO_PENDING)
			rc = WSAGetOverlappedResult(s, &ov, &bytes, TRUE, &flags) ? 0 : SOCKET_ERROR;
		ULONG64 t = inst.Token.Token;
		if (rc != 0 || bytes != 16 ||
		    WSAIoctl(s, SIO_RELEASE_PORT_RESERVATION, &t, sizeof t, NULL, 0, &bytes, NULL, NULL) != 0) {
			fprintf(stderr, "thread %d: winsock round %d: %d %s\n", id, i, WSAGetLastError(), portres_ws_last_message());
			errors[id]++;
		}
	}
	WSACloseEvent(ev);
	closesocket(s);
	return NULL;
}

int main(void)
{
	portres_error e;
	if (portres_connect(NULL, &shared, &e) != 0) {
		fprintf(stderr, "%s\n", e.message);
		return 1;
	}
	WSADATA d;
	WSAStartup(MAKEWORD(2, 2), &d);
	pthread_t t[2 * THREADS];
	for (int i = 0; i < THREADS; i++) {
		pthread_create(&t[i], NULL, native, (void *)(intptr_t)i);
		pthread_create(&t[THREADS + i], NULL, winsock, (void *)(intptr_t)i);
	}
	int failed = 0;
	for (int i = 0; i < 2 * THREADS; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < THREADS; i++)
		failed += errors[i];
	portres_entry *es;
	size_t n = 99;
	if (portres_show(shared, &es, &n, &e) == 0)
		portres_entries_free(es);
	printf("%s %d threads x %d native rounds on one client, %d threads x %d Winsock rounds; %zu reservations left\n",
	       failed || n ? "FAIL" : "ok", THREADS, ROUNDS, THREADS, ROUNDS / 4, n);
	WSACleanup();
	portres_close(shared);
	return failed || n;
}
