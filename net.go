//go:build linux

package portres

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Listen announces on a TCP port of the reservation, like net.Listen.
// network is "tcp", "tcp4" or "tcp6"; address is "host:port" where the
// port is 0 (any free port of the block) or a port of the block, and an
// empty host means all addresses ("tcp" listens dual-stack on [::]).
func (r *Reservation) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	f, err := r.bound(ctx, "listen", network, address, TCP, unix.Listen)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FileListener(f)
}

// ListenPacket opens a UDP socket on a port of the reservation, like
// net.ListenPacket; network is "udp", "udp4" or "udp6".
func (r *Reservation) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	f, err := r.bound(ctx, "listen", network, address, UDP, nil)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FilePacketConn(f)
}

// Dialer returns a net.Dialer whose connections use a local port of the
// reservation: each Dial binds its socket through the broker before
// connecting. ctx bounds those binds.
func (r *Reservation) Dialer(ctx context.Context) *net.Dialer {
	return &net.Dialer{Control: func(network, address string, rc syscall.RawConn) error {
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

// bound makes a socket for network, binds it through the broker, calls
// listen on it if given, and returns it as a file.
func (r *Reservation) bound(ctx context.Context, op, network, address string, want Proto, listen func(fd, backlog int) error) (*os.File, error) {
	family, typ, err := family(network, want)
	if err != nil {
		return nil, r.opError(op, err)
	}
	addr, port, err := splitAddr(address)
	if err != nil {
		return nil, r.opError(op, err)
	}
	if addr.IsValid() && network != "tcp" && network != "udp" {
		if (family == unix.AF_INET) != addr.Unmap().Is4() {
			return nil, r.opError(op, fmt.Errorf("address %s does not fit network %s", addr, network))
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
		return nil, r.opError(op, os.NewSyscallError("socket", err))
	}
	f := os.NewFile(uintptr(fd), "portres")
	if family == unix.AF_INET6 {
		v6only := 0
		if network == "tcp6" || network == "udp6" {
			v6only = 1
		}
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only)
	}
	if want == TCP {
		// Like net.Listen, so a restarted server can rebind at once.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}
	if _, err := r.c.BindFD(ctx, r.token, fd, addr, port); err != nil {
		f.Close()
		return nil, err
	}
	if listen != nil {
		if err := listen(fd, unix.SOMAXCONN); err != nil {
			f.Close()
			return nil, r.opError(op, os.NewSyscallError("listen", err))
		}
	}
	return f, nil
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
