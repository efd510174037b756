package pool

import (
	"math/rand/v2"
	"testing"
)

func TestLongestZeroRun(t *testing.T) {
	for _, tc := range []struct {
		x    uint64
		want int32
	}{
		{0, 64},
		{^uint64(0), 0},
		{1, 63},
		{1 << 63, 63},
		{0x5555555555555555, 1},
		{0xAAAAAAAAAAAAAAAA, 1},
		{0xFF00FF0000FF00FF, 16},
		{1<<63 | 1, 62},
	} {
		if got := longestZeroRun(tc.x); got != tc.want {
			t.Errorf("longestZeroRun(%#x) = %d, want %d", tc.x, got, tc.want)
		}
	}
}

func naiveZeroRun(x uint64, k int) int {
	for p := 0; p+k <= 64; p++ {
		ok := true
		for i := p; i < p+k; i++ {
			if x&(1<<i) != 0 {
				ok = false
				break
			}
		}
		if ok {
			return p
		}
	}
	return -1
}

func TestFirstZeroRun(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		// Sparse and dense words both matter.
		x := rng.Uint64()
		switch rng.IntN(3) {
		case 0:
			x &= rng.Uint64() & rng.Uint64()
		case 1:
			x |= rng.Uint64() | rng.Uint64()
		}
		k := 1 + rng.IntN(64)
		if got, want := firstZeroRun(x, k), naiveZeroRun(x, k); got != want {
			t.Fatalf("firstZeroRun(%#x, %d) = %d, want %d", x, k, got, want)
		}
		var best int32
		for k := 1; k <= 64 && naiveZeroRun(x, k) >= 0; k++ {
			best = int32(k)
		}
		if got := longestZeroRun(x); got != best {
			t.Fatalf("longestZeroRun(%#x) = %d, want %d", x, got, best)
		}
	}
}

// TestBitset compares every bitset search with a []bool model, for sizes
// with and without padding.
func TestBitset(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 2, 63, 64, 65, 127, 128, 1000, 4096, 4097, 65535, 65536} {
		b := makeBitset(n, make([]uint64, rng.IntN(4)))
		model := make([]bool, n)
		naiveNext := func(i int, v bool) int {
			for j := max(i, 0); j < n; j++ {
				if model[j] == v {
					return j
				}
			}
			return -1
		}
		naivePrev := func(i int) int {
			for j := min(i, n-1); j >= 0; j-- {
				if model[j] {
					return j
				}
			}
			return -1
		}
		for step := range 3000 {
			i := rng.IntN(n)
			// Long stretches of set or clear bits exercise the summary.
			if step%500 == 0 {
				v := rng.IntN(2) == 0
				lo := rng.IntN(n)
				for j := lo; j < n && j < lo+rng.IntN(8000); j++ {
					model[j] = v
					if v {
						b.set(j)
					} else {
						b.clear(j)
					}
				}
			}
			if rng.IntN(2) == 0 {
				b.set(i)
				model[i] = true
			} else {
				b.clear(i)
				model[i] = false
			}
			q := rng.IntN(n+2) - 1
			if got, want := b.nextSet(q), naiveNext(q, true); got != want {
				t.Fatalf("n=%d nextSet(%d) = %d, want %d", n, q, got, want)
			}
			if got, want := b.nextClear(q), naiveNext(q, false); got != want {
				t.Fatalf("n=%d nextClear(%d) = %d, want %d", n, q, got, want)
			}
			if got, want := b.prevSet(q), naivePrev(q); got != want {
				t.Fatalf("n=%d prevSet(%d) = %d, want %d", n, q, got, want)
			}
			if got := b.test(i); got != model[i] {
				t.Fatalf("n=%d test(%d) = %v", n, i, got)
			}
		}
		if err := b.check(); err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
	}
}

// TestFindRun compares occupancy.findRun with a naive scan over random
// layouts, from sparse to fragmented to nearly full.
func TestFindRun(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var o occupancy
	o.init()
	model := make([]bool, numPorts)
	model[0] = true
	naive := func(k, lo, hi int) int {
		run := 0
		for p := lo; p <= hi; p++ {
			if model[p] {
				run = 0
				continue
			}
			if run++; run == k {
				return p - k + 1
			}
		}
		return -1
	}
	for step := range 3000 {
		// Mark or clear a random block, sometimes a large one.
		lo := 1 + rng.IntN(MaxPort)
		size := 1 + rng.IntN(200)
		if rng.IntN(20) == 0 {
			size = 1 + rng.IntN(20000)
		}
		hi := min(lo+size-1, MaxPort)
		used := rng.IntN(2) == 0
		o.mark(lo, hi, used)
		for p := lo; p <= hi; p++ {
			model[p] = used
		}
		if step%100 == 0 {
			var want occupancy
			for p, used := range model {
				if used {
					want.words[p>>6] |= 1 << (p & 63)
				}
			}
			for w := range numWords {
				want.leaf(w)
			}
			for i := numWords - 1; i >= 1; i-- {
				want.combine(i, nodeLen(2*i))
			}
			if want != o {
				t.Fatalf("step %d: tree differs from a rebuilt one", step)
			}
		}
		for range 10 {
			qlo := rng.IntN(numPorts)
			qhi := qlo + rng.IntN(numPorts-qlo)
			if rng.IntN(4) == 0 {
				qhi = min(qlo+rng.IntN(300), MaxPort)
			}
			k := 1 + rng.IntN(80)
			if rng.IntN(5) == 0 {
				k = 1 + rng.IntN(5000)
			}
			if got, want := o.findRun(k, qlo, qhi), naive(k, qlo, qhi); got != want {
				t.Fatalf("step %d: findRun(%d, %d, %d) = %d, want %d", step, k, qlo, qhi, got, want)
			}
			if !o.allFree(qlo, qhi) != func() bool {
				for p := qlo; p <= qhi; p++ {
					if model[p] {
						return true
					}
				}
				return false
			}() {
				t.Fatalf("step %d: allFree(%d, %d) wrong", step, qlo, qhi)
			}
		}
	}
}
