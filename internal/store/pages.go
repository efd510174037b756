//go:build linux

package store

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
)

// bbolt's on-disk format (go.etcd.io/bbolt/internal/common), in the
// host's byte order. Every page starts with a 16-byte header: id uint64,
// flags uint16, count uint16, overflow uint32.
const (
	boltMagic      = 0xED0CDAED
	pageHeaderSize = 16
	elementSize    = 16 // branch: pos, ksize uint32, pgid uint64; leaf: flags, pos, ksize, vsize uint32
	branchPage     = 0x01
	leafPage       = 0x02
	freelistPage   = 0x10
	bucketLeaf     = 0x01
	noFreelist     = ^uint64(0)
	maxTreeDepth   = 64
	boltVersion    = 2
	metaSize       = 64 // magic, version, pageSize, flags uint32; root, sequence, freelist, pgid, txid, checksum uint64
)

var ne = binary.NativeEndian

// walkPages checks the page structure of a bbolt file image before
// bbolt's own tx.Check walks it. tx.Check trusts page headers: a page
// whose overflow count is garbage makes it loop over billions of page
// ids (and run out of memory), an element count past the page makes it
// read outside the mapping. walkPages follows the tree of the meta page
// with transaction id txid through plain bounds-checked slices and
// reports the first page that is out of bounds, claims another id,
// overflows the high-water mark, or holds elements outside itself. It
// does not check key order or reachability of free pages: tx.Check does.
func walkPages(data []byte, pageSize int, txid uint64) error {
	w := &pageWalker{data: data, psz: uint64(pageSize), seen: make(map[uint64]bool)}
	var root, freelist uint64
	found := false
	for i := uint64(0); i < 2 && !found; i++ {
		if m := readMeta(data, i*w.psz); m.problem == "" && m.txid == txid {
			root, freelist, w.hwm, found = m.root, m.freelist, m.pgid, true
		}
	}
	if !found {
		return fmt.Errorf("no valid meta page for transaction %d", txid)
	}
	if w.hwm > uint64(len(data))/w.psz {
		return fmt.Errorf("truncated: %d bytes, the database needs %d", len(data), w.hwm*w.psz)
	}
	if freelist != noFreelist {
		if err := w.freelist(freelist); err != nil {
			return err
		}
	}
	return w.subtree(root, 0)
}

// metaPage is one of bbolt's two meta pages (common.Meta) as stored.
type metaPage struct {
	pageSize uint32
	root     uint64 // root bucket's page
	freelist uint64
	pgid     uint64 // high-water mark
	txid     uint64
	// problem is why the page fails bbolt's validation (Meta.Validate:
	// magic, then version, then checksum), "" if it passes.
	problem string
}

// readMeta decodes the meta page at byte offset off of data and
// validates it as bbolt does: the checksum is FNV-64a over the meta
// struct up to the checksum field. The fields are decoded even when
// validation fails; they are then not to be trusted.
func readMeta(data []byte, off uint64) metaPage {
	if off > uint64(len(data)) || uint64(len(data))-off < pageHeaderSize+metaSize {
		return metaPage{problem: fmt.Sprintf("beyond the end of the %d-byte file", len(data))}
	}
	b := data[off+pageHeaderSize : off+pageHeaderSize+metaSize]
	m := metaPage{
		pageSize: ne.Uint32(b[8:]),
		root:     ne.Uint64(b[16:]),
		freelist: ne.Uint64(b[32:]),
		pgid:     ne.Uint64(b[40:]),
		txid:     ne.Uint64(b[48:]),
	}
	h := fnv.New64a()
	h.Write(b[:56])
	switch magic, version, sum := ne.Uint32(b), ne.Uint32(b[4:]), ne.Uint64(b[56:]); {
	case magic != boltMagic:
		m.problem = fmt.Sprintf("bad magic %#x, want %#x", magic, boltMagic)
	case version != boltVersion:
		m.problem = fmt.Sprintf("format version %d, want %d", version, boltVersion)
	case sum != h.Sum64():
		m.problem = fmt.Sprintf("checksum mismatch: stored %#016x, computed %#016x", sum, h.Sum64())
	}
	return m
}

type pageWalker struct {
	data []byte
	psz  uint64
	hwm  uint64 // high-water mark: pages [0, hwm) exist
	seen map[uint64]bool
}

// page returns the bytes of page id and its overflow pages.
func (w *pageWalker) page(id uint64) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, fmt.Errorf("page %d: out of bounds [2, %d)", id, w.hwm)
	}
	off := id * w.psz
	if got := ne.Uint64(w.data[off:]); got != id {
		return nil, fmt.Errorf("page %d: identifies as %d", id, got)
	}
	overflow := uint64(ne.Uint32(w.data[off+12:]))
	if overflow >= w.hwm-id {
		return nil, fmt.Errorf("page %d: %d overflow pages run past the high-water mark %d", id, overflow, w.hwm)
	}
	for i := id; i <= id+overflow; i++ {
		if w.seen[i] {
			return nil, fmt.Errorf("page %d: referenced twice", i)
		}
		w.seen[i] = true
	}
	return w.data[off : off+(overflow+1)*w.psz], nil
}

func (w *pageWalker) freelist(id uint64) error {
	p, err := w.page(id)
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	if flags := ne.Uint16(p[8:]); flags != freelistPage {
		return fmt.Errorf("freelist page %d: flags %#x", id, flags)
	}
	n, room := uint64(ne.Uint16(p[10:])), uint64(len(p)-pageHeaderSize)/8
	if n == 0xFFFF { // the real count is the first element
		n = ne.Uint64(p[pageHeaderSize:]) + 1
	}
	if n > room {
		return fmt.Errorf("freelist page %d: %d ids do not fit %d bytes", id, n, len(p))
	}
	return nil
}

func (w *pageWalker) subtree(id uint64, depth int) error {
	if depth > maxTreeDepth {
		return fmt.Errorf("page %d: tree deeper than %d", id, maxTreeDepth)
	}
	p, err := w.page(id)
	if err != nil {
		return err
	}
	if err := w.node(p, depth); err != nil {
		return fmt.Errorf("page %d: %w", id, err)
	}
	return nil
}

// node checks the elements of a branch or leaf page p (a page of the
// file or an inline bucket's page) and descends into children and
// sub-buckets.
func (w *pageWalker) node(p []byte, depth int) error {
	if len(p) < pageHeaderSize {
		return fmt.Errorf("page of %d bytes", len(p))
	}
	flags, count := ne.Uint16(p[8:]), uint64(ne.Uint16(p[10:]))
	if pageHeaderSize+count*elementSize > uint64(len(p)) {
		return fmt.Errorf("%d elements do not fit %d bytes", count, len(p))
	}
	for i := range count {
		e := pageHeaderSize + i*elementSize
		switch flags {
		case branchPage:
			pos, ksize := uint64(ne.Uint32(p[e:])), uint64(ne.Uint32(p[e+4:]))
			if e+pos+ksize > uint64(len(p)) {
				return fmt.Errorf("element %d: key outside the page", i)
			}
			if err := w.subtree(ne.Uint64(p[e+8:]), depth+1); err != nil {
				return err
			}
		case leafPage:
			eflags, pos := ne.Uint32(p[e:]), uint64(ne.Uint32(p[e+4:]))
			ksize, vsize := uint64(ne.Uint32(p[e+8:])), uint64(ne.Uint32(p[e+12:]))
			end := e + pos + ksize + vsize
			if end > uint64(len(p)) {
				return fmt.Errorf("element %d: key or value outside the page", i)
			}
			if eflags&bucketLeaf == 0 {
				continue
			}
			v := p[e+pos+ksize : end]
			if len(v) < 16 {
				return fmt.Errorf("element %d: bucket header of %d bytes", i, len(v))
			}
			if root := ne.Uint64(v); root != 0 {
				err := w.subtree(root, depth+1)
				if err != nil {
					return err
				}
			} else if err := w.node(v[16:], depth+1); err != nil { // inline bucket
				return fmt.Errorf("inline bucket %q: %w", p[e+pos:e+pos+ksize], err)
			}
		default:
			return fmt.Errorf("unexpected page type %#x", flags)
		}
	}
	return nil
}
