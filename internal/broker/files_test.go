//go:build linux

package broker_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/paths"
	"github.com/portres/portres/internal/testutil"
)

// filesConfig is a quiet broker config with its socket and state in dir.
func filesConfig(dir string) broker.Config {
	return broker.Config{
		Socket: filepath.Join(dir, "portres.sock"),
		State:  filepath.Join(dir, "state.db"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// mustFailNew starts a broker with cfg, expecting it to refuse with an
// error containing every one of want.
func mustFailNew(t *testing.T, cfg broker.Config, want ...string) {
	t.Helper()
	b, err := broker.New(cfg)
	if err == nil {
		b.Close()
		t.Fatalf("New(%s) succeeded; want an error mentioning %q", cfg.Socket, want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("New(%s) = %v; want it to mention %q", cfg.Socket, err, w)
		}
	}
}

// mustNew starts a broker with cfg, closed when the test ends.
func mustNew(t *testing.T, cfg broker.Config) *broker.Broker {
	t.Helper()
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// staleSocket leaves a socket file at path, as a broker that died does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
}

func mustUnchanged(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s changed: %q, want %q", path, got, want)
	}
}

func TestLockFileSymlinkRefused(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.Dir(t)
	cfg := filesConfig(dir)
	victim := filepath.Join(dir, "victim")
	content := []byte("precious\n")
	if err := os.WriteFile(victim, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, cfg.Socket+".lock"); err != nil {
		t.Fatal(err)
	}
	mustFailNew(t, cfg, cfg.Socket+".lock", "symbolic link", "regular file")
	mustUnchanged(t, victim, content)
	if fi, err := os.Stat(victim); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("victim: %v, %v; want mode 0600", fi, err)
	}

	// A dangling link must not create its target either.
	os.Remove(cfg.Socket + ".lock")
	missing := filepath.Join(dir, "created")
	if err := os.Symlink(missing, cfg.Socket+".lock"); err != nil {
		t.Fatal(err)
	}
	mustFailNew(t, cfg, "symbolic link")
	if _, err := os.Lstat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dangling lock link's target: %v; want it not created", err)
	}
}

func TestLockFileNotOursRefused(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		name string
		make func(path string) error
		want string
	}{
		{"other uid", func(p string) error {
			if err := os.WriteFile(p, []byte("1234"), 0o666); err != nil {
				return err
			}
			return os.Chown(p, 65534, 65534)
		}, "regular file owned by uid 65534"},
		{"directory", func(p string) error { return os.Mkdir(p, 0o755) }, "directory"},
		{"hard link", func(p string) error {
			if err := os.WriteFile(p+".orig", []byte("1234"), 0o644); err != nil {
				return err
			}
			return os.Link(p+".orig", p)
		}, "2 links"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filesConfig(testutil.Dir(t))
			lock := cfg.Socket + ".lock"
			if err := tc.make(lock); err != nil {
				t.Fatal(err)
			}
			mustFailNew(t, cfg, lock, tc.want)
			if fi, err := os.Lstat(lock); err == nil && fi.Mode().IsRegular() {
				mustUnchanged(t, lock, []byte("1234"))
			}
		})
	}
}

func TestSocketPathNotOursRefused(t *testing.T) {
	testutil.RequireRoot(t)
	content := []byte("not a socket\n")
	for _, tc := range []struct {
		name string
		make func(t *testing.T, path string)
		want string
	}{
		{"regular file", func(t *testing.T, p string) {
			if err := os.WriteFile(p, content, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "a regular file owned by uid 0"},
		{"directory", func(t *testing.T, p string) {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}, "a directory"},
		{"symlink to a socket", func(t *testing.T, p string) {
			staleSocket(t, p+".real")
			if err := os.Symlink(p+".real", p); err != nil {
				t.Fatal(err)
			}
		}, "a symbolic link"},
		{"socket of another uid", func(t *testing.T, p string) {
			staleSocket(t, p)
			if err := os.Lchown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, "a socket owned by uid 65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filesConfig(testutil.Dir(t))
			tc.make(t, cfg.Socket)
			before, err := os.Lstat(cfg.Socket)
			if err != nil {
				t.Fatal(err)
			}
			mustFailNew(t, cfg, cfg.Socket, tc.want)
			after, err := os.Lstat(cfg.Socket)
			if err != nil {
				t.Fatalf("%s after the refusal: %v", cfg.Socket, err)
			}
			if !os.SameFile(before, after) {
				t.Errorf("%s was replaced", cfg.Socket)
			}
			if before.Mode().IsRegular() {
				mustUnchanged(t, cfg.Socket, content)
			}
		})
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	testutil.RequireRoot(t)
	cfg := filesConfig(testutil.Dir(t))
	staleSocket(t, cfg.Socket)
	b := mustNew(t, cfg)
	// Listening is enough for a connection; Serve is not needed.
	c, err := portres.Dial(context.Background(), cfg.Socket)
	if err != nil {
		t.Fatalf("dial the broker that replaced a stale socket: %v", err)
	}
	c.Close()
	if fi, err := os.Lstat(cfg.Socket); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("socket: %v, %v; want mode 0666", fi, err)
	}
	b.Close()
	if _, err := os.Lstat(cfg.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Close: %v; want it removed", err)
	}

	// The next broker reuses the lock file and starts cleanly.
	b = mustNew(t, cfg)
	b.Close()
}

func TestCloseLeavesReplacedSocketPath(t *testing.T) {
	testutil.RequireRoot(t)
	cfg := filesConfig(testutil.Dir(t))
	b := mustNew(t, cfg)
	content := []byte("someone else's file\n")
	if err := os.Remove(cfg.Socket); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.Socket, content, 0o644); err != nil {
		t.Fatal(err)
	}
	b.Close()
	mustUnchanged(t, cfg.Socket, content)
}

// TestFallbackDirRefused runs a broker whose socket is in root's own
// /tmp/portres-0, the per-user fallback directory, when that directory
// is not private. It skips if the directory already exists.
func TestFallbackDirRefused(t *testing.T) {
	testutil.RequireRoot(t)
	dir := paths.FallbackDir(os.Geteuid())
	if err := os.Mkdir(dir, 0o777); errors.Is(err, os.ErrExist) {
		t.Skipf("%s exists; not touching it", dir)
	} else if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := filesConfig(testutil.Dir(t))
	cfg.Socket = filepath.Join(dir, "portres.sock")
	plant := filepath.Join(dir, "portres.sock.lock")
	if err := os.WriteFile(plant, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		uid  int
		mode os.FileMode
		want string
	}{
		{65534, 0o777, "owned by uid 65534"},
		{0, 0o777, "mode 0777"},
		{0, 0o750, "mode 0750"},
	} {
		if err := os.Chown(dir, step.uid, step.uid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, step.mode); err != nil {
			t.Fatal(err)
		}
		mustFailNew(t, cfg, dir, step.want)
		mustUnchanged(t, plant, nil)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	mustNew(t, cfg).Close()

	// Missing, it is created 0700.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	mustNew(t, cfg).Close()
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("%s: %v, %v; want a directory with mode 0700", dir, fi, err)
	}
}

// TestFallbackDirSymlinkRefused checks that a symbolic link at
// /tmp/portres-0 to a private directory is not used.
func TestFallbackDirSymlinkRefused(t *testing.T) {
	testutil.RequireRoot(t)
	dir := paths.FallbackDir(os.Geteuid())
	real := t.TempDir()
	if err := os.Symlink(real, dir); errors.Is(err, os.ErrExist) {
		t.Skipf("%s exists; not touching it", dir)
	} else if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	os.Chmod(real, 0o700)
	cfg := filesConfig(testutil.Dir(t))
	cfg.Socket = filepath.Join(dir, "portres.sock")
	mustFailNew(t, cfg, dir, "symbolic link")
	if ents, _ := os.ReadDir(real); len(ents) != 0 {
		t.Errorf("the link's target got %v", ents)
	}
}
