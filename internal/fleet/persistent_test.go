//go:build linux

package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/portres/portres"
)

// TestFleetPersistent: a fleet persistent reservation created on one
// member is visible and enforced on the others within a second, with one
// token; a block that collides with local use on one member is created
// nowhere; a member that joins later applies every fleet block before it
// serves; a delete goes everywhere; status --fleet lists the members.
func TestFleetPersistent(t *testing.T) {
	c := newCluster(t)
	m1, m2, m3 := c.addMember("m1"), c.addMember("m2"), c.addMember("m3")
	ctx := context.Background()
	c1, c2, c3 := c.client(m1), c.client(m2), c.client(m3)

	st, err := c2.Status(ctx)
	if err != nil || st.Fleet == nil || !st.Fleet.Connected {
		t.Fatalf("status: %+v %v", st, err)
	}
	eventually(t, 5*time.Second, "three members registered", func() error {
		st, _ := c1.Status(ctx)
		if st == nil || st.Fleet == nil || len(st.Fleet.Members) != 3 {
			return fmt.Errorf("members %+v", st.Fleet)
		}
		return nil
	})

	// A second broker of a name a live broker of this host holds is
	// refused, and takes nothing over.
	out, err := c.tryStart(m2, "--etcd", c.endpoints(m2.n), "--fleet-name", "m1")
	if err == nil || err.Error() == "it started" || !strings.Contains(out, "registered by portresd pid") {
		t.Errorf("a second broker named m1: %v\n%s", err, out)
	}
	if st, err := c1.Status(ctx); err != nil || !st.Fleet.Connected {
		t.Errorf("m1 after another broker tried its name: %+v %v", st, err)
	}

	r, err := c1.CreateFleetPersistent(ctx, portres.TCP, 8000, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*portres.Client{c2, c3} {
		took := eventually(t, time.Second, "the block on another member", func() error {
			got, err := cl.LookupFleetPersistent(ctx, portres.TCP, 8000, 10)
			if err != nil {
				return err
			}
			if got.Token() != r.Token() {
				return fmt.Errorf("token %#x, want %#x", got.Token(), r.Token())
			}
			// Enforced: a local acquire there is refused, and the block
			// is in that host's kernel list.
			if _, err := cl.Acquire(ctx, portres.TCP, 8005, 1); !errors.Is(err, portres.WSAEADDRINUSE) {
				return fmt.Errorf("a local acquire of 8005: %v", err)
			}
			return nil
		})
		t.Logf("visible and enforced on another member after %v", took)
	}
	if kl := c.reservedPorts(m3); !covers(kl, 8000, 8009) {
		t.Errorf("m3's ip_local_reserved_ports %q lacks the fleet block", kl)
	}
	if _, err := c2.CreateFleetPersistent(ctx, portres.TCP, 8005, 10); !errors.Is(err, portres.ERROR_SHARING_VIOLATION) {
		t.Errorf("overlapping fleet create: %v, want ERROR_SHARING_VIOLATION", err)
	}

	// A block that collides with local use on m2: created nowhere.
	held, err := c2.Acquire(ctx, portres.UDP, 40003, 2)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c1.CreateFleetPersistent(ctx, portres.UDP, 40000, 10)
	if !errors.Is(err, portres.ERROR_SHARING_VIOLATION) || !strings.Contains(err.Error(), "member m2") {
		t.Fatalf("a create colliding with m2's runtime block: %v, want ERROR_SHARING_VIOLATION naming m2", err)
	}
	for _, cl := range []*portres.Client{c1, c2, c3} {
		if _, err := cl.LookupFleetPersistent(ctx, portres.UDP, 40000, 10); !errors.Is(err, portres.ERROR_NOT_FOUND) {
			t.Errorf("after a failed create: lookup %v, want ERROR_NOT_FOUND", err)
		}
	}
	eventually(t, 2*time.Second, "m3 dropped what it prepared", func() error {
		r, err := c3.Acquire(ctx, portres.UDP, 40000, 10)
		if err != nil {
			return err
		}
		return r.Release(ctx)
	})
	held.Release(ctx)

	// A member that joins later has every fleet block before it serves.
	m4 := c.addMember("m4")
	c4 := c.client(m4)
	if got, err := c4.LookupFleetPersistent(ctx, portres.TCP, 8000, 10); err != nil || got.Token() != r.Token() {
		t.Fatalf("a member joining later: lookup %v %v", got, err)
	}
	if _, err := c4.Acquire(ctx, portres.TCP, 8000, 1); !errors.Is(err, portres.WSAEADDRINUSE) {
		t.Errorf("a member joining later does not enforce the block: %v", err)
	}
	// A local delete of a fleet block is refused; a fleet delete goes
	// everywhere.
	if err := c3.DeletePersistent(ctx, portres.TCP, 8000, 10); !errors.Is(err, portres.ERROR_ACCESS_DENIED) {
		t.Errorf("local delete of a fleet block: %v", err)
	}
	if err := c3.DeleteFleetPersistent(ctx, portres.TCP, 8000, 10); err != nil {
		t.Fatal(err)
	}
	if err := c3.DeleteFleetPersistent(ctx, portres.TCP, 8000, 10); !errors.Is(err, portres.ERROR_NOT_FOUND) {
		t.Errorf("second delete: %v", err)
	}
	for _, cl := range []*portres.Client{c1, c2, c4} {
		eventually(t, time.Second, "the block gone on every member", func() error {
			_, err := cl.LookupFleetPersistent(ctx, portres.TCP, 8000, 10)
			if !errors.Is(err, portres.ERROR_NOT_FOUND) {
				return fmt.Errorf("lookup: %v", err)
			}
			r, err := cl.Acquire(ctx, portres.TCP, 8000, 10)
			if err != nil {
				return err
			}
			return r.Release(ctx)
		})
	}
}
