//go:build linux

package broker

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// capNetBindService is CAP_NET_BIND_SERVICE's bit in /proc/PID/status.
const capNetBindService = 10

// defaultPrivStart is net.ipv4.ip_unprivileged_port_start's default,
// used when the sysctl cannot be read.
const defaultPrivStart = 1024

// readPrivStart refreshes the first unprivileged port from
// net.ipv4.ip_unprivileged_port_start (per network namespace; the
// broker's). It runs at start-up and on every sweep.
func (b *Broker) readPrivStart() {
	data, err := os.ReadFile(b.cfg.UnprivilegedPortStart)
	v, perr := strconv.ParseUint(string(bytes.TrimSpace(data)), 10, 16)
	if err == nil {
		err = perr
	}
	if err != nil {
		if b.privStart.Load() == 0 {
			b.log.Warn("cannot read the first unprivileged port; ports below 1024 need CAP_NET_BIND_SERVICE",
				"path", b.cfg.UnprivilegedPortStart, "err", err)
		}
		v = defaultPrivStart
	}
	if old := b.privStart.Swap(uint32(v)); old != 0 && old != uint32(v) {
		b.log.Info("first unprivileged port changed", "from", old, "to", v)
	}
}

// privileged reports whether port is below the first unprivileged port.
func (b *Broker) privileged(port uint16) bool { return uint32(port) < b.privStart.Load() }

// mayBindPrivileged reports whether p may reserve ports below
// ip_unprivileged_port_start: the admin group, or CAP_NET_BIND_SERVICE in
// its effective set, as the kernel would ask of its own bind().
func (b *Broker) mayBindPrivileged(p *peer) bool {
	if b.mayAdmin(p) {
		return true
	}
	ok, err := hasCap(p, capNetBindService, b.userns)
	if err != nil {
		b.log.Debug("capability check failed", "pid", p.pid, "err", err)
	}
	return ok
}

// hasCap reports whether the process p holds capability bit in its
// effective set, in the user namespace userns (a capability held in a
// child user namespace does not reach the broker's network namespace).
// It reads /proc/PID through one directory descriptor, which stays bound
// to the process it was opened for: if the PID has been reused since p
// connected, the start time read through it differs and the answer is
// no; if the process has exited, the reads fail.
func hasCap(p *peer, bit uint, userns uint64) (bool, error) {
	dir, err := unix.Open(fmt.Sprintf("/proc/%d", p.pid), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("open /proc/%d: %w", p.pid, err)
	}
	defer unix.Close(dir)
	stat, err := readAt(dir, "stat")
	if err != nil {
		return false, err
	}
	if parseStartTime(stat) != p.id {
		return false, fmt.Errorf("pid %d is no longer the process that connected", p.pid)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dir, "ns/user", &st, 0); err != nil {
		return false, fmt.Errorf("user namespace of pid %d: %w", p.pid, err)
	}
	if st.Ino != userns {
		return false, nil
	}
	status, err := readAt(dir, "status")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(rest), 16, 64)
			if err != nil {
				return false, fmt.Errorf("CapEff of pid %d: %w", p.pid, err)
			}
			return caps&(1<<bit) != 0, nil
		}
	}
	return false, fmt.Errorf("no CapEff in /proc/%d/status", p.pid)
}

// readAt reads a small file relative to the directory descriptor dir.
func readAt(dir int, name string) ([]byte, error) {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return buf[:n], nil
}

// ownUserNS is the inode of the broker's user namespace.
func ownUserNS() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/user", &st); err != nil {
		return 0, fmt.Errorf("portresd: own user namespace: %w", err)
	}
	return st.Ino, nil
}
