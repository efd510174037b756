package broker_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
)

// TestBPFEnforcement: in bpf mode the broker holds no descriptor per
// port, a foreign process (in the guarded cgroup) can neither bind a
// reserved port nor get one from bind(0), the owner binds through the
// broker, and release lets everyone in again.
func TestBPFEnforcement(t *testing.T) {
	cg, cgfd := testutil.Cgroup(t)
	narrowEphemeral(t, 46500, 46799)
	b := testbroker.Start(t, func(c *broker.Config) { c.Enforce = broker.EnforceBPF; c.Cgroup = cg })
	if b.Enforcement() != broker.EnforceBPF {
		t.Skip("the eBPF bind guard did not load here (the broker fell back to placeholders); see its log")
	}
	c := b.Dial(t)
	ctx := context.Background()
	before := testutil.OpenFDs(t)
	r, err := c.Acquire(ctx, portres.TCP, 0, 150) // inside the narrowed range, past anything lingering
	if err != nil {
		t.Fatal(err)
	}
	if grew := testutil.OpenFDs(t) - before; grew > 5 {
		t.Errorf("bpf mode opened %d descriptors for 150 ports", grew)
	}
	start := strconv.Itoa(int(r.Start()))
	ln, err := r.Listen(ctx, "tcp", ":"+strconv.Itoa(int(r.Start())+1))
	if err != nil {
		t.Fatalf("owner's brokered bind: %v", err)
	}
	defer ln.Close()

	foreign := testutil.StartHelperIn(t, cgfd, "foreign", nil, "tcp", start, "150", "200")
	for l := foreign.Line(10 * time.Second); l != "done"; l = foreign.Line(10 * time.Second) {
		t.Errorf("foreign process in the guarded cgroup got a reserved port: %s", l)
	}
	foreign.Wait()

	if err := r.Release(ctx); err != nil {
		t.Fatal(err)
	}
	second := strconv.Itoa(int(r.Start()) + 2)
	after := testutil.StartHelperIn(t, cgfd, "foreign", nil, "tcp", second, "1", "0")
	if l := after.Line(10 * time.Second); !strings.HasPrefix(l, "bound "+second) {
		t.Errorf("after release: %q, want the port bindable again", l)
	}
	after.Wait()
}
