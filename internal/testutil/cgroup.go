//go:build linux

package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Cgroup creates a fresh child of the cgroup v2 root for t, so that
// cgroup-attached programs under test only reach processes the test puts
// there (StartHelperIn), never the host's. It returns the directory and an
// open descriptor on it, removed and closed when the test ends. It skips
// t without cgroup v2.
func Cgroup(t testing.TB) (string, int) {
	t.Helper()
	RequireRoot(t)
	root := ""
	for _, p := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			root = p
			break
		}
	}
	if root == "" {
		t.Skip("needs a cgroup v2 hierarchy (/sys/fs/cgroup or /sys/fs/cgroup/unified)")
	}
	var b [6]byte
	rand.Read(b[:])
	dir := filepath.Join(root, "portres-test-"+hex.EncodeToString(b[:]))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create test cgroup: %v", err)
	}
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		os.Remove(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Close(fd)
		// The helpers in it have exited; the kernel may take a moment to
		// notice before the directory can go.
		for i := 0; i < 100 && os.Remove(dir) != nil; i++ {
			time.Sleep(10 * time.Millisecond)
		}
	})
	return dir, fd
}

// StartHelperIn is StartHelper with the helper process created inside
// the cgroup whose directory descriptor is cgroupFD.
func StartHelperIn(t testing.TB, cgroupFD int, name string, env []string, args ...string) *Process {
	t.Helper()
	return startHelper(t, &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgroupFD}, false, name, env, args...)
}

// StartIn is Start with the process created inside the cgroup whose
// directory descriptor is cgroupFD.
func StartIn(t testing.TB, cgroupFD int, program string, env []string, args ...string) *Process {
	t.Helper()
	return start(t, &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgroupFD}, program, env, args...)
}
