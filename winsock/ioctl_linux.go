package winsock

import (
	"context"
	"fmt"

	"github.com/portres/portres"
	"golang.org/x/sys/unix"
)

// ioctlFunc is the part of a control code that talks to the broker; it
// runs on the caller's goroutine, or on its own for overlapped calls.
type ioctlFunc func(ctx context.Context) (uint32, error)

// wsaIoctl checks the call at once (closed socket, control code, socket
// type, buffers, Overlapped), then runs it synchronously or starts it.
func (s *Socket) wsaIoctl(code uint32, in, out []byte, ov *Overlapped, completion CompletionRoutine) (uint32, error) {
	name := ioctlName(code)
	o, err := s.begin(name)
	if err != nil {
		return 0, err
	}
	run, err := s.prepare(name, o, code, in, out)
	if err == nil && ov == nil && completion != nil {
		err = newError(name, WSAEFAULT, "a completion routine needs an Overlapped")
	}
	if err == nil && ov != nil {
		err = ov.start(name, s, completion == nil)
	}
	if err != nil {
		s.end(o)
		return 0, err
	}
	if ov == nil {
		defer s.end(o)
		n, err := run(o.ctx)
		return o.result(name, n, err)
	}
	go func() {
		n, err := run(o.ctx)
		n, err = o.result(name, n, err)
		s.end(o)
		ov.complete(n, 0, err, completion)
	}()
	return 0, WSA_IO_PENDING
}

// prepare validates a call and returns what is left to do.
func (s *Socket) prepare(name string, o *op, code uint32, in, out []byte) (ioctlFunc, error) {
	switch code {
	case SIO_FLUSH, SIO_ACQUIRE_PORT_RESERVATION, SIO_RELEASE_PORT_RESERVATION, SIO_ASSOCIATE_PORT_RESERVATION:
	default:
		return nil, newError(name, WSAEINVAL, fmt.Sprintf("unknown control code %#08x", code))
	}
	proto, err := s.sockProto(name)
	if code == SIO_FLUSH && (err == nil || ErrorCode(err) == WSAEOPNOTSUPP) {
		return func(context.Context) (uint32, error) { return 0, s.cancelOps(name, o) }, nil
	}
	if err != nil {
		return nil, err
	}
	// The input buffer: WSAIoctl's reference answers WSAEFAULT when
	// lpvInBuffer is not valid or cbInBuffer is too small for the
	// structure the control code reads.
	if in == nil {
		return nil, newError(name, WSAEFAULT, "no input buffer (lpvInBuffer is NULL)")
	}
	if code == SIO_ACQUIRE_PORT_RESERVATION {
		var r INET_PORT_RANGE
		if len(in) < SizeofInetPortRange {
			return nil, newError(name, WSAEFAULT, fmt.Sprintf("input buffer of %d bytes is too small (cbInBuffer): INET_PORT_RANGE needs %d", len(in), SizeofInetPortRange))
		}
		r.UnmarshalBinary(in)
		// The output buffer: the IOCTL's page answers WSAEINVAL, with
		// *lpcbBytesReturned 0, when it is too small.
		if len(out) < SizeofInetPortReservationInstance {
			return nil, newError(name, WSAEINVAL, fmt.Sprintf("output buffer of %d bytes is too small (cbOutBuffer): INET_PORT_RESERVATION_INSTANCE needs %d", len(out), SizeofInetPortReservationInstance))
		}
		return s.acquire(name, proto, Ntohs(r.StartPort), r.NumberOfPorts, out), nil
	}
	var t INET_PORT_RESERVATION_TOKEN
	switch {
	case len(in) < SizeofInetPortReservationToken:
		return nil, newError(name, WSAEFAULT, fmt.Sprintf("input buffer of %d bytes is too small (cbInBuffer): INET_PORT_RESERVATION_TOKEN needs %d", len(in), SizeofInetPortReservationToken))
	case len(out) != 0:
		return nil, newError(name, WSAEINVAL, fmt.Sprintf("output buffer of %d bytes, cbOutBuffer must be 0", len(out)))
	}
	t.UnmarshalBinary(in)
	if t.Token == INVALID_PORT_RESERVATION_TOKEN {
		return nil, newError(name, WSAEINVAL, "INVALID_PORT_RESERVATION_TOKEN")
	}
	if code == SIO_RELEASE_PORT_RESERVATION {
		return s.release(name, proto, t.Token), nil
	}
	sa, err := unix.Getsockname(s.sys.fd)
	if err != nil {
		return nil, sysError(name, "getsockname", err)
	}
	if port := sockaddrPort(sa); port != 0 {
		return nil, newError(name, WSAEINVAL, fmt.Sprintf("the socket is already bound to port %d", port))
	}
	return s.associate(name, proto, t.Token), nil
}

// sockProto says whether the socket is a TCP or a UDP one (IPv4 or
// IPv6); WSAEOPNOTSUPP if it is neither, WSAENOTSOCK if it is no socket.
func (s *Socket) sockProto(name string) (portres.Proto, error) {
	var v [3]int
	for i, opt := range []int{unix.SO_DOMAIN, unix.SO_TYPE, unix.SO_PROTOCOL} {
		n, err := unix.GetsockoptInt(s.sys.fd, unix.SOL_SOCKET, opt)
		if err != nil {
			return 0, sysError(name, "getsockopt", err)
		}
		v[i] = n
	}
	family, typ, proto := v[0], v[1], v[2]
	switch {
	case family != unix.AF_INET && family != unix.AF_INET6:
		return 0, newError(name, WSAEOPNOTSUPP, fmt.Sprintf("address family %d is neither IPv4 nor IPv6", family))
	case typ == unix.SOCK_STREAM && proto == unix.IPPROTO_TCP:
		return portres.TCP, nil
	case typ == unix.SOCK_DGRAM && proto == unix.IPPROTO_UDP:
		return portres.UDP, nil
	}
	return 0, newError(name, WSAEOPNOTSUPP, fmt.Sprintf("the socket is neither TCP nor UDP (type %d, protocol %d)", typ, proto))
}

func sockaddrPort(sa unix.Sockaddr) int {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return 0
}

// acquire reserves the block on the socket's own broker connection and
// writes the INET_PORT_RESERVATION_INSTANCE to out.
func (s *Socket) acquire(name string, proto portres.Proto, start, count uint16, out []byte) ioctlFunc {
	return func(ctx context.Context) (uint32, error) {
		c, err := s.ownClient(ctx, name)
		if err != nil {
			return 0, err
		}
		r, err := c.Acquire(ctx, proto, start, count)
		if err != nil {
			return 0, brokerError(name, err)
		}
		INET_PORT_RESERVATION_INSTANCE{
			Reservation: INET_PORT_RANGE{StartPort: Htons(r.Start()), NumberOfPorts: r.Count()},
			Token:       INET_PORT_RESERVATION_TOKEN{Token: r.Token()},
		}.put(out)
		return SizeofInetPortReservationInstance, nil
	}
}

// ownClient returns the socket's broker connection, dialling it first.
func (s *Socket) ownClient(ctx context.Context, name string) (*portres.Client, error) {
	s.sys.mu.Lock()
	c, closed := s.sys.client, s.sys.closed
	s.sys.mu.Unlock()
	switch {
	case c != nil:
		return c, nil
	case closed:
		return nil, newError(name, WSA_OPERATION_ABORTED, errClosed.Error())
	}
	nc, err := portres.Dial(ctx, brokerPath())
	if err != nil {
		return nil, brokerError(name, err)
	}
	s.sys.mu.Lock()
	defer s.sys.mu.Unlock()
	switch {
	case s.sys.closed:
		nc.Close()
		return nil, newError(name, WSA_OPERATION_ABORTED, errClosed.Error())
	case s.sys.client != nil:
		nc.Close() // another ACQUIRE dialled first
		return s.sys.client, nil
	}
	s.sys.client = nc
	return nc, nil
}

// release ends the runtime reservation token of this process if it is
// of the socket's protocol proto: on Windows each protocol's stack owns
// its own port pool, and the IOCTL reaches only its socket's. The broker
// checks the protocol and releases in one step (WSAEINVAL, nothing
// released, for a reservation of the other protocol).
func (s *Socket) release(name string, proto portres.Proto, token uint64) ioctlFunc {
	return func(ctx context.Context) (uint32, error) {
		c, isShared, err := s.clientFor(ctx)
		if err != nil {
			return 0, brokerError(name, err)
		}
		if _, err := c.ReleaseProto(ctx, proto, token); err != nil {
			if isShared {
				forgetShared(c, err)
			}
			return 0, brokerError(name, err)
		}
		return 0, nil
	}
}

// associate checks with the broker that this process may consume token
// on a socket of proto, and remembers it for Bind.
func (s *Socket) associate(name string, proto portres.Proto, token uint64) ioctlFunc {
	return func(ctx context.Context) (uint32, error) {
		c, isShared, err := s.clientFor(ctx)
		if err != nil {
			return 0, brokerError(name, err)
		}
		r, err := c.Reservation(ctx, token)
		if err != nil {
			if isShared {
				forgetShared(c, err)
			}
			return 0, brokerError(name, err)
		}
		if r.Proto() != proto {
			return 0, newError(name, WSAEINVAL, fmt.Sprintf("a %s socket cannot take its port from the %s reservation %s", proto, r.Proto(), r))
		}
		s.sys.mu.Lock()
		s.sys.token = token
		s.sys.mu.Unlock()
		return 0, nil
	}
}
