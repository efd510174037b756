package pool

import "math/bits"

const (
	numPorts = MaxPort + 1   // 65536 bits, port 0 included (always occupied)
	numWords = numPorts / 64 // 1024 leaves
)

// occupancy is the pool's port map: one bit per port, set when the port
// belongs to some reservation, plus a segment tree over the 1024 words
// that answers "leftmost run of k free ports in [lo, hi]" in O(log 1024)
// node visits.
//
// Node i (1 <= i < 2*numWords) covers a power-of-two stretch of words;
// node 1 is the root, node numWords+w is the leaf of word w, and node i has
// children 2i and 2i+1. For its stretch each node keeps the number of free
// ports at its low end (pre), at its high end (suf) and in its longest run
// (run).
type occupancy struct {
	words [numWords]uint64
	pre   [2 * numWords]int32
	suf   [2 * numWords]int32
	run   [2 * numWords]int32
}

// init marks every port free but port 0 and builds the tree.
func (o *occupancy) init() {
	o.words = [numWords]uint64{}
	o.words[0] = 1
	for w := range numWords {
		o.leaf(w)
	}
	for i := numWords - 1; i >= 1; i-- {
		o.combine(i, nodeLen(2*i))
	}
}

// nodeLen returns the number of ports node i covers.
func nodeLen(i int) int32 { return numPorts >> (bits.Len(uint(i)) - 1) }

// nodeStart returns the first port node i covers.
func nodeStart(i int) int {
	level := bits.Len(uint(i)) - 1
	return (i - 1<<level) * (numPorts >> level)
}

func (o *occupancy) test(port int) bool { return o.words[port>>6]&(1<<(port&63)) != 0 }

// allFree reports whether every port of [lo, hi] is free, in O((hi-lo)/64).
func (o *occupancy) allFree(lo, hi int) bool {
	for w := lo >> 6; w <= hi>>6; w++ {
		if o.words[w]&rangeMask(w, lo, hi) != 0 {
			return false
		}
	}
	return true
}

// mark sets (used) or clears the bits of ports [lo, hi] and updates the
// tree: O((hi-lo)/64 + log 1024).
func (o *occupancy) mark(lo, hi int, used bool) {
	wl, wr := lo>>6, hi>>6
	for w := wl; w <= wr; w++ {
		if used {
			o.words[w] |= rangeMask(w, lo, hi)
		} else {
			o.words[w] &^= rangeMask(w, lo, hi)
		}
		o.leaf(w)
	}
	half := int32(64) // ports covered by each child at this level
	for a, b := (numWords+wl)>>1, (numWords+wr)>>1; a >= 1; a, b = a>>1, b>>1 {
		for i := a; i <= b; i++ {
			o.combine(i, half)
		}
		half *= 2
	}
}

// rangeMask returns the bits of word w that lie in [lo, hi].
func rangeMask(w, lo, hi int) uint64 {
	m := ^uint64(0)
	if base := w << 6; lo > base {
		m <<= lo - base
	}
	if top := w<<6 + 63; hi < top {
		m &= ^uint64(0) >> (top - hi)
	}
	return m
}

// leaf recomputes the tree leaf of word w.
func (o *occupancy) leaf(w int) {
	x, i := o.words[w], numWords+w
	o.pre[i] = int32(bits.TrailingZeros64(x))
	o.suf[i] = int32(bits.LeadingZeros64(x))
	o.run[i] = longestZeroRun(x)
}

// combine recomputes inner node i from its children, which cover half
// ports each.
func (o *occupancy) combine(i int, half int32) {
	l, r := 2*i, 2*i+1
	pre := o.pre[l]
	if pre == half {
		pre += o.pre[r]
	}
	suf := o.suf[r]
	if suf == half {
		suf += o.suf[l]
	}
	o.pre[i], o.suf[i] = pre, suf
	o.run[i] = max(o.run[l], o.run[r], o.suf[l]+o.pre[r])
}

// longestZeroRun returns the length of the longest run of zero bits of x,
// by binary lifting in a dozen branch-light steps: up[j] marks the bits
// that start a run of at least 2^j zeros, and the longest run is built from
// the largest powers down.
func longestZeroRun(x uint64) int32 {
	if x == 0 {
		return 64
	}
	var up [6]uint64
	up[0] = ^x
	for j := 1; j < 6; j++ {
		s := uint(1) << (j - 1)
		up[j] = up[j-1] & (up[j-1] >> s)
	}
	// cur marks the bits that start a run of at least n zeros.
	cur, n := ^uint64(0), 0
	for j := 5; j >= 0; j-- {
		if c := cur & (up[j] >> n); c != 0 {
			cur, n = c, n+1<<j
		}
	}
	return int32(n)
}

// firstZeroRun returns the lowest bit index at which x has k (1 <= k <= 64)
// consecutive zero bits, or -1; O(log k).
func firstZeroRun(x uint64, k int) int {
	y := ^x // bit p set: port p free
	// Invariant: bit p of y is set iff bits p..p+have-1 of ^x are all set.
	for have := 1; have < k; {
		s := min(have, k-have)
		y &= y >> s
		have += s
	}
	if y == 0 {
		return -1
	}
	return bits.TrailingZeros64(y)
}

// findRun returns the lowest port s in [lo, hi-k+1] such that ports
// s..s+k-1 are all free, or -1. It needs 1 <= k and 0 <= lo <= hi <= 65535.
//
// The range is cut into at most 2 masked words at its ends and at most
// 2*log2(1024) = 20 whole tree nodes in between, visited left to right
// while carrying the length of the free run that reaches the current
// position; the first node whose run (or carried prefix) is long enough is
// then descended in at most 10 steps. The cost does not depend on how many
// reservations there are.
func (o *occupancy) findRun(k, lo, hi int) int {
	if hi-lo+1 < k {
		return -1
	}
	wl, wr := lo>>6, hi>>6
	carry := 0 // free ports just below the current piece

	// word tries word w masked to [lo, hi] as one piece.
	word := func(w int) (int, bool) {
		x := o.words[w] | ^rangeMask(w, lo, hi)
		base := w << 6
		pre := bits.TrailingZeros64(x)
		if carry+pre >= k {
			return base - carry, true
		}
		if k <= 64 {
			if p := firstZeroRun(x, k); p >= 0 {
				return base + p, true
			}
		}
		if x == 0 {
			carry += 64
		} else {
			carry = bits.LeadingZeros64(x)
		}
		return 0, false
	}

	if s, ok := word(wl); ok || wl == wr {
		return result(s, ok)
	}
	if wl+1 <= wr-1 {
		// Canonical nodes of leaves wl+1..wr-1, in port order.
		var left [24]int // left-side nodes, then the right-side ones reversed
		var right [12]int
		nl, nr := 0, 0
		for a, b := numWords+wl+1, numWords+wr; a < b; a, b = a>>1, b>>1 {
			if a&1 == 1 {
				left[nl] = a
				nl++
				a++
			}
			if b&1 == 1 {
				b--
				right[nr] = b
				nr++
			}
		}
		for nr > 0 {
			nr--
			left[nl] = right[nr]
			nl++
		}
		for _, n := range left[:nl] {
			if carry+int(o.pre[n]) >= k {
				return nodeStart(n) - carry
			}
			if int(o.run[n]) >= k {
				return o.descend(n, k)
			}
			if o.pre[n] == nodeLen(n) {
				carry += int(nodeLen(n))
			} else {
				carry = int(o.suf[n])
			}
		}
	}
	return result(word(wr))
}

func result(s int, ok bool) int {
	if !ok {
		return -1
	}
	return s
}

// descend returns the lowest start of k free ports lying wholly inside node
// n, which must have run[n] >= k.
func (o *occupancy) descend(n, k int) int {
	for n < numWords {
		l, r := 2*n, 2*n+1
		switch {
		case int(o.run[l]) >= k:
			n = l
		case int(o.suf[l])+int(o.pre[r]) >= k:
			return nodeStart(r) - int(o.suf[l])
		default:
			n = r
		}
	}
	w := n - numWords
	return w<<6 + firstZeroRun(o.words[w], k)
}
