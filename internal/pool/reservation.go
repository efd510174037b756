package pool

import "fmt"

// Token identifies a reservation. The zero Token is
// INVALID_PORT_RESERVATION_TOKEN and never names a reservation.
type Token uint64

// Reservation is one reserved block and the set of its ports that are
// bound (handed out to sockets).
//
// The pool owns Block and Token: they must not be modified. Owner is for
// the broker (who holds the reservation); the pool never looks at it.
// A Reservation is not safe for concurrent use; the broker serialises
// access together with its Pool.
type Reservation struct {
	Block Block
	Token Token
	Owner any

	bound  bitset // bit i: port Block.Start+i is bound
	nbound int
	next   int       // offset where Take(0) starts looking (next-fit)
	small  [3]uint64 // storage of bound for blocks of up to 64 ports
}

func newReservation(b Block, tok Token, owner any) *Reservation {
	r := &Reservation{Block: b, Token: tok, Owner: owner}
	r.bound = makeBitset(int(b.Count), r.small[:])
	return r
}

// Take marks a port of the reservation bound and returns it.
//
// With port == 0 it picks a free port next-fit: the first free port at or
// after the one following the previous Take(0), wrapping around to the
// start of the block once. A port that was just Put back is therefore not
// handed out again until the rest of the block has been, which keeps a
// new socket off a port whose old connection may still be in TIME_WAIT.
// It returns an error wrapping ErrExhausted if every port is bound.
//
// With port != 0 it takes exactly that port, and returns an error wrapping
// ErrOutside if the port is not in the block or ErrBound if it is already
// bound. An explicit Take does not move the next-fit position.
func (r *Reservation) Take(port uint16) (uint16, error) {
	if port == 0 {
		if r.nbound == int(r.Block.Count) {
			return 0, fmt.Errorf("pool: reservation %v: %w", r.Block, ErrExhausted)
		}
		i := r.bound.nextClear(r.next)
		if i < 0 {
			i = r.bound.nextClear(0)
		}
		r.mark(i)
		r.next = i + 1
		if r.next == int(r.Block.Count) {
			r.next = 0
		}
		return r.Block.Start + uint16(i), nil
	}
	if !r.Block.Contains(port) {
		return 0, fmt.Errorf("pool: port %d not in reservation %v: %w", port, r.Block, ErrOutside)
	}
	i := int(port - r.Block.Start)
	if r.bound.test(i) {
		return 0, fmt.Errorf("pool: port %d: %w", port, ErrBound)
	}
	r.mark(i)
	return port, nil
}

func (r *Reservation) mark(i int) {
	r.bound.set(i)
	r.nbound++
}

// Put marks port unbound again. It returns an error wrapping ErrInvalid if
// port is 0 or not bound, and ErrOutside if it is not in the block.
func (r *Reservation) Put(port uint16) error {
	if port == 0 {
		return fmt.Errorf("pool: put of port 0: %w", ErrInvalid)
	}
	if !r.Block.Contains(port) {
		return fmt.Errorf("pool: port %d not in reservation %v: %w", port, r.Block, ErrOutside)
	}
	i := int(port - r.Block.Start)
	if !r.bound.test(i) {
		return fmt.Errorf("pool: port %d is not bound: %w", port, ErrInvalid)
	}
	r.bound.clear(i)
	r.nbound--
	return nil
}

// IsBound reports whether port is a bound port of the reservation.
func (r *Reservation) IsBound(port uint16) bool {
	return r.Block.Contains(port) && r.bound.test(int(port-r.Block.Start))
}

// Bound returns the bound ports in ascending order (nil if none).
func (r *Reservation) Bound() []uint16 {
	if r.nbound == 0 {
		return nil
	}
	out := make([]uint16, 0, r.nbound)
	for i := r.bound.nextSet(0); i >= 0; i = r.bound.nextSet(i + 1) {
		out = append(out, r.Block.Start+uint16(i))
	}
	return out
}

// NumBound returns the number of bound ports.
func (r *Reservation) NumBound() int { return r.nbound }

// Free returns the number of ports not bound: Block.Count - NumBound.
func (r *Reservation) Free() int { return int(r.Block.Count) - r.nbound }

// String formats r as "40000-40009 token 0x1f... (3 bound)".
func (r *Reservation) String() string {
	return fmt.Sprintf("%v token %#x (%d bound)", r.Block, uint64(r.Token), r.nbound)
}
