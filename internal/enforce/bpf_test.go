//go:build linux

package enforce

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portres/portres/internal/testutil"
)

// cgroup2Root is where cgroup v2 is mounted on the project's machines
// (docs/KERNEL.md); tests make their cgroups below it.
const cgroup2Root = "/sys/fs/cgroup/unified"

func init() {
	testutil.Helpers["bpfbind"] = bpfBindHelper
}

// bpfBindHelper runs in a child process placed in a test cgroup. It reads
// commands from stdin, one per line, and answers each with one line:
//
//	bind PROTO FAM PORT OPT  → "ok" or the errno name (EACCES, ...)
//	bench N PROTO PORT       → nanoseconds taken by N socket+bind+close
//	sock PROTO FAM           → makes a socket and keeps it: its SO_COOKIE
//	bindsock PORT            → binds the kept socket, closes it: "ok" or errno
//	trysock PORT             → binds the kept socket and keeps it: "ok" or errno
//
// PROTO is tcp, udp (socket protocol 0), tcpx, udpx (IPPROTO_TCP/UDP
// given explicitly) or mptcp; FAM is 4 (0.0.0.0) or 6 ([::], dual-stack);
// OPT is "reuse" (SO_REUSEADDR) or "-".
func bpfBindHelper([]string) int {
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	kept := -1
	for in.Scan() {
		f := strings.Fields(in.Text())
		var res string
		switch {
		case len(f) == 3 && f[0] == "sock":
			var err error
			if kept, err = helperSocket(f[1], f[2]); err != nil {
				res = errnoName(err)
				break
			}
			cookie, err := unix.GetsockoptUint64(kept, unix.SOL_SOCKET, unix.SO_COOKIE)
			res = fmt.Sprint(cookie)
			if err != nil {
				res = errnoName(err)
			}
		case len(f) == 2 && (f[0] == "bindsock" || f[0] == "trysock"):
			port, _ := strconv.Atoi(f[1])
			var sa unix.Sockaddr = &unix.SockaddrInet6{Port: port}
			if d, _ := unix.GetsockoptInt(kept, unix.SOL_SOCKET, unix.SO_DOMAIN); d == unix.AF_INET {
				sa = &unix.SockaddrInet4{Port: port}
			}
			res = errnoName(unix.Bind(kept, sa))
			if f[0] == "bindsock" { // trysock keeps it, for another try
				unix.Close(kept)
				kept = -1
			}
		case len(f) == 5 && f[0] == "bind":
			port, _ := strconv.Atoi(f[3])
			res = errnoName(helperBind(f[1], f[2], port, f[4] == "reuse"))
		case len(f) == 4 && f[0] == "bench":
			n, _ := strconv.Atoi(f[1])
			port, _ := strconv.Atoi(f[3])
			res = helperBench(n, f[2], port)
		default:
			res = "bad command " + in.Text()
		}
		fmt.Fprintln(out, res)
		out.Flush()
	}
	return 0
}

// helperBench makes, binds to 0.0.0.0:port and closes n sockets and
// returns "TOTAL SUM MEDIAN": nanoseconds for the whole loop, for the
// bind() calls alone, and the median bind() call.
func helperBench(n int, proto string, port int) string {
	typ := unix.SOCK_STREAM
	if proto == "udp" {
		typ = unix.SOCK_DGRAM
	}
	binds := make([]time.Duration, n)
	var sum time.Duration
	start := time.Now()
	for i := range binds {
		fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return errnoName(err)
		}
		t0 := time.Now()
		err = unix.Bind(fd, &unix.SockaddrInet4{Port: port})
		binds[i] = time.Since(t0)
		sum += binds[i]
		unix.Close(fd)
		if err != nil && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM) {
			return errnoName(err) // a refusal by the guard is what is timed
		}
	}
	total := time.Since(start)
	slices.Sort(binds)
	return fmt.Sprint(int64(total), int64(sum), int64(binds[n/2]))
}

// helperBind makes a socket, binds it to port and closes it.
func helperBind(proto, fam string, port int, reuse bool) error {
	fd, err := helperSocket(proto, fam)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if reuse {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return err
		}
	}
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: port}
	if fam == "6" {
		sa = &unix.SockaddrInet6{Port: port}
	}
	return unix.Bind(fd, sa)
}

// helperSocket makes a socket of proto (tcp, tcpx, mptcp, udp, udpx) and
// family (4 or 6).
func helperSocket(proto, fam string) (int, error) {
	typ, p := unix.SOCK_STREAM, 0
	switch proto {
	case "tcp":
	case "tcpx":
		p = unix.IPPROTO_TCP
	case "mptcp":
		p = unix.IPPROTO_MPTCP
	case "udp":
		typ = unix.SOCK_DGRAM
	case "udpx":
		typ, p = unix.SOCK_DGRAM, unix.IPPROTO_UDP
	default:
		return -1, unix.EPROTONOSUPPORT
	}
	af := unix.AF_INET
	if fam == "6" {
		af = unix.AF_INET6
	}
	fd, err := unix.Socket(af, typ|unix.SOCK_CLOEXEC, p)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	return fd, nil
}

func errnoName(err error) string {
	if err == nil {
		return "ok"
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			if strings.HasPrefix(err.Error(), "socket: ") {
				return "socket:" + name
			}
			return name
		}
	}
	return strings.ReplaceAll(err.Error(), " ", "_")
}

// testCgroup makes a fresh child cgroup of cgroup2Root, removed when the
// test ends, and returns its path and an open descriptor of it (for
// SysProcAttr.CgroupFD). It skips t without root or cgroup v2.
func testCgroup(t testing.TB) (string, int) {
	t.Helper()
	testutil.RequireRoot(t)
	var st unix.Statfs_t
	if err := unix.Statfs(cgroup2Root, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Skipf("needs cgroup v2 mounted on %s (statfs: type %#x, err %v)", cgroup2Root, st.Type, err)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	dir := filepath.Join(cgroup2Root, "portres-test-"+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a test cgroup: %v", err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		os.Remove(dir)
		t.Fatal(err)
	}
	// Registered first, so it runs after the helpers (killed and reaped
	// in their own cleanups) have left the cgroup.
	t.Cleanup(func() {
		unix.Close(fd)
		var err error
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if err = unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
				return
			}
		}
		t.Errorf("removing test cgroup %s: %v", dir, err)
	})
	return dir, fd
}

// binder is a bpfbind helper process running in a test cgroup.
type binder struct {
	t   testing.TB
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// startBinder starts a bpfbind helper inside the cgroup cgfd, in a new
// network namespace if newNetNS.
func startBinder(t testing.TB, cgfd int, newNetNS bool) *binder {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PORTRES_TEST_HELPER=bpfbind", "PORTRES_TEST_HELPER_ARGS=",
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgfd, Pdeathsig: syscall.SIGKILL}
	if newNetNS {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting helper in the test cgroup: %v", err)
	}
	b := &binder{t: t, cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return b
}

// do sends one command and returns the answer.
func (b *binder) do(format string, args ...any) string {
	b.t.Helper()
	if _, err := fmt.Fprintf(b.in, format+"\n", args...); err != nil {
		b.t.Fatalf("helper: %v", err)
	}
	line, err := b.out.ReadString('\n')
	if err != nil {
		b.t.Fatalf("helper: reading answer: %v", err)
	}
	return strings.TrimSuffix(line, "\n")
}

// expectBind checks what binding port gives in b, for every protocol
// spelling and family, with and without SO_REUSEADDR.
func (b *binder) expectBind(t *testing.T, proto uint8, port uint16, want string) {
	t.Helper()
	names := []string{"tcp", "tcpx"}
	if proto == unix.IPPROTO_UDP {
		names = []string{"udp", "udpx"}
	}
	for _, p := range names {
		for _, fam := range []string{"4", "6"} {
			for _, opt := range []string{"-", "reuse"} {
				if got := b.do("bind %s %s %d %s", p, fam, port, opt); got != want {
					t.Errorf("bind %s v%s port %d (%s) in the cgroup: %s, want %s", p, fam, port, opt, got, want)
				}
			}
		}
	}
}

// newTestGuard attaches an unpinned guard to cgroupPath.
func newTestGuard(t testing.TB, cgroupPath string) *BindGuard {
	t.Helper()
	g, err := NewBindGuard(cgroupPath)
	if err != nil {
		t.Fatalf("NewBindGuard: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func TestBindGuardRejectsForeignBinds(t *testing.T) {
	cg, cgfd := testCgroup(t)
	g := newTestGuard(t, cg)
	want := unix.ErrnoName(g.Errno())
	t.Logf("rejected binds get %s", want)
	if err := g.Guard(unix.IPPROTO_TCP, 41000, 41009); err != nil {
		t.Fatal(err)
	}
	if err := g.Guard(unix.IPPROTO_UDP, 42000, 42000); err != nil {
		t.Fatal(err)
	}
	b := startBinder(t, cgfd, false)

	b.expectBind(t, unix.IPPROTO_TCP, 41000, want)
	b.expectBind(t, unix.IPPROTO_TCP, 41009, want)
	b.expectBind(t, unix.IPPROTO_UDP, 42000, want)
	// Per protocol: the UDP ports of a TCP block stay free and vice versa.
	b.expectBind(t, unix.IPPROTO_UDP, 41000, "ok")
	b.expectBind(t, unix.IPPROTO_TCP, 42000, "ok")
	// Neighbours and autobind are not guarded.
	b.expectBind(t, unix.IPPROTO_TCP, 41010, "ok")
	b.expectBind(t, unix.IPPROTO_TCP, 40999, "ok")
	b.expectBind(t, unix.IPPROTO_TCP, 0, "ok")
	b.expectBind(t, unix.IPPROTO_UDP, 0, "ok")

	// An MPTCP socket binds through its TCP subflow: still guarded.
	switch got := b.do("bind mptcp 4 41000 -"); got {
	case want:
	case "socket:EPROTONOSUPPORT", "socket:ENOPROTOOPT", "socket:EINVAL":
		t.Logf("MPTCP unavailable (%s): not checked", got)
	default:
		t.Errorf("MPTCP bind of a guarded port in the cgroup: %s, want %s", got, want)
	}

	// The guarding process is not in the cgroup and not checked anyway.
	if err := helperBind("tcp", "6", 41000, false); err != nil {
		t.Errorf("guarding process binding a guarded port: %v", err)
	}
}

// TestBindGuardLetsAllowedSocketThrough: a socket made in the cgroup
// binds a guarded port while its cookie is allowed (what the broker does
// for a client's socket), and only that socket, only then.
func TestBindGuardLetsAllowedSocketThrough(t *testing.T) {
	cg, cgfd := testCgroup(t)
	b := startBinder(t, cgfd, false)
	g := newTestGuard(t, cg)
	for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		if err := g.Guard(proto, 43000, 43001); err != nil {
			t.Fatal(err)
		}
	}
	want := unix.ErrnoName(g.Errno())
	for _, c := range []struct{ proto, fam string }{{"tcp", "4"}, {"tcp", "6"}, {"udp", "4"}, {"udp", "6"}} {
		cookie, err := strconv.ParseUint(b.do("sock %s %s", c.proto, c.fam), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		idx := uint32(43000)
		if c.proto == "udp" {
			idx |= 1 << 16
		}
		done, err := g.allowCookie(cookie, idx)
		if err != nil {
			t.Fatal(err)
		}
		// Another socket of the same process is still refused.
		if got := b.do("bind %s %s 43000 -", c.proto, c.fam); got != want {
			t.Errorf("%s v%s: another socket while one is allowed: %s, want %s", c.proto, c.fam, got, want)
		}
		// The allowed socket gets the one port it is allowed, no other
		// guarded port (its owner could bind it itself meanwhile).
		if got := b.do("trysock 43001"); got != want {
			t.Errorf("%s v%s: the allowed socket on another guarded port: %s, want %s", c.proto, c.fam, got, want)
		}
		if got := b.do("bindsock 43000"); got != "ok" {
			t.Errorf("%s v%s: the allowed socket: %s, want ok", c.proto, c.fam, got)
		}
		done(false)
		b.do("sock %s %s", c.proto, c.fam)
		if got := b.do("bindsock 43000"); got != want {
			t.Errorf("%s v%s: a socket after the allowance ended: %s, want %s", c.proto, c.fam, got, want)
		}
	}
	// Allow takes the cookie from the descriptor itself.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	cookie, done, err := g.Allow(fd, unix.IPPROTO_TCP, 43000)
	if err != nil {
		t.Fatal(err)
	}
	done(false)
	if want, _ := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE); cookie != want || cookie == 0 {
		t.Errorf("Allow returned cookie %#x, the socket's is %#x", cookie, want)
	}
	if _, _, err := g.Allow(-1, unix.IPPROTO_TCP, 43000); err == nil {
		t.Error("Allow(-1): no error")
	}
	// A spent allowance (its socket bound or closed) stays in the map
	// until spentBatch of them are deleted at once; one not spent goes
	// at once.
	if n := allowed(t, g); n != 0 {
		t.Fatalf("%d allowances left after every done", n)
	}
	for i := 1; i <= spentBatch; i++ {
		done, err := g.allowCookie(1<<62+uint64(i), 43000)
		if err != nil {
			t.Fatal(err)
		}
		done(true)
		if n, want := allowed(t, g), i%spentBatch; n != want {
			t.Fatalf("after %d spent allowances the map holds %d, want %d", i, n, want)
		}
	}
}

// allowed counts the entries of g's allow map.
func allowed(t *testing.T, g *BindGuard) int {
	t.Helper()
	var k uint64
	var v uint32
	n := 0
	it := g.allow.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestBindGuardUnguardAndClose(t *testing.T) {
	cg, cgfd := testCgroup(t)
	g := newTestGuard(t, cg)
	want := unix.ErrnoName(g.Errno())
	b := startBinder(t, cgfd, false)
	check := func(what, want string) {
		t.Helper()
		if got := b.do("bind tcp 6 44000 -"); got != want {
			t.Errorf("%s: bind: %s, want %s", what, got, want)
		}
	}
	check("before Guard", "ok")
	if err := g.Guard(unix.IPPROTO_TCP, 44000, 44000); err != nil {
		t.Fatal(err)
	}
	check("after Guard", want)
	if err := g.Unguard(unix.IPPROTO_TCP, 44000, 44000); err != nil {
		t.Fatal(err)
	}
	check("after Unguard", "ok")
	if err := g.Guard(unix.IPPROTO_TCP, 43990, 44010); err != nil {
		t.Fatal(err)
	}
	check("after Guard again", want)
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	check("after Close", "ok")
	if err := g.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := g.Guarded(unix.IPPROTO_TCP, 44000); err == nil {
		t.Error("Guarded after Close: no error")
	}
	if err := g.Guard(unix.IPPROTO_TCP, 1, 1); err == nil {
		t.Error("Guard after Close: no error")
	}
}

func TestBindGuardOnlyItsNetNS(t *testing.T) {
	cg, cgfd := testCgroup(t)
	g := newTestGuard(t, cg)
	if err := g.Guard(unix.IPPROTO_TCP, 45000, 45000); err != nil {
		t.Fatal(err)
	}
	if err := g.Guard(unix.IPPROTO_UDP, 45000, 45000); err != nil {
		t.Fatal(err)
	}
	startBinder(t, cgfd, false).expectBind(t, unix.IPPROTO_TCP, 45000, unix.ErrnoName(g.Errno()))
	elsewhere := startBinder(t, cgfd, true)
	elsewhere.expectBind(t, unix.IPPROTO_TCP, 45000, "ok")
	elsewhere.expectBind(t, unix.IPPROTO_UDP, 45000, "ok")
}

// TestBindGuardWithoutSetRetval loads the fallback program meant for
// kernels before 5.18: rejected binds then get the kernel's EPERM.
func TestBindGuardWithoutSetRetval(t *testing.T) {
	cg, cgfd := testCgroup(t)
	bindGuardSetRetval = false
	g, err := NewBindGuard(cg)
	bindGuardSetRetval = true
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Errno() != unix.EPERM {
		t.Errorf("Errno() = %v, want EPERM", g.Errno())
	}
	if err := g.Guard(unix.IPPROTO_UDP, 47000, 47000); err != nil {
		t.Fatal(err)
	}
	b := startBinder(t, cgfd, false)
	b.expectBind(t, unix.IPPROTO_UDP, 47000, "EPERM")
	b.expectBind(t, unix.IPPROTO_UDP, 47001, "ok")
}

func TestBindGuardGuarded(t *testing.T) {
	cg, _ := testCgroup(t)
	g := newTestGuard(t, cg)
	const tcp, udp = unix.IPPROTO_TCP, unix.IPPROTO_UDP
	expect := func(proto uint8, port uint16, want bool) {
		t.Helper()
		got, err := g.Guarded(proto, port)
		if err != nil {
			t.Fatalf("Guarded(%d, %d): %v", proto, port, err)
		}
		if got != want {
			t.Errorf("Guarded(%s, %d) = %v, want %v", protoName(proto), port, got, want)
		}
	}
	expect(tcp, 65535, false)
	if err := g.Guard(tcp, 65530, 65535); err != nil {
		t.Fatal(err)
	}
	expect(tcp, 65529, false)
	expect(tcp, 65530, true)
	expect(tcp, 65535, true)
	expect(udp, 65535, false)
	if err := g.Unguard(tcp, 65534, 65535); err != nil {
		t.Fatal(err)
	}
	expect(tcp, 65533, true)
	expect(tcp, 65534, false)
	expect(tcp, 65535, false)

	if err := g.Guard(udp, 0, 2); err != nil {
		t.Fatal(err)
	}
	expect(udp, 0, false) // port 0 is never guarded
	expect(udp, 1, true)
	expect(udp, 2, true)
	expect(tcp, 1, false)

	// The whole range in one batch, and back.
	if err := g.Guard(udp, 0, 65535); err != nil {
		t.Fatal(err)
	}
	expect(udp, 65535, true)
	expect(udp, 30000, true)
	expect(tcp, 30000, false)
	if err := g.Unguard(udp, 1, 65535); err != nil {
		t.Fatal(err)
	}
	expect(udp, 1, false)
	expect(udp, 65535, false)

	if err := g.Guard(tcp, 10, 9); err == nil {
		t.Error("Guard(10, 9): no error")
	}
	if err := g.Guard(132, 10, 10); err == nil {
		t.Error("Guard(SCTP): no error")
	}
	if _, err := g.Guarded(0, 10); err == nil {
		t.Error("Guarded(proto 0): no error")
	}
}

func TestNewBindGuardErrors(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := NewBindGuard(t.TempDir()); err == nil || !strings.Contains(err.Error(), "cgroup v2") {
		t.Errorf("NewBindGuard(not a cgroup): %v, want an error naming cgroup v2", err)
	}
	if _, err := NewBindGuard("/nonexistent/cgroup"); err == nil {
		t.Error("NewBindGuard(missing dir): no error")
	}
}

// BenchmarkBindGuard measures socket+bind+close (TCP, 0.0.0.0) in a
// helper process inside a test cgroup, without and with the guard
// attached: bind(0) (the program's early exit), an explicit bind of an
// unguarded port (map lookup), and a guarded port refused (the longest
// path: both map lookups). The metrics are the helper's
// own timings, free of the pipe round trip: the whole loop per iteration,
// and the bind() call alone (mean and median).
func BenchmarkBindGuard(b *testing.B) {
	cg, cgfd := testCgroup(b)
	h := startBinder(b, cgfd, false)
	run := func(name string, port int) {
		b.Run(name, func(b *testing.B) {
			res := h.do("bench %d tcp %d", b.N, port)
			var total, sum, median int64
			if _, err := fmt.Sscan(res, &total, &sum, &median); err != nil {
				b.Fatalf("helper: %s", res)
			}
			b.ReportMetric(float64(total)/float64(b.N), "ns/socket+bind+close")
			b.ReportMetric(float64(sum)/float64(b.N), "ns/bind")
			b.ReportMetric(float64(median), "median-ns/bind")
		})
	}
	run("off/port0", 0)
	run("off/explicit", 46001)
	g := newTestGuard(b, cg)
	if err := g.Guard(unix.IPPROTO_TCP, 46000, 46000); err != nil {
		b.Fatal(err)
	}
	run("on/port0", 0)
	run("on/explicit", 46001)
	run("on/guarded-refused", 46000)
}
