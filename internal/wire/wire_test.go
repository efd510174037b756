package wire

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	for _, r := range []Request{
		{ID: 1, Op: OpAcquire, Proto: 6, Start: 40000, Count: 10},
		{ID: 2, Op: OpBind, Proto: 17, Token: 0xdeadbeefcafe, Port: 40001, Addr: netip.MustParseAddr("127.0.0.1")},
		{ID: 3, Op: OpBind, Token: 7, Addr: netip.MustParseAddr("::1")},
		{ID: 4, Op: OpCancel, Target: 3},
		{ID: 5, Op: OpAcquire, Flags: FlagDelegate, Count: 65535},
	} {
		b := AppendRequest(nil, &r)
		got, err := DecodeRequest(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", r, err)
		}
		if !reflect.DeepEqual(*got, r) {
			t.Fatalf("round trip: got %+v, want %+v", *got, r)
		}
	}
}

func TestResponseRoundTrip(t *testing.T) {
	r := Response{ID: 9, Code: 10048, Flags: More, Start: 5000, Count: 20, Port: 5001, Token: 1 << 60,
		Proto: 6, Msg: "overlaps tcp 5010-5019 held by pid 42 (nginx)",
		Entries: []Entry{
			{Proto: 6, Kind: KindRuntime, Flags: EntryMine, Start: 5000, Count: 20, PID: 42, UID: 1000, Token: 5, Command: "nginx", Bound: []uint16{5000, 5003}},
			{Proto: 17, Kind: KindPersistent, Start: 6000, Count: 1},
		}}
	got, err := DecodeResponse(AppendResponse(nil, &r))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, r) {
		t.Fatalf("round trip: got %+v, want %+v", *got, r)
	}
	if n := len(AppendResponse(nil, &r)); n != ResponseSize(&r)+EntrySize(&r.Entries[0])+EntrySize(&r.Entries[1]) {
		t.Fatalf("sizes disagree with encoding: %d", n)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := AppendRequest(nil, &Request{ID: 1, Op: OpRelease, Token: 3})
	cases := map[string][]byte{
		"empty":      nil,
		"short":      good[:5],
		"magic":      append([]byte{'X'}, good[1:]...),
		"version":    append([]byte{Magic, 9}, good[2:]...),
		"op zero":    append(append([]byte{}, good[:2]...), append([]byte{0}, good[3:]...)...),
		"op big":     append(append([]byte{}, good[:2]...), append([]byte{200}, good[3:]...)...),
		"trailing":   append(append([]byte{}, good...), 1),
		"addr len":   append(append([]byte{}, good[:len(good)-1]...), 7),
		"addr trunc": append(append([]byte{}, good[:len(good)-1]...), 16, 1, 2),
	}
	for name, b := range cases {
		if _, err := DecodeRequest(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
	resp := AppendResponse(nil, &Response{ID: 1, Entries: []Entry{{Command: "x", Start: 1, Count: 1, Bound: []uint16{1}}}})
	for i := 0; i < len(resp); i++ {
		if _, err := DecodeResponse(resp[:i]); !errors.Is(err, ErrMalformed) {
			t.Errorf("response cut at %d: err = %v", i, err)
		}
	}
	// A huge entry count must be refused before allocating.
	huge := AppendResponse(nil, &Response{})
	huge[len(huge)-1] = 0xff
	if _, err := DecodeResponse(huge); !errors.Is(err, ErrMalformed) {
		t.Errorf("huge count: %v", err)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(AppendRequest(nil, &Request{ID: 1, Op: OpBind, Addr: netip.MustParseAddr("::1"), Token: 1}))
	f.Add(AppendRequest(nil, &Request{ID: 1, Op: OpAcquire, Count: 3}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			return
		}
		again, err := DecodeRequest(AppendRequest(nil, r))
		if err != nil || !reflect.DeepEqual(r, again) {
			t.Fatalf("re-encoding changed %+v: %+v %v", r, again, err)
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add(AppendResponse(nil, &Response{ID: 1, Msg: "x", Entries: []Entry{{Command: "c", Start: 1, Count: 9, Bound: []uint16{1, 2, 9}}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeResponse(b)
		if err != nil {
			return
		}
		again, err := DecodeResponse(AppendResponse(nil, r))
		if err != nil || !reflect.DeepEqual(r, again) {
			t.Fatalf("re-encoding changed %+v: %+v %v", r, again, err)
		}
	})
}
