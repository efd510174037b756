//go:build linux

package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portres/portres"
)

// TestFleetFailures: losing one of three etcd members changes nothing; a
// member cut off from etcd keeps enforcing what it knew, refuses fleet
// operations with WSAENETDOWN, gives its fleet leases up before etcd can
// hand their ports to another member, and reconciles when it is back.
func TestFleetFailures(t *testing.T) {
	c := newCluster(t)
	httpSock := filepath.Join(c.dir, "m3.http")
	m1, m2, m3 := c.addMember("m1"), c.addMember("m2"), c.addMember("m3", "--http", "unix:"+httpSock)
	ctx := context.Background()
	c1, c2, c3 := c.client(m1), c.client(m2), c.client(m3)
	if _, err := c1.CreateFleetPersistent(ctx, portres.TCP, 8100, 4); err != nil {
		t.Fatal(err)
	}
	lease3, err := c3.AcquireFleet(ctx, portres.TCP, 30500, 4)
	if err != nil {
		t.Fatal(err)
	}

	// One etcd member down, the leader: everything goes on, for longer
	// than a TTL.
	c.stopEtcd(c.leader())
	if _, err := c2.CreateFleetPersistent(ctx, portres.TCP, 8200, 4); err != nil {
		t.Fatalf("a fleet create with one etcd member down: %v", err)
	}
	eventually(t, time.Second, "the block on m3 with one etcd member down", func() error {
		_, err := c3.LookupFleetPersistent(ctx, portres.TCP, 8200, 4)
		return err
	})
	r, err := c1.AcquireFleet(ctx, portres.TCP, 0, 3)
	if err != nil {
		t.Fatalf("a fleet lease with one etcd member down: %v", err)
	}
	r.Release(ctx)
	time.Sleep(4 * time.Second) // past the member lease TTL (3s)
	for name, cl := range map[string]*portres.Client{"m1": c1, "m2": c2, "m3": c3} {
		st, err := cl.Status(ctx)
		if err != nil || !st.Fleet.Connected || len(st.Fleet.Members) != 3 {
			t.Fatalf("%s with one etcd member down: %+v %v", name, st.Fleet, err)
		}
	}
	if _, err := c1.AcquireFleet(ctx, portres.TCP, 30500, 1); !errors.Is(err, portres.WSAEADDRINUSE) {
		t.Fatalf("m3's lease with one etcd member down: %v, want still held", err)
	}

	if got := scrape(t, httpSock); !strings.Contains(got, `portres_fleet_connected{member="m3"} 1`) || !strings.Contains(got, "portres_fleet_members 3") {
		t.Errorf("m3's metrics before the cut:\n%s", grepLines(got, "portres_fleet"))
	}

	// Cut m3 off. A create on m1 at once still names m3 (its member lease
	// lives on for a TTL) as a voter, which cannot vote: it fails, naming
	// m3, and leaves nothing behind.
	c.cut(m3, true)
	cutAt := time.Now()
	unvoted := make(chan error, 1)
	go func() {
		_, err := c1.CreateFleetPersistent(ctx, portres.TCP, 8400, 2)
		unvoted <- err
	}()
	took := eventually(t, 10*time.Second, "m3 refusing fleet operations", func() error {
		_, err := c3.AcquireFleet(ctx, portres.TCP, 0, 1)
		if !errors.Is(err, portres.WSAENETDOWN) || !strings.Contains(err.Error(), "m3") {
			return fmt.Errorf("a fleet acquire on a cut-off member: %v, want WSAENETDOWN naming m3", err)
		}
		return nil
	})
	t.Logf("m3 refused fleet operations %v after its link went down", took)
	if got := scrape(t, httpSock); !strings.Contains(got, `portres_fleet_connected{member="m3"} 0`) {
		t.Errorf("m3's metrics while it is cut off:\n%s", grepLines(got, "portres_fleet"))
	}
	if _, err := c3.CreateFleetPersistent(ctx, portres.UDP, 9000, 2); !errors.Is(err, portres.WSAENETDOWN) {
		t.Errorf("a fleet create on a cut-off member: %v, want WSAENETDOWN", err)
	}
	if err := <-unvoted; !errors.Is(err, portres.WSAENETDOWN) || !strings.Contains(err.Error(), "member m3 did not answer") || strings.Contains(err.Error(), "cut off from etcd:") {
		t.Errorf("a fleet create on m1 that m3 could not vote on: %v, want WSAENETDOWN naming m3 (not m1 cut off)", err)
	}
	if _, err := c1.LookupFleetPersistent(ctx, portres.TCP, 8400, 2); !errors.Is(err, portres.ERROR_NOT_FOUND) {
		t.Errorf("lookup of the create m3 did not vote on: %v, want ERROR_NOT_FOUND", err)
	}
	// It keeps enforcing everything it knew.
	if _, err := c3.Acquire(ctx, portres.TCP, 8101, 1); !errors.Is(err, portres.WSAEADDRINUSE) {
		t.Errorf("a fleet block on the cut-off member: local acquire %v, want WSAEADDRINUSE", err)
	}
	if kl := c.reservedPorts(m3); !covers(kl, 8100, 8103) || !covers(kl, 8200, 8203) {
		t.Errorf("the cut-off member's ip_local_reserved_ports %q lost fleet blocks", kl)
	}
	if got, err := c3.LookupFleetPersistent(ctx, portres.TCP, 8100, 4); err != nil {
		t.Errorf("lookup on the cut-off member: %v %v", got, err)
	}
	// The others go on: once m3's member lease lapsed, it is no longer
	// asked to vote, and m3's lease is free for them — but only after m3
	// itself gave it up.
	eventually(t, 8*time.Second, "m3 gone from the others' view", func() error {
		st, err := c1.Status(ctx)
		if err != nil || len(st.Fleet.Members) != 2 {
			return fmt.Errorf("members %+v %v", st.Fleet, err)
		}
		return nil
	})
	taken, err := c1.AcquireFleet(ctx, portres.TCP, 30500, 4)
	if err != nil {
		t.Fatalf("m3's lease after its member lease lapsed: %v", err)
	}
	show3, err := c3.Show(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range show3 {
		if in.Proto == portres.TCP && in.Start == 30500 {
			t.Fatalf("held twice: m1 leased 30500-30503 while cut-off m3 still holds %+v", in)
		}
	}
	if _, err := c1.CreateFleetPersistent(ctx, portres.TCP, 8300, 4); err != nil {
		t.Fatalf("a fleet create while m3 is cut off: %v", err)
	}
	for i := 0; i < 5; i++ {
		if _, err := c2.AcquireFleet(ctx, portres.UDP, 0, 2); err != nil {
			t.Fatalf("m2 allocating while m3 is cut off: %v", err)
		}
	}
	if err := lease3.Release(ctx); err == nil {
		t.Errorf("m3's given-up lease released without an error")
	}
	t.Logf("m3 cut off for %v", time.Since(cutAt))

	// Back: m3 registers anew and applies what it missed.
	c.cut(m3, false)
	took = eventually(t, 10*time.Second, "m3 back in the fleet", func() error {
		st, err := c3.Status(ctx)
		if err != nil || !st.Fleet.Connected || len(st.Fleet.Members) != 3 {
			return fmt.Errorf("status %+v %v", st.Fleet, err)
		}
		if _, err := c3.LookupFleetPersistent(ctx, portres.TCP, 8300, 4); err != nil {
			return fmt.Errorf("the block created while it was away: %v", err)
		}
		return nil
	})
	t.Logf("m3 reconciled %v after its link came back", took)
	if _, err := c3.Acquire(ctx, portres.TCP, 8300, 1); !errors.Is(err, portres.WSAEADDRINUSE) {
		t.Errorf("the block created while m3 was away is not enforced there: %v", err)
	}
	if _, err := c3.AcquireFleet(ctx, portres.TCP, 30500, 1); !errors.Is(err, portres.WSAEADDRINUSE) || !strings.Contains(err.Error(), "member m1") {
		t.Errorf("m1's lease from m3 after the cut: %v, want WSAEADDRINUSE naming m1", err)
	}
	r3, err := c3.AcquireFleet(ctx, portres.TCP, 0, 2)
	if err != nil {
		t.Fatalf("a fleet lease on m3 after the cut: %v", err)
	}
	if r3.Start() >= taken.Start() && r3.Start() <= taken.End() {
		t.Errorf("m3 leased %v inside m1's %v", r3, taken)
	}

	// A block created while m3 was away that collides with what m3 took
	// locally meanwhile: m3 cannot enforce it when it comes back, and
	// does as soon as its local use ends.
	c.cut(m3, true)
	local, err := c3.Acquire(ctx, portres.UDP, 9100, 2)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 8*time.Second, "m3 gone again", func() error {
		st, err := c1.Status(ctx)
		if err != nil || len(st.Fleet.Members) != 2 {
			return fmt.Errorf("members %+v %v", st.Fleet, err)
		}
		return nil
	})
	if _, err := c1.CreateFleetPersistent(ctx, portres.UDP, 9100, 4); err != nil {
		t.Fatal(err)
	}
	c.cut(m3, false)
	eventually(t, 10*time.Second, "m3 back, knowing the block", func() error {
		_, err := c3.LookupFleetPersistent(ctx, portres.UDP, 9100, 4)
		return err
	})
	if r, err := c3.Acquire(ctx, portres.UDP, 9102, 1); err != nil {
		t.Errorf("m3 enforces a block that collides with its local use: a local acquire beside that use: %v", err)
	} else {
		r.Release(ctx)
	}
	if err := local.Release(ctx); err != nil {
		t.Fatal(err)
	}
	took = eventually(t, 5*time.Second, "the block enforced on m3 once its local use ended", func() error {
		r, err := c3.Acquire(ctx, portres.UDP, 9102, 1)
		if err == nil {
			r.Release(ctx)
			return fmt.Errorf("a local acquire inside it succeeded")
		}
		if !errors.Is(err, portres.WSAEADDRINUSE) || !strings.Contains(err.Error(), "persistent") {
			return fmt.Errorf("a local acquire inside it: %v", err)
		}
		return nil
	})
	t.Logf("m3 enforced the block %v after its local use ended", took)
}

// scrape reads the metrics a broker serves on the unix socket sock
// (portresd --http unix:PATH).
func scrape(t *testing.T, sock string) string {
	t.Helper()
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	resp, err := cl.Get("http://portresd/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", sock, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// grepLines keeps the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
