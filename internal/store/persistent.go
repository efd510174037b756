//go:build linux

package store

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Persistent is a persistent port reservation: the block
// [Start, Start+Count) of protocol Proto, as made by
// CreatePersistentTcpPortReservation or its UDP twin.
type Persistent struct {
	Proto   uint8     // IP protocol number: 6 (TCP) or 17 (UDP)
	Start   uint16    // first port, >= 1
	Count   uint16    // number of ports, >= 1; Start+Count-1 <= 65535
	Token   uint64    // non-zero, unique, the same across restarts
	Created time.Time // ns precision (years 1678-2262), returned in UTC; the zero Time round-trips
	UID     uint32    // who created it
	Fleet   bool      // a fleet block (made through etcd on every member); kept here to be enforced without etcd
}

// String describes p as "tcp 5000-5019 token 0x2a uid 0".
func (p Persistent) String() string {
	name := fmt.Sprintf("proto %d", p.Proto)
	switch p.Proto {
	case 6:
		name = "tcp"
	case 17:
		name = "udp"
	}
	return fmt.Sprintf("%s %d-%d token %#x uid %d", name, p.Start, p.last(), p.Token, p.UID)
}

// last is the block's last port; int, as a bad block may run past 65535.
func (p Persistent) last() int { return int(p.Start) + int(p.Count) - 1 }

func (p Persistent) validate() error {
	switch {
	case !validProto(p.Proto):
		return fmt.Errorf("%w: protocol %d, want 6 (tcp) or 17 (udp)", ErrInvalid, p.Proto)
	case p.Start == 0 || p.Count == 0:
		return fmt.Errorf("%w: start %d and count %d must be non-zero", ErrInvalid, p.Start, p.Count)
	case p.last() > 65535:
		return fmt.Errorf("%w: block runs past port 65535", ErrInvalid)
	case p.Token == 0:
		return fmt.Errorf("%w: token 0 is INVALID_PORT_RESERVATION_TOKEN", ErrInvalid)
	}
	return nil
}

// persistentKey is proto | start | count, big-endian: keys sort by
// protocol, then start.
func persistentKey(proto uint8, start, count uint16) []byte {
	k := []byte{proto}
	k = binary.BigEndian.AppendUint16(k, start)
	return binary.BigEndian.AppendUint16(k, count)
}

// persistentValue is token | created (Unix ns) | uid.
func persistentValue(p Persistent) []byte {
	v := binary.BigEndian.AppendUint64(nil, p.Token)
	ns := int64(math.MinInt64) // the zero Time
	if !p.Created.IsZero() {
		ns = p.Created.UnixNano()
	}
	v = binary.BigEndian.AppendUint64(v, uint64(ns))
	return binary.BigEndian.AppendUint32(v, p.UID)
}

func decodePersistent(k, v []byte) (Persistent, error) {
	if len(k) != 5 || len(v) != 20 {
		return Persistent{}, fmt.Errorf("key of %d bytes, value of %d: want 5 and 20", len(k), len(v))
	}
	p := Persistent{
		Proto: k[0],
		Start: binary.BigEndian.Uint16(k[1:]),
		Count: binary.BigEndian.Uint16(k[3:]),
		Token: binary.BigEndian.Uint64(v),
		UID:   binary.BigEndian.Uint32(v[16:]),
	}
	if ns := int64(binary.BigEndian.Uint64(v[8:])); ns != math.MinInt64 {
		p.Created = time.Unix(0, ns).UTC()
	}
	return p, nil
}

// Persistent returns every persistent reservation, ordered by protocol,
// then start.
func (s *Store) Persistent() ([]Persistent, error) {
	var ps []Persistent
	err := s.db.View(func(tx *bolt.Tx) error {
		fleet := tx.Bucket(bucketFleet)
		return tx.Bucket(bucketPersistent).ForEach(func(k, v []byte) error {
			p, err := decodePersistent(k, v)
			if err != nil {
				return fmt.Errorf("%w: %s: persistent %x: %w", ErrCorrupt, s.path, k, err)
			}
			p.Fleet = fleet != nil && fleet.Get(k) != nil
			ps = append(ps, p)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list persistent reservations: %w", err)
	}
	return ps, nil
}

// AddPersistent records p durably: the commit is on disk when it returns.
// Returns ErrExists if a reservation with the same protocol, start and
// count exists, ErrOverlap if p overlaps another block of its protocol,
// ErrTokenInUse if its token is taken, ErrInvalid for a block or token
// the schema rejects (see Persistent).
func (s *Store) AddPersistent(p Persistent) error {
	err := p.validate()
	if err == nil {
		err = s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketPersistent)
			key := persistentKey(p.Proto, p.Start, p.Count)
			if b.Get(key) != nil {
				return ErrExists
			}
			if q, ok := neighbourOverlap(b, p); ok {
				return fmt.Errorf("%w: %v", ErrOverlap, q)
			}
			err := b.ForEach(func(k, v []byte) error {
				if q, err := decodePersistent(k, v); err == nil && q.Token == p.Token {
					return fmt.Errorf("%w: %v", ErrTokenInUse, q)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if p.Fleet {
				fb, err := tx.CreateBucketIfNotExists(bucketFleet)
				if err != nil {
					return err
				}
				if err := fb.Put(key, []byte{}); err != nil {
					return err
				}
			}
			return b.Put(key, persistentValue(p))
		})
	}
	if err != nil {
		return fmt.Errorf("store: add persistent %v: %w", p, err)
	}
	return nil
}

// neighbourOverlap returns a stored block of p's protocol overlapping p.
// Stored blocks do not overlap each other, so only the last block
// starting before p and the first starting at or after it can.
func neighbourOverlap(b *bolt.Bucket, p Persistent) (Persistent, bool) {
	c := b.Cursor()
	next, nv := c.Seek(persistentKey(p.Proto, p.Start, 0))
	if q, err := decodePersistent(next, nv); err == nil && q.Proto == p.Proto && int(q.Start) <= p.last() {
		return q, true
	}
	var prev, pv []byte
	if next == nil {
		prev, pv = c.Last()
	} else {
		prev, pv = c.Prev()
	}
	if q, err := decodePersistent(prev, pv); err == nil && q.Proto == p.Proto && q.last() >= int(p.Start) {
		return q, true
	}
	return Persistent{}, false
}

// LookupPersistent returns the reservation with exactly this protocol,
// start and count, or ErrNotFound.
func (s *Store) LookupPersistent(proto uint8, start, count uint16) (Persistent, error) {
	return s.findPersistent("lookup", proto, start, count, false)
}

// DeletePersistent removes and returns the reservation with exactly this
// protocol, start and count, durably. Returns ErrNotFound if there is none.
func (s *Store) DeletePersistent(proto uint8, start, count uint16) (Persistent, error) {
	return s.findPersistent("delete", proto, start, count, true)
}

func (s *Store) findPersistent(op string, proto uint8, start, count uint16, del bool) (Persistent, error) {
	var p Persistent
	fn := func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPersistent)
		key := persistentKey(proto, start, count)
		v := b.Get(key)
		if v == nil {
			return ErrNotFound
		}
		var err error
		if p, err = decodePersistent(key, v); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, s.path, err)
		}
		fleet := tx.Bucket(bucketFleet)
		p.Fleet = fleet != nil && fleet.Get(key) != nil
		if del {
			if p.Fleet {
				if err := fleet.Delete(key); err != nil {
					return err
				}
			}
			return b.Delete(key)
		}
		return nil
	}
	var err error
	if del {
		err = s.db.Update(fn)
	} else {
		err = s.db.View(fn)
	}
	if err != nil {
		last := int(start) + int(count) - 1
		return Persistent{}, fmt.Errorf("store: %s persistent proto %d %d-%d: %w", op, proto, start, last, err)
	}
	return p, nil
}
