//go:build linux

package broker

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peer is the process at the other end of a connection, as the kernel
// reported it when the connection was made.
type peer struct {
	pid  int32
	uid  uint32
	gid  uint32
	id   uint64 // process start time (checked against the pidfd): tells a reused PID apart
	cmd  string
	grps []uint32 // supplementary groups
}

// same reports whether p and q are the same process.
func (p *peer) same(q *peer) bool { return p != nil && q != nil && p.pid == q.pid && p.id == q.id }

// String returns "pid 42 (nginx)", with the command line's control and
// format characters escaped: it ends up in other users' terminals.
func (p *peer) String() string { return fmt.Sprintf("pid %d (%s)", p.pid, printable(p.cmd)) }

// printable escapes what could act on a terminal in s, text from another
// process: invalid UTF-8, control characters (C0, DEL, C1) and Unicode
// format characters such as bidi overrides become \x.. or \u.... escapes.
func printable(s string) string {
	ok := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\\' {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// inGroup reports whether p's primary or a supplementary group is gid.
func (p *peer) inGroup(gid int) bool {
	if gid < 0 {
		return false
	}
	if p.gid == uint32(gid) {
		return true
	}
	for _, g := range p.grps {
		if g == uint32(gid) {
			return true
		}
	}
	return false
}

// peerOf reads the credentials of the peer of the connected socket fd.
func peerOf(fd int) (*peer, error) {
	var pidfd = -1
	var grps []uint32
	var gerr error
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return nil, fmt.Errorf("peer credentials: %w", err)
	}
	if pfd, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEERPIDFD); err == nil {
		pidfd = pfd
	}
	grps, gerr = peerGroups(fd)
	p := &peer{pid: cred.Pid, uid: cred.Uid, gid: cred.Gid}
	var idErr error
	if p.id, idErr = readStartTime(cred.Pid); idErr != nil {
		return nil, fmt.Errorf("peer pid %d: reading its start time: %w", p.pid, idErr)
	}
	p.cmd = command(p.pid)
	p.grps = grps
	if gerr != nil {
		p.grps = groups(p.pid) // kernels before 4.13
	}
	if pidfd >= 0 {
		// The pidfd pins the process that connected: if it is still
		// alive now, what /proc said above was about it, not about a
		// process that reused its PID.
		// EPERM (a non-root broker asking about root's process) still
		// says the process exists.
		serr := unix.PidfdSendSignal(pidfd, 0, nil, 0)
		alive := serr == nil || errors.Is(serr, unix.EPERM)
		unix.Close(pidfd)
		if !alive {
			return nil, fmt.Errorf("peer pid %d exited while connecting", p.pid)
		}
	}
	return p, nil
}

// readStartTime reads field 22 of /proc/PID/stat, the process start time
// in clock ticks since boot: with the PID it names one process for the
// life of the system. The error says why it could not be read (out of
// descriptors, the process gone, a malformed file).
func readStartTime(pid int32) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	if v := parseStartTime(b); v != 0 {
		return v, nil
	}
	return 0, fmt.Errorf("no start time in /proc/%d/stat", pid)
}

// parseStartTime reads field 22 of a /proc/PID/stat text; 0 if malformed.
func parseStartTime(b []byte) uint64 {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// command is the peer's command line, shortened for display.
func command(pid int32) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		b, _ = os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		return strings.TrimSpace(string(b))
	}
	s := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// peerGroups reads SO_PEERGROUPS: the peer's supplementary groups as they
// were when it connected, immune to PID reuse. (x/sys's GetsockoptString
// stops at the first zero byte, so the call is made directly.)
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 32)
	for {
		n := uint32(len(buf) * 4)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch {
		case e == unix.ERANGE && int(n/4) > len(buf):
			buf = make([]uint32, n/4)
		case e != 0:
			return nil, e
		default:
			return buf[:n/4], nil
		}
	}
}

// groups is the /proc fallback of peerGroups.
func groups(pid int32) []uint32 {
	_, _, gs, _ := readStatus(pid)
	return gs
}

// readStatus reads the real uid and gid and the supplementary groups of
// process pid from /proc/PID/status.
func readStatus(pid int32) (uid, gid uint32, grps []uint32, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, nil, err
	}
	first := func(rest string) uint32 {
		if f := strings.Fields(rest); len(f) > 0 {
			v, _ := strconv.ParseUint(f[0], 10, 32)
			return uint32(v)
		}
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			uid = first(rest)
		} else if rest, ok := strings.CutPrefix(line, "Gid:"); ok {
			gid = first(rest)
		} else if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, f := range strings.Fields(rest) {
				if g, err := strconv.ParseUint(f, 10, 32); err == nil {
					grps = append(grps, uint32(g))
				}
			}
			break // after Uid and Gid
		}
	}
	return uid, gid, grps, nil
}
