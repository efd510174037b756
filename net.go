//go:build linux

package portres

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/portres/portres/internal/wire"

	"golang.org/x/sys/unix"
)

// Listen announces on a TCP port of the reservation, like net.Listen.
// network is "tcp", "tcp4" or "tcp6"; address is "host:port" where the
// port is 0 (any free port of the block) or a port of the block, and an
// empty host means all addresses ("tcp" listens dual-stack on [::]).
func (r *Reservation) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	lns, err := boundMany(ctx, r, network, address, 1, TCP, unix.Listen, net.FileListener)
	if err != nil {
		return nil, err
	}
	return lns[0], nil
}

// ListenPacket opens a UDP socket on a port of the reservation, like
// net.ListenPacket; network is "udp", "udp4" or "udp6".
func (r *Reservation) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	pcs, err := boundMany(ctx, r, network, address, 1, UDP, nil, net.FilePacketConn)
	if err != nil {
		return nil, err
	}
	return pcs[0], nil
}

// ListenMany announces on n TCP ports of the reservation in one round
// trip to the broker (per MaxBindBatch sockets), like n calls of Listen:
// the ports of address and the n-1 after it, or with port 0 any n free
// ports of the block. All or nothing: on error every socket is closed.
func (r *Reservation) ListenMany(ctx context.Context, network, address string, n int) ([]net.Listener, error) {
	return boundMany(ctx, r, network, address, n, TCP, unix.Listen, net.FileListener)
}

// ListenPacketMany opens n UDP sockets on ports of the reservation in
// one round trip to the broker (per MaxBindBatch sockets), like n calls
// of ListenPacket: the ports of address and the n-1 after it, or with
// port 0 any n free ports of the block (a media server's RTP ports, say).
// All or nothing: on error every socket is closed.
func (r *Reservation) ListenPacketMany(ctx context.Context, network, address string, n int) ([]net.PacketConn, error) {
	return boundMany(ctx, r, network, address, n, UDP, nil, net.FilePacketConn)
}

// boundMany makes n sockets for network, binds them through the broker
// (BindFDs), calls listen on each if given, and wraps each with wrap.
func boundMany[T io.Closer](ctx context.Context, r *Reservation, network, address string, n int, want Proto,
	listen func(fd, backlog int) error, wrap func(*os.File) (T, error)) ([]T, error) {
	if n <= 0 || n > int(r.count) {
		return nil, &Error{Op: "listen", Proto: r.proto, Start: r.start, Count: r.count, Code: WSAEINVAL,
			Msg: fmt.Sprintf("%d sockets asked of a block of %d ports", n, r.count)}
	}
	files := make([]*os.File, 0, n)
	defer func() { closeAll(files) }() // the wrapped sockets are dups
	fds := make([]int, 0, n)
	var addr netip.Addr
	var port uint16
	for len(files) < n {
		f, a, p, err := newSocket(network, address, want)
		if err != nil {
			return nil, r.opError("listen", err)
		}
		files = append(files, f)
		fds = append(fds, int(f.Fd()))
		addr, port = a, p
	}
	if _, err := r.c.BindFDs(ctx, r.token, fds, addr, port); err != nil {
		return nil, err
	}
	out := make([]T, 0, n)
	for _, f := range files {
		if err := listenOn("listen", f, listen); err != nil {
			closeAll(out) // and the deferred close takes every file (a closed one again: harmless)
			return nil, err
		}
		c, err := wrap(f)
		if err != nil {
			closeAll(out)
			return nil, r.opError("listen", err)
		}
		out = append(out, c)
	}
	return out, nil
}

func closeAll[T io.Closer](cs []T) {
	for _, c := range cs {
		c.Close()
	}
}

// Dialer returns a net.Dialer whose connections use a local port of the
// reservation: each dial binds its socket through the broker before
// connecting, within the dial's context.
func (r *Reservation) Dialer() *net.Dialer {
	return &net.Dialer{ControlContext: func(ctx context.Context, network, address string, rc syscall.RawConn) error {
		var berr error
		err := rc.Control(func(fd uintptr) {
			_, berr = r.c.BindFD(ctx, r.token, int(fd), netip.Addr{}, 0)
		})
		if err != nil {
			return err
		}
		return berr
	}}
}

// newSocket makes an unbound socket for network ("tcp", "udp6", ...)
// fit for a reservation of want, set up as net.Listen would, and returns
// it with the local address and port asked for in address.
func newSocket(network, address string, want Proto) (*os.File, netip.Addr, uint16, error) {
	family, typ, err := family(network, want)
	if err != nil {
		return nil, netip.Addr{}, 0, err
	}
	addr, port, err := splitAddr(address)
	if err != nil {
		return nil, netip.Addr{}, 0, err
	}
	if addr.IsValid() && network != "tcp" && network != "udp" {
		if (family == unix.AF_INET) != addr.Unmap().Is4() {
			return nil, netip.Addr{}, 0, fmt.Errorf("address %s does not fit network %s", addr, network)
		}
	}
	if family == 0 {
		family = unix.AF_INET6
		if addr.IsValid() && addr.Is4() {
			family = unix.AF_INET
		}
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, netip.Addr{}, 0, os.NewSyscallError("socket", err)
	}
	if family == unix.AF_INET6 && (network == "tcp6" || network == "udp6") {
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	} else if family == unix.AF_INET6 && v6onlyByDefault() {
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
	}
	if want == TCP {
		// Like net.Listen, so a restarted server can rebind at once.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}
	return os.NewFile(uintptr(fd), "portres"), addr, port, nil
}

// v6onlyByDefault reports whether new IPv6 sockets are IPv6-only unless
// told otherwise (net.ipv6.bindv6only; read once, 0 nearly everywhere).
var v6onlyByDefault = sync.OnceValue(func() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/bindv6only")
	return err != nil || strings.TrimSpace(string(b)) != "0"
})

// listenOn calls listen on f's socket if listen is given; on failure it
// closes f.
func listenOn(op string, f *os.File, listen func(fd, backlog int) error) error {
	if listen == nil {
		return nil
	}
	if err := listen(int(f.Fd()), unix.SOMAXCONN); err != nil {
		f.Close()
		return &Error{Op: op, Code: WSAEINVAL, Msg: err.Error(), Err: os.NewSyscallError("listen", err)}
	}
	return nil
}

// Listen reserves a TCP port and listens on it, in one request to the
// broker (acquire and bind together): the port of address, or with port
// 0 one the broker places in the dynamic range. network is "tcp", "tcp4"
// or "tcp6", address "host:port" as for net.Listen. The reservation, a
// block of that one port, lives until it is released or c closes; the
// listener may be closed and the port listened on again through the
// reservation.
func (c *Client) Listen(ctx context.Context, network, address string) (net.Listener, *Reservation, error) {
	f, r, err := c.acquireBound(ctx, network, address, TCP, unix.Listen)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		r.Release(context.Background())
		return nil, nil, err
	}
	return ln, r, nil
}

// ListenPacket is Listen for UDP ("udp", "udp4" or "udp6").
func (c *Client) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, *Reservation, error) {
	f, r, err := c.acquireBound(ctx, network, address, UDP, nil)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		r.Release(context.Background())
		return nil, nil, err
	}
	return pc, r, nil
}

// acquireBound makes a socket and has the broker acquire its port and
// bind it in one request (FlagBind).
func (c *Client) acquireBound(ctx context.Context, network, address string, want Proto, listen func(fd, backlog int) error) (*os.File, *Reservation, error) {
	f, addr, port, err := newSocket(network, address, want)
	if err != nil {
		return nil, nil, &Error{Op: "listen", Proto: want, Code: WSAEINVAL, Msg: err.Error(), Err: err}
	}
	req := &wire.Request{Op: wire.OpAcquire, Flags: wire.FlagBind, Proto: uint8(want), Start: port, Count: 1, Port: port, Addr: addr}
	out, err := c.do(ctx, req, int(f.Fd()))
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	resp := out[0]
	r := &Reservation{c: c, proto: want, start: resp.Start, count: resp.Count, token: resp.Token, notExcluded: resp.Flags&wire.NotExcluded != 0}
	if err := listenOn("listen", f, listen); err != nil {
		r.Release(context.Background())
		return nil, nil, err
	}
	return f, r, nil
}

// Listen reserves a TCP port and listens on it, like net.Listen, through
// a connection to the broker of its own (DefaultSocketPath): closing the
// listener closes that connection, which releases the port. It is the
// one-call form of Dial, Client.Listen and Close for a server that wants
// a port nobody else can take.
func Listen(ctx context.Context, network, address string) (net.Listener, error) {
	c, err := Dial(ctx, "")
	if err != nil {
		return nil, err
	}
	ln, _, err := c.Listen(ctx, network, address)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &ownListener{Listener: ln, c: c}, nil
}

// ListenPacket is Listen for UDP.
func ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	c, err := Dial(ctx, "")
	if err != nil {
		return nil, err
	}
	pc, _, err := c.ListenPacket(ctx, network, address)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &ownPacketConn{PacketConn: pc, c: c}, nil
}

// ownListener is a listener whose reservation lives on a client of its
// own: closing one closes the other.
type ownListener struct {
	net.Listener
	c *Client
}

func (l *ownListener) Close() error {
	err := l.Listener.Close()
	l.c.Close()
	return err
}

// ownPacketConn is ownListener for UDP.
type ownPacketConn struct {
	net.PacketConn
	c *Client
}

func (p *ownPacketConn) Close() error {
	err := p.PacketConn.Close()
	p.c.Close()
	return err
}

func (r *Reservation) opError(op string, err error) error {
	return &Error{Op: op, Proto: r.proto, Start: r.start, Count: r.count, Token: r.token, Code: WSAEINVAL, Msg: err.Error(), Err: err}
}

func family(network string, want Proto) (int, int, error) {
	typ := unix.SOCK_STREAM
	if want == UDP {
		typ = unix.SOCK_DGRAM
	}
	switch network {
	case want.String():
		return 0, typ, nil
	case want.String() + "4":
		return unix.AF_INET, typ, nil
	case want.String() + "6":
		return unix.AF_INET6, typ, nil
	}
	return 0, 0, fmt.Errorf("network %q does not fit a %s reservation", network, want)
}

func splitAddr(address string) (netip.Addr, uint16, error) {
	host, ps, err := net.SplitHostPort(address)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	var port uint64
	if ps != "" {
		if port, err = strconv.ParseUint(ps, 10, 16); err != nil {
			return netip.Addr{}, 0, fmt.Errorf("port %q: %w", ps, err)
		}
	}
	if host == "" {
		return netip.Addr{}, uint16(port), nil
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("host %q: want an IP address", host)
	}
	return addr, uint16(port), nil
}
