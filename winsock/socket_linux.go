package winsock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"

	"github.com/portres/portres"
	"golang.org/x/sys/unix"
)

// AF_INET6 is the IPv6 address family: 10 on Linux (23 on Windows).
const AF_INET6 = unix.AF_INET6

// sysSocket is a Socket on Linux: a socket(2) descriptor, the operations
// in progress on it, and its own broker connection.
type sysSocket struct {
	fd         int
	valid      bool // made by newSocket or fromFD; the zero Socket is not
	nonOverlap bool // made by WSASocket without WSA_FLAG_OVERLAPPED

	mu     sync.Mutex
	closed bool
	ops    map[*op]struct{}
	wg     sync.WaitGroup  // one per op: Close waits for them before closing fd
	client *portres.Client // dialled by the first ACQUIRE; closing it ends the socket's runtime reservations
	token  uint64          // associated reservation, 0 if none
}

// op is one call in progress on a socket; cancelling its context (with
// errClosed or errFlushed as the cause) aborts it.
type op struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

var (
	errClosed  = errors.New("the socket was closed")
	errFlushed = errors.New("cancelled by CancelIo or SIO_FLUSH")
)

// linuxFlags are the WSASocket flags this backend knows: the socket is
// always close-on-exec, and overlapped only if asked.
const linuxFlags = WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT

func newSocket(af, typ, protocol int, flags uint32) (*Socket, error) {
	name := "socket"
	if flags != WSA_FLAG_OVERLAPPED {
		name = "WSASocket"
	}
	if extra := flags &^ linuxFlags; extra != 0 {
		return nil, newError(name, WSAEINVAL, fmt.Sprintf("flags %#x are not supported on Linux (only WSA_FLAG_OVERLAPPED and WSA_FLAG_NO_HANDLE_INHERIT)", extra))
	}
	fd, err := unix.Socket(af, typ|unix.SOCK_CLOEXEC, protocol)
	if err != nil {
		return nil, sysError(name, "socket", err)
	}
	s := fromFD(uintptr(fd))
	s.sys.nonOverlap = flags&WSA_FLAG_OVERLAPPED == 0
	return s, nil
}

func fromFD(fd uintptr) *Socket {
	return &Socket{sys: sysSocket{fd: int(fd), valid: true, ops: map[*op]struct{}{}}}
}

func (s *Socket) fd() uintptr {
	if !s.sys.valid {
		return ^uintptr(0) // INVALID_SOCKET
	}
	return uintptr(s.sys.fd)
}

// begin registers an operation; WSAENOTSOCK if the socket is closed.
func (s *Socket) begin(name string) (*op, error) {
	s.sys.mu.Lock()
	defer s.sys.mu.Unlock()
	if !s.sys.valid || s.sys.closed {
		return nil, newError(name, WSAENOTSOCK, "the socket is closed or was never opened")
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	o := &op{ctx: ctx, cancel: cancel}
	s.sys.ops[o] = struct{}{}
	s.sys.wg.Add(1)
	return o, nil
}

// end unregisters o; the descriptor may be closed afterwards.
func (s *Socket) end(o *op) {
	s.sys.mu.Lock()
	delete(s.sys.ops, o)
	s.sys.mu.Unlock()
	o.cancel(nil)
	s.sys.wg.Done()
}

// cancelOps cancels every operation in progress but except.
func (s *Socket) cancelOps(name string, except *op) error {
	s.sys.mu.Lock()
	defer s.sys.mu.Unlock()
	if !s.sys.valid || s.sys.closed {
		return newError(name, WSAENOTSOCK, "the socket is closed or was never opened")
	}
	for o := range s.sys.ops {
		if o != except {
			o.cancel(errFlushed)
		}
	}
	return nil
}

// result turns the outcome of a cancelled operation into
// WSA_OPERATION_ABORTED: always if the socket was closed, else (CancelIo,
// SIO_FLUSH) if the cancel reached it before it finished.
func (o *op) result(name string, n uint32, err error) (uint32, error) {
	cause := context.Cause(o.ctx)
	switch {
	case o.ctx.Err() == nil:
		return n, err
	case cause != errClosed && (err == nil || !errors.Is(err, context.Canceled) && ErrorCode(err) != WSA_OPERATION_ABORTED):
		return n, err
	}
	return 0, &Error{Op: name, Code: WSA_OPERATION_ABORTED, Msg: cause.Error(), Err: err}
}

func (s *Socket) close() error {
	s.sys.mu.Lock()
	if !s.sys.valid || s.sys.closed {
		s.sys.mu.Unlock()
		return newError("closesocket", WSAENOTSOCK, "the socket is already closed or was never opened")
	}
	s.sys.closed = true
	for o := range s.sys.ops {
		o.cancel(errClosed)
	}
	c := s.sys.client
	s.sys.client = nil
	s.sys.mu.Unlock()
	if c != nil {
		c.Close() // the broker releases what was acquired on it
	}
	s.sys.wg.Wait()
	if err := unix.Close(s.sys.fd); err != nil {
		return sysError("closesocket", "close", err)
	}
	return nil
}

// clientFor returns the connection RELEASE, ASSOCIATE and bind use: the
// socket's own if it has one, else the process's shared one.
func (s *Socket) clientFor(ctx context.Context) (c *portres.Client, isShared bool, err error) {
	s.sys.mu.Lock()
	c = s.sys.client
	s.sys.mu.Unlock()
	if c != nil {
		return c, false, nil
	}
	c, err = sharedClient(ctx)
	return c, true, err
}

// family returns the socket's address family.
func (s *Socket) family(name string) (int, error) {
	o, err := s.begin(name)
	if err != nil {
		return 0, err
	}
	defer s.end(o)
	family, err := unix.GetsockoptInt(s.sys.fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return 0, sysError(name, "getsockopt", err)
	}
	return family, nil
}

func (s *Socket) bind(addr netip.AddrPort) error {
	const name = "bind"
	o, err := s.begin(name)
	if err != nil {
		return err
	}
	defer s.end(o)
	family, err := unix.GetsockoptInt(s.sys.fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return sysError(name, "getsockopt", err)
	}
	ip := addr.Addr()
	notIP := family != unix.AF_INET && family != unix.AF_INET6
	if notIP || (family == unix.AF_INET && ip.IsValid() && !ip.Unmap().Is4()) {
		return newError(name, WSAEFAULT, fmt.Sprintf("address %s does not fit the socket's family %d", addr, family))
	}
	s.sys.mu.Lock()
	token := s.sys.token
	s.sys.mu.Unlock()
	if token == INVALID_PORT_RESERVATION_TOKEN {
		if err := unix.Bind(s.sys.fd, sockaddr(family, addr)); err != nil {
			return sysError(name, "bind", err)
		}
		return nil
	}
	c, isShared, err := s.clientFor(o.ctx)
	if err == nil {
		_, err = c.BindFD(o.ctx, token, s.sys.fd, ip, addr.Port())
		if err != nil && isShared {
			forgetShared(c, err)
		}
	}
	if err != nil {
		err = brokerError(name, err)
	}
	_, err = o.result(name, 0, err)
	return err
}

// sockaddr is addr for a socket of family; an invalid address is the
// family's unspecified one, an IPv4 address on an IPv6 socket is mapped.
func sockaddr(family int, addr netip.AddrPort) unix.Sockaddr {
	ip, port := addr.Addr(), int(addr.Port())
	if family == unix.AF_INET {
		sa := &unix.SockaddrInet4{Port: port}
		if ip.IsValid() {
			sa.Addr = ip.Unmap().As4()
		}
		return sa
	}
	sa := &unix.SockaddrInet6{Port: port}
	if ip.IsValid() {
		sa.Addr = ip.As16()
		if z := ip.Zone(); z != "" {
			if n, err := strconv.Atoi(z); err == nil {
				sa.ZoneId = uint32(n)
			} else if ifi, err := net.InterfaceByName(z); err == nil {
				sa.ZoneId = uint32(ifi.Index)
			}
		}
	}
	return sa
}

func (s *Socket) getsockname() (netip.AddrPort, error) {
	const name = "getsockname"
	o, err := s.begin(name)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer s.end(o)
	sa, err := unix.Getsockname(s.sys.fd)
	if err != nil {
		return netip.AddrPort{}, sysError(name, "getsockname", err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), nil
	case *unix.SockaddrInet6:
		ip := netip.AddrFrom16(a.Addr)
		if a.ZoneId != 0 {
			ip = ip.WithZone(strconv.Itoa(int(a.ZoneId)))
		}
		return netip.AddrPortFrom(ip, uint16(a.Port)), nil
	}
	return netip.AddrPort{}, newError(name, WSAEAFNOSUPPORT, "not an IPv4 or IPv6 socket")
}

func (s *Socket) setNonblocking(nonblocking bool) error {
	const name = "ioctlsocket(FIONBIO)"
	o, err := s.begin(name)
	if err != nil {
		return err
	}
	defer s.end(o)
	if err := unix.SetNonblock(s.sys.fd, nonblocking); err != nil {
		return sysError(name, "fcntl", err)
	}
	return nil
}

// fromErrno maps the errors of socket(2), bind(2), getsockopt(2) and
// friends to the Winsock numbers Windows reports for the same failures.
var fromErrno = map[syscall.Errno]Errno{
	syscall.EINTR:           WSAEINTR,
	syscall.EACCES:          WSAEACCES,
	syscall.EPERM:           WSAEACCES,
	syscall.EFAULT:          WSAEFAULT,
	syscall.EINVAL:          WSAEINVAL,
	syscall.EMFILE:          WSAEMFILE,
	syscall.ENFILE:          WSAEMFILE,
	syscall.EAGAIN:          WSAEWOULDBLOCK,
	syscall.EINPROGRESS:     WSAEINPROGRESS,
	syscall.EBADF:           WSAENOTSOCK,
	syscall.ENOTSOCK:        WSAENOTSOCK,
	syscall.EPROTOTYPE:      WSAEPROTOTYPE,
	syscall.EPROTONOSUPPORT: WSAEPROTONOSUPPORT,
	syscall.ESOCKTNOSUPPORT: WSAESOCKTNOSUPPORT,
	syscall.EOPNOTSUPP:      WSAEOPNOTSUPP,
	syscall.EAFNOSUPPORT:    WSAEAFNOSUPPORT,
	syscall.EADDRINUSE:      WSAEADDRINUSE,
	syscall.EADDRNOTAVAIL:   WSAEADDRNOTAVAIL,
	syscall.ENETDOWN:        WSAENETDOWN,
	syscall.ENOBUFS:         WSAENOBUFS,
	syscall.ENOMEM:          WSAENOBUFS,
	syscall.ECANCELED:       WSA_OPERATION_ABORTED,
}

// osErrno finds the Winsock number of an operating system error in err.
func osErrno(err error) (Errno, bool) {
	var se syscall.Errno
	if !errors.As(err, &se) {
		return 0, false
	}
	n, ok := fromErrno[se]
	return n, ok
}
