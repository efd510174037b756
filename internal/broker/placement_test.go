//go:build linux

package broker_test

import (
	"context"
	"testing"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/testbroker"
	"golang.org/x/sys/unix"
)

// TestWildcardPlacementFindsRoom: a wildcard acquire finds the one free
// block of the dynamic range when foreign sockets hold every other port
// every tenth port before it (one port at a time, 64 tries
// once gave up: "no block of 20 free tcp ports found after 64
// placements").
func TestWildcardPlacementFindsRoom(t *testing.T) {
	b := testbroker.Start(t, nil)
	ctx := context.Background()
	c := b.Dial(t)
	const lo, n = 30000, 1000
	if err := c.SetDynamicPortRange(ctx, portres.TCP, lo, n); err != nil {
		t.Fatal(err)
	}
	gap := uint16(lo + 900) // 30900-30919 stays free
	for p := uint16(lo); p < lo+n; p++ {
		if p >= gap && p < gap+20 || p%10 != 0 && p < gap {
			continue // free, but no 20 free in a row before the gap
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrInet4{Port: int(p), Addr: [4]byte{127, 0, 0, 1}})
		}
		if err == nil {
			err = unix.Listen(fd, 1)
		}
		if err != nil {
			t.Fatalf("foreign listener on %d: %v", p, err)
		}
		t.Cleanup(func() { unix.Close(fd) })
	}
	r, err := c.Acquire(ctx, portres.TCP, 0, 20)
	if err != nil {
		t.Fatalf("wildcard acquire of 20 with one free block of 20: %v", err)
	}
	// The only free run of 20 or more is 30891-30919 (30890 is held).
	if r.Start() < gap-9 || r.End() > gap+19 {
		t.Errorf("placed at %d-%d, want inside the free run %d-%d", r.Start(), r.End(), gap-9, gap+19)
	}
}
