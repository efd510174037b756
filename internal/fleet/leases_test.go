//go:build linux

package fleet_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/cli"
	"github.com/portres/portres/internal/testutil"
)

func init() {
	testutil.Helpers["fleet-client"] = helperFleetClient
	testutil.Helpers["fleet-hog"] = helperFleetHog
}

// helperFleetHog takes UDP fleet leases of 100 ports until one is
// refused and prints "held PORTS CODE", then waits to be killed.
func helperFleetHog(args []string) int {
	ctx := context.Background()
	c, err := portres.Dial(ctx, "")
	if err != nil {
		fmt.Println("fail dial", err)
		return 1
	}
	held := 0
	for {
		r, err := c.AcquireFleet(ctx, portres.UDP, 0, 100)
		if err != nil {
			fmt.Println("held", held, code(err))
			break
		}
		held += int(r.Count())
	}
	select {}
}

// helperFleetClient is an unprivileged client of a member (the socket in
// PORTRES_SOCKET): it takes a fleet lease of 4 ports and prints "lease
// START", then tries a fleet create and delete and prints "create CODE"
// and "delete CODE". It then reads the fleet as anyone may: "lookup CODE
// TOKEN" for the fleet persistent block of 4 ports at args[0], "bind
// CODE" for a socket bound with that token, "show CODE BLOCK LEASE" (1
// if the fleet view holds the block, and its own lease, within 5 s), "status CODE
// MEMBERS"; then waits to be killed.
func helperFleetClient(args []string) int {
	ctx := context.Background()
	c, err := portres.Dial(ctx, "")
	if err != nil {
		fmt.Println("fail dial", err)
		return 1
	}
	r, err := c.AcquireFleet(ctx, portres.TCP, 0, 4)
	if err != nil {
		fmt.Println("fail acquire", err)
		return 1
	}
	fmt.Println("lease", r.Start())
	_, err = c.CreateFleetPersistent(ctx, portres.TCP, 8500, 4)
	fmt.Println("create", code(err), strings.ReplaceAll(fmt.Sprint(err), "\n", " "))
	err = c.DeleteFleetPersistent(ctx, portres.TCP, 8500, 4)
	fmt.Println("delete", code(err), strings.ReplaceAll(fmt.Sprint(err), "\n", " "))

	block, _ := strconv.Atoi(args[0])
	var token uint64
	fp, err := c.LookupFleetPersistent(ctx, portres.TCP, uint16(block), 4)
	if err == nil {
		token = fp.Token()
	}
	fmt.Println("lookup", code(err), token)
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err == nil {
		_, err = c.BindFD(ctx, token, fd, netip.Addr{}, 0)
		syscall.Close(fd)
	}
	fmt.Println("bind", code(err), strings.ReplaceAll(fmt.Sprint(err), "\n", " "))
	var hasBlock, hasLease int
	for try := 0; try < 50 && hasBlock+hasLease < 2; try++ { // members publish every second
		time.Sleep(time.Duration(min(try, 1)) * 100 * time.Millisecond)
		var es []portres.FleetEntry
		if es, err = c.ShowFleet(ctx); err != nil {
			break
		}
		hasBlock, hasLease = 0, 0
		for _, e := range es {
			if e.Kind == "fleet persistent" && int(e.Start) == block {
				hasBlock = 1
			}
			if e.Kind == "fleet lease" && e.Start == r.Start() && e.UID == uint32(os.Getuid()) {
				hasLease = 1
			}
		}
	}
	fmt.Println("show", code(err), hasBlock, hasLease)
	st, err := c.Status(ctx)
	members := 0
	if err == nil && st.Fleet != nil {
		members = len(st.Fleet.Members)
	}
	fmt.Println("status", code(err), members)
	select {}
}

// code is the Winsock or Win32 code of err, 0 for nil, -1 for another error.
func code(err error) int {
	var e *portres.Error
	if errors.As(err, &e) {
		return int(e.Code)
	}
	if err != nil {
		return -1
	}
	return 0
}

// covers reports whether the ip_local_reserved_ports list kl holds every
// port of lo-hi (the broker may write wider, aligned ranges).
func covers(kl string, lo, hi int) bool {
	in := map[int]bool{}
	for _, r := range strings.Split(kl, ",") {
		a, b, ok := strings.Cut(strings.TrimSpace(r), "-")
		x, _ := strconv.Atoi(a)
		y := x
		if ok {
			y, _ = strconv.Atoi(b)
		}
		for p := max(x, lo); p <= min(y, hi); p++ {
			in[p] = true
		}
	}
	return len(in) == hi-lo+1
}

// runCLI runs the portres command line against sock and returns what it
// printed.
func runCLI(t *testing.T, sock string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if rc := cli.Main(append([]string{"--socket", sock}, args...), strings.NewReader(""), &out, &errb); rc != 0 {
		t.Fatalf("portres %s: exit %d: %s%s", strings.Join(args, " "), rc, out.String(), errb.String())
	}
	return out.String()
}

// TestFleetLeases: fleet leases taken concurrently on three members are
// disjoint and in the fleet range; one member's lease is refused on
// another with WSAEADDRINUSE naming the holder; the fleet view shows who
// holds what, without tokens; a release, the owner's exit and its
// broker's SIGKILL each free the block fleet-wide (the last after the
// member lease's TTL, not before).
func TestFleetLeases(t *testing.T) {
	c := newCluster(t)
	m1, m2, m3 := c.addMember("m1"), c.addMember("m2"), c.addMember("m3")
	ctx := context.Background()
	c1, c2, c3 := c.client(m1), c.client(m2), c.client(m3)
	clients := map[string]*portres.Client{"m1": c1, "m2": c2, "m3": c3}

	type lease struct {
		member string
		r      *portres.Reservation
	}
	var (
		mu     sync.Mutex
		leases []lease
		wg     sync.WaitGroup
	)
	for name, cl := range clients {
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 3; i++ {
					r, err := cl.AcquireFleet(ctx, portres.TCP, 0, 5)
					if err != nil {
						t.Errorf("%s: acquire a fleet lease: %v", name, err)
						return
					}
					mu.Lock()
					leases = append(leases, lease{name, r})
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	slices.SortFunc(leases, func(a, b lease) int { return int(a.r.Start()) - int(b.r.Start()) })
	for i, l := range leases {
		if l.r.Start() < 30000 || l.r.End() > 30999 || l.r.Count() != 5 {
			t.Errorf("lease %v of %s is not 5 ports of the fleet range 30000-30999", l.r, l.member)
		}
		if i > 0 && leases[i-1].r.End() >= l.r.Start() {
			t.Errorf("leases overlap: %v of %s and %v of %s", leases[i-1].r, leases[i-1].member, l.r, l.member)
		}
	}
	t.Logf("%d concurrent fleet leases on 3 members, all disjoint", len(leases))

	var of1 *portres.Reservation
	for _, l := range leases {
		if l.member == "m1" {
			of1 = l.r
			break
		}
	}
	// Held fleet-wide: another member refuses it, naming the holder.
	_, err := c2.AcquireFleet(ctx, portres.TCP, of1.Start()+2, 1)
	if !errors.Is(err, portres.WSAEADDRINUSE) || !strings.Contains(err.Error(), "member m1") {
		t.Errorf("m1's lease taken on m2: %v, want WSAEADDRINUSE naming member m1", err)
	}
	// The fleet range is out of local use on every member.
	if _, err := c3.Acquire(ctx, portres.TCP, 30990, 1); !errors.Is(err, portres.WSAEADDRINUSE) || !strings.Contains(err.Error(), "fleet range") {
		t.Errorf("a local acquire in the fleet range: %v, want WSAEADDRINUSE", err)
	}
	// The dynamic range cannot be moved onto it.
	if err := c3.SetDynamicPortRange(ctx, portres.TCP, 30500, 1000); !errors.Is(err, portres.ERROR_INVALID_PARAMETER) || !strings.Contains(err.Error(), "fleet range") {
		t.Errorf("a dynamic range over the fleet range: %v, want ERROR_INVALID_PARAMETER", err)
	}
	// ... and out of the kernel's automatic assignment.
	if kl := c.reservedPorts(m2); !covers(kl, 30000, 30999) {
		t.Errorf("m2's ip_local_reserved_ports %q lacks the fleet range", kl)
	}
	// A fleet lease binds like any reservation.
	var ln net.Listener
	c.inNetNS(m1, func() { ln, err = of1.Listen(ctx, "tcp4", fmt.Sprintf("0.0.0.0:%d", of1.Start())) })
	if err != nil {
		t.Fatalf("listen on a fleet lease: %v", err)
	}
	defer ln.Close()

	// The fleet view, from another member: host, pid and command; no
	// tokens anywhere.
	eventually(t, 3*time.Second, "m1's lease in the fleet view of m3", func() error {
		es, err := c3.ShowFleet(ctx)
		if err != nil {
			return err
		}
		for _, e := range es {
			if e.Member == "m1" && e.Start == of1.Start() && e.Kind == "fleet lease" {
				if e.PID != int32(os.Getpid()) || !strings.Contains(e.Command, "fleet.test") || e.Host == "" {
					return fmt.Errorf("entry %+v: want pid %d, command fleet.test and a host", e, os.Getpid())
				}
				if !slices.Contains(e.Bound, of1.Start()) {
					return fmt.Errorf("entry %+v: the listening port is not shown bound", e)
				}
				return nil
			}
		}
		return fmt.Errorf("not in %d entries", len(es))
	})
	out := runCLI(t, m3.sock, "show", "--fleet")
	if !strings.Contains(out, "m1") || !strings.Contains(out, "fleet lease") || !strings.Contains(out, strconv.Itoa(int(of1.Start()))) {
		t.Errorf("portres show --fleet:\n%s", out)
	}
	js := runCLI(t, m3.sock, "show", "--fleet", "--json")
	if tok := strconv.FormatUint(of1.Token(), 10); strings.Contains(js, tok) || strings.Contains(js, fmt.Sprintf("%x", of1.Token())) {
		t.Errorf("a token left its host: show --fleet --json:\n%s", js)
	}
	st := runCLI(t, m2.sock, "status", "--fleet")
	for _, name := range []string{"m1", "m2", "m3"} {
		if !strings.Contains(st, name) {
			t.Errorf("portres status --fleet lacks %s:\n%s", name, st)
		}
	}

	// A release frees the block fleet-wide before it returns.
	var of2 *portres.Reservation
	for _, l := range leases {
		if l.member == "m2" {
			of2 = l.r
			break
		}
	}
	if err := of2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	again, err := c1.AcquireFleet(ctx, portres.TCP, of2.Start(), of2.Count())
	if err != nil {
		t.Fatalf("a released lease, at once on another member: %v", err)
	}
	if err := again.Release(ctx); err != nil {
		t.Fatal(err)
	}

	// An unprivileged owner: it may lease, not create or delete fleet
	// blocks; its exit frees its lease fleet-wide.
	// It may read the fleet (a persistent block's token, the fleet view,
	// the members), not consume a fleet persistent block.
	fp, err := c1.CreateFleetPersistent(ctx, portres.TCP, 8600, 4)
	if err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	p := testutil.StartHelperAs(t, nobody, "fleet-client", []string{"PORTRES_SOCKET=" + m2.sock}, "8600")
	var start int
	if l := p.Line(20 * time.Second); !strings.HasPrefix(l, "lease ") {
		t.Fatalf("unprivileged client: %s", l)
	} else {
		start, _ = strconv.Atoi(strings.TrimPrefix(l, "lease "))
	}
	for _, op := range []string{"create", "delete"} {
		l := p.Line(20 * time.Second)
		if want := fmt.Sprintf("%s %d ", op, portres.ERROR_ACCESS_DENIED); !strings.HasPrefix(l, want) {
			t.Errorf("unprivileged fleet %s: %q, want ERROR_ACCESS_DENIED", op, l)
		}
	}
	for _, want := range []string{fmt.Sprintf("lookup 0 %d", fp.Token()), fmt.Sprintf("bind %d ", portres.WSAEACCES), "show 0 1 1", "status 0 3"} {
		if l := p.Line(20 * time.Second); !strings.HasPrefix(l, want) {
			t.Errorf("unprivileged client reading the fleet: %q, want %q", l, want)
		}
	}
	if err := c1.DeleteFleetPersistent(ctx, portres.TCP, 8600, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.AcquireFleet(ctx, portres.TCP, uint16(start), 4); !errors.Is(err, portres.WSAEADDRINUSE) {
		t.Errorf("the unprivileged client's lease on m1: %v, want WSAEADDRINUSE", err)
	}
	p.Cmd.Process.Kill()
	p.Cmd.Wait()
	// One unprivileged user cannot take the fleet range from everyone:
	// its fleet leases are capped (a quarter of the range by default).
	hog := testutil.StartHelperAs(t, nobody, "fleet-hog", []string{"PORTRES_SOCKET=" + m3.sock})
	if l, want := hog.Line(20*time.Second), fmt.Sprintf("held 200 %d", portres.WSAEDQUOT); l != want {
		t.Errorf("an unprivileged user taking the fleet range: %q, want %q (250 of 1000 ports)", l, want)
	}
	hog.Cmd.Process.Kill()
	hog.Cmd.Wait()
	took := eventually(t, 2*time.Second, "the dead owner's lease free on m1", func() error {
		r, err := c1.AcquireFleet(ctx, portres.TCP, uint16(start), 4)
		if err != nil {
			return err
		}
		return r.Release(ctx)
	})
	t.Logf("the owner's exit freed its lease fleet-wide after %v", took)

	// SIGKILL m1's broker: its leases stay held until the member lease
	// runs out (nobody else can know the host is gone), then are freed.
	var mine []*portres.Reservation
	for _, l := range leases {
		if l.member == "m1" {
			mine = append(mine, l.r)
		}
	}
	c.kill(m1)
	killed := time.Now()
	if _, err := c2.AcquireFleet(ctx, portres.TCP, mine[0].Start(), 1); !errors.Is(err, portres.WSAEADDRINUSE) {
		t.Errorf("a dead broker's lease, at once: %v, want WSAEADDRINUSE until the TTL", err)
	}
	for _, r := range mine {
		eventually(t, 6*time.Second, "a dead broker's lease freed", func() error {
			got, err := c2.AcquireFleet(ctx, portres.TCP, r.Start(), r.Count())
			if err != nil {
				return err
			}
			return got.Release(ctx)
		})
	}
	freed := time.Since(killed)
	t.Logf("a SIGKILLed broker's %d leases were freed fleet-wide %v after its death (TTL 3s)", len(mine), freed)
	if freed < time.Second {
		t.Errorf("freed %v after the broker died: before the TTL could run out", freed)
	}

	// Bad requests, and a full range.
	if _, err := c2.AcquireFleet(ctx, portres.TCP, 0, 101); !errors.Is(err, portres.WSAEINVAL) {
		t.Errorf("a fleet lease of 101 ports: %v, want WSAEINVAL", err)
	}
	if _, err := c2.AcquireFleet(ctx, portres.TCP, 29998, 4); !errors.Is(err, portres.WSAEINVAL) || !strings.Contains(err.Error(), "fleet range") {
		t.Errorf("a fleet lease across the range's start: %v, want WSAEINVAL", err)
	}
	var full []*portres.Reservation
	for {
		r, err := c2.AcquireFleet(ctx, portres.UDP, 0, 100)
		if err != nil {
			if !errors.Is(err, portres.WSAENOBUFS) {
				t.Errorf("a fleet lease in a full range: %v, want WSAENOBUFS", err)
			}
			break
		}
		full = append(full, r)
		if len(full) > 10 {
			t.Fatal("more than 10 leases of 100 ports in a range of 1000")
		}
	}
	if len(full) != 10 {
		t.Errorf("%d leases of 100 UDP ports fit in the empty range of 1000, want 10", len(full))
	}
	for _, r := range full {
		r.Release(ctx)
	}
}
