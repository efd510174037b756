//go:build linux

package enforce

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/portres/portres/internal/sockdiag"
)

// PortSet is a set of ports (sockdiag's, which the socket tables come in).
type PortSet = sockdiag.PortSet

// InUse returns the local ports of proto (6 = TCP, 17 = UDP) that have a
// socket in the caller's network namespace: InUseRange over every port.
func InUse(proto uint8) (*PortSet, error) { return InUseRange(proto, 1, 65535) }

// InUseRange returns the local ports in [lo,hi] of proto (6 = TCP, 17 =
// UDP) that have a socket in the caller's network namespace, v4 or v6,
// read from the kernel through sock_diag with the range filtered in the
// kernel (sockdiag.Ports). Only the range's sockets are copied out, but
// the kernel still walks all its tables, so every call costs at least
// that walk: one set shared by many checks beats a call per check.
// Unlike Probe it never binds
// anything, so it cannot make another process's bind fail; but a TCP
// socket that is bound and neither listening nor connected is in no
// table the kernel dumps, so it is missed.
//
// Where the kernel has no sock_diag (or netlink is forbidden) it falls
// back to the /proc/net/{tcp,tcp6} or {udp,udp6} text tables, which list
// the same sockets at the cost of reading them all.
func InUseRange(proto uint8, lo, hi uint16) (*PortSet, error) {
	set, err := diagPorts(proto, lo, hi)
	if errors.Is(err, errors.ErrUnsupported) {
		all, perr := procInUse(proto)
		if perr != nil {
			return nil, errors.Join(err, perr)
		}
		set = new(PortSet)
		for p := int(lo); p <= int(hi); p++ {
			if all.Has(uint16(p)) {
				set.Add(uint16(p))
			}
		}
		return set, nil
	}
	return set, err
}

// OnlyTimeWait reports whether every TCP socket the kernel lists on port
// (v4 and v6) is in TIME_WAIT and there is at least one: the port's last
// user is gone and only the connection's aftermath remains. It asks the
// kernel for that one port's sockets (sockdiag.OnlyTimeWait), falling
// back to the /proc tables like InUseRange.
func OnlyTimeWait(port uint16) (bool, error) {
	tw, err := diagOnlyTimeWait(port)
	if errors.Is(err, errors.ErrUnsupported) {
		tw, perr := procOnlyTimeWait(port)
		if perr != nil {
			return false, errors.Join(err, perr)
		}
		return tw, nil
	}
	return tw, err
}

// The sock_diag readers, replaced by the tests of the fallback.
var (
	diagPorts        = sockdiag.Ports
	diagOnlyTimeWait = sockdiag.OnlyTimeWait
)

// procInUse is InUse read from /proc/net/{tcp,tcp6} or {udp,udp6}: the
// fallback without sock_diag, and the reference its tests and benchmark
// compare against.
func procInUse(proto uint8) (*PortSet, error) {
	name := protoName(proto)
	if name != "tcp" && name != "udp" {
		return nil, fmt.Errorf("enforce: protocol %d is neither TCP nor UDP", proto)
	}
	set := new(PortSet)
	for _, f := range []string{name, name + "6"} {
		if err := scanSockets("/proc/net/"+f, set); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return set, nil
}

// scanSockets adds the local port of every socket listed in path.
func scanSockets(path string, set *PortSet) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		_, hexPort, ok := strings.Cut(fields[1], ":")
		if !ok {
			continue
		}
		if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil {
			set.Add(uint16(p))
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("enforce: read %s: %w", path, err)
	}
	return nil
}

// procOnlyTimeWait is OnlyTimeWait read from /proc/net/{tcp,tcp6}.
func procOnlyTimeWait(port uint16) (bool, error) {
	seen := false
	for _, path := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("enforce: open %s: %w", path, err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 {
				continue
			}
			_, hexPort, _ := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); err != nil || uint16(p) != port {
				continue
			}
			if fields[3] != tcpTimeWait {
				f.Close()
				return false, nil
			}
			seen = true
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return false, fmt.Errorf("enforce: read %s: %w", path, err)
		}
	}
	return seen, nil
}

// tcpTimeWait is TCP_TIME_WAIT as /proc/net/tcp prints the state.
const tcpTimeWait = "06"
