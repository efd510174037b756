/*
 * winsock2.h for libportres-winsock: the Winsock calls a port
 * reservation program makes, with Windows' error reporting
 * (WSAGetLastError) and semantics, on Linux sockets and portresd.
 *
 * A SOCKET is the Linux descriptor. socket, bind and getsockname are the
 * Winsock versions here (macros for portres_ws_*): they return
 * INVALID_SOCKET / SOCKET_ERROR and set WSAGetLastError. Other POSIX
 * socket calls (listen, accept, send, recv, ...) work on a SOCKET as
 * they are, reporting through errno, not WSAGetLastError. Close sockets
 * with closesocket: it ends the socket's runtime reservations, as on
 * Windows.
 */
#ifndef _PORTRES_WINSOCK2_H
#define _PORTRES_WINSOCK2_H
#include "_portres_base.h"

typedef UINT_PTR SOCKET;
#define INVALID_SOCKET ((SOCKET)(~0))
#define SOCKET_ERROR (-1)

typedef USHORT ADDRESS_FAMILY;
typedef struct sockaddr SOCKADDR, *PSOCKADDR, *LPSOCKADDR;
typedef struct sockaddr_in SOCKADDR_IN, *PSOCKADDR_IN, *LPSOCKADDR_IN;
typedef struct sockaddr_storage SOCKADDR_STORAGE;
typedef struct in_addr IN_ADDR;

#define WSADESCRIPTION_LEN 256
#define WSASYS_STATUS_LEN 128
typedef struct WSAData {
	WORD wVersion;
	WORD wHighVersion;
	unsigned short iMaxSockets;
	unsigned short iMaxUdpDg;
	char *lpVendorInfo;
	char szDescription[WSADESCRIPTION_LEN + 1];
	char szSystemStatus[WSASYS_STATUS_LEN + 1];
} WSADATA, *LPWSADATA;

/* Winsock error numbers (the ones this layer reports). */
#define WSA_INVALID_HANDLE 6
#define WSA_INVALID_PARAMETER 87
#define WSA_OPERATION_ABORTED 995
#define WSA_IO_INCOMPLETE 996
#define WSA_IO_PENDING 997
#define WSAEINTR 10004
#define WSAEBADF 10009
#define WSAEACCES 10013
#define WSAEFAULT 10014
#define WSAEINVAL 10022
#define WSAEMFILE 10024
#define WSAEWOULDBLOCK 10035
#define WSAEINPROGRESS 10036
#define WSAENOTSOCK 10038
#define WSAEPROTOTYPE 10041
#define WSAEPROTONOSUPPORT 10043
#define WSAESOCKTNOSUPPORT 10044
#define WSAEOPNOTSUPP 10045
#define WSAEAFNOSUPPORT 10047
#define WSAEADDRINUSE 10048
#define WSAEADDRNOTAVAIL 10049
#define WSAENETDOWN 10050
#define WSAENOBUFS 10055
#define WSAEDQUOT 10069
#define WSASYSNOTREADY 10091
#define WSAVERNOTSUPPORTED 10092
#define WSANOTINITIALISED 10093

/* Overlapped operations and events. */
typedef HANDLE WSAEVENT, *LPWSAEVENT;
#define WSA_INVALID_EVENT ((WSAEVENT)NULL)
#define WSA_MAXIMUM_WAIT_EVENTS 64
#define WSA_INFINITE INFINITE
#define WSA_WAIT_EVENT_0 0u
#define WSA_WAIT_IO_COMPLETION 0xC0u
#define WSA_WAIT_TIMEOUT 0x102u
#define WSA_WAIT_FAILED 0xFFFFFFFFu

typedef struct _WSAOVERLAPPED {
	ULONG_PTR Internal;     /* the operation's status: WSA_IO_PENDING until done */
	ULONG_PTR InternalHigh; /* bytes returned */
	union {
		struct {
			DWORD Offset;
			DWORD OffsetHigh;
		};
		PVOID Pointer;
	};
	WSAEVENT hEvent;
} WSAOVERLAPPED, *LPWSAOVERLAPPED;

typedef void (*LPWSAOVERLAPPED_COMPLETION_ROUTINE)(DWORD dwError, DWORD cbTransferred,
						   LPWSAOVERLAPPED lpOverlapped, DWORD dwFlags);

/* Flags of WSASocketW. */
#define WSA_FLAG_OVERLAPPED 0x01

_PORTRES_BEGIN
int WSAStartup(WORD wVersionRequested, LPWSADATA lpWSAData);
int WSACleanup(void);
int WSAGetLastError(void);
void WSASetLastError(int iError);

SOCKET portres_ws_socket(int af, int type, int protocol);
int portres_ws_bind(SOCKET s, const struct sockaddr *name, int namelen);
int portres_ws_getsockname(SOCKET s, struct sockaddr *name, int *namelen);
int closesocket(SOCKET s);
/* WSASocketW: socket with Windows' flags (WSA_FLAG_OVERLAPPED); no
 * protocol info (lpProtocolInfo must be NULL) and no groups. */
SOCKET WSASocketW(int af, int type, int protocol, void *lpProtocolInfo, unsigned g, DWORD dwFlags);

int WSAIoctl(SOCKET s, DWORD dwIoControlCode, LPVOID lpvInBuffer, DWORD cbInBuffer, LPVOID lpvOutBuffer,
	     DWORD cbOutBuffer, LPDWORD lpcbBytesReturned, LPWSAOVERLAPPED lpOverlapped,
	     LPWSAOVERLAPPED_COMPLETION_ROUTINE lpCompletionRoutine);
BOOL WSAGetOverlappedResult(SOCKET s, LPWSAOVERLAPPED lpOverlapped, LPDWORD lpcbTransfer, BOOL fWait,
			    LPDWORD lpdwFlags);

WSAEVENT WSACreateEvent(void);
BOOL WSACloseEvent(WSAEVENT hEvent);
BOOL WSASetEvent(WSAEVENT hEvent);
BOOL WSAResetEvent(WSAEVENT hEvent);

/* portres extension, not in Windows: what went wrong in this thread's
 * last failed call, in words (the broker's reason included), or "". */
const char *portres_ws_last_message(void);
DWORD WSAWaitForMultipleEvents(DWORD cEvents, const WSAEVENT *lphEvents, BOOL fWaitAll, DWORD dwTimeout,
			       BOOL fAlertable);

/* Winsock calls this layer does not provide are declared unavailable, so
 * that a program using one fails to compile with a message saying what to
 * do instead, rather than with an undeclared name or, worse, a POSIX
 * function of the same name and other semantics. */
#if defined(__has_attribute)
#if __has_attribute(unavailable)
#define _PORTRES_MISSING(msg) __attribute__((unavailable("portres: " msg)))
#endif
#endif
#ifndef _PORTRES_MISSING
#define _PORTRES_MISSING(msg) __attribute__((error("portres: " msg)))
#endif
int WSARecv(SOCKET s, ...) _PORTRES_MISSING("WSARecv is not provided; a SOCKET is a Linux descriptor: use recv(2) or recvmsg(2)");
int WSARecvFrom(SOCKET s, ...) _PORTRES_MISSING("WSARecvFrom is not provided; use recvfrom(2)");
int WSASend(SOCKET s, ...) _PORTRES_MISSING("WSASend is not provided; use send(2) or sendmsg(2)");
int WSASendTo(SOCKET s, ...) _PORTRES_MISSING("WSASendTo is not provided; use sendto(2)");
SOCKET WSAAccept(SOCKET s, ...) _PORTRES_MISSING("WSAAccept is not provided; use accept4(2)");
int WSAConnect(SOCKET s, ...) _PORTRES_MISSING("WSAConnect is not provided; use connect(2)");
int WSAEventSelect(SOCKET s, ...) _PORTRES_MISSING("WSAEventSelect is not provided; use poll(2) or epoll(7)");
int WSAAsyncSelect(SOCKET s, ...) _PORTRES_MISSING("WSAAsyncSelect is not provided (no window messages on Linux); use poll(2)");
int WSAPoll(void *fds, ...) _PORTRES_MISSING("WSAPoll is not provided; use poll(2)");
int ioctlsocket(SOCKET s, ...) _PORTRES_MISSING("ioctlsocket is not provided; use fcntl(2) (FIONBIO: O_NONBLOCK) or ioctl(2)");
SOCKET WSASocketA(int af, ...) _PORTRES_MISSING("WSASocketA is not provided; use WSASocketW or socket");
int WSADuplicateSocketW(SOCKET s, ...) _PORTRES_MISSING("WSADuplicateSocketW is not provided; pass the descriptor with SCM_RIGHTS");
int WSAEnumProtocolsW(int *p, ...) _PORTRES_MISSING("WSAEnumProtocolsW is not provided");
_PORTRES_END

#define socket portres_ws_socket
#define bind portres_ws_bind
#define getsockname portres_ws_getsockname
#define WSASocket WSASocketW

#endif
