//go:build linux

package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/portres/portres/internal/testutil"
)

// metaStore makes a store holding persistent block A, then block B in a
// later transaction, and returns its path, its bytes, the page size and
// which meta page holds the newest transaction (the one with B).
func metaStore(t *testing.T) (path string, good []byte, pageSize, newest int) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "portres.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []Persistent{tcp(5000, 10, 1), tcp(6000, 10, 2)} {
		if err := s.AddPersistent(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if good, err = os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	pageSize = int(ne.Uint32(good[pageHeaderSize+8:]))
	m := metaPages(good, pageSize)
	if err := checkMetaPages(path, m, pageSize); err != nil {
		t.Fatalf("fresh store: %v", err)
	}
	if m[1].txid > m[0].txid {
		newest = 1
	}
	t.Logf("page size %d, meta page 0 txid %d, meta page 1 txid %d", pageSize, m[0].txid, m[1].txid)
	return path, good, pageSize, newest
}

// damageMeta writes 8 bytes of 0xff at byte off of the meta struct of
// meta page pg in a copy of good, stores it at path and returns the
// intact page's txid.
func damageMeta(t *testing.T, path string, good []byte, pageSize, pg, off int) uint64 {
	t.Helper()
	damaged := bytes.Clone(good)
	at := pg*pageSize + pageHeaderSize + off
	copy(damaged[at:at+8], bytes.Repeat([]byte{0xff}, 8))
	if err := os.WriteFile(path, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	return readMeta(good, uint64((1-pg)*pageSize)).txid
}

// holds reports which of blocks A and B the store at path holds, and
// that it passes Check.
func holds(t *testing.T, s *Store) (a, b bool) {
	t.Helper()
	if err := s.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
	_, errA := s.LookupPersistent(6, 5000, 10)
	_, errB := s.LookupPersistent(6, 6000, 10)
	for _, err := range []error{errA, errB} {
		if err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
	}
	return errA == nil, errB == nil
}

// TestMetaPageDamageRefused reproduces the silent rollback: damage in the
// newest meta page makes bbolt open the previous transaction without a
// word. Open must refuse the store, whichever meta page is damaged and
// wherever in the meta struct, naming the page, the intact txid and the
// way to recover, and leave the file unchanged.
func TestMetaPageDamageRefused(t *testing.T) {
	testutil.CheckFDLeak(t) // refusing must not leak the file or its mapping
	path, good, pageSize, newest := metaStore(t)

	// What bbolt alone does: B, acknowledged, silently gone.
	damageMeta(t, path, good, pageSize, newest, 16)
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("bbolt refused the damaged file itself (%v): this test no longer shows the rollback", err)
	}
	db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketPersistent).Get(persistentKey(6, 6000, 10)) != nil {
			t.Errorf("bbolt still sees B after meta page %d was damaged: no rollback to guard against?", newest)
		}
		return nil
	})
	db.Close()

	for _, pg := range []int{newest, 1 - newest} {
		for off, field := range map[int]string{0: "magic and version", 8: "page size and flags", 16: "root",
			40: "high-water mark", 48: "txid", 56: "checksum"} {
			t.Run(fmt.Sprintf("page %d %s", pg, field), func(t *testing.T) {
				intact := damageMeta(t, path, good, pageSize, pg, off)
				before := fileHash(t, path)
				s, err := Open(path)
				if err == nil {
					s.Close()
					t.Fatalf("Open accepted a store with meta page %d damaged", pg)
				}
				var me *MetaPageError
				if !errors.Is(err, ErrCorrupt) || !errors.As(err, &me) {
					t.Fatalf("Open = %v, want a *MetaPageError wrapping ErrCorrupt", err)
				}
				if me.DamagedPage != pg || me.IntactPage != 1-pg || me.IntactTxid != intact || me.Path != path {
					t.Errorf("MetaPageError %+v, want damaged page %d, intact page %d at txid %d", me, pg, 1-pg, intact)
				}
				msg := err.Error()
				for _, want := range []string{path, fmt.Sprintf("meta page %d is damaged", pg),
					fmt.Sprintf("txid %d", intact), RepairFlag, "backup"} {
					if !strings.Contains(msg, want) {
						t.Errorf("message lacks %q: %s", want, msg)
					}
				}
				if fileHash(t, path) != before {
					t.Errorf("Open changed the file")
				}
				if off == 16 && pg == newest {
					t.Logf("refused: %v", err)
				}
			})
		}
	}
}

// TestMetaPageRepair: with Options.Repair, a store with a damaged meta
// page opens at the intact transaction, passes Check, reports what it
// kept, and opens afterwards without repair.
func TestMetaPageRepair(t *testing.T) {
	testutil.CheckFDLeak(t)
	path, good, pageSize, newest := metaStore(t)
	for _, tc := range []struct {
		name   string
		page   int
		wantB  bool
		offset int
	}{
		{"newest damaged", newest, false, 16},
		{"older damaged", 1 - newest, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			intact := damageMeta(t, path, good, pageSize, tc.page, tc.offset)
			s, err := OpenWithOptions(path, Options{Repair: true})
			if err != nil {
				t.Fatalf("OpenWithOptions(Repair) = %v", err)
			}
			r := s.Repaired()
			if r == nil {
				s.Close()
				t.Fatal("Repaired() = nil after repairing")
			}
			t.Logf("repaired: %v", r)
			if r.DamagedPage != tc.page || r.KeptTxid != intact || r.CommitTxid != intact+1 || r.Problem == "" {
				t.Errorf("Repaired() = %+v, want page %d, kept txid %d, commit txid %d", r, tc.page, intact, intact+1)
			}
			if !strings.Contains(r.String(), fmt.Sprintf("kept txid %d", intact)) {
				t.Errorf("Repair.String() = %q lacks the kept txid", r)
			}
			if a, b := holds(t, s); !a || b != tc.wantB {
				t.Errorf("after repair: holds A %v, B %v; want A true, B %v", a, b, tc.wantB)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s, err = Open(path)
			if err != nil {
				t.Fatalf("plain Open after repair = %v", err)
			}
			defer s.Close()
			if s.Repaired() != nil {
				t.Errorf("plain Open: Repaired() = %v, want nil", s.Repaired())
			}
			if a, b := holds(t, s); !a || b != tc.wantB {
				t.Errorf("reopened: holds A %v, B %v; want A true, B %v", a, b, tc.wantB)
			}
		})
	}

	t.Run("intact store", func(t *testing.T) {
		os.WriteFile(path, good, 0o600)
		before := fileHash(t, path)
		s, err := OpenWithOptions(path, Options{Repair: true})
		if err != nil {
			t.Fatal(err)
		}
		if s.Repaired() != nil {
			t.Errorf("Repaired() = %v on an intact store", s.Repaired())
		}
		if a, b := holds(t, s); !a || !b {
			t.Errorf("holds A %v, B %v; want both", a, b)
		}
		s.Close()
		if fileHash(t, path) != before {
			t.Errorf("Repair changed an intact store")
		}
	})

	t.Run("both damaged", func(t *testing.T) {
		damaged := bytes.Clone(good)
		for pg := range 2 {
			copy(damaged[pg*pageSize+pageHeaderSize+16:], bytes.Repeat([]byte{0xff}, 8))
		}
		os.WriteFile(path, damaged, 0o600)
		mustRefuseWith(t, path, Options{Repair: true}, ErrCorrupt, ErrForeign)
	})

	t.Run("truncated", func(t *testing.T) {
		damageMeta(t, path, good, pageSize, newest, 16)
		b, _ := os.ReadFile(path)
		os.WriteFile(path, b[:3*pageSize], 0o600)
		mustRefuseWith(t, path, Options{Repair: true}, ErrCorrupt)
	})
}

// mustRefuseWith is mustRefuse for OpenWithOptions.
func mustRefuseWith(t *testing.T, path string, o Options, want ...error) {
	t.Helper()
	before := fileHash(t, path)
	s, err := OpenWithOptions(path, o)
	if err == nil {
		s.Close()
		t.Fatalf("OpenWithOptions(%s, %+v) succeeded, want %v", path, o, want)
	}
	ok := false
	for _, w := range want {
		ok = ok || errors.Is(err, w)
	}
	if !ok || !strings.Contains(err.Error(), path) {
		t.Fatalf("OpenWithOptions(%s, %+v) = %v, want one of %v naming the path", path, o, err, want)
	}
	t.Logf("refused: %v", err)
	if fileHash(t, path) != before {
		t.Fatalf("OpenWithOptions(%s, %+v) changed the file", path, o)
	}
}
