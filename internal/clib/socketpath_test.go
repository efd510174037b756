//go:build linux

package clib

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/portres/portres/internal/testutil"
)

// TestDefaultSocketFallbackDir drives libportres's choice of the broker
// socket (portres_default_socket) as uid 65534, without $PORTRES_SOCKET
// or $XDG_RUNTIME_DIR: the per-user socket in /tmp/portres-65534 is used
// only if that directory is the user's own, mode 0700, and not a
// symbolic link. Anyone can create that name in /tmp first; a client
// that trusted it would take its reservations to whatever listens there.
// The socket is a plain file, so a dial that picks it fails naming it.
func TestDefaultSocketFallbackDir(t *testing.T) {
	testutil.RequireRoot(t)
	driver := filepath.Join(libDir(t), "driver")
	dir := "/tmp/portres-65534"
	if _, err := os.Lstat(dir); err == nil {
		t.Skipf("%s exists already; not touching it", dir)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	private := filepath.Join(testutil.Dir(t), "private")

	// dial runs the C driver as uid 65534 and returns what it printed
	// when it dialled the default socket.
	dial := func() string {
		cmd := exec.Command(driver)
		cmd.Env = append(os.Environ(), "PORTRES_SOCKET=", "XDG_RUNTIME_DIR=")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
		cmd.Stdin = strings.NewReader("connect\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("driver: %v\n%s", err, out)
		}
		return string(out)
	}
	// mkdir makes path a directory of uid with mode, holding portres.sock.
	mkdir := func(path string, uid int, mode os.FileMode) {
		t.Helper()
		os.RemoveAll(path)
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(path, "portres.sock"), nil, 0o666); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, uid, uid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "portres.sock")

	for _, c := range []struct {
		name  string
		setup func()
	}{
		{"another user's private directory", func() { mkdir(dir, 0, 0o700) }},
		{"the user's directory, open to all", func() { mkdir(dir, int(nobody.Uid), 0o777) }},
		{"the user's directory, group-writable", func() { mkdir(dir, int(nobody.Uid), 0o770) }},
		{"a symbolic link to the user's private directory", func() {
			os.RemoveAll(dir)
			mkdir(private, int(nobody.Uid), 0o700)
			if err := os.Symlink(private, dir); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		c.setup()
		if out := dial(); strings.Contains(out, dir) {
			t.Errorf("%s: the C client dialled into it:\n%s", c.name, out)
		}
	}

	mkdir(dir, int(nobody.Uid), 0o700)
	if out := dial(); !strings.Contains(out, sock) {
		t.Errorf("the user's private directory: the C client did not dial %s:\n%s", sock, out)
	}
}
