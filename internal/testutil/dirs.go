package testutil

import (
	"os"
	"path/filepath"
	"testing"
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
