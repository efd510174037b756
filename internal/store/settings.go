package store

import (
	"encoding/binary"
	"fmt"

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
func (s *Store) SysctlAdded() (added []Range, boot string, netns uint64, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSysctl)
		if v := b.Get(keyAdded); v != nil {
			if added, err = decodeRanges(v); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrCorrupt, s.path, err)
			}
		}
		boot = string(b.Get(keyBoot))
		if v := b.Get(keyNetNS); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("%w: %s: netns %x is not 8 bytes", ErrCorrupt, s.path, v)
			}
			netns = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	if err != nil {
		return nil, "", 0, fmt.Errorf("store: read sysctl bookkeeping: %w", err)
	}
	return added, boot, netns, nil
}

// SetSysctlAdded records, durably, the ip_local_reserved_ports entries
// portres added (merged before storing) and the boot id and network
// namespace inode they belong to.
func (s *Store) SetSysctlAdded(added []Range, boot string, netns uint64) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSysctl)
		if err := b.Put(keyAdded, encodeRanges(enforce.MergeRanges(added))); err != nil {
			return err
		}
		if err := b.Put(keyBoot, []byte(boot)); err != nil {
			return err
		}
		return b.Put(keyNetNS, binary.BigEndian.AppendUint64(nil, netns))
	})
	if err != nil {
		return fmt.Errorf("store: write sysctl bookkeeping: %w", err)
	}
	return nil
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
