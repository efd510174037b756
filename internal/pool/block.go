package pool

import (
	"fmt"
	"slices"
)

// MaxPort is the highest port number.
const MaxPort = 65535

// Block is a contiguous range of ports [Start, Start+Count).
//
// A valid block has Count >= 1, Start >= 1 and Start+Count-1 <= 65535 (see
// Block.Valid). In a call to Pool.Reserve, Start == 0 asks for a wildcard
// block of Count ports placed by the pool.
type Block struct {
	Start, Count uint16
}

// End returns the last port of b, Start+Count-1, as an int so that it
// cannot wrap. For an empty block (Count == 0) it is Start-1.
func (b Block) End() int { return int(b.Start) + int(b.Count) - 1 }

// Contains reports whether port lies in b.
func (b Block) Contains(port uint16) bool {
	return b.Count != 0 && port >= b.Start && int(port) <= b.End()
}

// Overlaps reports whether b and o share at least one port. An empty block
// overlaps nothing.
func (b Block) Overlaps(o Block) bool {
	return b.Count != 0 && o.Count != 0 && int(b.Start) <= o.End() && int(o.Start) <= b.End()
}

// Valid returns nil if b is a valid specific block, and an error wrapping
// ErrInvalid if its Count is 0, its Start is 0 or it runs past port 65535.
func (b Block) Valid() error {
	switch {
	case b.Count == 0:
		return fmt.Errorf("pool: block %v: zero port count: %w", b, ErrInvalid)
	case b.Start == 0:
		return fmt.Errorf("pool: block %v: start port 0: %w", b, ErrInvalid)
	case b.End() > MaxPort:
		return fmt.Errorf("pool: block at %d with %d ports runs past port %d: %w", b.Start, b.Count, MaxPort, ErrInvalid)
	}
	return nil
}

// String formats b as "40000-40009", or "40000" when Count == 1: the syntax
// of one entry of net.ipv4.ip_local_reserved_ports. An empty block is
// formatted as "40000+0".
func (b Block) String() string {
	switch b.Count {
	case 0:
		return fmt.Sprintf("%d+0", b.Start)
	case 1:
		return fmt.Sprintf("%d", b.Start)
	}
	return fmt.Sprintf("%d-%d", b.Start, b.End())
}

// span is a block as an inclusive int range, free of uint16 overflow.
type span struct{ lo, hi int }

// spans converts blocks to spans clipped to ports 1..65535, dropping empty
// ones, sorted by lo.
func spans(blocks []Block) []span {
	s := make([]span, 0, len(blocks))
	for _, b := range blocks {
		lo, hi := max(int(b.Start), 1), min(b.End(), MaxPort)
		if b.Count != 0 && lo <= hi {
			s = append(s, span{lo, hi})
		}
	}
	slices.SortFunc(s, func(a, b span) int { return a.lo - b.lo })
	return s
}

// mergeSpans merges overlapping and adjacent spans of a sorted list in place.
func mergeSpans(s []span) []span {
	out := s[:0]
	for _, x := range s {
		if n := len(out); n > 0 && x.lo <= out[n-1].hi+1 {
			out[n-1].hi = max(out[n-1].hi, x.hi)
			continue
		}
		out = append(out, x)
	}
	return out
}

func toBlocks(s []span) []Block {
	if len(s) == 0 {
		return nil
	}
	out := make([]Block, len(s))
	for i, x := range s {
		out[i] = Block{Start: uint16(x.lo), Count: uint16(x.hi - x.lo + 1)}
	}
	return out
}

// Merge returns the ports of blocks as the fewest blocks: sorted by Start,
// with overlapping and adjacent blocks joined, so that Merge of
// {10-19, 20-29, 25} is {10-29}. Empty blocks are dropped and blocks are
// clipped to ports 1..65535 (port 0 and ports past 65535 are not ports). The
// input is not modified. The result is nil when no port remains.
//
// It is meant for building the value of net.ipv4.ip_local_reserved_ports,
// which must stay short.
func Merge(blocks []Block) []Block {
	return toBlocks(mergeSpans(spans(blocks)))
}

// Subtract returns the ports that are in a but not in b, merged as by Merge.
func Subtract(a, b []Block) []Block {
	as, bs := mergeSpans(spans(a)), mergeSpans(spans(b))
	var out []span
	j := 0
	for _, x := range as {
		lo := x.lo
		for j < len(bs) && bs[j].hi < lo {
			j++
		}
		for k := j; k < len(bs) && bs[k].lo <= x.hi; k++ {
			if bs[k].lo > lo {
				out = append(out, span{lo, bs[k].lo - 1})
			}
			lo = bs[k].hi + 1
		}
		if lo <= x.hi {
			out = append(out, span{lo, x.hi})
		}
	}
	return toBlocks(out)
}
