//go:build linux

package portrestest_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/testutil"
	"github.com/portres/portres/portrestest"
)

// TestMain runs the tests (as root, in a private network namespace:
// testutil.Main) with a test broker of their own, in a fresh directory,
// stopped at the end.
func TestMain(m *testing.M) { testutil.Main(ownBroker{m}) }

type ownBroker struct{ m *testing.M }

func (o ownBroker) Run() int {
	dir, err := os.MkdirTemp("", "portrestest")
	if err != nil {
		panic(err)
	}
	os.Setenv("PORTRESTEST_DIR", dir)
	os.Unsetenv("PORTRES_SOCKET")
	code := o.m.Run()
	stopBroker(dir)
	os.RemoveAll(dir)
	return code
}

// stopBroker ends the test broker listening in dir (its lock file holds
// its pid).
func stopBroker(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "portres.sock.lock"))
	if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && pid > 0 {
		syscall.Kill(pid, syscall.SIGTERM)
	}
}

// TestHelpers: with no broker running, the first call starts one; Listen
// serves on a reserved port, Port and Ports give ports outside the
// kernel's ephemeral range that a plain bind takes, and everything is
// released when the test ends.
func TestHelpers(t *testing.T) {
	var lnPort, port uint16
	var ports []uint16
	t.Run("take", func(t *testing.T) {
		ln := portrestest.Listen(t, "tcp")
		lnPort = uint16(ln.Addr().(*net.TCPAddr).Port)
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
		}()
		if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err != nil {
			t.Errorf("dial the listener: %v", err)
		} else {
			c.Close()
		}
		pc := portrestest.ListenPacket(t, "udp")
		if pc.LocalAddr().(*net.UDPAddr).Port == 0 {
			t.Error("ListenPacket: no port")
		}
		port = portrestest.Port(t, portres.TCP)
		ports = portrestest.Ports(t, portres.UDP, 3)
		if len(ports) != 3 || ports[1] != ports[0]+1 || ports[2] != ports[0]+2 {
			t.Errorf("Ports(3) = %v, want 3 in a row", ports)
		}
		var lo, hi int
		if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
			fmt.Sscan(string(b), &lo, &hi)
			for _, p := range append([]uint16{port}, ports...) {
				if int(p) >= lo && int(p) <= hi {
					t.Errorf("port %d lies in the ephemeral range %d-%d", p, lo, hi)
				}
			}
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("a plain bind of the port Port gave: %v", err)
		}
		l.Close()
		infos, err := portrestest.Client(t).Show(context.Background())
		if err != nil || len(infos) != 4 {
			t.Errorf("while the test runs: %+v %v; want its 4 blocks", infos, err)
		}
	})
	infos, err := portrestest.Client(t).Show(context.Background())
	if err != nil || len(infos) != 0 {
		t.Errorf("after the test: %+v %v; want everything released (listener %d, port %d, ports %v)", infos, err, lnPort, port, ports)
	}
}

// TestParallelSuites is the comparison the README reports: a suite of
// four packages whose tests take 80 ports each, 16 at a time, and bind
// them a few milliseconds later, run with `go test -p 8 -count 3` while
// loopback connections churn a narrowed ephemeral range (2,000 ports,
// most of them busy), as on a loaded CI machine. Through portrestest no
// bind collides; with the usual trick (bind port 0, close, hand the port
// on) some do.
func TestParallelSuites(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a test suite: not in -short")
	}
	testutil.RequireRoot(t) // narrows the ephemeral range of the test's network namespace
	const portRange = "/proc/sys/net/ipv4/ip_local_port_range"
	old, _ := os.ReadFile(portRange)
	if err := os.WriteFile(portRange, []byte("40000 41999"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile(portRange, old, 0o644)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	suite := t.TempDir()
	tmpl, err := os.ReadFile("testdata/suite/suite_test.go.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		pkg := fmt.Sprintf("p%d", i)
		os.Mkdir(filepath.Join(suite, pkg), 0o755)
		src := strings.Replace(string(tmpl), "package PKG", "package "+pkg, 1)
		if err := os.WriteFile(filepath.Join(suite, pkg, "suite_test.go"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gomod := "module suite\n\ngo 1.26.0\n\nrequire github.com/portres/portres v0.0.0\n\nreplace github.com/portres/portres => " + root + "\n"
	os.WriteFile(filepath.Join(suite, "go.mod"), []byte(gomod), 0o644)
	if sum, err := os.ReadFile(filepath.Join(root, "go.sum")); err == nil {
		os.WriteFile(filepath.Join(suite, "go.sum"), sum, 0o644)
	}

	stop := loopbackNoise(t)
	defer stop()
	results := map[string][2]int{}
	for _, mode := range []string{"portres", "probe"} {
		cmd := exec.Command("go", "test", "-p", "8", "-count", "3", "-v", "./...")
		cmd.Dir = suite
		cmd.Env = append(os.Environ(), "SUITE_MODE="+mode, "GOFLAGS=-mod=mod -buildvcs=false")
		out, err := cmd.CombinedOutput()
		bound, collided := 0, 0
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			switch {
			case strings.HasPrefix(sc.Text(), "BOUND "):
				bound++
			case strings.HasPrefix(sc.Text(), "COLLISION "):
				collided++
			}
		}
		if err != nil {
			t.Fatalf("%s suite: %v\n%s", mode, err, out)
		}
		results[mode] = [2]int{bound, collided}
	}
	t.Logf("go test -p 8 -count 3, 4 packages x 16 parallel tests x 5 ports, loopback noise: portrestest %d binds, %d collisions; bind(0)-and-close probing %d binds, %d collisions",
		results["portres"][0], results["portres"][1], results["probe"][0], results["probe"][1])
	if r := results["portres"]; r[1] != 0 || r[0] != 3*4*16*5 {
		t.Errorf("through portrestest: %d binds, %d collisions; want %d and none", r[0], r[1], 3*4*16*5)
	}
}

// loopbackNoise churns the kernel's ephemeral range with TCP connections
// to a local listener, as other tests and programs of a busy machine do,
// until stop is called.
func loopbackNoise(t *testing.T) (stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	done := make(chan struct{})
	for i := 0; i < 4; i++ {
		go func() {
			var held []net.Conn
			for {
				select {
				case <-done:
					for _, c := range held {
						c.Close()
					}
					return
				default:
				}
				if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
					held = append(held, c)
				}
				if len(held) > 400 {
					for _, c := range held {
						c.Close()
					}
					held = held[:0]
				}
			}
		}()
	}
	return func() {
		close(done)
		ln.Close()
	}
}
