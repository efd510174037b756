package winsock

import (
	"net/netip"
	"time"
)

// Socket is a TCP or UDP socket (SOCKET) on which the port reservation
// control codes can be issued. It is safe for concurrent use: Close and
// CancelIo abort what other goroutines have pending on it.
type Socket struct {
	sys sysSocket
}

// NewSocket opens a socket like socket(af, typ, protocol), with the
// platform's numbers (AF_INET6 is 10 on Linux, 23 on Windows). The socket
// is close-on-exec and, as socket() makes them on Windows, overlapped:
// it is WSASocket(af, typ, protocol, WSA_FLAG_OVERLAPPED).
func NewSocket(af, typ, protocol int) (*Socket, error) {
	return newSocket(af, typ, protocol, WSA_FLAG_OVERLAPPED)
}

// WSASocket opens a socket like WSASocket(af, typ, protocol, NULL, 0,
// flags). Without WSA_FLAG_OVERLAPPED in flags the socket is not
// overlapped: WSAIoctl ignores its Overlapped and completion routine and
// runs synchronously, as the documents say of such sockets. The socket
// is close-on-exec whatever the flags (WSA_FLAG_NO_HANDLE_INHERIT). On
// Linux the other WSA_FLAG_ values are not supported (WSAEINVAL); on
// Windows they go to the system.
func WSASocket(af, typ, protocol int, flags uint32) (*Socket, error) {
	return newSocket(af, typ, protocol, flags)
}

// FromFD makes a Socket of an existing descriptor (a Linux file
// descriptor or a Windows SOCKET), which the Socket then owns: Close
// closes it. It is not checked here: WSAIoctl on something that is not a
// socket fails with WSAENOTSOCK, as on Windows. On Windows the Socket is
// overlapped if the handle was made so (asked of the system); a Linux
// descriptor has no such attribute and the Socket is overlapped.
func FromFD(fd uintptr) *Socket { return fromFD(fd) }

// Fd returns the descriptor, valid until Close, for use with the
// operating system (listen, connect, net.FileListener after a dup).
func (s *Socket) Fd() uintptr { return s.fd() }

// Close closes the socket (closesocket). Pending operations on it
// complete with WSA_OPERATION_ABORTED, and the runtime reservations
// acquired on it end. Returns WSAENOTSOCK if it was already closed.
func (s *Socket) Close() error {
	if s == nil {
		return newError("closesocket", WSAENOTSOCK, "nil Socket")
	}
	return s.close()
}

// Bind binds the socket to addr (bind). An invalid addr.Addr() means the
// family's unspecified address (INADDR_ANY, in6addr_any). After
// SIO_ASSOCIATE_PORT_RESERVATION the port comes from the reservation:
// port 0 takes any free port of the block, an explicit port must be in
// the block; WSAENOBUFS if none is free. An address of the wrong family
// fails with WSAEFAULT, as on Windows.
func (s *Socket) Bind(addr netip.AddrPort) error {
	if s == nil {
		return newError("bind", WSAENOTSOCK, "nil Socket")
	}
	return s.bind(addr)
}

// Getsockname returns the local address the socket is bound to.
func (s *Socket) Getsockname() (netip.AddrPort, error) {
	if s == nil {
		return netip.AddrPort{}, newError("getsockname", WSAENOTSOCK, "nil Socket")
	}
	return s.getsockname()
}

// SetNonblocking puts the socket in non-blocking mode or back
// (ioctlsocket FIONBIO). The port reservation control codes do not
// support non-blocking mode: WSAIoctl still blocks for them.
func (s *Socket) SetNonblocking(nonblocking bool) error {
	if s == nil {
		return newError("ioctlsocket(FIONBIO)", WSAENOTSOCK, "nil Socket")
	}
	return s.setNonblocking(nonblocking)
}

// WSAIoctl issues the control code on the socket with the input buffer
// in and the output buffer out; their lengths are cbInBuffer and
// cbOutBuffer.
//
// With ov and completion nil the call is synchronous, and blocks even in
// non-blocking mode (these control codes do not support it). So it is on
// a socket made without WSA_FLAG_OVERLAPPED (WSASocket): ov and
// completion are ignored there, as the documents say. With ov set, on an
// overlapped socket, it returns (0, WSA_IO_PENDING) once the operation
// has started; the result is then delivered by completion (called on
// another goroutine) if given, else by signalling ov.Event, and in both
// cases by WSAGetOverlappedResult. Close, CancelIo and SIO_FLUSH abort pending
// operations with WSA_OPERATION_ABORTED.
//
// The codes and their buffers:
//
//   - SIO_ACQUIRE_PORT_RESERVATION: in is an INET_PORT_RANGE (4 bytes or
//     more), out receives the INET_PORT_RESERVATION_INSTANCE and must
//     hold 16 bytes; returns 16. WSAEADDRINUSE if the block overlaps a
//     reservation or a port in use.
//   - SIO_RELEASE_PORT_RESERVATION, SIO_ASSOCIATE_PORT_RESERVATION: in is
//     an INET_PORT_RESERVATION_TOKEN (8 bytes or more), out must be
//     empty; they return 0 bytes: bytesReturned is the size of the data
//     stored in the output buffer, and they have none (see the package
//     documentation, Buffers). WSAEINVAL for an unknown token, WSAEACCES
//     for a runtime token of another process or a persistent token this
//     process may not consume. Both reach only
//     the socket's protocol, as each protocol's port pool is its own on
//     Windows: RELEASE or ASSOCIATE of a UDP reservation on a TCP socket
//     (or the reverse) is WSAEINVAL and changes nothing. ASSOCIATE of a
//     bound socket is WSAEINVAL too.
//   - SIO_FLUSH: no buffers; cancels what is pending on the socket.
//
// Checked before anything is sent, in this order: WSAENOTSOCK for a
// closed Socket; WSAEINVAL for any other control code; WSAENOTSOCK for a
// descriptor that is not a socket; WSAEOPNOTSUPP for a socket that is
// neither TCP nor UDP; WSAEFAULT for a nil in or one shorter than the
// structure (cbInBuffer too small, as WSAIoctl's reference says);
// WSAEINVAL for a short out (ACQUIRE, with bytesReturned 0, as the
// IOCTL's page says), a non-empty out (RELEASE, ASSOCIATE: cbOutBuffer
// must be 0) or INVALID_PORT_RESERVATION_TOKEN; WSAEFAULT for a
// completion routine without ov; WSAEINVAL for an ov still pending.
//
// On Windows the system's WSAIoctl applies its own checks, and an
// overlapped call that completes at once returns its result directly.
func (s *Socket) WSAIoctl(code uint32, in, out []byte, ov *Overlapped, completion CompletionRoutine) (bytesReturned uint32, err error) {
	if s == nil {
		return 0, newError(ioctlName(code), WSAENOTSOCK, "nil Socket")
	}
	if !s.overlapped() {
		// "If the socket s was created without the overlapped attribute,
		// the lpOverlapped parameter is ignored" (and the completion
		// routine with it): the call is synchronous.
		ov, completion = nil, nil
	}
	return s.wsaIoctl(code, in, out, ov, completion)
}

// CompletionRoutine is called when an overlapped operation completes
// (LPWSAOVERLAPPED_COMPLETION_ROUTINE): err is nil on success, else
// carries the Winsock code (dwError); flags is always 0 here.
type CompletionRoutine func(err error, bytesTransferred uint32, ov *Overlapped, flags uint32)

// Overlapped (WSAOVERLAPPED) tracks one overlapped operation at a time;
// it may be reused once the previous operation has completed. Starting
// an operation with an Overlapped still pending fails with WSAEINVAL.
type Overlapped struct {
	// Event (hEvent) is reset when an operation starts and set when it
	// completes. As on Windows it is left alone when a completion
	// routine is given. May be nil.
	Event *Event

	sys sysOverlapped
}

// WSAGetOverlappedResult returns the result of the overlapped operation
// ov started on s: bytes stored in the output buffer, flags (0) and the
// operation's error. If the operation is still pending it waits for it
// if wait is true, else fails with WSA_IO_INCOMPLETE. After Close it
// still answers: an operation the close aborted reports
// WSA_OPERATION_ABORTED, on Linux and on Windows alike.
func WSAGetOverlappedResult(s *Socket, ov *Overlapped, wait bool) (bytes uint32, flags uint32, err error) {
	if s == nil {
		return 0, 0, newError("WSAGetOverlappedResult", WSAENOTSOCK, "nil Socket")
	}
	if ov == nil {
		return 0, 0, newError("WSAGetOverlappedResult", WSAEFAULT, "nil Overlapped")
	}
	return getOverlappedResult(s, ov, wait)
}

// CancelIo cancels every operation pending on s, from any goroutine;
// they complete with WSA_OPERATION_ABORTED unless they had already
// finished. WSAIoctl(SIO_FLUSH) does the same.
func CancelIo(s *Socket) error {
	if s == nil {
		return newError("CancelIo", WSAENOTSOCK, "nil Socket")
	}
	return s.cancelIo()
}

// Event is a manual-reset event (WSAEVENT) for Overlapped.Event.
type Event struct {
	sys sysEvent
}

// WSACreateEvent returns a new event, not signalled.
func WSACreateEvent() (*Event, error) { return newEvent() }

// Set signals the event (WSASetEvent).
func (e *Event) Set() error { return e.set() }

// Reset clears the event (WSAResetEvent).
func (e *Event) Reset() error { return e.reset() }

// Wait waits until the event is signalled or timeout passes (a negative
// timeout waits forever) and reports whether it was signalled.
func (e *Event) Wait(timeout time.Duration) (bool, error) { return e.wait(timeout) }

// Close frees the event (WSACloseEvent).
func (e *Event) Close() error { return e.close() }

// WSAStartup prepares the use of Winsock (version 2.2 on Windows, where
// NewSocket also calls it once). On Linux it does nothing; calling it
// keeps ported programs unchanged.
func WSAStartup() error { return startup() }

// WSACleanup ends the use of Winsock. On Linux it closes the broker
// connection the process shares (operations pending on it are aborted;
// the next call dials again); sockets keep their own connections.
func WSACleanup() error { return cleanup() }

// ioctlName is the Op of an error of WSAIoctl.
func ioctlName(code uint32) string {
	switch code {
	case SIO_ACQUIRE_PORT_RESERVATION:
		return "WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION)"
	case SIO_RELEASE_PORT_RESERVATION:
		return "WSAIoctl(SIO_RELEASE_PORT_RESERVATION)"
	case SIO_ASSOCIATE_PORT_RESERVATION:
		return "WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION)"
	case SIO_FLUSH:
		return "WSAIoctl(SIO_FLUSH)"
	}
	return "WSAIoctl"
}
