//go:build linux

package store

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestDynamicRange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "portres.db")
	s := openTest(t, path)
	if lo, hi, ok, err := s.DynamicRange(6); ok || lo != 0 || hi != 0 || err != nil {
		t.Fatalf("DynamicRange before any set = %d, %d, %v, %v", lo, hi, ok, err)
	}
	for _, set := range [][3]uint16{{6, 49152, 65535}, {17, 1025, 1279}, {6, 32768, 60999}} {
		if err := s.SetDynamicRange(uint8(set[0]), set[1], set[2]); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openTest(t, path)
	for proto, want := range map[uint8][2]uint16{6: {32768, 60999}, 17: {1025, 1279}} {
		if lo, hi, ok, err := s.DynamicRange(proto); !ok || lo != want[0] || hi != want[1] || err != nil {
			t.Errorf("DynamicRange(%d) = %d, %d, %v, %v; want %v", proto, lo, hi, ok, err, want)
		}
	}
	for _, bad := range [][3]uint16{{6, 2000, 1999}, {1, 1, 2}, {0, 1, 2}} {
		if err := s.SetDynamicRange(uint8(bad[0]), bad[1], bad[2]); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetDynamicRange%v = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestSysctlAdded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "portres.db")
	s := openTest(t, path)
	if added, boot, netns, err := s.SysctlAdded(); added != nil || boot != "" || netns != 0 || err != nil {
		t.Fatalf("SysctlAdded before any set = %v, %q, %d, %v", added, boot, netns, err)
	}
	const bootID = "0b7a1e6c-3f0e-4b8e-9c55-8c1c7f5d2a10"
	in := []Range{{Lo: 3000, Hi: 3010}, {Lo: 2000, Hi: 2000}, {Lo: 2001, Hi: 2005}, {Lo: 65535, Hi: 65535}}
	if err := s.SetSysctlAdded(in, bootID, 4026531840); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, path)
	added, boot, netns, err := s.SysctlAdded()
	want := []Range{{Lo: 2000, Hi: 2005}, {Lo: 3000, Hi: 3010}, {Lo: 65535, Hi: 65535}}
	if !slices.Equal(added, want) || boot != bootID || netns != 4026531840 || err != nil {
		t.Fatalf("SysctlAdded = %v, %q, %d, %v; want %v", added, boot, netns, err, want)
	}
	if err := s.SetSysctlAdded(nil, bootID, 1); err != nil {
		t.Fatal(err)
	}
	if added, _, netns, err := s.SysctlAdded(); len(added) != 0 || netns != 1 || err != nil {
		t.Fatalf("after clearing: %v, %d, %v", added, netns, err)
	}
}

// TestSysctlRecordShrinks: a shorter record written over a longer one in
// place reads back as itself, and a damaged record is an error, not a
// guess.
func TestSysctlRecordShrinks(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "portres.db"))
	long := []Range{{Lo: 1000, Hi: 1001}, {Lo: 2000, Hi: 2001}, {Lo: 3000, Hi: 3001}, {Lo: 40000, Hi: 40100}}
	if err := s.SetSysctlAdded(long, "boot-a", 7); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSysctlAdded([]Range{{Lo: 5, Hi: 6}}, "b", 8); err != nil {
		t.Fatal(err)
	}
	added, boot, netns, err := s.SysctlAdded()
	if err != nil || boot != "b" || netns != 8 || len(added) != 1 || added[0] != (Range{Lo: 5, Hi: 6}) {
		t.Fatalf("after shrinking: %v %q %d %v", added, boot, netns, err)
	}
	if err := os.WriteFile(s.Path()+".sysctl", []byte("portres-sysctl-1 999\nshort"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.SysctlAdded(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("damaged record: %v, want ErrCorrupt", err)
	}
}
