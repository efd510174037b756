package winsock

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"

	"github.com/portres/portres"
)

// Control code construction, as in ws2def.h.
const (
	IOC_VOID   = 0x20000000 // no parameters
	IOC_IN     = 0x80000000 // copy in parameters
	IOC_WS2    = 0x08000000 // Winsock 2 control codes
	IOC_VENDOR = 0x18000000 // vendor (provider) control codes
)

// The control codes WSAIoctl implements.
const (
	// SIO_ACQUIRE_PORT_RESERVATION is _WSAIOW(IOC_VENDOR,100): acquire a
	// runtime reservation for a block of ports; in INET_PORT_RANGE, out
	// INET_PORT_RESERVATION_INSTANCE.
	SIO_ACQUIRE_PORT_RESERVATION uint32 = IOC_IN | IOC_VENDOR | 100
	// SIO_RELEASE_PORT_RESERVATION is _WSAIOW(IOC_VENDOR,101): release a
	// runtime reservation; in INET_PORT_RESERVATION_TOKEN, no out.
	SIO_RELEASE_PORT_RESERVATION uint32 = IOC_IN | IOC_VENDOR | 101
	// SIO_ASSOCIATE_PORT_RESERVATION is _WSAIOW(IOC_VENDOR,102): make the
	// socket's next bind take its port from a reservation; in
	// INET_PORT_RESERVATION_TOKEN, no out.
	SIO_ASSOCIATE_PORT_RESERVATION uint32 = IOC_IN | IOC_VENDOR | 102
	// SIO_FLUSH is _WSAIO(IOC_WS2,4); here it cancels the socket's pending
	// operations, which complete with WSA_OPERATION_ABORTED.
	SIO_FLUSH uint32 = IOC_VOID | IOC_WS2 | 4
)

// INVALID_PORT_RESERVATION_TOKEN is the token no reservation has.
const INVALID_PORT_RESERVATION_TOKEN = 0

// Flags of WSASocket, as in winsock2.h.
const (
	// WSA_FLAG_OVERLAPPED makes a socket on which WSAIoctl can run
	// overlapped; socket() (NewSocket) sets it.
	WSA_FLAG_OVERLAPPED = 0x01
	// WSA_FLAG_NO_HANDLE_INHERIT keeps the socket from child processes;
	// every Socket here is so (close-on-exec), set or not.
	WSA_FLAG_NO_HANDLE_INHERIT = 0x80
)

// Socket arguments that are the same number on Linux and Windows.
// AF_INET6 differs: 10 on Linux, 23 on Windows.
const (
	AF_UNSPEC   = 0
	AF_UNIX     = 1
	AF_INET     = 2
	SOCK_STREAM = 1
	SOCK_DGRAM  = 2
	SOCK_RAW    = 3
	IPPROTO_TCP = 6
	IPPROTO_UDP = 17
)

// Errno is a Winsock error number, as WSAGetLastError returns it. It is
// portres.Errno: the codes below are the very values of the portres
// package (WSAEINVAL == portres.WSAEINVAL), and errors.Is(err,
// syscall.EINVAL) holds for WSAEINVAL (see portres.Errno.Is).
type Errno = portres.Errno

// Winsock error numbers: the values of package portres, under the names
// Winsock code uses.
const (
	WSA_INVALID_HANDLE    = portres.WSA_INVALID_HANDLE
	WSA_OPERATION_ABORTED = portres.WSA_OPERATION_ABORTED
	WSA_IO_INCOMPLETE     = portres.WSA_IO_INCOMPLETE
	WSA_IO_PENDING        = portres.WSA_IO_PENDING
	WSAEINTR              = portres.WSAEINTR
	WSAEACCES             = portres.WSAEACCES
	WSAEFAULT             = portres.WSAEFAULT
	WSAEINVAL             = portres.WSAEINVAL
	WSAEMFILE             = portres.WSAEMFILE
	WSAEWOULDBLOCK        = portres.WSAEWOULDBLOCK
	WSAEINPROGRESS        = portres.WSAEINPROGRESS
	WSAENOTSOCK           = portres.WSAENOTSOCK
	WSAEPROTOTYPE         = portres.WSAEPROTOTYPE
	WSAEPROTONOSUPPORT    = portres.WSAEPROTONOSUPPORT
	WSAESOCKTNOSUPPORT    = portres.WSAESOCKTNOSUPPORT
	WSAEOPNOTSUPP         = portres.WSAEOPNOTSUPP
	WSAEAFNOSUPPORT       = portres.WSAEAFNOSUPPORT
	WSAEADDRINUSE         = portres.WSAEADDRINUSE
	WSAEADDRNOTAVAIL      = portres.WSAEADDRNOTAVAIL
	WSAENETDOWN           = portres.WSAENETDOWN
	WSAENOBUFS            = portres.WSAENOBUFS
	WSAEDQUOT             = portres.WSAEDQUOT
)

// Error is a failed Winsock call: the call, its Winsock code, and what
// caused it (a broker *portres.Error, an *os.SyscallError, ...).
// errors.Is matches the code, its Go equivalents and the cause.
type Error struct {
	Op   string // "WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION)", "bind", "socket", ...
	Code Errno  // the Winsock number WSAGetLastError would return
	Msg  string // what was wrong, may be empty
	Err  error  // the underlying cause, may be nil
}

// Error returns "winsock: OP: CODE: cause".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("winsock: ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	if e.Err == nil || !errors.Is(e.Err, e.Code) {
		b.WriteString(e.Code.Error())
		if e.Msg != "" || e.Err != nil {
			b.WriteString(": ")
		}
	}
	b.WriteString(e.Msg)
	if e.Err != nil {
		if e.Msg != "" {
			b.WriteString(": ")
		}
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the code and the cause.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Code, e.Err}
	}
	return []error{e.Code}
}

func newError(op string, code Errno, msg string) *Error {
	return &Error{Op: op, Code: code, Msg: msg}
}

// sysError wraps the failure of the system call named call as an *Error
// of op whose code is the Winsock number of errno (WSAEINVAL if none
// fits).
func sysError(op, call string, errno error) *Error {
	code, ok := osErrno(errno)
	if !ok {
		code = WSAEINVAL
	}
	return &Error{Op: op, Code: code, Err: os.NewSyscallError(call, errno)}
}

// ErrorCode returns the Winsock number of err, as WSAGetLastError does
// after a failed call: 0 for nil, the Errno err carries, or the number
// of the operating system error it wraps; WSAEINVAL if it has none.
func ErrorCode(err error) Errno {
	if err == nil {
		return 0
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var n Errno
	if errors.As(err, &n) {
		return n
	}
	if n, ok := osErrno(err); ok {
		return n
	}
	return WSAEINVAL
}

// Htons converts a port from host to network byte order, like htons:
// INET_PORT_RANGE.StartPort holds the network order value.
func Htons(port uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], port)
	return binary.NativeEndian.Uint16(b[:])
}

// Ntohs converts a port from network to host byte order, like ntohs.
func Ntohs(port uint16) uint16 { return Htons(port) }
