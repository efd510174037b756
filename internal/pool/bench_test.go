package pool

import (
	"fmt"
	"testing"
)

const benchDynLo = 16384 // dynamic range 16384-65535 in the benchmarks

// benchPool returns a pool holding n one-port reservations at
// benchDynLo, benchDynLo+3, benchDynLo+6, ...: a fragmented stretch whose
// gaps are two ports wide, followed by free space (at n = 10000 the
// reservations cover 16384-46381, leaving 19154 free ports above).
func benchPool(b *testing.B, n int) *Pool {
	b.Helper()
	p, err := New(benchDynLo, MaxPort)
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		if _, err := p.Reserve(Block{uint16(benchDynLo + 3*i), 1}, 0, nil); err != nil {
			b.Fatal(err)
		}
	}
	return p
}

var benchSizes = []int{10, 1000, 10000}

// BenchmarkReserveRelease reserves and releases one block per iteration
// in a pool already holding n reservations.
//
// specific: a one-port block in one of the gaps.
// wildcard: a three-port block, which fits in no gap; the cursor is reset
// to the bottom of the dynamic range first, so every request has to get
// past all n reservations (the worst case for next-fit).
// wildcard-nextfit: the same without the reset, as the broker sees it.
func BenchmarkReserveRelease(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("specific/%d", n), func(b *testing.B) {
			p := benchPool(b, n)
			for i := 0; b.Loop(); i++ {
				blk := Block{uint16(benchDynLo + 3*(i%n) + 1), 1}
				r, err := p.Reserve(blk, 0, nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := p.Release(r.Token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("wildcard/%d", n), func(b *testing.B) {
			p := benchPool(b, n)
			want := uint16(benchDynLo + 3*n - 2) // just past the last gap
			for b.Loop() {
				p.cursor = benchDynLo
				r, err := p.Reserve(Block{0, 3}, 0, nil)
				if err != nil {
					b.Fatal(err)
				}
				if r.Block.Start != want {
					b.Fatalf("placed at %v, want %d", r.Block, want)
				}
				if _, err := p.Release(r.Token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("wildcard-nextfit/%d", n), func(b *testing.B) {
			p := benchPool(b, n)
			for b.Loop() {
				r, err := p.Reserve(Block{0, 3}, 0, nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := p.Release(r.Token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFind looks up the reservation holding a port among n.
func BenchmarkFind(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			p := benchPool(b, n)
			for i := 0; b.Loop(); i++ {
				if p.Find(uint16(benchDynLo+3*(i%n))) == nil {
					b.Fatal("not found")
				}
			}
		})
	}
}

// BenchmarkTake binds and unbinds ports of one reservation of c ports.
//
// sparse: Take(0) then Put of the same port, in a block with nothing else
// bound.
// full: every port is bound but the one just Put back, chosen far from the
// next-fit position, so Take(0) has to search the block for it.
func BenchmarkTake(b *testing.B) {
	for _, c := range []int{16, 1024, 65535} {
		b.Run(fmt.Sprintf("sparse/%d", c), func(b *testing.B) {
			p := benchPool(b, 0)
			r, err := p.Reserve(Block{1, uint16(c)}, 0, nil)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				port, err := r.Take(0)
				if err != nil {
					b.Fatal(err)
				}
				if err := r.Put(port); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("full/%d", c), func(b *testing.B) {
			p := benchPool(b, 0)
			r, err := p.Reserve(Block{1, uint16(c)}, 0, nil)
			if err != nil {
				b.Fatal(err)
			}
			for range c {
				if _, err := r.Take(0); err != nil {
					b.Fatal(err)
				}
			}
			for i := 0; b.Loop(); i++ {
				// Put back a port half a block away from the next-fit offset.
				port := uint16(1 + (r.next+c/2)%c)
				if err := r.Put(port); err != nil {
					b.Fatal(err)
				}
				if got, err := r.Take(0); err != nil || got != port {
					b.Fatalf("Take(0) = %d, %v; want %d", got, err, port)
				}
			}
		})
	}
}

// BenchmarkFindFree isolates the search of BenchmarkReserveRelease/wildcard:
// a three-port block from the bottom of the dynamic range, past n
// reservations with two-port gaps.
func BenchmarkFindFree(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			p := benchPool(b, n)
			want := uint16(benchDynLo + 3*n - 2)
			for b.Loop() {
				if s, ok := p.FindFree(3, benchDynLo, MaxPort, benchDynLo); !ok || s != want {
					b.Fatalf("FindFree = %d, %v; want %d", s, ok, want)
				}
			}
		})
	}
}
