//go:build linux

package enforce

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

// tempList returns a regular file standing in for the sysctl, holding text.
func tempList(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ip_local_reserved_ports")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// mustList fails t unless the file at path holds exactly want (merged).
func mustList(t *testing.T, path, want string) {
	t.Helper()
	got, err := NewReservedPorts(path, nil).Read()
	if err != nil {
		t.Fatal(err)
	}
	if s := FormatRanges(MergeRanges(got)); s != want {
		t.Fatalf("%s holds %q, want %q", path, s, want)
	}
}

func mustApply(t *testing.T, rp *ReservedPorts, want []Range, list, added string) {
	t.Helper()
	if err := rp.Apply(want); err != nil {
		t.Fatalf("Apply(%v): %v", want, err)
	}
	mustList(t, rp.Path(), list)
	if got := FormatRanges(rp.Added()); got != added {
		t.Fatalf("after Apply(%v): Added = %q, want %q", want, got, added)
	}
}

// sparse returns n single ports, none adjacent: a list too long to write.
func sparse(n int) []Range {
	var rs []Range
	for i := range n {
		rs = append(rs, Range{uint16(10000 + 2*i), uint16(10000 + 2*i)})
	}
	return rs
}

func TestApplyKeepsForeign(t *testing.T) {
	path := tempList(t, "100,200-210\n")
	rp := NewReservedPorts(path, nil)
	writes := 0
	rp.write = func(p string, b []byte) (int, error) { writes++; return writeOnce(p, b) }
	mustApply(t, rp, []Range{{300, 310}}, "100,200-210,300-310", "300-310")
	mustApply(t, rp, []Range{{300, 310}}, "100,200-210,300-310", "300-310") // no change, no write
	mustApply(t, rp, []Range{{205, 220}, {400, 400}}, "100,200-220,400", "211-220,400")
	mustApply(t, rp, nil, "100,200-210", "")
	if writes != 3 {
		t.Errorf("%d writes for 3 changes", writes)
	}
	// A restart: the store remembers 211-220 was ours.
	mustApply(t, rp, []Range{{205, 220}}, "100,200-220", "211-220")
	rp2 := NewReservedPorts(path, rp.Added())
	mustApply(t, rp2, nil, "100,200-210", "")
}

func TestApplyRefusesLongList(t *testing.T) {
	path := tempList(t, "7\n")
	rp := NewReservedPorts(path, []Range{{7, 7}})
	err := rp.Apply(sparse(700))
	if !errors.Is(err, ErrListTooLong) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Apply(700 ports) = %v, want ErrListTooLong naming %s", err, path)
	}
	mustList(t, path, "7")
	if got := rp.Added(); !slices.Equal(got, []Range{{7, 7}}) {
		t.Fatalf("Added changed to %v after a refused Apply", got)
	}
}

func TestApplyErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no", "such")
	err := NewReservedPorts(missing, nil).Apply([]Range{{1, 2}})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "read ip_local_reserved_ports ("+missing+")") {
		t.Fatalf("Apply on a missing file = %v", err)
	}

	path := tempList(t, "")
	rp := NewReservedPorts(path, []Range{{5, 5}})
	rp.write = func(string, []byte) (int, error) { return -1, os.NewSyscallError("open", unix.EACCES) }
	err = rp.Apply([]Range{{1, 2}})
	if !errors.Is(err, unix.EACCES) || !strings.Contains(err.Error(), "write ip_local_reserved_ports") {
		t.Fatalf("Apply with a failing write = %v", err)
	}
	if got := rp.Added(); !slices.Equal(got, []Range{{5, 5}}) {
		t.Fatalf("Added = %v after a failed write, want it unchanged", got)
	}
}

// TestApplyVerify makes the "kernel" differ from what was written: a
// concurrent writer, then a write cut short.
func TestApplyVerify(t *testing.T) {
	path := tempList(t, "1\n")
	rp := NewReservedPorts(path, []Range{{50, 60}})
	rp.write = func(p string, b []byte) (int, error) {
		n, err := writeOnce(p, b)
		os.WriteFile(p, []byte("1,55-70,99\n"), 0o644) // someone else writes right after us
		return n, err
	}
	err := rp.Apply([]Range{{50, 60}, {70, 80}})
	if !errors.Is(err, ErrVerify) {
		t.Fatalf("Apply with a racing writer = %v, want ErrVerify", err)
	}
	if got := FormatRanges(rp.Added()); got != "55-60,70" {
		t.Fatalf("Added = %q, want what is ours and still present: 55-60,70", got)
	}

	rp.write = func(p string, b []byte) (int, error) { return writeOnce(p, b[:len(b)/2]) }
	if err := rp.Apply([]Range{{1000, 1999}, {3000, 3999}}); !errors.Is(err, ErrVerify) {
		t.Fatalf("Apply with a short write = %v, want ErrVerify", err)
	}
}

// kernelList empties the namespace's list now and at cleanup and returns
// the sysctl path. The netns is private (testutil.Main).
func kernelList(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t)
	reset := func() {
		if _, err := writeOnce(DefaultReservedPortsPath, []byte("\n")); err != nil {
			t.Fatal(err)
		}
	}
	reset()
	t.Cleanup(reset)
	return DefaultReservedPortsPath
}

func mustWrite(t *testing.T, path, text string) {
	t.Helper()
	if n, err := writeOnce(path, []byte(text)); err != nil || n != len(text) {
		t.Fatalf("write %q to %s: %d, %v", text, path, n, err)
	}
}

// TestKernelFacts re-checks what doc.go states about the sysctl.
func TestKernelFacts(t *testing.T) {
	path := kernelList(t)
	mustList(t, path, "")
	for _, tt := range []struct{ write, read string }{
		{"0", "0"}, {"0-65535", "0-65535"}, {"5,3,4", "3-5"}, {"10-20,21-30\n", "10-30"}, {"\n", ""},
	} {
		mustWrite(t, path, tt.write)
		mustList(t, path, tt.read)
	}
	mustWrite(t, path, "42")
	for _, bad := range []string{"65536", "100-50", " 7"} {
		if _, err := writeOnce(path, []byte(bad)); !errors.Is(err, unix.EINVAL) {
			t.Errorf("writing %q: %v, want EINVAL", bad, err)
		}
	}
	mustList(t, path, "42")
	long := FormatRanges(sparse(900)) // about 5.4 KB
	n, err := writeOnce(path, []byte(long))
	t.Logf("one write of %d bytes: %d taken, err %v", len(long), n, err)
	if err != nil || n >= len(long) || n > MaxReservedPortsWrite {
		t.Errorf("a %d-byte write took %d bytes (err %v); the kernel no longer cuts at %d?",
			len(long), n, err, MaxReservedPortsWrite)
	}
	rs, err := NewReservedPorts(path, nil).Read()
	b, _ := os.ReadFile(path)
	t.Logf("after the cut write: Read gives %d bytes of list, os.ReadFile %d", len(FormatRanges(rs)), len(b))
	if err != nil || len(FormatRanges(rs)) < n-6 {
		t.Errorf("Read returned %d bytes of a list of about %d: %v", len(FormatRanges(rs)), n, err)
	}
}

func TestKernelApply(t *testing.T) {
	path := kernelList(t)
	mustWrite(t, path, "1000,2000-2010\n")
	rp := NewReservedPorts(path, nil)
	mustApply(t, rp, []Range{{3000, 3010}, {2005, 2020}}, "1000,2000-2020,3000-3010", "2011-2020,3000-3010")
	mustApply(t, rp, []Range{{2011, 2011}}, "1000,2000-2011", "2011")
	mustApply(t, rp, nil, "1000,2000-2010", "")

	err := rp.Apply(sparse(700))
	if !errors.Is(err, ErrListTooLong) {
		t.Fatalf("Apply(700 single ports) = %v, want ErrListTooLong", err)
	}
	mustList(t, path, "1000,2000-2010")
	// 700 adjacent ports merge into one short range and fit.
	mustApply(t, rp, []Range{{20000, 20699}}, "1000,2000-2010,20000-20699", "20000-20699")
}

// TestKernelUnprivileged drops root on one locked thread and checks that
// Apply fails with EACCES, naming the file, and changes nothing.
func TestKernelUnprivileged(t *testing.T) {
	path := kernelList(t)
	mustWrite(t, path, "77")
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		// A raw setresuid changes only this thread (syscall.Setresuid would change all).
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 65534, 65534, 65534); e != 0 {
			errc <- fmt.Errorf("setresuid: %w", e)
			return
		}
		errc <- NewReservedPorts(path, nil).Apply([]Range{{5000, 5001}})
	}()
	err := <-errc
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Apply as uid 65534 = %v, want a permission error naming %s", err, path)
	}
	t.Logf("unprivileged Apply: %v", err)
	mustList(t, path, "77")
}

// TestKernelBindAvoidsReserved binds port 0 until the narrowed ephemeral
// range runs out and checks that no socket lands on a reserved port,
// that every free port is handed out, and that an explicit bind to a
// reserved port still succeeds.
func TestKernelBindAvoidsReserved(t *testing.T) {
	path := kernelList(t)
	const portRange = "/proc/sys/net/ipv4/ip_local_port_range"
	old, err := os.ReadFile(portRange)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(portRange, old, 0o644) })
	if err := os.WriteFile(portRange, []byte("50000 50999"), 0o644); err != nil {
		t.Fatal(err)
	}
	reserved := []Range{{50000, 50199}, {50300, 50599}, {50700, 50700}, {50998, 50999}}
	mustWrite(t, path, "50100-50150,60000") // foreign, partly inside ours
	rp := NewReservedPorts(path, nil)
	if err := rp.Apply(reserved); err != nil {
		t.Fatal(err)
	}
	free := 1000 - RangesLen(reserved)
	for _, c := range []struct {
		name         string
		family, kind int
		addr         func(port int) unix.Sockaddr
	}{
		{"tcp4", unix.AF_INET, unix.SOCK_STREAM, func(p int) unix.Sockaddr { return &unix.SockaddrInet4{Port: p} }},
		{"tcp6", unix.AF_INET6, unix.SOCK_STREAM, func(p int) unix.Sockaddr { return &unix.SockaddrInet6{Port: p} }},
		{"udp4", unix.AF_INET, unix.SOCK_DGRAM, func(p int) unix.Sockaddr { return &unix.SockaddrInet4{Port: p} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			bind := func(port int) (uint16, error) {
				fd, err := unix.Socket(c.family, c.kind|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { unix.Close(fd) }) // hold the port until the subtest ends
				if err := unix.Bind(fd, c.addr(port)); err != nil {
					return 0, err
				}
				sa, err := unix.Getsockname(fd)
				if err != nil {
					t.Fatal(err)
				}
				return sockPort(sa), nil
			}
			bound := 0
			for range 2000 {
				port, err := bind(0)
				if errors.Is(err, unix.EADDRINUSE) {
					continue // the unreserved ports are all taken
				} else if err != nil {
					t.Fatalf("bind(0): %v", err)
				}
				if slices.ContainsFunc(reserved, func(r Range) bool { return r.Contains(port) }) {
					t.Fatalf("bind(0) handed out reserved port %d", port)
				}
				bound++
			}
			if bound != free {
				t.Errorf("bind(0) succeeded %d times, want the %d unreserved ports", bound, free)
			}
			if _, err := bind(50100); err != nil {
				t.Errorf("explicit bind to reserved port 50100: %v", err)
			}
		})
	}
}

func sockPort(sa unix.Sockaddr) uint16 {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return uint16(sa.Port)
	case *unix.SockaddrInet6:
		return uint16(sa.Port)
	}
	return 0
}
