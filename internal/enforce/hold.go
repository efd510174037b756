package enforce

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Hold binds a placeholder socket on port for proto (6 = TCP, 17 = UDP)
// and returns its descriptor, which the caller owns and must close with
// Unhold. The socket is AF_INET6 bound to [::]:port with IPV6_V6ONLY=0
// and neither SO_REUSEADDR nor SO_REUSEPORT (SPEC §9): while it lives,
// every other explicit bind of port, v4 or v6, fails with EADDRINUSE and
// the kernel's automatic assignment skips it. Where IPv6 is unavailable
// it falls back to AF_INET 0.0.0.0:port.
//
// Returns an error wrapping unix.EADDRINUSE when another socket (or a TCP
// TIME_WAIT entry) has the port, and unix.EMFILE/ENFILE when descriptors
// run out.
func Hold(proto uint8, port uint16) (int, error) {
	typ, err := sockType(proto)
	if err != nil {
		return -1, err
	}
	fd, err := unix.Socket(unix.AF_INET6, typ|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		if err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err == nil {
			err = unix.Bind(fd, &unix.SockaddrInet6{Port: int(port)})
		}
	} else if errors.Is(err, unix.EAFNOSUPPORT) {
		fd, err = unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrInet4{Port: int(port)})
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
func Probe(proto uint8, port uint16) error {
	fd, err := Hold(proto, port)
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
