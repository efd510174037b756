package pool

import (
	"errors"
	"slices"
	"testing"
)

func TestTakePutErrors(t *testing.T) {
	p := newPool(t, 49152, 65535)
	r := mustReserve(t, p, Block{5000, 3})
	if _, err := r.Take(5001); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		op   func() error
		want error
	}{
		{"take below", func() error { _, err := r.Take(4999); return err }, ErrOutside},
		{"take above", func() error { _, err := r.Take(5003); return err }, ErrOutside},
		{"take bound", func() error { _, err := r.Take(5001); return err }, ErrBound},
		{"put 0", func() error { return r.Put(0) }, ErrInvalid},
		{"put outside", func() error { return r.Put(6000) }, ErrOutside},
		{"put unbound", func() error { return r.Put(5000) }, ErrInvalid},
	} {
		if err := tc.op(); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if got := r.Bound(); !slices.Equal(got, []uint16{5001}) || r.NumBound() != 1 || r.Free() != 2 {
		t.Errorf("failed calls changed the state: %v", r)
	}
	r.Take(0)
	r.Take(0)
	if _, err := r.Take(0); !errors.Is(err, ErrExhausted) {
		t.Errorf("Take(0) of a full block: %v", err)
	}
	if r.Free() != 0 || r.NumBound() != 3 {
		t.Errorf("Free %d NumBound %d", r.Free(), r.NumBound())
	}
}

func TestTakeNextFit(t *testing.T) {
	p := newPool(t, 49152, 65535)
	r := mustReserve(t, p, Block{100, 4})
	take := func(want uint16) {
		t.Helper()
		got, err := r.Take(0)
		if err != nil || got != want {
			t.Fatalf("Take(0) = %d, %v; want %d", got, err, want)
		}
	}
	take(100)
	take(101)
	if err := r.Put(100); err != nil {
		t.Fatal(err)
	}
	take(102) // 100 was just put back: not reused at once
	if _, err := r.Take(103); err != nil {
		t.Fatal(err)
	}
	take(100) // wraps around
	if got := r.Bound(); !slices.Equal(got, []uint16{100, 101, 102, 103}) {
		t.Fatalf("Bound() = %v", got)
	}
	for _, port := range []uint16{101, 103} {
		if err := r.Put(port); err != nil {
			t.Fatal(err)
		}
	}
	take(101)
	take(103)
	if !r.IsBound(103) || r.IsBound(99) || r.IsBound(104) {
		t.Error("IsBound wrong")
	}
}

func TestTakeLarge(t *testing.T) {
	p := newPool(t, 1, 65535)
	r := mustReserve(t, p, Block{1, 65535})
	for i := 1; i <= 65535; i++ {
		got, err := r.Take(0)
		if err != nil || int(got) != i {
			t.Fatalf("Take(0) #%d = %d, %v", i, got, err)
		}
	}
	if _, err := r.Take(0); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Take(0) of a full block: %v", err)
	}
	for _, port := range []uint16{40000, 7, 65535} {
		if err := r.Put(port); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []uint16{7, 40000, 65535} {
		if got, err := r.Take(0); err != nil || got != want {
			t.Fatalf("Take(0) = %d, %v; want %d", got, err, want)
		}
	}
	if r.NumBound() != 65535 || len(r.Bound()) != 65535 {
		t.Fatalf("NumBound %d", r.NumBound())
	}
}
