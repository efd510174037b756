// Package winsock is the Winsock surface of portres: the port reservation
// control codes of WSAIoctl, their structures byte for byte, and
// overlapped (asynchronous) completion, so that a program written for
// Windows ports line by line.
//
// # Windows names and their Go form
//
//	Windows                              this package
//	SIO_ACQUIRE_PORT_RESERVATION         SIO_ACQUIRE_PORT_RESERVATION (0x98000064)
//	SIO_RELEASE_PORT_RESERVATION         SIO_RELEASE_PORT_RESERVATION (0x98000065)
//	SIO_ASSOCIATE_PORT_RESERVATION       SIO_ASSOCIATE_PORT_RESERVATION (0x98000066)
//	SIO_FLUSH                            SIO_FLUSH (0x28000004): cancels pending operations
//	INET_PORT_RANGE                      INET_PORT_RANGE (4 bytes)
//	INET_PORT_RESERVATION_TOKEN          INET_PORT_RESERVATION_TOKEN (8 bytes)
//	INET_PORT_RESERVATION_INSTANCE       INET_PORT_RESERVATION_INSTANCE (16 bytes)
//	socket                               NewSocket (an overlapped socket)
//	WSASocket, WSA_FLAG_OVERLAPPED       WSASocket
//	SOCKET                               *Socket
//	WSAIoctl                             (*Socket).WSAIoctl
//	bind, getsockname, closesocket       (*Socket).Bind, Getsockname, Close
//	bind with a C sockaddr and namelen   (*Socket).BindSockaddr
//	ioctlsocket(FIONBIO)                 (*Socket).SetNonblocking
//	WSAOVERLAPPED                        Overlapped
//	LPWSAOVERLAPPED_COMPLETION_ROUTINE   CompletionRoutine
//	WSAEVENT, WSACreateEvent             *Event, WSACreateEvent
//	WSAGetOverlappedResult               WSAGetOverlappedResult
//	CancelIo / CancelIoEx                CancelIo
//	WSAGetLastError                      ErrorCode(err)
//	WSAStartup, WSACleanup               WSAStartup, WSACleanup
//	htons, ntohs                         Htons, Ntohs
//	Create/Delete/LookupPersistent{Tcp,Udp}PortReservation (iphlpapi.dll)
//	                                     same names, same arguments, Win32 results
//
// Errors carry the Winsock number as an Errno, which on Linux is
// portres.Errno itself: errors.Is(err, portres.WSAEINVAL) and
// errors.Is(err, syscall.EINVAL) both hold for an invalid argument.
// WSAIoctl returns the bare Errno WSA_IO_PENDING when an overlapped
// operation has started, as Windows returns SOCKET_ERROR with
// WSAGetLastError() == WSA_IO_PENDING.
//
// # Buffers
//
// WSAIoctl checks its buffers as the documents say, before anything
// else happens:
//
//	input buffer nil, or shorter than the structure     WSAEFAULT (10014)
//	  (INET_PORT_RANGE 4 bytes, INET_PORT_RESERVATION_TOKEN 8: "the
//	  cbInBuffer parameter is too small", WSAIoctl's reference)
//	SIO_ACQUIRE_PORT_RESERVATION, output buffer under   WSAEINVAL (10022),
//	  16 bytes (the IOCTL's page)                         bytesReturned 0
//	SIO_RELEASE/ASSOCIATE_PORT_RESERVATION, output      WSAEINVAL (10022)
//	  buffer not empty ("cbOutBuffer must be zero")
//
// lpcbBytesReturned (WSAIoctl's bytesReturned, the bytes of
// WSAGetOverlappedResult and of a completion routine) is 16 after
// SIO_ACQUIRE_PORT_RESERVATION and 0 after SIO_RELEASE_PORT_RESERVATION
// and SIO_ASSOCIATE_PORT_RESERVATION. The pages define it as the size of
// the data stored in the output buffer, and these two codes have no
// output buffer (cbOutBuffer must be 0), so 0 is the only truthful
// value; the sentence that a successful non-overlapped call cannot
// return 0 is WSAIoctl's general text, meant for codes that return data.
//
// # Linux
//
// On Linux the port pool belongs to the portresd broker. A Socket is a
// real socket(2) descriptor; the first SIO_ACQUIRE_PORT_RESERVATION on it
// opens the socket's own broker connection, so its runtime reservations
// last as long as the Socket, as on Windows: Close ends them. RELEASE and
// ASSOCIATE, and the bind of an associated socket, go through that
// connection if the socket has one, else through a connection shared by
// the process; the broker checks the process, not the connection, so a
// token acquired on one socket may be released or consumed on another of
// the same process. The broker is found at portres.DefaultSocketPath
// ($PORTRES_SOCKET) unless SetBrokerSocket names another.
//
// RELEASE and ASSOCIATE reach only the socket's protocol, as on Windows,
// where each protocol's stack owns its own port pool: a TCP socket can
// neither release nor consume a UDP reservation (WSAEINVAL, nothing
// changes). For RELEASE the broker checks the protocol and releases in
// one step (portres.Client.ReleaseProto).
//
// Address families are the platform's numbers: AF_INET is 2 everywhere,
// AF_INET6 is 10 on Linux and 23 on Windows.
//
// # Windows
//
// On Windows every call goes to the system's Winsock (ws2_32.dll) through
// golang.org/x/sys/windows, with the same Go signatures. Each overlapped
// operation gets an event of its own, which a goroutine waits on; it
// records the result, closes the event (the operation is done, nobody
// else waits on it), then sets Overlapped.Event or calls the completion
// routine (Go code never sits in the alertable wait Windows delivers
// routines in). WSAGetOverlappedResult answers from that record, so it
// answers after Close as on Linux: WSA_OPERATION_ABORTED for what the
// close aborted, where the system would only say WSAENOTSOCK.
//
// # Overlapped and non-overlapped sockets
//
// NewSocket makes overlapped sockets, as socket() does on Windows;
// WSASocket makes one only with WSA_FLAG_OVERLAPPED. On a socket without
// the overlapped attribute WSAIoctl ignores the Overlapped and the
// completion routine and runs synchronously, as the documents say ("if
// the socket s was created without the overlapped attribute, the
// lpOverlapped parameter is ignored"), on both platforms. FromFD asks
// Windows whether the handle is overlapped; a Linux descriptor is.
package winsock
