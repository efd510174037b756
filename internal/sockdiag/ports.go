//go:build linux

package sockdiag

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// maxAttempts bounds the dumps run again after the kernel cut one short.
const maxAttempts = 3

// Ports returns the local ports in [lo,hi] that have a socket of proto
// (6 = TCP, 17 = UDP) in the caller's network namespace, IPv4 and IPv6:
// for TCP every listening socket and every connection in any state,
// TIME-WAIT and SYN-RECV included; for UDP every bound socket. The port
// filter runs in the kernel, so only matching sockets are copied out. A
// TCP socket that is bound but neither listening nor connected is not
// listed (see the package comment). The error wraps
// errors.ErrUnsupported when the kernel has no sock_diag.
func Ports(proto uint8, lo, hi uint16) (*PortSet, error) {
	name, err := protoName(proto)
	if err == nil && lo > hi {
		err = errors.New("empty range")
	}
	if err != nil {
		return nil, fmt.Errorf("sockdiag: list %s ports %d-%d: %w", name, lo, hi, err)
	}
	var set *PortSet
	err = retry(func(c *conn) error {
		set = new(PortSet)
		return eachSocket(c, diagRequest{proto: proto, states: allStates, lo: lo, hi: hi}, func(s diagSocket) bool {
			if s.port >= lo && s.port <= hi { // the kernel filtered; cheap to be sure
				set.Add(s.port)
			}
			return false
		})
	})
	if err != nil {
		return nil, fmt.Errorf("sockdiag: list %s ports %d-%d: %w", name, lo, hi, err)
	}
	return set, nil
}

// OnlyTimeWait reports whether every TCP socket the kernel lists on port
// (v4 and v6) is in TIME_WAIT and there is at least one: the port's last
// user is gone and only the connection's aftermath remains. An orphaned
// connection in FIN-WAIT-2, which the kernel keeps as a time-wait socket
// but lists as FIN-WAIT-2, does not count.
func OnlyTimeWait(port uint16) (bool, error) {
	var seen, other bool
	err := retry(func(c *conn) error {
		seen, other = false, false
		return eachSocket(c, diagRequest{proto: unix.IPPROTO_TCP, states: allStates, lo: port, hi: port}, func(s diagSocket) bool {
			if s.port != port {
				return false
			}
			if s.state != tcpTimeWait {
				other = true
				return true
			}
			seen = true
			return false
		})
	})
	if err != nil {
		return false, fmt.Errorf("sockdiag: check tcp port %d for TIME_WAIT: %w", port, err)
	}
	return seen && !other, nil
}

// retry runs fn on a fresh socket, again when the kernel cut a dump short.
func retry(fn func(c *conn) error) error {
	var err error
	for range maxAttempts {
		var c *conn
		if c, err = dial(); err != nil {
			return err
		}
		err = fn(c)
		c.close()
		if !errors.Is(err, errRetry) {
			return err
		}
	}
	return fmt.Errorf("%d attempts: %w", maxAttempts, err)
}

// eachSocket dumps the sockets req describes, AF_INET then AF_INET6
// (req.family is set here), and passes each to fn until fn returns true.
// A kernel without IPv6 diag support, once the AF_INET dump has worked,
// only means there are no IPv6 sockets.
func eachSocket(c *conn, req diagRequest, fn func(diagSocket) (stop bool)) error {
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req.family = family
		stopped := false
		err := c.dump(req, func(typ uint16, data []byte) bool {
			if typ != unix.SOCK_DIAG_BY_FAMILY {
				return false
			}
			s, ok := parseMsg(data)
			if !ok || s.family != family {
				return false
			}
			stopped = fn(s)
			return stopped
		})
		if family == unix.AF_INET6 && errors.Is(err, errors.ErrUnsupported) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("dump %s: %w", familyName(family), err)
		}
		if stopped {
			return nil
		}
	}
	return nil
}

func protoName(proto uint8) (string, error) {
	switch proto {
	case unix.IPPROTO_TCP:
		return "tcp", nil
	case unix.IPPROTO_UDP:
		return "udp", nil
	}
	return fmt.Sprintf("protocol %d", proto), fmt.Errorf("protocol %d is neither TCP nor UDP", proto)
}

func familyName(family uint8) string {
	if family == unix.AF_INET6 {
		return "AF_INET6"
	}
	return "AF_INET"
}
