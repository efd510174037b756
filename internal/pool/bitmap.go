package pool

import "math/bits"

// bitset is a fixed-size set of the integers [0, n), one bit each, with a
// summary level that lets searches skip 64 words (4096 bits) at a time:
// nonzero has bit w set when words[w] != 0 and full has bit w set when every
// bit of words[w] is set. Bits of the last word at or past n are kept set
// (padding), so that "full" needs no special case; searches for set bits
// ignore them.
//
// For n = 65536 the summary is 16 words long, so nextSet, prevSet and
// nextClear cost at most a few dozen word operations whatever the
// content.
type bitset struct {
	n       int
	words   []uint64
	nonzero []uint64
	full    []uint64
}

// makeBitset returns an empty bitset of n bits. It keeps its words in buf
// if buf is long enough (3 words hold up to 64 bits), else it makes one
// allocation.
func makeBitset(n int, buf []uint64) bitset {
	nw := (n + 63) / 64
	ns := (nw + 63) / 64
	if len(buf) < nw+2*ns {
		buf = make([]uint64, nw+2*ns)
	}
	b := bitset{n: n, words: buf[:nw:nw], nonzero: buf[nw : nw+ns : nw+ns], full: buf[nw+ns:]}
	if r := n % 64; r != 0 {
		b.words[nw-1] = ^uint64(0) << r
		b.sync(nw - 1)
	}
	return b
}

// sync updates the summary bits of word w.
func (b *bitset) sync(w int) {
	bit := uint64(1) << (w & 63)
	x := b.words[w]
	if x != 0 {
		b.nonzero[w>>6] |= bit
	} else {
		b.nonzero[w>>6] &^= bit
	}
	if x == ^uint64(0) {
		b.full[w>>6] |= bit
	} else {
		b.full[w>>6] &^= bit
	}
}

func (b *bitset) test(i int) bool { return b.words[i>>6]&(1<<(i&63)) != 0 }

func (b *bitset) set(i int) {
	b.words[i>>6] |= 1 << (i & 63)
	b.sync(i >> 6)
}

func (b *bitset) clear(i int) {
	b.words[i>>6] &^= 1 << (i & 63)
	b.sync(i >> 6)
}

// nextSet returns the smallest set bit >= i, or -1.
func (b *bitset) nextSet(i int) int {
	if i < 0 {
		i = 0
	}
	if i >= b.n {
		return -1
	}
	w := i >> 6
	if x := b.words[w] & (^uint64(0) << (i & 63)); x != 0 {
		return b.found(w<<6 + bits.TrailingZeros64(x))
	}
	w = nextOne(b.nonzero, w+1, len(b.words))
	if w < 0 {
		return -1
	}
	return b.found(w<<6 + bits.TrailingZeros64(b.words[w]))
}

// found filters out padding bits.
func (b *bitset) found(i int) int {
	if i >= b.n {
		return -1
	}
	return i
}

// prevSet returns the largest set bit <= i, or -1.
func (b *bitset) prevSet(i int) int {
	if i >= b.n {
		i = b.n - 1
	}
	if i < 0 {
		return -1
	}
	w := i >> 6
	if x := b.words[w] & (^uint64(0) >> (63 - i&63)); x != 0 {
		return w<<6 + 63 - bits.LeadingZeros64(x)
	}
	w = prevOne(b.nonzero, w-1)
	if w < 0 {
		return -1
	}
	return w<<6 + 63 - bits.LeadingZeros64(b.words[w])
}

// nextClear returns the smallest clear bit >= i, or -1.
func (b *bitset) nextClear(i int) int {
	if i < 0 {
		i = 0
	}
	if i >= b.n {
		return -1
	}
	w := i >> 6
	if x := ^b.words[w] & (^uint64(0) << (i & 63)); x != 0 {
		return w<<6 + bits.TrailingZeros64(x)
	}
	w = nextZero(b.full, w+1, len(b.words))
	if w < 0 {
		return -1
	}
	return w<<6 + bits.TrailingZeros64(^b.words[w])
}

// nextOne returns the smallest set bit of s in [i, limit), or -1.
func nextOne(s []uint64, i, limit int) int {
	for k := i >> 6; i < limit && k < len(s); k++ {
		x := s[k]
		if k == i>>6 {
			x &= ^uint64(0) << (i & 63)
		}
		if x != 0 {
			if j := k<<6 + bits.TrailingZeros64(x); j < limit {
				return j
			}
			return -1
		}
	}
	return -1
}

// nextZero returns the smallest clear bit of s in [i, limit), or -1.
func nextZero(s []uint64, i, limit int) int {
	for k := i >> 6; i < limit && k < len(s); k++ {
		x := ^s[k]
		if k == i>>6 {
			x &= ^uint64(0) << (i & 63)
		}
		if x != 0 {
			if j := k<<6 + bits.TrailingZeros64(x); j < limit {
				return j
			}
			return -1
		}
	}
	return -1
}

// prevOne returns the largest set bit of s at or below i, or -1.
func prevOne(s []uint64, i int) int {
	if i < 0 {
		return -1
	}
	for k := i >> 6; k >= 0; k-- {
		x := s[k]
		if k == i>>6 {
			x &= ^uint64(0) >> (63 - i&63)
		}
		if x != 0 {
			return k<<6 + 63 - bits.LeadingZeros64(x)
		}
	}
	return -1
}
