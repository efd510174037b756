//go:build linux

package enforce

import "math/bits"

// Cover counts, per port, the blocks that cover it, and keeps a bitmap of
// the covered ports, so that the list of covered ranges costs one pass
// over 1024 words however many blocks there are. The zero value is empty.
// It is not safe for concurrent use.
type Cover struct {
	n    [65536]uint16
	bits Bitmap
}

// Bitmap is a set of ports 0-65535.
type Bitmap [1024]uint64

// Add counts one more block over [lo, hi].
func (c *Cover) Add(lo, hi uint16) {
	for p := int(lo); p <= int(hi); p++ {
		if c.n[p]++; c.n[p] == 1 {
			c.bits[p/64] |= 1 << (p % 64)
		}
	}
}

// Remove counts one block fewer over [lo, hi]; ports it did not cover
// are left alone.
func (c *Cover) Remove(lo, hi uint16) {
	for p := int(lo); p <= int(hi); p++ {
		if c.n[p] == 0 {
			continue
		}
		if c.n[p]--; c.n[p] == 0 {
			c.bits[p/64] &^= 1 << (p % 64)
		}
	}
}

// Bits returns a copy of the covered ports.
func (c *Cover) Bits() Bitmap { return c.bits }

// Set adds [lo, hi] to m.
func (m *Bitmap) Set(lo, hi uint16) {
	for p := int(lo); p <= int(hi); p++ {
		m[p/64] |= 1 << (p % 64)
	}
}

// Covers reports whether every port of [lo, hi] is in m.
func (m *Bitmap) Covers(lo, hi uint16) bool {
	for p := int(lo); p <= int(hi); p++ {
		if m[p/64]&(1<<(p%64)) == 0 {
			return false
		}
	}
	return true
}

// Or adds every port of o to m.
func (m *Bitmap) Or(o *Bitmap) {
	for i := range m {
		m[i] |= o[i]
	}
}

// Ranges returns the ports of m as sorted, merged ranges.
func (m *Bitmap) Ranges() []Range {
	var out []Range
	p := 0
	for p < 65536 {
		// Skip to the next set bit.
		w := p / 64
		word := m[w] >> (p % 64)
		if word == 0 {
			p = (w + 1) * 64
			continue
		}
		p += bits.TrailingZeros64(word)
		lo := p
		// Run to the next clear bit.
		for p < 65536 {
			w = p / 64
			inv := ^m[w] >> (p % 64)
			if inv == 0 {
				p = (w + 1) * 64
				continue
			}
			p += bits.TrailingZeros64(inv)
			break
		}
		out = append(out, Range{Lo: uint16(lo), Hi: uint16(p - 1)})
	}
	return out
}
