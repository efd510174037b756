//go:build linux

package testutil

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// ReservedPortsPath is the sysctl the brokers under test write; each test
// binary has its own network namespace, so its value is the test's alone.
const ReservedPortsPath = "/proc/sys/net/ipv4/ip_local_reserved_ports"

// Dir returns a fresh directory that every user can traverse, so tests
// may run clients under other uids.
func Dir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	return dir
}

// ClearReservedPorts empties ip_local_reserved_ports in the test's netns.
func ClearReservedPorts(t testing.TB) {
	t.Helper()
	if InNetNS() {
		if err := os.WriteFile(ReservedPortsPath, []byte("\n"), 0o644); err != nil {
			t.Errorf("clear %s: %v", ReservedPortsPath, err)
		}
	}
}

// BPFPin returns a pin directory for a broker's eBPF guard under a fresh
// empty directory, on which the broker mounts a bpffs of its own (in the
// test binary's private mount namespace, see Main). When the test ends
// the bpffs is unmounted: its pins go, and with them any guard no
// process holds.
func BPFPin(t testing.TB) string {
	t.Helper()
	root := filepath.Join(Dir(t), "bpf")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var st unix.Statfs_t
		if unix.Statfs(root, &st) == nil && st.Type == unix.BPF_FS_MAGIC {
			if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount the test's bpffs %s: %v", root, err)
			}
		}
	})
	return filepath.Join(root, "portres")
}
