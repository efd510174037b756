//go:build linux

package enforce

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/portres/portres/internal/testutil"
)

func init() {
	testutil.Helpers["pinguard"] = pinGuardHelper
}

// pinGuardHelper is a broker's guard in a process of its own: CGROUP
// PINDIR PORT opens (or adopts) the guard pinned in PINDIR, guards TCP
// PORT, prints "ok adopted=BOOL" and then exits, or waits for stdin to
// close if a fourth argument says "wait" (to be SIGKILLed).
func pinGuardHelper(args []string) int {
	g, err := OpenBindGuard(GuardOptions{Cgroup: args[0], PinDir: args[1]})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	port, _ := strconv.Atoi(args[2])
	if err := g.Guard(unix.IPPROTO_TCP, uint16(port), uint16(port)); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ok adopted=" + strconv.FormatBool(g.Adopted()))
	if len(args) > 3 && args[3] == "wait" {
		os.Stdin.Read(make([]byte, 1))
	}
	return 0 // the guard's descriptors close with the process
}

// testPinDir returns a pin directory under a fresh empty directory on
// which the guard will mount its own bpffs (in the test binary's private
// mount namespace), unmounted when the test ends.
func testPinDir(t testing.TB) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "bpf")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if IsBPFFS(root) {
			if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount test bpffs: %v", err)
			}
		}
	})
	return filepath.Join(root, "portres", "net-test")
}

// TestBindGuardPinnedOutlivesProcess: a pinned guard keeps refusing
// binds after the process that made it exits or is SIGKILLed; the next
// process adopts it with every port it guarded, can narrow it with
// Reconcile, and UninstallGuard removes it.
func TestBindGuardPinnedOutlivesProcess(t *testing.T) {
	cg, cgfd := testCgroup(t)
	pin := testPinDir(t)
	b := startBinder(t, cgfd, false)

	first := testutil.StartHelper(t, "pinguard", nil, cg, pin, "48000")
	if l := first.Line(10 * time.Second); l != "ok adopted=false" {
		t.Fatalf("first loader: %s", l)
	}
	first.Wait()
	if !IsBPFFS(filepath.Dir(filepath.Dir(pin))) {
		t.Fatal("no bpffs was mounted for the pins")
	}
	want := "EACCES"
	b.expectBind(t, unix.IPPROTO_TCP, 48000, want)

	killed := testutil.StartHelper(t, "pinguard", nil, cg, pin, "48001", "wait")
	if l := killed.Line(10 * time.Second); l != "ok adopted=true" {
		t.Fatalf("second loader: %s", l)
	}
	killed.Cmd.Process.Signal(syscall.SIGKILL)
	killed.Cmd.Wait()
	b.expectBind(t, unix.IPPROTO_TCP, 48000, want)
	b.expectBind(t, unix.IPPROTO_TCP, 48001, want)
	b.expectBind(t, unix.IPPROTO_TCP, 48002, "ok")

	g, err := OpenBindGuard(GuardOptions{Cgroup: cg, PinDir: pin})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if !g.Adopted() || g.PinDir() != pin {
		t.Errorf("Adopted() = %v, PinDir() = %q", g.Adopted(), g.PinDir())
	}
	tcp, err := g.GuardedPorts(unix.IPPROTO_TCP)
	if err != nil {
		t.Fatal(err)
	}
	if got := FormatRanges(tcp.Ranges()); got != "48000-48001" {
		t.Errorf("adopted guard keeps %q, want 48000-48001", got)
	}
	if _, err := OpenBindGuard(GuardOptions{Cgroup: cg, PinDir: pin}); err == nil || !strings.Contains(err.Error(), "in use by another portresd") {
		t.Errorf("second guard on the same pins while one is open: %v", err)
	}
	if _, err := UninstallGuard(pin); err == nil {
		t.Error("UninstallGuard while a guard is open: no error")
	}

	var keep Bitmap
	keep.Set(48001, 48001)
	if err := g.Reconcile(&keep, nil); err != nil {
		t.Fatal(err)
	}
	b.expectBind(t, unix.IPPROTO_TCP, 48000, "ok")
	b.expectBind(t, unix.IPPROTO_TCP, 48001, want)
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	b.expectBind(t, unix.IPPROTO_TCP, 48001, want) // pinned: Close keeps it

	removed, err := UninstallGuard(pin)
	if err != nil || !removed {
		t.Fatalf("UninstallGuard = %v, %v", removed, err)
	}
	b.expectBind(t, unix.IPPROTO_TCP, 48001, "ok")
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory left behind: %v", err)
	}
	if removed, err := UninstallGuard(pin); removed || err != nil {
		t.Errorf("UninstallGuard of nothing = %v, %v", removed, err)
	}
}

// TestBindGuardPinnedMovesCgroup: adopting a pinned guard for another
// cgroup keeps its map and moves the program: the old cgroup is free,
// the new one guarded.
func TestBindGuardPinnedMovesCgroup(t *testing.T) {
	cg1, fd1 := testCgroup(t)
	cg2, fd2 := testCgroup(t)
	pin := testPinDir(t)
	g, err := OpenBindGuard(GuardOptions{Cgroup: cg1, PinDir: pin})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Guard(unix.IPPROTO_UDP, 48100, 48100); err != nil {
		t.Fatal(err)
	}
	g.Close()
	g, err = OpenBindGuard(GuardOptions{Cgroup: cg2, PinDir: pin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.Close()
		UninstallGuard(pin)
	})
	startBinder(t, fd1, false).expectBind(t, unix.IPPROTO_UDP, 48100, "ok")
	startBinder(t, fd2, false).expectBind(t, unix.IPPROTO_UDP, 48100, "EACCES")
}

func TestEnsureBPFFS(t *testing.T) {
	testutil.RequireRoot(t)
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := EnsureBPFFS(filepath.Join(full, "portres"))
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("EnsureBPFFS under a non-empty directory: %v, want a refusal naming it", err)
	}
	pin := testPinDir(t)
	if err := EnsureBPFFS(pin); err != nil {
		t.Fatal(err)
	}
	if !IsBPFFS(pin) {
		t.Error("pin directory is not on a bpffs")
	}
	if err := EnsureBPFFS(pin); err != nil { // mounted already: only mkdir
		t.Errorf("second EnsureBPFFS: %v", err)
	}
	if d, err := DefaultPinDir(); err != nil || !strings.HasPrefix(d, "/sys/fs/bpf/portres/net-") {
		t.Errorf("DefaultPinDir() = %q, %v", d, err)
	}
}

// TestBindGuardMapsItsPorts: the guarded map is mapped into the process,
// so Guard and Unguard are stores the kernel sees (the map read through
// system calls agrees, and binds are refused); a map pinned by an older
// broker, not mappable, is replaced at adoption with its ports kept.
func TestBindGuardMapsItsPorts(t *testing.T) {
	cg, fd := testCgroup(t)
	pin := testPinDir(t)
	if err := EnsureBPFFS(pin); err != nil {
		t.Fatal(err)
	}
	old := guardedSpec()
	old.Flags = 0
	m, err := ebpf.NewMap(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Update(uint32(48300), uint8(1), ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	if err := m.Pin(filepath.Join(pin, pinPorts)); err != nil {
		t.Fatal(err)
	}
	m.Close()

	g, err := OpenBindGuard(GuardOptions{Cgroup: cg, PinDir: pin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.Close()
		UninstallGuard(pin)
	})
	if g.mem == nil {
		t.Fatal("the guarded map is not mapped")
	}
	if ok, err := g.Guarded(unix.IPPROTO_TCP, 48300); !ok || err != nil {
		t.Errorf("port 48300 of the old pinned map: guarded %v, %v", ok, err)
	}
	if err := g.Guard(unix.IPPROTO_UDP, 48301, 48302); err != nil {
		t.Fatal(err)
	}
	for _, port := range []uint32{48301, 48302} {
		var v uint8
		if err := g.guarded.Lookup(1<<16|port, &v); err != nil || v != 1 {
			t.Errorf("udp %d through the map: %d, %v; want 1", port, v, err)
		}
	}
	b := startBinder(t, fd, false)
	b.expectBind(t, unix.IPPROTO_TCP, 48300, "EACCES")
	b.expectBind(t, unix.IPPROTO_UDP, 48302, "EACCES")
	if err := g.Unguard(unix.IPPROTO_UDP, 48302, 48302); err != nil {
		t.Fatal(err)
	}
	b.expectBind(t, unix.IPPROTO_UDP, 48302, "ok")
}
