//go:build linux

package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testbroker"
)

// TestStatus: portres status names the enforcement mode and why, the
// kernel list, the limits and what is held; --json carries the same.
func TestStatus(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.Limits.UserPorts = 100 })
	ctx := context.Background()
	c := b.Dial(t)
	if _, err := c.Acquire(ctx, portres.TCP, 0, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreatePersistent(ctx, portres.UDP, 38000, 5); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, b, "status")
	if code != 0 {
		t.Fatalf("status: %d %s", code, errOut)
	}
	for _, want := range []string{"Enforcement", "hold (asked: hold): placeholder sockets, as configured", "writable, ",
		"below 1024", "tcp 55000-64999", "100 ports, 256 reservations, 128 connections, 5000 requests/s",
		"1 runtime and 1 persistent reservations, 8 ports; 3 placeholder sockets", "connections of 1 uids"} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not say %q:\n%s", want, out)
		}
	}
	code, out, _ = run(t, b, "status", "--json")
	var st portres.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
		t.Fatalf("status --json: %d %v\n%s", code, err, out)
	}
	if st.Enforcement.Mode != "hold" || !st.KernelList.Writable || st.KernelList.Bytes == 0 || st.Limits.UserPorts != 100 ||
		st.Counts.Runtime != 1 || st.Counts.Persistent != 1 || st.Counts.Ports != 8 || len(st.Dynamic) != 2 || st.Version == "" {
		t.Errorf("status --json = %+v", st)
	}
}
