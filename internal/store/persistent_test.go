//go:build linux

package store

import (
	"errors"
	"flag"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

var modelSeed = flag.Uint64("quick.seed", 0, "seed for the store model test (0: time-based)")

func tcp(start, count uint16, token uint64) Persistent {
	return Persistent{Proto: 6, Start: start, Count: count, Token: token, Created: time.Unix(1700000000, 42).UTC(), UID: 7}
}

func TestPersistentExactMatch(t *testing.T) {
	s := newTest(t)
	p := tcp(5000, 20, 1)
	if err := s.AddPersistent(p); err != nil {
		t.Fatal(err)
	}
	for _, miss := range [][3]uint16{{6, 5000, 19}, {6, 5000, 21}, {6, 5001, 19}, {17, 5000, 20}} {
		if _, err := s.LookupPersistent(uint8(miss[0]), miss[1], miss[2]); !errors.Is(err, ErrNotFound) {
			t.Errorf("Lookup%v = %v, want ErrNotFound", miss, err)
		}
		if _, err := s.DeletePersistent(uint8(miss[0]), miss[1], miss[2]); !errors.Is(err, ErrNotFound) {
			t.Errorf("Delete%v = %v, want ErrNotFound", miss, err)
		}
	}
	if got, err := s.LookupPersistent(6, 5000, 20); err != nil || got != p {
		t.Fatalf("Lookup = %v, %v; want %v", got, err, p)
	}
	if got, err := s.DeletePersistent(6, 5000, 20); err != nil || got != p {
		t.Fatalf("Delete = %v, %v; want %v", got, err, p)
	}
	if _, err := s.DeletePersistent(6, 5000, 20); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "5000-5019") {
		t.Fatalf("second Delete = %v, want ErrNotFound naming the block", err)
	}
}

func TestAddPersistentRefuses(t *testing.T) {
	s := newTest(t)
	for _, p := range []Persistent{tcp(5000, 20, 1), tcp(6000, 1, 2), {Proto: 17, Start: 5000, Count: 20, Token: 3}} {
		if err := s.AddPersistent(p); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		p    Persistent
		want error
	}{
		{tcp(5000, 20, 9), ErrExists},
		{tcp(5000, 21, 9), ErrOverlap},
		{tcp(4990, 11, 9), ErrOverlap},
		{tcp(5019, 1, 9), ErrOverlap},
		{tcp(5010, 1, 9), ErrOverlap},
		{tcp(1, 65535, 9), ErrOverlap},
		{tcp(5020, 981, 9), ErrOverlap}, // runs into 6000
		{tcp(7000, 1, 2), ErrTokenInUse},
		{tcp(7000, 1, 0), ErrInvalid},
		{tcp(0, 1, 9), ErrInvalid},
		{tcp(7000, 0, 9), ErrInvalid},
		{tcp(65535, 2, 9), ErrInvalid},
		{Persistent{Proto: 1, Start: 7000, Count: 1, Token: 9}, ErrInvalid},
	} {
		if err := s.AddPersistent(tt.p); !errors.Is(err, tt.want) {
			t.Errorf("AddPersistent(%v) = %v, want %v", tt.p, err, tt.want)
		}
	}
	for _, ok := range []Persistent{tcp(4999, 1, 10), tcp(5020, 980, 11), tcp(65535, 1, 12), tcp(1, 1, 13)} {
		if err := s.AddPersistent(ok); err != nil {
			t.Errorf("AddPersistent(%v) = %v, want success (adjacent, not overlapping)", ok, err)
		}
	}
	ps, err := s.Persistent()
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, p := range ps {
		keys = append(keys, p.String())
	}
	want := []string{"tcp 1-1", "tcp 4999-4999", "tcp 5000-5019", "tcp 5020-5999", "tcp 6000-6000", "tcp 65535-65535", "udp 5000-5019"}
	for i := range want {
		if i >= len(keys) || !strings.HasPrefix(keys[i], want[i]+" ") {
			t.Fatalf("Persistent() = %q, want the order %q", keys, want)
		}
	}
}

// TestPersistentModel runs random adds and deletes against an in-memory
// model (bbolt's simulation test idea), then compares the full listing.
func TestPersistentModel(t *testing.T) {
	seed := *modelSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -quick.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	s := newTest(t)
	model := map[[3]uint16]Persistent{}
	overlaps := func(p Persistent) bool {
		for _, q := range model {
			if q.Proto == p.Proto && int(q.Start) <= p.last() && int(p.Start) <= q.last() {
				return true
			}
		}
		return false
	}
	for i := range 300 {
		p := Persistent{Proto: []uint8{6, 17}[rng.IntN(2)], Start: uint16(1 + rng.IntN(200)),
			Count: uint16(1 + rng.IntN(8)), Token: uint64(i + 1), Created: time.Unix(int64(i), 0).UTC()}
		key := [3]uint16{uint16(p.Proto), p.Start, p.Count}
		if rng.IntN(3) == 0 {
			_, err := s.DeletePersistent(p.Proto, p.Start, p.Count)
			if _, ok := model[key]; ok != (err == nil) {
				t.Fatalf("op %d: Delete %v = %v, model has it: %v", i, p, err, ok)
			}
			delete(model, key)
			continue
		}
		err := s.AddPersistent(p)
		if want := !overlaps(p); want != (err == nil) {
			t.Fatalf("op %d: Add %v = %v, model says free: %v", i, p, err, want)
		}
		if err == nil {
			model[key] = p
		}
	}
	got, err := s.Persistent()
	if err != nil {
		t.Fatal(err)
	}
	var want []Persistent
	for _, p := range model {
		want = append(want, p)
	}
	slices.SortFunc(want, func(a, b Persistent) int {
		return (int(a.Proto)<<16 + int(a.Start)) - (int(b.Proto)<<16 + int(b.Start))
	})
	if !slices.Equal(got, want) {
		t.Fatalf("store holds %v\nmodel holds %v", got, want)
	}
}
