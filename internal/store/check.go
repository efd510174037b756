//go:build linux

package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/portres/portres/internal/enforce"
)

const (
	magic         = "portres-store"
	schemaVersion = uint32(1)
	maxProblems   = 10 // problems Check reports before it stops listing
)

var (
	bucketMeta       = []byte("meta")
	bucketPersistent = []byte("persistent")
	bucketDynamic    = []byte("dynamic")
	bucketSysctl     = []byte("sysctl")
	// bucketFleet marks the persistent reservations that are fleet
	// blocks (keys as in bucketPersistent, empty values). Made by the
	// first fleet block: a store without it has none.
	bucketFleet = []byte("fleet")

	keyMagic  = []byte("magic")
	keySchema = []byte("schema")
	keyAdded  = []byte("added")
	keyNetNS  = []byte("netns")
)

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// Check runs bbolt's consistency check and the schema invariants listed
// in the package documentation. Returns ErrCorrupt, listing the first
// problems found, if any fails.
func (s *Store) Check() error {
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := checkMeta(tx); err != nil {
			return err
		}
		return checkTx(tx)
	})
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, s.path, err)
	}
	return nil
}

// checkMeta verifies the magic and schema version.
func checkMeta(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return errors.New(`bbolt database without a "meta" bucket`)
	}
	if m := meta.Get(keyMagic); !bytes.Equal(m, []byte(magic)) {
		return fmt.Errorf("meta magic %q, want %q", m, magic)
	}
	v := meta.Get(keySchema)
	if len(v) != 4 {
		return fmt.Errorf("meta schema %x is not a uint32", v)
	}
	if got := binary.BigEndian.Uint32(v); got != schemaVersion {
		return fmt.Errorf("schema version %d, this portres reads %d", got, schemaVersion)
	}
	return nil
}

// checkTx runs bbolt's page-level check and the schema invariants.
func checkTx(tx *bolt.Tx) error {
	var problems []error
	add := func(format string, args ...any) {
		if len(problems) < maxProblems {
			problems = append(problems, fmt.Errorf(format, args...))
		}
	}
	for err := range tx.Check() { // drain fully: Check closes the channel when done
		add("bbolt: %w", err)
	}
	if len(problems) > 0 { // do not walk a damaged tree
		return errors.Join(problems...)
	}
	for _, name := range [][]byte{bucketPersistent, bucketDynamic, bucketSysctl} {
		if tx.Bucket(name) == nil {
			add("bucket %q missing", name)
		}
	}
	if len(problems) > 0 {
		return errors.Join(problems...)
	}

	tokens := make(map[uint64]Persistent)
	var prev Persistent
	tx.Bucket(bucketPersistent).ForEach(func(k, v []byte) error {
		p, err := decodePersistent(k, v)
		if err != nil {
			add("persistent %x: %w", k, err)
			return nil
		}
		if err := p.validate(); err != nil {
			add("persistent %v: %w", p, err)
		}
		if prev.Count != 0 && prev.Proto == p.Proto && int(p.Start) <= prev.last() {
			add("persistent %v overlaps %v", p, prev)
		}
		if q, dup := tokens[p.Token]; dup {
			add("persistent %v has the token of %v", p, q)
		}
		tokens[p.Token], prev = p, p
		return nil
	})
	if fb := tx.Bucket(bucketFleet); fb != nil {
		fb.ForEach(func(k, _ []byte) error {
			if tx.Bucket(bucketPersistent).Get(k) == nil {
				add("fleet mark %x has no persistent reservation", k)
			}
			return nil
		})
	}
	tx.Bucket(bucketDynamic).ForEach(func(k, v []byte) error {
		if len(k) != 1 || !validProto(k[0]) || len(v) != 4 {
			add("dynamic %x=%x: bad encoding", k, v)
		} else if lo, hi := binary.BigEndian.Uint16(v), binary.BigEndian.Uint16(v[2:]); lo > hi {
			add("dynamic range of proto %d: %d > %d", k[0], lo, hi)
		}
		return nil
	})
	sc := tx.Bucket(bucketSysctl)
	if v := sc.Get(keyAdded); v != nil {
		if rs, err := decodeRanges(v); err != nil {
			add("sysctl added: %w", err)
		} else if !slices.Equal(enforce.MergeRanges(rs), rs) {
			add("sysctl added %v is not merged", rs)
		}
	}
	if v := sc.Get(keyNetNS); v != nil && len(v) != 8 {
		add("sysctl netns %x is not a uint64", v)
	}
	return errors.Join(problems...)
}

func validProto(p uint8) bool { return p == 6 || p == 17 }
