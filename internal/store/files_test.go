//go:build linux

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/portres/portres/internal/testutil"
)

// requireRoot skips t unless it runs as root, which chown needs.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: chowns a file to uid 65534 to check that the store refuses files it does not own")
	}
}

// precious writes a file the store must never touch and returns its path.
func precious(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "precious")
	if err := os.WriteFile(path, []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// wantUnsafe checks that err is an ErrUnsafeFile refusal naming path and
// every string in also.
func wantUnsafe(t *testing.T, what string, err error, path string, also ...string) {
	t.Helper()
	if !errors.Is(err, ErrUnsafeFile) {
		t.Fatalf("%s = %v, want ErrUnsafeFile", what, err)
	}
	for _, s := range append([]string{path}, also...) {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: message lacks %q: %v", what, s, err)
		}
	}
	t.Logf("%s refused: %v", what, err)
}

// TestOpenRefusesSymlink: a symlink at the database path is refused,
// whether it points at a store, at some other file or nowhere, and its
// target is left byte for byte as it was (or not created).
func TestOpenRefusesSymlink(t *testing.T) {
	testutil.CheckFDLeak(t)
	dir := t.TempDir()
	store := filepath.Join(dir, "real.db")
	s, err := Open(store)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddPersistent(tcp(5000, 10, 1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for name, target := range map[string]string{
		"to a store":   store,
		"to a file":    precious(t, dir),
		"dangling":     filepath.Join(dir, "nowhere"),
		"to directory": t.TempDir(),
	} {
		t.Run(name, func(t *testing.T) {
			link := filepath.Join(t.TempDir(), "portres.db")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			var before [32]byte
			fi, statErr := os.Stat(target)
			if statErr == nil && fi.Mode().IsRegular() {
				before = fileHash(t, target)
			}
			for _, o := range []Options{{}, {Repair: true}} {
				s, err := OpenWithOptions(link, o)
				if err == nil {
					s.Close()
					t.Fatalf("OpenWithOptions(symlink, %+v) succeeded", o)
				}
				wantUnsafe(t, fmt.Sprintf("OpenWithOptions(%+v)", o), err, link, "symbolic link", target)
			}
			switch {
			case errors.Is(statErr, os.ErrNotExist):
				if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the symlink's target %s was created (%v)", target, err)
				}
			case fi.Mode().IsRegular():
				if fileHash(t, target) != before {
					t.Errorf("the symlink's target %s changed", target)
				}
			}
			if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Errorf("the symlink itself was replaced: %v %v", fi, err)
			}
			if ents, _ := os.ReadDir(filepath.Dir(link)); len(ents) != 1 {
				t.Errorf("%s holds %d entries, want only the symlink", filepath.Dir(link), len(ents))
			}
		})
	}
}

// TestSysctlRefusesSymlink: a symlink at PATH.sysctl is neither written
// through nor read through.
func TestSysctlRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	for name, target := range map[string]string{
		"to a file": precious(t, dir),
		"dangling":  filepath.Join(dir, "nowhere"),
	} {
		t.Run(name, func(t *testing.T) {
			s := newTest(t)
			link := s.Path() + ".sysctl"
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			_, statErr := os.Stat(target)
			var before [32]byte
			if statErr == nil {
				before = fileHash(t, target)
			}
			err := s.SetSysctlAdded([]Range{{Lo: 5000, Hi: 5009}}, "boot", 42)
			wantUnsafe(t, "SetSysctlAdded", err, link, "symbolic link", "write sysctl bookkeeping")
			_, _, _, err = s.SysctlAdded()
			wantUnsafe(t, "SysctlAdded", err, link, "symbolic link", "read sysctl bookkeeping")
			if statErr == nil {
				if fileHash(t, target) != before {
					t.Errorf("the symlink's target %s changed", target)
				}
			} else if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the symlink's target %s was created (%v)", target, err)
			}
		})
	}
}

// TestSysctlRefusesFIFO: a FIFO at PATH.sysctl is refused at once, not
// waited on.
func TestSysctlRefusesFIFO(t *testing.T) {
	s := newTest(t)
	fifo := s.Path() + ".sysctl"
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := s.SysctlAdded()
	wantUnsafe(t, "SysctlAdded", err, fifo, "FIFO")
	err = s.SetSysctlAdded(nil, "boot", 1)
	wantUnsafe(t, "SetSysctlAdded", err, fifo, "FIFO")
}

// TestOpenRefusesForeignOwner: a database or PATH.sysctl owned by another
// uid is refused, naming the owner, and left unchanged.
func TestOpenRefusesForeignOwner(t *testing.T) {
	requireRoot(t)
	testutil.CheckFDLeak(t)
	const nobody = 65534
	path := filepath.Join(t.TempDir(), "portres.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetSysctlAdded([]Range{{Lo: 5000, Hi: 5009}}, "boot", 42); err != nil {
		t.Fatal(err)
	}
	s.Close()

	if err := os.Chown(path, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	before := fileHash(t, path)
	for _, o := range []Options{{}, {Repair: true}} {
		s, err := OpenWithOptions(path, o)
		if err == nil {
			s.Close()
			t.Fatalf("OpenWithOptions(%+v) accepted a store owned by uid %d", o, nobody)
		}
		wantUnsafe(t, fmt.Sprintf("OpenWithOptions(%+v)", o), err, path, fmt.Sprintf("owned by uid %d", nobody), "want a regular file owned by uid 0")
	}
	if fileHash(t, path) != before {
		t.Errorf("Open changed a file it refused")
	}
	if err := os.Chown(path, 0, 0); err != nil {
		t.Fatal(err)
	}

	sysctl := path + ".sysctl"
	if err := os.Chown(sysctl, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	before = fileHash(t, sysctl)
	s = openTest(t, path)
	_, _, _, err = s.SysctlAdded()
	wantUnsafe(t, "SysctlAdded", err, sysctl, fmt.Sprintf("owned by uid %d", nobody))
	err = s.SetSysctlAdded(nil, "other", 1)
	wantUnsafe(t, "SetSysctlAdded", err, sysctl, fmt.Sprintf("owned by uid %d", nobody))
	if fileHash(t, sysctl) != before {
		t.Errorf("SetSysctlAdded changed a file it refused")
	}
}

// TestOpenRefusesWritableByOthers: a database writable by group or
// others is refused.
func TestOpenRefusesWritableByOthers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "portres.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Chmod(path, 0o620); err != nil {
		t.Fatal(err)
	}
	_, err = Open(path)
	wantUnsafe(t, "Open", err, path, "writable by group or others")
}

// TestOpenPinsInode: once a sequence of opens has seen a file, another
// file at the same path is refused.
func TestOpenPinsInode(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var id fileID
	f, err := openOwned("open", a, os.O_RDONLY, 0, &id)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Rename(b, a); err != nil {
		t.Fatal(err)
	}
	_, err = openOwned("open", a, os.O_RDONLY, 0, &id)
	wantUnsafe(t, "second open", err, a, "replaced")
}

// TestBoltOpenerRefusesSymlink: bbolt's own open, read-write or
// read-only, goes through the store's opener and refuses a symlink, so
// the store never depends on its Lstat alone.
func TestBoltOpenerRefusesSymlink(t *testing.T) {
	testutil.CheckFDLeak(t)
	dir := t.TempDir()
	target := precious(t, dir)
	before := fileHash(t, target)
	link := filepath.Join(dir, "portres.db")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, readOnly := range []bool{false, true} {
		var id fileID
		db, err := bolt.Open(link, 0o600, &bolt.Options{ReadOnly: readOnly, Timeout: lockTimeout, OpenFile: id.opener("open")})
		if err == nil {
			db.Close()
			t.Fatalf("bolt.Open(symlink, ReadOnly %v) succeeded", readOnly)
		}
		wantUnsafe(t, fmt.Sprintf("bolt.Open(ReadOnly %v)", readOnly), err, link, "symbolic link")
	}
	if err := verify(link, new(fileID)); !errors.Is(err, ErrUnsafeFile) {
		t.Errorf("verify(symlink) = %v, want ErrUnsafeFile", err)
	}
	if fileHash(t, target) != before {
		t.Errorf("the symlink's target changed")
	}
}
