package enforce

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// PortSet is a set of ports.
type PortSet [1024]uint64

// Has reports whether p is in the set.
func (s *PortSet) Has(p uint16) bool { return s[p/64]&(1<<(p%64)) != 0 }

// Add puts p in the set.
func (s *PortSet) Add(p uint16) { s[p/64] |= 1 << (p % 64) }

// InUse returns the local ports of proto (6 = TCP, 17 = UDP) that have a
// socket in the caller's network namespace, read from /proc/net/{tcp,tcp6}
// or {udp,udp6}. Unlike Probe it never binds anything, so it cannot make
// another process's bind fail; but a TCP socket that is bound and neither
// listening nor connected is not listed by the kernel, so it is missed.
func InUse(proto uint8) (*PortSet, error) {
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

// OnlyTimeWait reports whether every TCP socket the kernel lists on port
// (v4 and v6) is in TIME_WAIT and there is at least one: the port's last
// user is gone and only the connection's aftermath remains.
func OnlyTimeWait(port uint16) (bool, error) {
	seen := false
	for _, path := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, err
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
