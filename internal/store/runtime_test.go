//go:build linux

package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRuntimeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "portres.sock.runtime")
	const boot = "6f1d2b7e-0000-4000-8000-000000000001"
	rt, recs, err := OpenRuntime(path, boot, 42)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 0 {
		t.Fatalf("new file restores %v", recs)
	}
	a := RuntimeRecord{Token: 0xa1, Proto: 6, Flags: RuntimeAdmin, Start: 40000, Count: 10, PID: 123, UID: 1000, GID: 100,
		StartTime: 987654, Created: 1700000000123456789, Command: "nginx -g daemon off;"}
	b := RuntimeRecord{Token: 0xb2, Proto: 17, Flags: RuntimeDelegated, Start: 5000, Count: 1, PID: 456, StartTime: 1,
		Command: string(make([]byte, 200))} // cut to what a slot holds
	c := RuntimeRecord{Token: 0xc3, Proto: 6, Start: 1, Count: 65535, PID: 7, StartTime: 2}
	sa, err := rt.Put(&a)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := rt.Put(&b)
	sc, _ := rt.Put(&c)
	if err := rt.Clear(sb); err != nil {
		t.Fatal(err)
	}
	if s, _ := rt.Put(&b); s != sb {
		t.Errorf("a cleared slot is reused first: got slot %d, want %d", s, sb)
	}
	rt.Clear(sc)
	rt.Close()

	// A slot torn by a crash mid-write reads as empty.
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	f.WriteAt([]byte{0xff}, int64(sa)*runtimeSlot+20)
	f.Close()
	rt, recs, err = OpenRuntime(path, boot, 42)
	if err != nil {
		t.Fatal(err)
	}
	b.Command = b.Command[:runtimeCmdMax]
	if len(recs) != 1 || recs[sb] != b {
		t.Errorf("reopened: %v, want only slot %d = %v", recs, sb, b)
	}
	// Torn and cleared slots are reused, lowest first.
	if s, _ := rt.Put(&a); s != sa {
		t.Errorf("Put after reopen: slot %d, want %d", s, sa)
	}
	rt.Close()
	if _, recs, _ := OpenRuntime(path, boot, 42); recs[sa] != a {
		t.Errorf("record read back: %+v, want %+v", recs[sa], a)
	}

	// Another boot or network namespace restores nothing, and resets.
	for _, o := range []struct {
		boot  string
		netns uint64
	}{{"another-boot", 42}, {boot, 43}} {
		rt, recs, err := OpenRuntime(path, o.boot, o.netns)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 0 {
			t.Errorf("boot %q netns %d restores %v", o.boot, o.netns, recs)
		}
		rt.Close()
	}
	if fi, _ := os.Stat(path); fi.Size() != runtimeSlot {
		t.Errorf("reset file is %d bytes, want the header alone", fi.Size())
	}
}

func TestRuntimeFileRefusesUnsafe(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	os.WriteFile(target, []byte("precious"), 0o600)
	link := filepath.Join(dir, "runtime")
	os.Symlink(target, link)
	if _, _, err := OpenRuntime(link, "b", 1); !errors.Is(err, ErrUnsafeFile) {
		t.Errorf("symlink: %v, want ErrUnsafeFile", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "precious" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	open := filepath.Join(dir, "open")
	os.WriteFile(open, nil, 0o666)
	os.Chmod(open, 0o666)
	if _, _, err := OpenRuntime(open, "b", 1); !errors.Is(err, ErrUnsafeFile) {
		t.Errorf("world-writable file: %v, want ErrUnsafeFile", err)
	}
}
