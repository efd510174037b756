//go:build linux

package store

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/portres/portres/internal/testutil"
)

// openTest opens the store at path and, when the test ends, runs Check
// on it (bbolt's PostTestCleanup idea) and closes it.
func openTest(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Check(); err != nil && !errors.Is(err, berrors.ErrDatabaseNotOpen) {
			t.Errorf("Check at cleanup: %v", err)
		}
		s.Close()
	})
	return s
}

func newTest(t *testing.T) *Store {
	t.Helper()
	return openTest(t, filepath.Join(t.TempDir(), "state", "portres.db"))
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// mustRefuse opens path, expecting one of the given errors naming the
// path, and checks that the file is unchanged.
func mustRefuse(t *testing.T, path string, want ...error) {
	t.Helper()
	before := fileHash(t, path)
	s, err := Open(path)
	if err == nil {
		s.Close()
		t.Fatalf("Open(%s) succeeded, want %v", path, want)
	}
	ok := false
	for _, w := range want {
		ok = ok || errors.Is(err, w)
	}
	if !ok || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open(%s) = %v, want one of %v naming the path", path, err, want)
	}
	t.Logf("refused: %v", err)
	if fileHash(t, path) != before {
		t.Fatalf("Open(%s) changed the file", path)
	}
}

func TestOpenCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "portres.db")
	openTest(t, path)
	for p, want := range map[string]os.FileMode{dir: os.ModeDir | 0o700, path: 0o600} {
		if fi, err := os.Stat(p); err != nil || fi.Mode() != want {
			t.Errorf("%s: mode %v (%v), want %v", p, fi.Mode(), err, want)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("%s holds %d entries, want only the store (temporary left behind?)", dir, len(ents))
	}
}

func TestReopenKeepsState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "portres.db")
	s := openTest(t, path)
	created := time.Now()
	p := Persistent{Proto: 6, Start: 5000, Count: 20, Token: 0xdeadbeef12345678, Created: created, UID: 1000}
	if err := s.AddPersistent(p); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDynamicRange(17, 40000, 45000); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, path)
	got, err := s.LookupPersistent(6, 5000, 20)
	if err != nil || got.Token != p.Token || got.UID != p.UID || !got.Created.Equal(created) {
		t.Fatalf("after reopen: %v, %v; want %v", got, err, p)
	}
	if lo, hi, ok, err := s.DynamicRange(17); lo != 40000 || hi != 45000 || !ok || err != nil {
		t.Fatalf("after reopen: dynamic range %d-%d %v %v", lo, hi, ok, err)
	}
}

func TestOpenRefusesForeignBolt(t *testing.T) {
	testutil.CheckFDLeak(t) // refusing must not leak the file or its mapping
	for name, setup := range map[string]func(tx *bolt.Tx) error{
		"other buckets": func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket([]byte("widgets"))
			if err != nil {
				return err
			}
			return b.Put([]byte("foo"), []byte("bar"))
		},
		"empty": func(tx *bolt.Tx) error { return nil },
		"other magic": func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			return b.Put(keyMagic, []byte("someone-else"))
		},
		"newer schema": func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			b.Put(keyMagic, []byte(magic))
			return b.Put(keySchema, be32(schemaVersion+1))
		},
	} {
		// NoFreelistSync: a read-write bolt.Open would rewrite such a file.
		for _, noFreelistSync := range []bool{false, true} {
			path := filepath.Join(t.TempDir(), "foreign.db")
			db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: noFreelistSync})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(setup); err != nil {
				t.Fatal(err)
			}
			db.Close()
			t.Run(name, func(t *testing.T) { mustRefuse(t, path, ErrForeign) })
		}
	}
}

func TestOpenRefusesGarbage(t *testing.T) {
	testutil.CheckFDLeak(t) // refusing must not leak the file or its mapping
	random := make([]byte, 64<<10)
	rand.Read(random)
	for name, content := range map[string][]byte{
		"random": random,
		"text":   []byte("[portres]\nstate = /var/lib/portres\n"),
		"zeros":  make([]byte, 16<<10),
		"empty":  nil,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "portres.db")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			mustRefuse(t, path, ErrForeign, ErrCorrupt)
		})
	}
	dir := t.TempDir()
	if _, err := Open(dir); !errors.Is(err, ErrForeign) {
		t.Errorf("Open(a directory) = %v, want ErrForeign", err)
	}
}

// TestOpenRefusesDamagedStore damages a real store: truncated, and with
// a data page overwritten.
func TestOpenRefusesDamagedStore(t *testing.T) {
	testutil.CheckFDLeak(t) // refusing must not leak the file or its mapping
	path := filepath.Join(t.TempDir(), "portres.db")
	s := openTest(t, path)
	err := s.db.Update(func(tx *bolt.Tx) error { // one commit: 2000 fsyncs are slow under -race
		for i := range 2000 {
			p := Persistent{Proto: 6, Start: uint16(1 + 2*i), Count: 1, Token: uint64(i + 1)}
			if err := tx.Bucket(bucketPersistent).Put(persistentKey(6, p.Start, 1), persistentValue(p)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("store of %d bytes", len(good))

	os.WriteFile(path, good[:len(good)/2], 0o600)
	mustRefuse(t, path, ErrCorrupt)

	// Every page in turn keeps its id and gets garbage after it: 0xff
	// (65535 elements, 2^32-1 overflow pages) or random bytes. Open must
	// refuse the file untouched or, for a page nothing reaches, accept a
	// store that passes Check. Never a crash, never a runaway check.
	const page = 4096
	refused, tried := 0, 0
	for i := range 2 * (len(good)/page - 2) {
		pg, from := 2+i/2, 10
		garbage := bytes.Repeat([]byte{0xff}, page)
		if i%2 == 1 {
			from = 8
			rand.Read(garbage)
		}
		tried++
		damaged := bytes.Clone(good)
		copy(damaged[pg*page+from:(pg+1)*page], garbage)
		os.WriteFile(path, damaged, 0o600)
		before := fileHash(t, path)
		s, err := Open(path)
		switch {
		case err == nil:
			if err := s.Check(); err != nil {
				t.Errorf("page %d damaged: Open accepted a store that fails Check: %v", pg, err)
			}
			s.Close()
		case !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrForeign):
			t.Errorf("page %d damaged: Open = %v, want ErrCorrupt", pg, err)
		case fileHash(t, path) != before:
			t.Errorf("page %d damaged: Open changed the file", pg)
		default:
			refused++
		}
	}
	t.Logf("%d of %d damaged pages refused", refused, tried)
}

func TestOpenLocked(t *testing.T) {
	testutil.CheckFDLeak(t) // refusing must not leak the file or its mapping
	defer func(d time.Duration) { lockTimeout = d }(lockTimeout)
	lockTimeout = 200 * time.Millisecond
	s := newTest(t)
	start := time.Now()
	s2, err := Open(s.Path())
	if err == nil {
		s2.Close()
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), s.Path()) {
		t.Fatalf("second Open = %v, want ErrLocked naming the path", err)
	}
	t.Logf("refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
}
