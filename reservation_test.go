//go:build linux

package portres_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
	"github.com/portres/portres/internal/wire"
)

// TestExcludedDecodesFlag: Excluded is the negation of the acquire
// answer's NotExcluded flag, for Acquire and AcquireDelegated, against a
// fake broker that answers every request with a block and the given
// flags.
func TestExcludedDecodesFlag(t *testing.T) {
	for _, flags := range []uint16{0, wire.NotExcluded} {
		sock := filepath.Join(testutil.Dir(t), "fake.sock")
		l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			conn, err := l.AcceptUnix()
			if err != nil {
				return
			}
			defer conn.Close()
			buf := make([]byte, wire.MaxMessage)
			for {
				n, err := conn.Read(buf)
				if err != nil || n == 0 {
					return
				}
				req, err := wire.DecodeRequest(buf[:n])
				if err != nil {
					return
				}
				conn.Write(wire.AppendResponse(nil, &wire.Response{ID: req.ID, Flags: flags, Proto: req.Proto,
					Start: 40000, Count: req.Count, Token: 7}))
			}
		}()
		c, err := portres.Dial(context.Background(), sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		want := flags&wire.NotExcluded == 0
		r, err := c.Acquire(context.Background(), portres.TCP, 0, 5)
		if err != nil || r.Excluded() != want {
			t.Errorf("flags %#x: Acquire: %v, Excluded %v, want %v", flags, err, r != nil && r.Excluded(), want)
		}
		r, err = c.AcquireDelegated(context.Background(), portres.UDP, 0, 1)
		if err != nil || r.Excluded() != want {
			t.Errorf("flags %#x: AcquireDelegated: %v, Excluded %v, want %v", flags, err, r != nil && r.Excluded(), want)
		}
	}
}

// TestExcluded: a broker that writes ip_local_reserved_ports reports
// delegated blocks excluded; one whose kernel exclusion is disabled
// reports them not excluded. Blocks held by placeholder sockets are
// excluded either way.
func TestExcluded(t *testing.T) {
	for _, tc := range []struct {
		reservedPorts string
		want          bool
	}{{"", true}, {"-", false}} {
		b := testbroker.Start(t, func(c *broker.Config) { c.ReservedPorts = tc.reservedPorts })
		c := b.Dial(t)
		d, err := c.AcquireDelegated(context.Background(), portres.UDP, 0, 2)
		if err != nil {
			t.Fatal(err)
		}
		if d.Excluded() != tc.want {
			t.Errorf("ReservedPorts %q: AcquireDelegated: Excluded %v, want %v", tc.reservedPorts, d.Excluded(), tc.want)
		}
		r, err := c.Acquire(context.Background(), portres.TCP, 0, 3)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Excluded() {
			t.Errorf("ReservedPorts %q: Acquire (placeholders): Excluded false", tc.reservedPorts)
		}
		// A handle from the token does not know, and says true.
		if h, err := c.Reservation(context.Background(), r.Token()); err != nil || !h.Excluded() {
			t.Errorf("Reservation(token): %v, Excluded false", err)
		}
		c.Close()
	}
}

// TestCloseReleasesBeforeReturning: when Close returns, the broker has
// released the client's reservations (as Windows' closesocket does), so
// another client takes the same block at once, every time.
func TestCloseReleasesBeforeReturning(t *testing.T) {
	b := testbroker.Start(t, nil)
	ctx := context.Background()
	other := b.Dial(t)
	for i := 0; i < 50; i++ {
		c, err := portres.Dial(ctx, b.Config.Socket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Acquire(ctx, portres.TCP, 46000, 50); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		r, err := other.Acquire(ctx, portres.TCP, 46000, 50)
		if err != nil {
			t.Fatalf("round %d: the block is still held after Close returned: %v", i, err)
		}
		if err := r.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
