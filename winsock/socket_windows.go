package winsock

import (
	"errors"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// AF_INET6 is the IPv6 address family: 23 on Windows (10 on Linux).
const AF_INET6 = 23

const (
	fionbio          = 0x8004667e // _IOW('f', 126, u_long)
	soProtocolInfoW  = 0x2005     // SO_PROTOCOL_INFOW
	winsockVersion22 = 0x0202
)

// sysSocket is a Socket on Windows: a SOCKET handle.
type sysSocket struct {
	h          windows.Handle
	family     int // 0 if unknown (FromFD)
	valid      bool
	nonOverlap bool // made without WSA_FLAG_OVERLAPPED

	// mu guards closed; it is held across the non-blocking system calls
	// that use h after an operation completed (waiters fetching its
	// result), so that closesocket never runs under them.
	mu     sync.Mutex
	closed bool
}

var (
	startOnce sync.Once
	startErr  error
)

func startup() error {
	var d windows.WSAData
	if err := windows.WSAStartup(winsockVersion22, &d); err != nil {
		return sysError("WSAStartup", "WSAStartup", err)
	}
	return nil
}

func cleanup() error {
	if err := windows.WSACleanup(); err != nil {
		return sysError("WSACleanup", "WSACleanup", err)
	}
	return nil
}

// SetBrokerSocket names the portresd socket on Linux; on Windows the
// system owns the port pool and it has no effect.
func SetBrokerSocket(path string) {}

func newSocket(af, typ, protocol int, flags uint32) (*Socket, error) {
	name := "socket"
	if flags != WSA_FLAG_OVERLAPPED {
		name = "WSASocket"
	}
	startOnce.Do(func() { startErr = startup() })
	if startErr != nil {
		return nil, startErr
	}
	h, err := windows.WSASocket(int32(af), int32(typ), int32(protocol), nil, 0, flags|windows.WSA_FLAG_NO_HANDLE_INHERIT)
	if err != nil {
		return nil, sysError(name, "WSASocket", err)
	}
	return &Socket{sys: sysSocket{h: h, family: af, valid: true, nonOverlap: flags&WSA_FLAG_OVERLAPPED == 0}}, nil
}

// fileModeInformation is FILE_INFORMATION_CLASS FileModeInformation: a
// ULONG of FILE_* mode flags.
const fileModeInformation = 16

func fromFD(fd uintptr) *Socket {
	h := windows.Handle(fd)
	return &Socket{sys: sysSocket{h: h, valid: true, nonOverlap: synchronousHandle(h)}}
}

// synchronousHandle reports whether h was opened for synchronous I/O
// only: a socket made without WSA_FLAG_OVERLAPPED. If the system cannot
// tell (a handle that is not a file object), h counts as overlapped.
func synchronousHandle(h windows.Handle) bool {
	var iosb windows.IO_STATUS_BLOCK
	var mode uint32
	if err := windows.NtQueryInformationFile(h, &iosb, (*byte)(unsafe.Pointer(&mode)), uint32(unsafe.Sizeof(mode)), fileModeInformation); err != nil {
		return false
	}
	return mode&(windows.FILE_SYNCHRONOUS_IO_ALERT|windows.FILE_SYNCHRONOUS_IO_NONALERT) != 0
}

func (s *Socket) fd() uintptr {
	if !s.sys.valid {
		return ^uintptr(0) // INVALID_SOCKET
	}
	return uintptr(s.sys.h)
}

// handle returns the SOCKET; WSAENOTSOCK once closed.
func (s *Socket) handle(name string) (windows.Handle, error) {
	s.sys.mu.Lock()
	defer s.sys.mu.Unlock()
	if !s.sys.valid || s.sys.closed {
		return 0, newError(name, WSAENOTSOCK, "the socket is closed or was never opened")
	}
	return s.sys.h, nil
}

func (s *Socket) close() error {
	s.sys.mu.Lock()
	if !s.sys.valid || s.sys.closed {
		s.sys.mu.Unlock()
		return newError("closesocket", WSAENOTSOCK, "the socket is already closed or was never opened")
	}
	s.sys.closed = true
	s.sys.mu.Unlock()
	if err := windows.Closesocket(s.sys.h); err != nil {
		return sysError("closesocket", "closesocket", err)
	}
	return nil
}

// familyOf asks Winsock for the address family of h.
func familyOf(h windows.Handle) (int, error) {
	var info windows.WSAProtocolInfo
	n := int32(unsafe.Sizeof(info))
	if err := windows.Getsockopt(h, windows.SOL_SOCKET, soProtocolInfoW, (*byte)(unsafe.Pointer(&info)), &n); err != nil {
		return 0, err
	}
	return int(info.AddressFamily), nil
}

// family returns the socket's address family.
func (s *Socket) family(name string) (int, error) {
	h, err := s.handle(name)
	if err != nil {
		return 0, err
	}
	if s.sys.family != 0 {
		return s.sys.family, nil
	}
	family, err := familyOf(h)
	if err != nil {
		return 0, sysError(name, "getsockopt", err)
	}
	return family, nil
}

func (s *Socket) bind(addr netip.AddrPort) error {
	const name = "bind"
	h, err := s.handle(name)
	if err != nil {
		return err
	}
	family := s.sys.family
	if family == 0 {
		if family, err = familyOf(h); err != nil {
			return sysError(name, "getsockopt", err)
		}
	}
	ip, port := addr.Addr(), int(addr.Port())
	var sa windows.Sockaddr
	switch {
	case family == AF_INET && (!ip.IsValid() || ip.Unmap().Is4()):
		a := &windows.SockaddrInet4{Port: port}
		if ip.IsValid() {
			a.Addr = ip.Unmap().As4()
		}
		sa = a
	case family == AF_INET6:
		a := &windows.SockaddrInet6{Port: port}
		if ip.IsValid() {
			a.Addr = ip.As16()
			if n, err := strconv.Atoi(ip.Zone()); err == nil {
				a.ZoneId = uint32(n)
			}
		}
		sa = a
	default:
		return newError(name, WSAEFAULT, "address "+addr.String()+" does not fit the socket's family")
	}
	if err := windows.Bind(h, sa); err != nil {
		return sysError(name, "bind", err)
	}
	return nil
}

func (s *Socket) getsockname() (netip.AddrPort, error) {
	const name = "getsockname"
	h, err := s.handle(name)
	if err != nil {
		return netip.AddrPort{}, err
	}
	sa, err := windows.Getsockname(h)
	if err != nil {
		return netip.AddrPort{}, sysError(name, "getsockname", err)
	}
	switch a := sa.(type) {
	case *windows.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), nil
	case *windows.SockaddrInet6:
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
	h, err := s.handle(name)
	if err != nil {
		return err
	}
	var arg [4]byte
	if nonblocking {
		arg[0] = 1
	}
	var n uint32
	if err := windows.WSAIoctl(h, fionbio, &arg[0], 4, nil, 0, &n, nil, 0); err != nil {
		return sysError(name, "WSAIoctl", err)
	}
	return nil
}

// osErrno returns the number of a Windows error in err: Winsock already
// reports Winsock numbers.
func osErrno(err error) (Errno, bool) {
	var se syscall.Errno
	if !errors.As(err, &se) {
		return 0, false
	}
	return Errno(se), true
}
