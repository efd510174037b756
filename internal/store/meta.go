//go:build linux

package store

import (
	"errors"
	"fmt"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"
)

// RepairFlag is the portresd option that opens a store with
// Options.Repair; MetaPageError's message tells the administrator to use it.
const RepairFlag = "--repair-state"

// Options adjust OpenWithOptions. The zero value is what Open does.
type Options struct {
	// Repair accepts a store one of whose two bbolt meta pages fails
	// validation (see MetaPageError): the store is opened at the
	// transaction of the intact meta page, and one empty write
	// transaction is committed so that bbolt rewrites the damaged page.
	// Whatever the damaged page committed after the intact one is lost
	// for good; Store.Repaired reports what was kept. Every other check
	// of Open still applies, and a store whose meta pages are both
	// intact is opened unchanged.
	Repair bool
}

// MetaPageError is the ErrCorrupt returned when exactly one of bbolt's
// two meta pages fails validation (magic, version, checksum). bbolt
// itself would silently open the database at the other page's
// transaction: if the damaged page was the newer one, acknowledged
// writes would vanish without a word. Since the damaged page cannot tell
// which it was, Open refuses the store either way, leaving the file
// unchanged; OpenWithOptions with Options.Repair accepts it.
type MetaPageError struct {
	Path        string // the database file
	DamagedPage int    // the meta page (0 or 1) that fails validation
	Problem     string // why it fails, e.g. "checksum mismatch: ..."
	// ClaimedTxid is the damaged page's transaction id field, unverified.
	ClaimedTxid uint64
	IntactPage  int    // the other meta page, which passes validation
	IntactTxid  uint64 // its transaction id: what a repair keeps
}

// Error describes the damage and how to recover.
func (e *MetaPageError) Error() string {
	guess := ""
	if e.ClaimedTxid == e.IntactTxid+1 {
		guess = fmt.Sprintf(" (its unverified txid field reads %d: it probably held the newest transaction)", e.ClaimedTxid)
	} else if e.IntactTxid > 0 && e.ClaimedTxid == e.IntactTxid-1 {
		guess = fmt.Sprintf(" (its unverified txid field reads %d: it probably held the older transaction)", e.ClaimedTxid)
	}
	return fmt.Sprintf("%v: %s: bbolt meta page %d is damaged (%s)%s; meta page %d is intact at txid %d. "+
		"bbolt would silently open txid %d, losing whatever the damaged page committed after it, so the store is refused. "+
		"To recover, start portresd with %s to accept the last intact transaction (txid %d); anything committed after it is lost. "+
		"Or stop portresd and restore %s from a backup",
		ErrCorrupt, e.Path, e.DamagedPage, e.Problem, guess, e.IntactPage, e.IntactTxid,
		e.IntactTxid, RepairFlag, e.IntactTxid, e.Path)
}

// Unwrap returns ErrCorrupt.
func (e *MetaPageError) Unwrap() error { return ErrCorrupt }

// Repair reports what OpenWithOptions with Options.Repair did to a store
// whose meta page was damaged.
type Repair struct {
	DamagedPage int    // the meta page (0 or 1) that failed validation
	Problem     string // why it failed
	KeptTxid    uint64 // the intact transaction the store was opened at
	CommitTxid  uint64 // the transaction committed to rewrite the damaged page
}

// String describes the repair, for the daemon's log.
func (r *Repair) String() string {
	return fmt.Sprintf("bbolt meta page %d was damaged (%s): kept txid %d, the last intact transaction, "+
		"and rewrote the page with txid %d; anything committed after txid %d is lost",
		r.DamagedPage, r.Problem, r.KeptTxid, r.CommitTxid, r.KeptTxid)
}

// Repaired returns what OpenWithOptions repaired, or nil if the store
// was opened without repair.
func (s *Store) Repaired() *Repair { return s.repaired }

// metaPages reads bbolt's two meta pages from data, the start of the
// file: page 0 at offset 0, page 1 at pageSize (the page size bbolt
// opened the file with).
func metaPages(data []byte, pageSize int) [2]metaPage {
	return [2]metaPage{readMeta(data, 0), readMeta(data, uint64(pageSize))}
}

// checkMetaPages returns nil if both meta pages pass validation and
// agree on the page size, a *MetaPageError if exactly one fails, and
// ErrCorrupt otherwise.
func checkMetaPages(path string, m [2]metaPage, pageSize int) error {
	switch ok0, ok1 := m[0].problem == "", m[1].problem == ""; {
	case ok0 && ok1:
		for i, p := range m {
			if int(p.pageSize) != pageSize {
				return fmt.Errorf("%w: %s: bbolt meta page %d records page size %d, the file was opened with %d",
					ErrCorrupt, path, i, p.pageSize, pageSize)
			}
		}
		return nil
	case !ok0 && !ok1:
		return fmt.Errorf("%w: %s: both bbolt meta pages are damaged (page 0: %s; page 1: %s); restore it from a backup",
			ErrCorrupt, path, m[0].problem, m[1].problem)
	default:
		bad := 0
		if ok0 {
			bad = 1
		}
		return &MetaPageError{Path: path, DamagedPage: bad, Problem: m[bad].problem, ClaimedTxid: m[bad].txid,
			IntactPage: 1 - bad, IntactTxid: m[1-bad].txid}
	}
}

// checkMetaFile reads the two meta pages of the open database through f
// and checks them with checkMetaPages.
func checkMetaFile(path string, f *os.File, pageSize int) error {
	buf := make([]byte, 2*pageSize)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("store: open %s: reading the meta pages: %w", path, err)
	}
	return checkMetaPages(path, metaPages(buf[:n], pageSize), pageSize)
}

// repair commits empty write transactions until both meta pages pass
// validation (one does it: bbolt writes transaction N to meta page N%2,
// and the intact page holds the other parity; a second covers a page
// holding the wrong parity), after checking that bbolt opened the
// transaction damage says is intact. f is the database's descriptor.
func (s *Store) repair(damage *MetaPageError, f *os.File) error {
	var kept uint64
	s.db.View(func(tx *bolt.Tx) error { kept = uint64(tx.ID()); return nil })
	if kept != damage.IntactTxid {
		return fmt.Errorf("%w: %s: repair: bbolt opened txid %d, but the intact meta page holds txid %d; refusing to write",
			ErrCorrupt, s.path, kept, damage.IntactTxid)
	}
	pageSize := s.db.Info().PageSize
	for range 2 {
		var txid uint64
		err := s.db.Update(func(tx *bolt.Tx) error { txid = uint64(tx.ID()); return nil })
		if err != nil {
			return fmt.Errorf("store: repair %s: committing a transaction to rewrite meta page %d: %w", s.path, damage.DamagedPage, err)
		}
		err = checkMetaFile(s.path, f, pageSize)
		if err == nil {
			s.repaired = &Repair{DamagedPage: damage.DamagedPage, Problem: damage.Problem, KeptTxid: kept, CommitTxid: txid}
			return nil
		}
		if !errors.As(err, new(*MetaPageError)) {
			return fmt.Errorf("store: repair %s: after committing txid %d: %w", s.path, txid, err)
		}
	}
	return fmt.Errorf("%w: %s: repair: meta page %d still fails validation after two commits", ErrCorrupt, s.path, damage.DamagedPage)
}
