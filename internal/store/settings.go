//go:build linux

package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/portres/portres/internal/enforce"
)

// DynamicRange returns the dynamic (ephemeral) port range [lo, hi] set
// for proto, with ok false if it was never set.
func (s *Store) DynamicRange(proto uint8) (lo, hi uint16, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDynamic).Get([]byte{proto})
		if v == nil {
			return nil
		}
		if len(v) != 4 {
			return fmt.Errorf("%w: %s: dynamic range %x is not 4 bytes", ErrCorrupt, s.path, v)
		}
		lo, hi, ok = binary.BigEndian.Uint16(v), binary.BigEndian.Uint16(v[2:]), true
		return nil
	})
	if err != nil {
		return 0, 0, false, fmt.Errorf("store: dynamic range of proto %d: %w", proto, err)
	}
	return lo, hi, ok, nil
}

// SetDynamicRange records [lo, hi] as proto's dynamic port range,
// durably. Policy (Windows wants at least 255 ports, lo >= 1025) is the
// caller's; the store returns ErrInvalid only for an unknown protocol or
// lo > hi.
func (s *Store) SetDynamicRange(proto uint8, lo, hi uint16) error {
	var err error
	switch {
	case !validProto(proto):
		err = fmt.Errorf("%w: protocol %d, want 6 (tcp) or 17 (udp)", ErrInvalid, proto)
	case lo > hi:
		err = fmt.Errorf("%w: %d > %d", ErrInvalid, lo, hi)
	default:
		v := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, lo), hi)
		err = s.db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketDynamic).Put([]byte{proto}, v)
		})
	}
	if err != nil {
		return fmt.Errorf("store: set dynamic range of proto %d to %d-%d: %w", proto, lo, hi, err)
	}
	return nil
}

// SysctlAdded returns the ip_local_reserved_ports entries portres added,
// with the boot id and network namespace inode they were added under
// (when either differs from now, the kernel list was reset and the
// entries are no longer there). All are zero if never set.
//
// PATH.sysctl is opened as the database is (see ErrUnsafeFile): a
// symlink, or a file not owned by the effective uid, is refused.
func (s *Store) SysctlAdded() (added []Range, boot string, netns uint64, err error) {
	const op = "read sysctl bookkeeping"
	f, err := openOwned(op, s.sysctlPath(), os.O_RDONLY, 0, nil)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", 0, nil
	}
	if err != nil {
		return nil, "", 0, fileError(op, s.sysctlPath(), err)
	}
	defer f.Close()
	// A record is a few KB; a larger file fails to parse.
	data, err := io.ReadAll(io.LimitReader(f, maxSysctlRecord))
	if err == nil {
		added, boot, netns, err = parseSysctlRecord(data)
	}
	if err != nil {
		return nil, "", 0, fileError(op, s.sysctlPath(), err)
	}
	return added, boot, netns, nil
}

// maxSysctlRecord bounds what SysctlAdded reads of PATH.sysctl.
const maxSysctlRecord = 1 << 20

// SetSysctlAdded records the ip_local_reserved_ports entries portres
// added (merged before storing) and the boot id and network namespace
// inode they belong to. The record sits beside the database in
// PATH.sysctl and is rewritten in place with one pwrite, without fsync:
// it must survive a crash of the daemon, which the page cache does,
// while after a power loss the boot id differs and the record is ignored
// anyway. Creating, renaming or fsyncing a file on every acquire and
// release that touches the sysctl cost 0.2-0.5 ms each on this project's
// machines. Not safe for concurrent use (the broker serializes it).
//
// PATH.sysctl is opened (and created, mode 0600) with O_NOFOLLOW and
// checked as the database is (see ErrUnsafeFile): a symlink, or a file
// not owned by the effective uid, is refused and nothing is written.
func (s *Store) SetSysctlAdded(added []Range, boot string, netns uint64) error {
	const op = "write sysctl bookkeeping"
	if s.sysctlFile == nil {
		f, err := openOwned(op, s.sysctlPath(), os.O_RDWR|os.O_CREATE, 0o600, nil)
		if err != nil {
			return fileError(op, s.sysctlPath(), err)
		}
		s.sysctlFile = f
	}
	body := fmt.Sprintf("%s\n%d\n%s\n", boot, netns, enforce.FormatRanges(enforce.MergeRanges(added)))
	record := fmt.Sprintf("%s %d\n%s", sysctlMagic, len(body), body)
	if _, err := s.sysctlFile.WriteAt([]byte(record), 0); err != nil {
		return fileError(op, s.sysctlPath(), err)
	}
	return nil
}

// sysctlMagic opens a sysctl record: "portres-sysctl-1 LEN\n" then LEN
// bytes; whatever follows is the tail of an older, longer record.
const sysctlMagic = "portres-sysctl-1"

func (s *Store) sysctlPath() string { return s.path + ".sysctl" }

// parseSysctlRecord reads a record written by SetSysctlAdded.
func parseSysctlRecord(data []byte) ([]Range, string, uint64, error) {
	head, rest, ok := strings.Cut(string(data), "\n")
	magic, n, _ := strings.Cut(head, " ")
	size, err := strconv.Atoi(n)
	if !ok || magic != sysctlMagic || err != nil || size < 0 || size > len(rest) {
		return nil, "", 0, fmt.Errorf("%w: bad sysctl record header %q", ErrCorrupt, head)
	}
	lines := strings.Split(rest[:size], "\n")
	if len(lines) != 4 || lines[3] != "" {
		return nil, "", 0, fmt.Errorf("%w: want 3 lines, got %q", ErrCorrupt, rest[:size])
	}
	netns, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil {
		return nil, "", 0, fmt.Errorf("%w: netns %q", ErrCorrupt, lines[1])
	}
	added, err := enforce.ParseRanges(lines[2])
	if err != nil {
		return nil, "", 0, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if len(added) == 0 {
		added = nil
	}
	return added, lines[0], netns, nil
}

// encodeRanges packs rs as lo | hi pairs of big-endian uint16.
func encodeRanges(rs []Range) []byte {
	v := make([]byte, 0, 4*len(rs))
	for _, r := range rs {
		v = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(v, r.Lo), r.Hi)
	}
	return v
}

func decodeRanges(v []byte) ([]Range, error) {
	if len(v)%4 != 0 {
		return nil, fmt.Errorf("ranges %x: length %d is not a multiple of 4", v, len(v))
	}
	var rs []Range
	for ; len(v) > 0; v = v[4:] {
		rs = append(rs, Range{Lo: binary.BigEndian.Uint16(v), Hi: binary.BigEndian.Uint16(v[2:])})
	}
	return rs, nil
}
