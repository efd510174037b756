//go:build linux

package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/portres/portres/internal/enforce"
)

// Range is an inclusive port range, the type enforce.ReservedPorts works
// with, so the sysctl bookkeeping passes between the two unconverted.
type Range = enforce.Range

// Errors returned by the store, wrapped with the operation (and the
// file, for Open and Check); test with errors.Is.
var (
	// ErrNotFound: no persistent reservation with exactly that
	// protocol, start and count.
	ErrNotFound = errors.New("store: no such persistent reservation")
	// ErrExists: a persistent reservation with exactly that protocol,
	// start and count is already stored.
	ErrExists = errors.New("store: persistent reservation already exists")
	// ErrOverlap: the block overlaps a different stored block of the same
	// protocol. The broker checks overlap itself; the store refuses it
	// too so that its invariants hold whatever the caller does.
	ErrOverlap = errors.New("store: persistent reservation overlaps another")
	// ErrTokenInUse: another persistent reservation has the same token.
	ErrTokenInUse = errors.New("store: token already used by another persistent reservation")
	// ErrInvalid: an argument the schema cannot hold (protocol other
	// than 6 or 17, start or count 0, a block past 65535, token 0,
	// lo > hi).
	ErrInvalid = errors.New("store: invalid argument")
	// ErrForeign: the file is not a portres store (not a bbolt database,
	// or one without portres's magic and schema). Open leaves it untouched.
	ErrForeign = errors.New("store: not a portres store")
	// ErrCorrupt: the file is a portres store but fails the bbolt
	// consistency check or the schema invariants, or one of its meta
	// pages is damaged (then the error is a *MetaPageError).
	// Open leaves it untouched.
	ErrCorrupt = errors.New("store: corrupt portres store")
	// ErrLocked: another process (another portresd?) holds the store.
	ErrLocked = errors.New("store: locked by another process")
)

// lockTimeout is how long Open waits for another process's flock.
var lockTimeout = time.Second

// Store is an open portres store. Its methods are safe for concurrent use.
type Store struct {
	path       string
	db         *bolt.DB
	sysctlFile *os.File // PATH.sysctl, opened on first SetSysctlAdded
	repaired   *Repair  // what OpenWithOptions repaired, if anything
}

// Open opens the store at path, creating it (and missing parent
// directories, mode 0700; the file 0600) if it does not exist. It is
// OpenWithOptions with the zero Options: no repair.
//
// An existing file is verified read-only before it is opened for
// writing; Open returns ErrForeign or ErrCorrupt, naming the path and
// leaving the file unchanged, if it is not a sound portres store (a
// *MetaPageError if one of bbolt's meta pages is damaged), ErrUnsafeFile
// if path is a symlink or not a regular file owned by the effective uid
// and writable by nobody else, and ErrLocked if another process holds it
// for more than a second.
func Open(path string) (*Store, error) {
	return OpenWithOptions(path, Options{})
}

// OpenWithOptions is Open with options: with o.Repair, a store one of
// whose meta pages is damaged is opened at the intact one's transaction
// and the damaged page rewritten (see Options.Repair and Store.Repaired).
func OpenWithOptions(path string, o Options) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	info, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := create(path); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	case info.Mode()&fs.ModeSymlink != 0:
		return nil, symlinkError("open", path)
	case !info.Mode().IsRegular():
		return nil, fmt.Errorf("%w: %s: not a regular file (%s)", ErrForeign, path, info.Mode().Type())
	case info.Size() == 0:
		return nil, fmt.Errorf("%w: %s: empty file; portres never leaves one, refusing to use it", ErrForeign, path)
	}
	// Every open below goes through id: no symlink, owned by us, and the
	// same inode the read-only verification passed.
	var id fileID
	err = verify(path, &id)
	var damage *MetaPageError
	if err != nil && !(o.Repair && errors.As(err, &damage)) {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout, OpenFile: id.opener("open")})
	if err != nil {
		return nil, openError(path, err)
	}
	s := &Store{path: path, db: db}
	// The file could have changed since verify: recheck the magic and,
	// now under the exclusive lock, the meta pages.
	if err := db.View(checkMeta); err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrForeign, path, err)
	}
	err = checkMetaFile(path, id.file, db.Info().PageSize)
	switch {
	case err == nil:
	case o.Repair && errors.As(err, &damage):
		err = s.repair(damage, id.file)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Path returns the file the store lives in.
func (s *Store) Path() string { return s.path }

// Close releases the database and its lock.
func (s *Store) Close() error {
	if s.sysctlFile != nil {
		s.sysctlFile.Close()
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", s.path, err)
	}
	return nil
}

// create builds a new store under a temporary name next to path and links
// it into place, so that path never holds a half-made store. If path
// appeared meanwhile, create leaves it alone and returns nil: Open then
// verifies whatever is there.
func create(path string) error {
	var id fileID
	tmp, err := createTemp(path, &id)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: lockTimeout, OpenFile: id.opener("create")})
	if err != nil {
		return fmt.Errorf("store: create %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketPersistent, bucketDynamic, bucketSysctl} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keyMagic, []byte(magic)); err != nil {
			return err
		}
		return meta.Put(keySchema, be32(schemaVersion))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("store: create %s: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("store: create %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// createTemp creates an empty file next to path, named after it, with
// O_EXCL and openFlags, checks it with openOwned's rules, pins it in id
// and returns its name.
func createTemp(path string, id *fileID) (string, error) {
	for range 100 {
		tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.new-%016x", filepath.Base(path), rand.Uint64()))
		f, err := openOwned("create", tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600, id)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if errors.Is(err, ErrUnsafeFile) { // created, then refused
			os.Remove(tmp)
		}
		if err != nil {
			return "", fileError("create", path, err)
		}
		f.Close()
		return tmp, nil
	}
	return "", fmt.Errorf("store: create %s: no free temporary name in %s", path, filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: sync %s: %w", dir, err)
	}
	return nil
}

// verify opens path read-only, through id, and checks that it is a
// sound portres store: the magic and schema (ErrForeign), then the page
// structure (walkPages), bbolt's check and the schema invariants
// (ErrCorrupt), then that both meta pages are intact (*MetaPageError).
// Nothing is written. A fault while reading a damaged mapping is turned
// into ErrCorrupt rather than a crash.
func verify(path string, id *fileID) (err error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout, OpenFile: id.opener("open")})
	if err != nil {
		return openError(path, err)
	}
	defer db.Close()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: reading the database failed: %v", ErrCorrupt, path, r)
		}
	}()
	return db.View(func(tx *bolt.Tx) error {
		st, err := id.file.Stat()
		if err != nil {
			return fmt.Errorf("store: open %s: %w", path, err)
		}
		if tx.Size() > st.Size() {
			return fmt.Errorf("%w: %s: truncated: %d bytes, the database needs %d", ErrCorrupt, path, st.Size(), tx.Size())
		}
		if err := checkMeta(tx); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrForeign, path, err)
		}
		// Ours: small enough to read whole, through the descriptor bbolt
		// opened. The shared lock keeps writers out.
		data, err := io.ReadAll(io.NewSectionReader(id.file, 0, st.Size()))
		if err != nil {
			return fmt.Errorf("store: open %s: %w", path, err)
		}
		pageSize := db.Info().PageSize
		if err := walkPages(data, pageSize, uint64(tx.ID())); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
		}
		if err := checkTx(tx); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
		}
		// Last, so that a store whose intact transaction is itself
		// unsound is not offered for repair.
		return checkMetaPages(path, metaPages(data, pageSize), pageSize)
	})
}

// openError classifies an error of bolt.Open on an existing file.
func openError(path string, err error) error {
	var errno syscall.Errno
	var perr *fs.PathError
	switch {
	case errors.Is(err, ErrUnsafeFile):
		return err
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("%w: %s: another portresd running? (%w)", ErrLocked, path, err)
	case errors.Is(err, berrors.ErrChecksum):
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	case errors.As(err, &errno), errors.As(err, &perr):
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	return fmt.Errorf("%w: %s: not a bbolt database, refusing to touch it: %w", ErrForeign, path, err)
}
