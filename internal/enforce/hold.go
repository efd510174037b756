//go:build linux

package enforce

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Hold binds a placeholder socket on port for proto (6 = TCP, 17 = UDP)
// and returns its descriptor, which the caller owns and must close with
// Unhold. The socket is AF_INET6 bound to [::]:port with IPV6_V6ONLY=0
// and neither SO_REUSEADDR nor SO_REUSEPORT (docs/KERNEL.md): while it lives,
// every other explicit bind of port, v4 or v6, fails with EADDRINUSE and
// the kernel's automatic assignment skips it. Where IPv6 is unavailable
// it falls back to AF_INET 0.0.0.0:port.
//
// Returns an error wrapping unix.EADDRINUSE when another socket (or a TCP
// TIME_WAIT entry) has the port, and unix.EMFILE/ENFILE when descriptors
// run out.
func Hold(proto uint8, port uint16) (int, error) { return HoldAllowed(proto, port, nil) }

// HoldAllowed is Hold for a port the bind guard g keeps: the placeholder
// is let through it (g nil: Hold).
func HoldAllowed(proto uint8, port uint16, g *BindGuard) (int, error) {
	typ, err := sockType(proto)
	if err != nil {
		return -1, err
	}
	bind := func(fd int, sa unix.Sockaddr) error {
		if g == nil {
			return unix.Bind(fd, sa)
		}
		_, done, err := g.Allow(fd, proto, port)
		if err != nil {
			return err
		}
		err = unix.Bind(fd, sa)
		done(true) // bound, or closed below
		return err
	}
	fd, err := unix.Socket(unix.AF_INET6, typ|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		if v6onlyByDefault() {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
		}
		if err == nil {
			err = bind(fd, &unix.SockaddrInet6{Port: int(port)})
		}
	} else if errors.Is(err, unix.EAFNOSUPPORT) {
		fd, err = unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = bind(fd, &unix.SockaddrInet4{Port: int(port)})
		}
	}
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("hold %s port %d: %w", protoName(proto), port, err)
	}
	return fd, nil
}

// v6onlyByDefault reports whether new IPv6 sockets are IPv6-only unless
// told otherwise (net.ipv6.bindv6only, read once; it is 0 nearly
// everywhere, and then a placeholder needs no setsockopt).
var v6onlyByDefault = sync.OnceValue(func() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/bindv6only")
	return err != nil || strings.TrimSpace(string(b)) != "0"
})

// Unhold closes a placeholder made by Hold.
func Unhold(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// Probe reports whether port is free for proto right now, by binding a
// placeholder and closing it at once. It returns nil when free, an error
// wrapping EADDRINUSE when something holds the port, another error when
// the probe itself failed.
func Probe(proto uint8, port uint16) error { return ProbeAllowed(proto, port, nil) }

// ProbeAllowed is Probe for a port the bind guard g keeps (g nil: Probe).
func ProbeAllowed(proto uint8, port uint16, g *BindGuard) error {
	fd, err := HoldAllowed(proto, port, g)
	if err != nil {
		return err
	}
	Unhold(fd)
	return nil
}

func sockType(proto uint8) (int, error) {
	switch proto {
	case unix.IPPROTO_TCP:
		return unix.SOCK_STREAM, nil
	case unix.IPPROTO_UDP:
		return unix.SOCK_DGRAM, nil
	}
	return 0, fmt.Errorf("enforce: protocol %d is neither TCP nor UDP", proto)
}

func protoName(proto uint8) string {
	switch proto {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	}
	return fmt.Sprintf("proto %d", proto)
}
