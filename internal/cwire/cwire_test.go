//go:build linux && cgo

package cwire

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/portres/portres/internal/wire"
)

func seedResponses() [][]byte {
	return [][]byte{
		wire.AppendResponse(nil, &wire.Response{ID: 7, Code: 10048, Msg: "overlaps tcp reservation 5000-5019 of pid 42 (nginx)"}),
		wire.AppendResponse(nil, &wire.Response{ID: 1, Flags: wire.More, Proto: 6, Start: 5000, Count: 20, Port: 5003, Token: 0xfeed,
			Entries: []wire.Entry{
				{Proto: 6, Kind: wire.KindRuntime, Flags: wire.EntryMine, Start: 5000, Count: 20, PID: 42, UID: 1000, Token: 9,
					Command: "nginx -g daemon off;", Bound: []uint16{5000, 5003, 5019}},
				{Proto: 17, Kind: wire.KindPersistent, Start: 65535, Count: 1, Bound: []uint16{65535}},
				{Proto: 6, Kind: wire.KindRuntime, Start: 1, Count: 9},
			}}),
	}
}

func seedRequests() [][]byte {
	return [][]byte{
		wire.AppendRequest(nil, &wire.Request{ID: 1, Op: wire.OpAcquire, Proto: 6, Start: 5000, Count: 20, Flags: wire.FlagBind}),
		wire.AppendRequest(nil, &wire.Request{ID: 2, Op: wire.OpBind, Token: 77, Port: 5003, Addr: netip.MustParseAddr("127.0.0.1")}),
		wire.AppendRequest(nil, &wire.Request{ID: 3, Op: wire.OpBind, Token: 77, Addr: netip.MustParseAddr("::1")}),
		wire.AppendRequest(nil, &wire.Request{ID: 4, Op: wire.OpCancel, Target: 3}),
	}
}

// FuzzDecodeResponse: the C decoder accepts exactly what the Go decoder
// accepts, and decodes the same fields, entries and bound ports.
func FuzzDecodeResponse(f *testing.F) {
	for _, s := range seedResponses() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		g, gerr := wire.DecodeResponse(b)
		c, ok := DecodeResponse(b)
		if (gerr == nil) != ok {
			t.Fatalf("Go decoder: %v; C decoder accepts: %v; input %x", gerr, ok, b)
		}
		if !ok {
			return
		}
		if len(g.Entries) == 0 {
			g.Entries = nil
		}
		for i := range g.Entries {
			if len(g.Entries[i].Bound) == 0 {
				g.Entries[i].Bound = nil
			}
		}
		if !reflect.DeepEqual(*g, c) {
			t.Fatalf("decoders differ on %x:\n  Go %+v\n   C %+v", b, *g, c)
		}
	})
}

// FuzzDecodeRequest is FuzzDecodeResponse for requests (the C library
// only encodes them; the broker's rules are the reference).
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range seedRequests() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		g, gerr := wire.DecodeRequest(b)
		c, ok := DecodeRequest(b)
		if (gerr == nil) != ok {
			t.Fatalf("Go decoder: %v; C decoder accepts: %v; input %x", gerr, ok, b)
		}
		if ok && !reflect.DeepEqual(*g, c) {
			t.Fatalf("decoders differ on %x:\n  Go %+v\n   C %+v", b, *g, c)
		}
	})
}

// TestSeedsDecode: the seeds are valid, so the fuzzers start from
// accepted inputs.
func TestSeedsDecode(t *testing.T) {
	for _, s := range seedResponses() {
		if _, ok := DecodeResponse(s); !ok {
			t.Errorf("C refuses the seed %x", s)
		}
	}
	for _, s := range seedRequests() {
		if _, ok := DecodeRequest(s); !ok {
			t.Errorf("C refuses the seed %x", s)
		}
	}
}
