//go:build linux

package broker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/fdpass"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/wire"
)

// TestDynamicSetSystem: OpDynamicSet with FlagSystem writes the ephemeral
// range file (here a stand-in for net.ipv4.ip_local_port_range, so the
// test netns keeps its range; the CLI test writes the real sysctl), sets
// both protocols' ranges, and answers the ranges it replaced as JSON.
// Proto must be 0 with it; an unreadable range file changes nothing.
func TestDynamicSetSystem(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ip_local_port_range")
	if err := os.WriteFile(file, []byte("32768\t60999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := testbroker.Start(t, func(c *broker.Config) { c.PortRange = file })
	c := b.Dial(t)
	ctx := context.Background()
	if err := c.SetDynamicPortRange(ctx, portres.UDP, 33000, 1000); err != nil {
		t.Fatal(err)
	}
	ch, err := c.SetSystemDynamicPortRange(ctx, 40000, 1000)
	if err != nil {
		t.Fatal(err)
	}
	want := portres.SystemRangeChange{Start: 40000, Count: 1000, OldKernel: portres.PortRange{Start: 32768, End: 60999},
		OldTCP: portres.PortRange{Start: 32768, End: 60999}, OldUDP: portres.PortRange{Start: 33000, End: 33999}}
	if *ch != want {
		t.Errorf("SetSystemDynamicPortRange: %+v, want %+v", *ch, want)
	}
	if data, _ := os.ReadFile(file); string(data) != "40000 40999\n" {
		t.Errorf("the range file holds %q, want \"40000 40999\\n\"", data)
	}
	for _, p := range []portres.Proto{portres.TCP, portres.UDP} {
		if lo, n, err := c.DynamicPortRange(ctx, p); err != nil || lo != 40000 || n != 1000 {
			t.Errorf("%s range %d+%d, %v; want 40000+1000", p, lo, n, err)
		}
	}

	// Proto 6 with FlagSystem: refused, nothing written.
	raw := rawConn(t, b)
	fdpass.Send(raw, wire.AppendRequest(nil, &wire.Request{ID: 1, Op: wire.OpDynamicSet, Flags: wire.FlagSystem, Proto: 6, Start: 45000, Count: 1000}))
	if r := readResponse(t, raw); r.Code != uint32(portres.ERROR_INVALID_PARAMETER) || !strings.Contains(r.Msg, "moves both protocols") {
		t.Errorf("FlagSystem with proto 6: %+v", r)
	}
	// An unreadable range file: refused, nothing changed.
	os.WriteFile(file, []byte("garbage\n"), 0o644)
	_, err = c.SetSystemDynamicPortRange(ctx, 45000, 1000)
	var pe *portres.Error
	if !errors.As(err, &pe) || pe.Code != portres.ERROR_INVALID_PARAMETER || !strings.Contains(pe.Msg, "cannot read the kernel's ephemeral port range") {
		t.Errorf("with an unreadable range file: %v", err)
	}
	if data, _ := os.ReadFile(file); string(data) != "garbage\n" {
		t.Errorf("the range file was written: %q", data)
	}
	for _, p := range []portres.Proto{portres.TCP, portres.UDP} {
		if lo, n, _ := c.DynamicPortRange(ctx, p); lo != 40000 || n != 1000 {
			t.Errorf("%s range %d+%d after a refused change, want 40000+1000", p, lo, n)
		}
	}
}
