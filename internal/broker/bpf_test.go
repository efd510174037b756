//go:build linux

package broker_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/fdpass"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
	"github.com/portres/portres/internal/wire"
	"golang.org/x/sys/unix"
)

// TestBPFEnforcement: in bpf mode the broker holds no descriptor per
// port, a foreign process (in the guarded cgroup) can neither bind a
// reserved port nor get one from bind(0), the owner binds through the
// broker, and release lets everyone in again.
func TestBPFEnforcement(t *testing.T) {
	narrowEphemeral(t, 46500, 46799)
	b, cgfd := startBPF(t)
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

// TestBPFListChunks: in bpf mode a runtime block goes into
// ip_local_reserved_ports as its 64-port chunk; a block inside a listed
// chunk costs no write of the list, and a release leaves it listed until
// the next sweep takes it out.
func TestBPFListChunks(t *testing.T) {
	cg, _ := testutil.Cgroup(t)
	b := testbroker.Start(t, func(c *broker.Config) {
		c.Enforce, c.Cgroup, c.Metrics, c.Sweep = broker.EnforceBPF, cg, "127.0.0.1:0", 200*time.Millisecond
	})
	if b.Enforcement() != broker.EnforceBPF {
		t.Skip("the eBPF bind guard did not load here (the broker fell back to placeholders); see its log")
	}
	ctx := context.Background()
	c := b.Dial(t)
	r, err := c.Acquire(ctx, portres.TCP, 50001, 1)
	if err != nil {
		t.Fatal(err)
	}
	wantReserved(t, "49984-50047")
	writes := scrape(t, b, "portres_kernel_list_writes_total")
	r2, err := c.Acquire(ctx, portres.UDP, 50010, 3)
	if err != nil {
		t.Fatal(err)
	}
	if w := scrape(t, b, "portres_kernel_list_writes_total"); w != writes {
		t.Errorf("a block inside a listed chunk wrote the list %v times", w-writes)
	}
	r.Release(ctx)
	r2.Release(ctx)
	wantReserved(t, "49984-50047") // until the sweep
	deadline := time.Now().Add(3 * time.Second)
	for enforce.FormatRanges(reservedNow(t)) != "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	wantReserved(t, "")
}

// TestBPFFailedBindEndsAllowance: the broker lets a client's socket
// through the guard only for the bind it makes; when that bind fails the
// socket goes back unbound, and the client binding it itself to the
// guarded port is refused like any other socket.
func TestBPFFailedBindEndsAllowance(t *testing.T) {
	b, cgfd := startBPF(t)
	p := testutil.StartHelperIn(t, cgfd, "ops", append(socketEnv(b), quickExit()...), "misbind 47321")
	l := p.Line(10 * time.Second)
	p.Wait()
	f := strings.Fields(l)
	if len(f) != 5 || f[0] != "misbind" {
		t.Fatalf("helper: %q", l)
	}
	if f[1] == "0" {
		t.Fatalf("the brokered bind to an address not on the host succeeded: %q", l)
	}
	if f[4] == "ok" {
		t.Errorf("after the failed brokered bind, the client bound its socket to the guarded port itself: %q", l)
	}
}

// TestBPFAcquireFindsPortsInUse: in bpf mode a new block's ports are
// checked for sockets bound before it, by placeholders held until the
// guard keeps the block (small blocks) or by probes through the guard
// (large ones): a port in use fails an explicit acquire, the failed
// block leaves nothing guarded, and the acquired one is guarded.
func TestBPFAcquireFindsPortsInUse(t *testing.T) {
	b, cgfd := startBPF(t)
	c := b.Dial(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		start, busy uint16
		count       uint16
	}{
		{"small block", 47400, 47402, 4},
		{"large block", 47500, 47600, 200},
	} {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(tc.busy)}); err != nil {
			t.Fatal(err)
		}
		_, err = c.Acquire(ctx, portres.TCP, tc.start, tc.count)
		var pe *portres.Error
		if !errors.As(err, &pe) || pe.Code != portres.WSAEADDRINUSE || pe.Port != tc.busy {
			t.Errorf("%s: acquire over a bound port: %v, want WSAEADDRINUSE naming port %d", tc.name, err, tc.busy)
		}
		unix.Close(fd)
		// Nothing of the failed block is left guarded: a process in the
		// guarded cgroup binds its first port.
		first := strconv.Itoa(int(tc.start))
		p := testutil.StartHelperIn(t, cgfd, "foreign", nil, "tcp", first, "1", "0")
		if l := p.Line(10 * time.Second); !strings.HasPrefix(l, "bound "+first) {
			t.Errorf("%s: port %s after the failed acquire: %q, want it bindable", tc.name, first, l)
		}
		p.Wait()
		r, err := c.Acquire(ctx, portres.TCP, tc.start, tc.count)
		if err != nil {
			t.Errorf("%s: acquire once the port is free: %v", tc.name, err)
			continue
		}
		// Acquired, the block is guarded: the same process gets none of
		// its ports (the helper prints only what it bound, then "done").
		p = testutil.StartHelperIn(t, cgfd, "foreign", nil, "tcp", first, strconv.Itoa(int(tc.count)), "0")
		for l := p.Line(10 * time.Second); l != "done"; l = p.Line(10 * time.Second) {
			t.Errorf("%s: a process in the guarded cgroup got a port of the block: %s", tc.name, l)
		}
		p.Wait()
		r.Release(ctx)
	}
}

// TestAcquireBindPlacementRetry: a one-request acquire and bind whose
// first placements meet ports in use moves on, in both modes, and binds
// the socket to a port of the block it finally gets (each placement
// works out its own port: a port kept from a failed placement would lie
// outside the block, and an earlier broker bound the socket there and
// then crashed). Wildcard blocks of one and of three ports.
func TestAcquireBindPlacementRetry(t *testing.T) {
	cg, _ := testutil.Cgroup(t)
	narrowEphemeral(t, 47800, 47839)
	var busy []int
	for port := 47800; port < 47830; port += 3 { // every third port of the first 30
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet6{Port: port}); err != nil {
			t.Fatal(err)
		}
		busy = append(busy, fd)
	}
	defer closeAllFDs(busy)
	for _, mode := range []string{broker.EnforceHold, broker.EnforceBPF} {
		b := testbroker.Start(t, func(c *broker.Config) { c.Enforce = mode; c.Cgroup = cg })
		c := b.Dial(t)
		ctx := context.Background()
		for _, count := range []uint16{1, 3} {
			raw := rawConn(t, b)
			fd, _ := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			req := wire.AppendRequest(nil, &wire.Request{ID: 1, Op: wire.OpAcquire, Flags: wire.FlagBind, Proto: uint8(portres.TCP), Count: count})
			if err := fdpass.Send(raw, req, fd); err != nil {
				t.Fatal(err)
			}
			r := readResponse(t, raw)
			sa, _ := unix.Getsockname(fd)
			bound := sa.(*unix.SockaddrInet6).Port
			unix.Close(fd)
			if r.Code != 0 || r.Port == 0 || int(r.Port) != bound || r.Port < r.Start || int(r.Port) >= int(r.Start)+int(count) {
				t.Errorf("%s, %d ports: answer %+v, socket bound to %d; want success, the socket on a port of the block", mode, count, r, bound)
			}
			raw.Close()
		}
		// The broker is alive and well.
		if _, _, err := c.DynamicPortRange(ctx, portres.TCP); err != nil {
			t.Fatalf("%s: broker after the retried placements: %v", mode, err)
		}
	}
}

func closeAllFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// TestKernelListKeepsLiveBlocks: a block admitted into a 64-port chunk
// the kernel list already holds (no write of its own) stays listed while
// it lives, even when a write planned just before it, with the chunk
// then empty, takes the chunk out. One client takes and releases a port
// of one chunk over and over (its chunk is empty between a release and
// the next acquire), two others force list writes elsewhere; while the
// client holds its port, ip_local_reserved_ports must list it (else
// bind(0) could be given it: TestChaos once saw a foreign bind(0) win
// such a port).
func TestKernelListKeepsLiveBlocks(t *testing.T) {
	b, _ := startBPF(t)
	listed := func(port uint16) bool {
		data, err := os.ReadFile(testutil.ReservedPortsPath)
		if err != nil {
			t.Error(err)
			return true
		}
		for _, r := range strings.Split(strings.TrimSpace(string(data)), ",") {
			lo, hi, _ := strings.Cut(r, "-")
			if hi == "" {
				hi = lo
			}
			l, _ := strconv.Atoi(lo)
			h, _ := strconv.Atoi(hi)
			if int(port) >= l && int(port) <= h {
				return true
			}
		}
		return false
	}
	ctx := context.Background()
	const chunk = 47680 // 64-aligned
	stop := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	var missing, cycles atomic.Int64
	c := b.Dial(t)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for time.Now().Before(stop) {
			r, err := c.Acquire(ctx, portres.TCP, chunk+5, 1)
			if err != nil {
				t.Errorf("acquire: %v", err)
				return
			}
			for k := 0; k < 3; k++ { // a write under way may end any moment
				if !listed(chunk + 5) {
					missing.Add(1)
					break
				}
				time.Sleep(100 * time.Microsecond)
			}
			cycles.Add(1)
			if err := r.Release(ctx); err != nil {
				t.Errorf("release: %v", err)
				return
			}
		}
	}()
	for i := 0; i < 2; i++ {
		w := b.Dial(t)
		wg.Add(1)
		go func() { // list writes: blocks in chunks nobody else uses, taken and released
			defer wg.Done()
			for k := 0; time.Now().Before(stop); k++ {
				r, err := w.Acquire(ctx, portres.UDP, uint16(chunk+64*(1+i*8+k%8)), 1)
				if err != nil {
					t.Errorf("writer: %v", err)
					return
				}
				r.Release(ctx)
			}
		}()
	}
	wg.Wait()
	if n := missing.Load(); n > 0 {
		t.Errorf("%d of %d times a live block's port was missing from ip_local_reserved_ports", n, cycles.Load())
	}
	t.Logf("%d acquire+check+release cycles", cycles.Load())
}

// TestBPFPlaceholdersLinger: the placeholders that checked a small
// guarded block's ports stay a moment after the guard took the block, so
// that a foreign bind which passed the guard's check just before, and
// reaches the port only now, fails. The test process is outside the
// guarded cgroup (the guard does not see it), which makes the lingering
// placeholders visible: its bind fails at first, the owner's bind
// through the broker does not, and once they are gone the test's bind
// succeeds (nothing is left behind).
func TestBPFPlaceholdersLinger(t *testing.T) {
	b, _ := startBPF(t)
	c := b.Dial(t)
	ctx := context.Background()
	r, err := c.Acquire(ctx, portres.TCP, 47360, 2)
	if err != nil {
		t.Fatal(err)
	}
	bindOutside := func(port int) error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		return unix.Bind(fd, &unix.SockaddrInet4{Port: port})
	}
	if err := bindOutside(47361); !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("a bind the guard does not see, right after the acquire: %v, want EADDRINUSE from a lingering placeholder", err)
	}
	ln, err := r.Listen(ctx, "tcp", ":47360")
	if err != nil {
		t.Fatalf("the owner's bind while the placeholders linger: %v", err)
	}
	defer ln.Close()
	deadline := time.Now().Add(5 * time.Second)
	for bindOutside(47361) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the lingering placeholder of port 47361 never went")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startBPF starts a broker in bpf mode on a fresh cgroup and returns it
// with the cgroup's descriptor (for helpers the guard must see); it skips
// the test where the guard does not load.
func startBPF(t *testing.T) (*testbroker.Broker, int) {
	t.Helper()
	cg, cgfd := testutil.Cgroup(t)
	b := testbroker.Start(t, func(c *broker.Config) { c.Enforce = broker.EnforceBPF; c.Cgroup = cg })
	if b.Enforcement() != broker.EnforceBPF {
		t.Skip("the eBPF bind guard did not load here (the broker fell back to placeholders); see its log")
	}
	return b, cgfd
}
