package portres

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// Errno is a Winsock (WSA*) or Win32 (ERROR_*) error number, as Windows
// reports it for the port reservation API. Errno values match their Go
// equivalents with errors.Is: WSAEADDRINUSE is syscall.EADDRINUSE,
// WSAEACCES and ERROR_ACCESS_DENIED are os.ErrPermission, ERROR_NOT_FOUND
// is os.ErrNotExist, and so on (see Is).
type Errno uint32

// The error numbers the port reservation API uses (docs/MODEL.md). Names keep
// their Windows spelling so that code ported from Windows reads the same.
const (
	NO_ERROR                Errno = 0     // success
	ERROR_ACCESS_DENIED     Errno = 5     // not allowed to administer persistent reservations
	WSA_INVALID_HANDLE      Errno = 6     // not a valid event object
	ERROR_SHARING_VIOLATION Errno = 32    // block overlaps a reservation or a port in use
	ERROR_INVALID_PARAMETER Errno = 87    // zero start or count, block past 65535, bad range
	ERROR_NOT_FOUND         Errno = 1168  // no persistent reservation with exactly that block
	WSA_OPERATION_ABORTED   Errno = 995   // cancelled, or the socket was closed
	WSA_IO_INCOMPLETE       Errno = 996   // overlapped operation not yet complete
	WSA_IO_PENDING          Errno = 997   // overlapped operation started
	WSAEINTR                Errno = 10004 // interrupted
	WSAEACCES               Errno = 10013 // not the owner of the reservation / not allowed
	WSAEFAULT               Errno = 10014 // bad pointer (missing buffer)
	WSAEINVAL               Errno = 10022 // bad control code or input, not applicable
	WSAEMFILE               Errno = 10024 // out of file descriptors
	WSAEWOULDBLOCK          Errno = 10035 // non-blocking operation would block
	WSAEINPROGRESS          Errno = 10036 // a blocking operation is in progress
	WSAENOTSOCK             Errno = 10038 // descriptor is not a socket
	WSAEPROTOTYPE           Errno = 10041 // protocol wrong for the socket type
	WSAEPROTONOSUPPORT      Errno = 10043 // protocol not supported
	WSAESOCKTNOSUPPORT      Errno = 10044 // socket type not supported
	WSAEOPNOTSUPP           Errno = 10045 // not supported, or socket is neither TCP nor UDP
	WSAEAFNOSUPPORT         Errno = 10047 // address family not supported
	WSAEADDRINUSE           Errno = 10048 // block overlaps a reservation or a port in use
	WSAEADDRNOTAVAIL        Errno = 10049 // address not available
	WSAENETDOWN             Errno = 10050 // broker unreachable
	WSAENOBUFS              Errno = 10055 // no free port left in the reservation, or no room in the kernel's list
	WSAEDQUOT               Errno = 10069 // a per-user limit of the broker is reached
)

var errnoNames = map[Errno]string{
	NO_ERROR:                "NO_ERROR",
	ERROR_ACCESS_DENIED:     "ERROR_ACCESS_DENIED",
	ERROR_SHARING_VIOLATION: "ERROR_SHARING_VIOLATION",
	ERROR_INVALID_PARAMETER: "ERROR_INVALID_PARAMETER",
	ERROR_NOT_FOUND:         "ERROR_NOT_FOUND",
	WSA_INVALID_HANDLE:      "WSA_INVALID_HANDLE",
	WSA_IO_INCOMPLETE:       "WSA_IO_INCOMPLETE",
	WSAEWOULDBLOCK:          "WSAEWOULDBLOCK",
	WSAEPROTOTYPE:           "WSAEPROTOTYPE",
	WSAEPROTONOSUPPORT:      "WSAEPROTONOSUPPORT",
	WSAESOCKTNOSUPPORT:      "WSAESOCKTNOSUPPORT",
	WSAEAFNOSUPPORT:         "WSAEAFNOSUPPORT",
	WSAEADDRNOTAVAIL:        "WSAEADDRNOTAVAIL",
	WSA_OPERATION_ABORTED:   "WSA_OPERATION_ABORTED",
	WSA_IO_PENDING:          "WSA_IO_PENDING",
	WSAEINTR:                "WSAEINTR",
	WSAEACCES:               "WSAEACCES",
	WSAEFAULT:               "WSAEFAULT",
	WSAEINVAL:               "WSAEINVAL",
	WSAEMFILE:               "WSAEMFILE",
	WSAEINPROGRESS:          "WSAEINPROGRESS",
	WSAENOTSOCK:             "WSAENOTSOCK",
	WSAEOPNOTSUPP:           "WSAEOPNOTSUPP",
	WSAEADDRINUSE:           "WSAEADDRINUSE",
	WSAENETDOWN:             "WSAENETDOWN",
	WSAENOBUFS:              "WSAENOBUFS",
	WSAEDQUOT:               "WSAEDQUOT",
}

var errnoText = map[Errno]string{
	NO_ERROR:                "success",
	ERROR_ACCESS_DENIED:     "access denied",
	ERROR_SHARING_VIOLATION: "ports in use or overlapping a reservation",
	ERROR_INVALID_PARAMETER: "invalid parameter",
	ERROR_NOT_FOUND:         "not found",
	WSA_INVALID_HANDLE:      "invalid event handle",
	WSA_IO_INCOMPLETE:       "overlapped I/O event not in a signaled state",
	WSAEWOULDBLOCK:          "resource temporarily unavailable",
	WSAEPROTOTYPE:           "protocol wrong type for socket",
	WSAEPROTONOSUPPORT:      "protocol not supported",
	WSAESOCKTNOSUPPORT:      "socket type not supported",
	WSAEAFNOSUPPORT:         "address family not supported",
	WSAEADDRNOTAVAIL:        "cannot assign requested address",
	WSA_OPERATION_ABORTED:   "operation aborted",
	WSA_IO_PENDING:          "overlapped I/O operation in progress",
	WSAEINTR:                "interrupted",
	WSAEACCES:               "permission denied",
	WSAEFAULT:               "bad address",
	WSAEINVAL:               "invalid argument",
	WSAEMFILE:               "too many open files",
	WSAEINPROGRESS:          "operation in progress",
	WSAENOTSOCK:             "not a socket",
	WSAEOPNOTSUPP:           "operation not supported",
	WSAEADDRINUSE:           "address already in use",
	WSAENETDOWN:             "port reservation broker unreachable",
	WSAENOBUFS:              "no buffer space: no free port left in the reservation, or no room in the kernel list",
	WSAEDQUOT:               "disk quota exceeded: a per-user limit of the broker is reached",
}

// Name returns the Windows name of the code, such as "WSAEADDRINUSE".
func (e Errno) Name() string {
	if n, ok := errnoNames[e]; ok {
		return n
	}
	return fmt.Sprintf("Errno(%d)", uint32(e))
}

// Error returns "WSAEADDRINUSE (10048): address already in use".
func (e Errno) Error() string {
	t, ok := errnoText[e]
	if !ok {
		t = "unknown error"
	}
	return fmt.Sprintf("%s (%d): %s", e.Name(), uint32(e), t)
}

// Is reports whether e is the Go equivalent target: a syscall.Errno
// (EADDRINUSE, EACCES, EINVAL, ...) or an os/context sentinel
// (os.ErrPermission, os.ErrNotExist, os.ErrInvalid, os.ErrClosed).
func (e Errno) Is(target error) bool {
	switch target {
	case os.ErrPermission:
		return e == WSAEACCES || e == ERROR_ACCESS_DENIED
	case os.ErrNotExist:
		return e == ERROR_NOT_FOUND
	case os.ErrInvalid:
		return e == WSAEINVAL || e == ERROR_INVALID_PARAMETER
	case os.ErrClosed:
		return e == WSA_OPERATION_ABORTED
	}
	var se syscall.Errno
	if !errors.As(target, &se) {
		return false
	}
	return e.Syscall() == se && se != 0
}

// Syscall returns the Linux errno that corresponds to e, or 0 if none does.
func (e Errno) Syscall() syscall.Errno {
	switch e {
	case ERROR_ACCESS_DENIED, WSAEACCES:
		return syscall.EACCES
	case ERROR_SHARING_VIOLATION, WSAEADDRINUSE:
		return syscall.EADDRINUSE
	case ERROR_INVALID_PARAMETER, WSAEINVAL:
		return syscall.EINVAL
	case ERROR_NOT_FOUND:
		return syscall.ENOENT
	case WSA_OPERATION_ABORTED:
		return syscall.ECANCELED
	case WSA_IO_PENDING, WSAEINPROGRESS:
		return syscall.EINPROGRESS
	case WSAEINTR:
		return syscall.EINTR
	case WSAEFAULT:
		return syscall.EFAULT
	case WSAEMFILE:
		return syscall.EMFILE
	case WSAENOTSOCK:
		return syscall.ENOTSOCK
	case WSAEOPNOTSUPP:
		return syscall.EOPNOTSUPP
	case WSAENETDOWN:
		return syscall.ENETDOWN
	case WSAENOBUFS:
		return syscall.ENOBUFS
	case WSAEDQUOT:
		return syscall.EDQUOT
	case WSA_INVALID_HANDLE:
		return syscall.EBADF
	case WSA_IO_INCOMPLETE, WSAEWOULDBLOCK:
		return syscall.EAGAIN
	case WSAEPROTOTYPE:
		return syscall.EPROTOTYPE
	case WSAEPROTONOSUPPORT:
		return syscall.EPROTONOSUPPORT
	case WSAESOCKTNOSUPPORT:
		return syscall.ESOCKTNOSUPPORT
	case WSAEAFNOSUPPORT:
		return syscall.EAFNOSUPPORT
	case WSAEADDRNOTAVAIL:
		return syscall.EADDRNOTAVAIL
	}
	return 0
}

// Error describes a failed portres operation: which operation, on which
// protocol, block, port and reservation, the Winsock or Win32 code, and
// the broker's explanation (for an overlap: whose reservation is in the
// way). errors.Is(err, portres.WSAEADDRINUSE) and
// errors.Is(err, syscall.EADDRINUSE) both hold for an overlap.
type Error struct {
	Op    string // "acquire", "release", "bind", "associate", "persistent create", ...
	Proto Proto  // TCP or UDP; 0 when the operation has none
	Start uint16 // first port of the block involved, 0 if none
	Count uint16 // ports in the block involved, 0 if none
	Port  uint16 // the port involved, 0 if none
	Token uint64 // the reservation involved (the caller's own), 0 if none
	Code  Errno  // the Winsock or Win32 code
	Msg   string // the broker's explanation, may be empty
	Err   error  // the underlying cause (a connection error, context.Canceled), may be nil
}

// Error returns a one-line description naming operation, block, port,
// reservation and code.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("portres: ")
	b.WriteString(e.Op)
	if e.Proto != 0 {
		b.WriteString(" ")
		b.WriteString(e.Proto.String())
	}
	if e.Count > 0 {
		fmt.Fprintf(&b, " ports %s", formatBlock(e.Start, e.Count))
	} else if e.Start > 0 {
		fmt.Fprintf(&b, " start %d", e.Start)
	}
	if e.Port != 0 {
		fmt.Fprintf(&b, " port %d", e.Port)
	}
	if e.Token != 0 {
		fmt.Fprintf(&b, " reservation %#x", e.Token)
	}
	b.WriteString(": ")
	b.WriteString(e.Code.Error())
	if e.Msg != "" {
		b.WriteString(": ")
		b.WriteString(e.Msg)
	}
	return b.String()
}

// Unwrap returns the code and the cause, so errors.Is matches Errno
// values, their Go equivalents, and causes such as context.Canceled.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Code, e.Err}
	}
	return []error{e.Code}
}

func formatBlock(start, count uint16) string {
	if count <= 1 {
		return fmt.Sprint(start)
	}
	return fmt.Sprintf("%d-%d", start, int(start)+int(count)-1)
}
