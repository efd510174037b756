//go:build linux

package broker_test

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
)

// ---------------------------------------------------------------------
// Shared machinery: a broker in a process of its own, the kernel list,
// error checks.

// pdaemon is portresd run as a child process (helper
// "persistent-daemon"), so that restarts and crashes are real: a new
// process opens the same state file.
type pdaemon struct {
	t                 *testing.T
	sock, state, logf string
	group             string
	p                 *testutil.Process
}

// newPDaemon prepares (but does not start) a daemon with its socket,
// state and log in a fresh directory. ip_local_reserved_ports is emptied
// now and when the test ends.
func newPDaemon(t *testing.T, group string) *pdaemon {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.ClearReservedPorts(t)
	t.Cleanup(func() { testutil.ClearReservedPorts(t) })
	dir := testutil.Dir(t)
	return &pdaemon{t: t, sock: filepath.Join(dir, "portres.sock"), state: filepath.Join(dir, "state.db"),
		logf: filepath.Join(dir, "portresd.log"), group: group}
}

// start runs a new daemon process and waits until it accepts clients.
func (d *pdaemon) start() {
	d.t.Helper()
	if d.p != nil {
		d.t.Fatal("daemon already running")
	}
	args := []string{d.sock, d.state, d.logf}
	if d.group != "" {
		args = append(args, d.group)
	}
	p := testutil.StartHelper(d.t, "persistent-daemon", quickExit(), args...)
	d.p = p
	// Runs before StartHelper's kill: a graceful stop if still running.
	d.t.Cleanup(func() {
		if d.p == p {
			p.Cmd.Process.Signal(syscall.SIGTERM)
			p.Wait()
			d.p = nil
		}
	})
	if l := p.Line(20 * time.Second); l != "ready" {
		d.t.Fatalf("daemon did not start: %s\n%s", l, d.logText())
	}
}

// stop ends the daemon with SIGTERM and checks it shut down cleanly.
func (d *pdaemon) stop() {
	d.t.Helper()
	d.p.Cmd.Process.Signal(syscall.SIGTERM)
	if code := d.p.Wait(); code != 0 {
		d.t.Fatalf("daemon exited %d after SIGTERM\n%s", code, d.logText())
	}
	d.p = nil
	if _, err := os.Stat(d.sock); !errors.Is(err, os.ErrNotExist) {
		d.t.Errorf("socket left behind after SIGTERM: %v", err)
	}
}

// kill ends the daemon with SIGKILL: no clean-up at all.
func (d *pdaemon) kill() {
	d.t.Helper()
	d.p.Cmd.Process.Signal(syscall.SIGKILL)
	d.p.Wait()
	d.p = nil
}

// dial connects a client (closed when the test ends).
func (d *pdaemon) dial() *portres.Client {
	d.t.Helper()
	c, err := portres.Dial(context.Background(), d.sock)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { c.Close() })
	return c
}

func (d *pdaemon) logText() string {
	b, _ := os.ReadFile(d.logf)
	return "daemon log:\n" + string(b)
}

// quickExit is the environment of helper processes: a -race binary
// otherwise sleeps a second at exit (GORACE atexit_sleep_ms=1000), which
// would add up to most of these tests' time.
func quickExit() []string {
	return []string{"GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")}
}

// pblock is a persistent block.
type pblock struct {
	proto        portres.Proto
	start, count uint16
}

func (b pblock) String() string { return fmt.Sprintf("%s %d+%d", b.proto, b.start, b.count) }

func (b pblock) rng() enforce.Range {
	return enforce.Range{Lo: b.start, Hi: uint16(int(b.start) + int(b.count) - 1)}
}

// reservedNow reads ip_local_reserved_ports (one large read), merged.
func reservedNow(t *testing.T) []enforce.Range {
	t.Helper()
	rs, err := enforce.NewReservedPorts(testutil.ReservedPortsPath, nil).Read()
	if err != nil {
		t.Fatal(err)
	}
	return enforce.MergeRanges(rs)
}

// wantReserved checks the kernel list is exactly want (kernel syntax).
func wantReserved(t *testing.T, want string) {
	t.Helper()
	if got := enforce.FormatRanges(reservedNow(t)); got != want {
		t.Errorf("ip_local_reserved_ports = %q, want %q", got, want)
	}
}

// waitReserved is wantReserved after up to 2 s for lazily unlisted blocks
// to leave.
func waitReserved(t *testing.T, want string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if enforce.FormatRanges(reservedNow(t)) == want {
			return
		}
	}
	wantReserved(t, want)
}

// setReserved writes the kernel list as a foreign program would.
func setReserved(t *testing.T, list string) {
	t.Helper()
	if err := os.WriteFile(testutil.ReservedPortsPath, []byte(list+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// persistentShown is Show's persistent entries, by block, with tokens.
func persistentShown(t *testing.T, c *portres.Client) map[pblock]uint64 {
	t.Helper()
	infos, err := c.Show(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := map[pblock]uint64{}
	for _, in := range infos {
		if in.Kind == portres.Persistent {
			m[pblock{in.Proto, in.Start, in.Count}] = in.Token
		}
	}
	return m
}

// mergedBlocks is the kernel syntax of the union of blocks and extra.
func mergedBlocks(blocks map[pblock]uint64, extra []enforce.Range) string {
	rs := append([]enforce.Range(nil), extra...)
	for b := range blocks {
		rs = append(rs, b.rng())
	}
	return enforce.FormatRanges(enforce.MergeRanges(rs))
}

// wantCode checks that err is a *portres.Error with the Win32/Winsock
// number num named name, that errors.Is matches it, its Go equivalent
// goErr and its syscall errno, and that the message contains msg.
func wantCode(t *testing.T, what string, err error, num int, name string, goErr error, msg string) {
	t.Helper()
	var pe *portres.Error
	if !errors.As(err, &pe) {
		t.Errorf("%s: got %v (%T), want %s (%d)", what, err, err, name, num)
		return
	}
	if int(pe.Code) != num || pe.Code.Name() != name {
		t.Errorf("%s: code %d (%s), want %d (%s): %v", what, int(pe.Code), pe.Code.Name(), num, name, err)
	}
	if !errors.Is(err, portres.Errno(num)) {
		t.Errorf("%s: errors.Is(err, %s) = false", what, name)
	}
	if goErr != nil && !errors.Is(err, goErr) {
		t.Errorf("%s: errors.Is(%v, %v) = false", what, err, goErr)
	}
	if se := portres.Errno(num).Syscall(); se != 0 && !errors.Is(err, se) {
		t.Errorf("%s: errors.Is(err, %v) = false", what, se)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("%s: message %q lacks %q", what, err.Error(), msg)
	}
}

func mustCreate(t *testing.T, c *portres.Client, b pblock) uint64 {
	t.Helper()
	r, err := c.CreatePersistent(context.Background(), b.proto, b.start, b.count)
	if err != nil {
		t.Fatalf("create %v: %v", b, err)
	}
	if r.Token() == 0 || r.Start() != b.start || r.Count() != b.count || r.Proto() != b.proto {
		t.Fatalf("create %v answered %v token %#x", b, r, r.Token())
	}
	return r.Token()
}

func mustLookup(t *testing.T, c *portres.Client, b pblock, token uint64) {
	t.Helper()
	r, err := c.LookupPersistent(context.Background(), b.proto, b.start, b.count)
	if err != nil {
		t.Errorf("lookup %v: %v", b, err)
		return
	}
	if r.Token() != token {
		t.Errorf("lookup %v: token %#x, want %#x", b, r.Token(), token)
	}
}

// ---------------------------------------------------------------------
// 1. Restart

// TestPersistentSurvivesRestart: persistent blocks and their tokens
// survive daemon restarts (new processes on the same database), and the
// kernel list holds them after each start — also when the list was
// emptied while the daemon was down, as after a reboot.
func TestPersistentSurvivesRestart(t *testing.T) {
	d := newPDaemon(t, "")
	d.start()
	c := d.dial()
	blocks := []pblock{
		{portres.TCP, 20000, 10}, {portres.TCP, 20010, 1}, {portres.TCP, 30000, 100},
		{portres.UDP, 20000, 5}, {portres.UDP, 65535, 1}, {portres.UDP, 1, 1},
	}
	tokens := map[pblock]uint64{}
	seen := map[uint64]bool{}
	for _, b := range blocks {
		tok := mustCreate(t, c, b)
		if seen[tok] {
			t.Errorf("token %#x handed out twice", tok)
		}
		seen[tok] = true
		tokens[b] = tok
		mustLookup(t, c, b, tok)
	}
	const want = "1,20000-20010,30000-30099,65535"
	wantReserved(t, want)
	for round, reboot := range []bool{false, true, false} {
		d.stop()
		if reboot {
			testutil.ClearReservedPorts(t)
		}
		d.start()
		c = d.dial()
		for _, b := range blocks {
			mustLookup(t, c, b, tokens[b])
		}
		shown := persistentShown(t, c)
		if len(shown) != len(tokens) {
			t.Errorf("restart %d: Show lists %d persistent blocks, want %d: %v", round, len(shown), len(tokens), shown)
		}
		for b, tok := range tokens {
			if shown[b] != tok {
				t.Errorf("restart %d: Show has %v with token %#x, want %#x", round, b, shown[b], tok)
			}
		}
		wantReserved(t, want)
	}
}

// ---------------------------------------------------------------------
// 2. SIGKILL

// TestPersistentSIGKILLDuringBurst kills the daemon with SIGKILL in the
// middle of a burst of creates and deletes, three times, and restarts it
// on the same database each time: every acknowledged create is there with
// its token, every acknowledged delete is gone, the one request in flight
// went one way or the other, and the kernel list is exactly the foreign
// entries plus the persistent blocks.
func TestPersistentSIGKILLDuringBurst(t *testing.T) {
	d := newPDaemon(t, "")
	foreign := []enforce.Range{{Lo: 1234, Hi: 1234}, {Lo: 20030, Hi: 20032}}
	setReserved(t, enforce.FormatRanges(foreign))

	type op struct {
		b      pblock
		create bool
	}
	live := map[pblock]uint64{} // acknowledged creates not deleted
	gone := map[pblock]bool{}   // acknowledged deletes
	var inflight *op            // the request the kill interrupted, if any
	next := 0
	blockOf := func(i int) pblock {
		proto := portres.TCP
		if i%4 >= 2 {
			proto = portres.UDP
		}
		return pblock{proto, uint16(20000 + 3*i), uint16(1 + i%2)}
	}

	verify := func(round int) {
		t.Helper()
		c := d.dial()
		shown := persistentShown(t, c)
		if inflight != nil {
			_, there := shown[inflight.b]
			switch {
			case inflight.create && there:
				live[inflight.b] = shown[inflight.b]
			case !inflight.create && !there:
				delete(live, inflight.b)
				gone[inflight.b] = true
			}
			t.Logf("round %d: in-flight %s of %v went %s", round, map[bool]string{true: "create", false: "delete"}[inflight.create],
				inflight.b, map[bool]string{true: "through", false: "nowhere"}[inflight.create == there])
			inflight = nil
		}
		for b, tok := range live {
			if shown[b] != tok {
				t.Errorf("round %d: acknowledged create %v: Show token %#x, want %#x", round, b, shown[b], tok)
			}
			mustLookup(t, c, b, tok)
		}
		for b := range shown {
			if _, ok := live[b]; !ok {
				t.Errorf("round %d: Show lists %v, which was never acknowledged or was deleted", round, b)
			}
		}
		for b := range gone {
			_, err := c.LookupPersistent(context.Background(), b.proto, b.start, b.count)
			if !errors.Is(err, portres.ERROR_NOT_FOUND) {
				t.Errorf("round %d: acknowledged delete %v: lookup %v, want ERROR_NOT_FOUND", round, b, err)
			}
		}
		wantReserved(t, mergedBlocks(shown, foreign))
		c.Close()
	}

	var total, inRound atomic.Int64
	for round := 0; round < 3; round++ {
		d.start()
		verify(round)
		c := d.dial()
		c.SetReconnectWait(0) // the test starts the next broker only after the kill's error
		inRound.Store(0)
		failed := make(chan error, 1)
		go func() {
			ctx := context.Background()
			lost := func(err error) bool { return errors.Is(err, portres.WSAENETDOWN) }
			for {
				if next >= 4000 { // 20000+3*4000 stays clear of port 65535
					failed <- nil
					return
				}
				b := blockOf(next)
				next++
				inflight = &op{b, true}
				r, err := c.CreatePersistent(ctx, b.proto, b.start, b.count)
				if err != nil {
					if !lost(err) {
						inflight = nil
						failed <- fmt.Errorf("create %v: %w", b, err)
					} else {
						failed <- nil
					}
					return
				}
				live[b], inflight = r.Token(), nil
				total.Add(1)
				inRound.Add(1)
				if next%3 != 0 && len(live) <= 24 {
					continue
				}
				// Delete the oldest live block (a bounded list stays well
				// under the sysctl's 4 KiB write limit).
				var victim pblock
				found := false
				for v := range live {
					if !found || v.start < victim.start {
						victim, found = v, true
					}
				}
				inflight = &op{victim, false}
				if err := c.DeletePersistent(ctx, victim.proto, victim.start, victim.count); err != nil {
					if !lost(err) {
						inflight = nil
						failed <- fmt.Errorf("delete %v: %w", victim, err)
					} else {
						failed <- nil
					}
					return
				}
				delete(live, victim)
				gone[victim], inflight = true, nil
				total.Add(1)
				inRound.Add(1)
			}
		}()
		time.Sleep(time.Duration(100+rand.IntN(100)) * time.Millisecond)
		for deadline := time.Now().Add(3 * time.Second); inRound.Load() < 5 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		d.kill()
		if err := <-failed; err != nil {
			t.Fatalf("round %d: %v\n%s", round, err, d.logText())
		}
		t.Logf("round %d: %d requests acknowledged before SIGKILL", round, inRound.Load())
		c.Close()
	}
	d.start()
	verify(3)
	if total.Load() < 15 {
		t.Errorf("only %d requests acknowledged in three bursts: the test proves little", total.Load())
	}
	if len(live) == 0 || len(gone) == 0 {
		t.Errorf("bursts left %d live and %d deleted blocks; want some of each", len(live), len(gone))
	}
}

// TestPersistentSIGKILLDuringStart kills the daemon at random moments of
// its start-up — while it reloads the database and brings
// ip_local_reserved_ports in line with it — many times over. Foreign
// entries the persistent blocks overlap must stay foreign: deleting the
// blocks afterwards leaves them in the kernel list.
func TestPersistentSIGKILLDuringStart(t *testing.T) {
	d := newPDaemon(t, "")
	setReserved(t, "20030,20040")
	d.start()
	c := d.dial()
	a := pblock{portres.UDP, 20030, 1}  // exactly a foreign entry
	b := pblock{portres.TCP, 20035, 10} // contains one
	tokA, tokB := mustCreate(t, c, a), mustCreate(t, c, b)
	wantReserved(t, "20030,20035-20044")
	c.Close()
	d.stop()
	t0 := time.Now()
	d.start()
	ready := time.Since(t0)
	d.stop()
	// The database is reloaded towards the end of the start-up: aim there.
	for i := 0; i < 60; i++ {
		p := testutil.StartHelper(t, "persistent-daemon", quickExit(), d.sock, d.state, d.logf)
		time.Sleep(ready/3 + time.Duration(rand.Int64N(int64(ready)*2/3+1)))
		p.Cmd.Process.Signal(syscall.SIGKILL)
		p.Wait()
	}
	d.start()
	c = d.dial()
	mustLookup(t, c, a, tokA)
	mustLookup(t, c, b, tokB)
	wantReserved(t, "20030,20035-20044")
	for _, blk := range []pblock{a, b} {
		if err := c.DeletePersistent(context.Background(), blk.proto, blk.start, blk.count); err != nil {
			t.Fatal(err)
		}
	}
	wantReserved(t, "20030,20040")
}

// ---------------------------------------------------------------------
// 3. Foreign entries of ip_local_reserved_ports

// TestPersistentForeignReservedPortsKept: entries of
// ip_local_reserved_ports written by others survive create, delete and
// restart, including where a persistent block overlaps or contains them.
func TestPersistentForeignReservedPortsKept(t *testing.T) {
	d := newPDaemon(t, "")
	setReserved(t, "1234,2000-2010")
	d.start()
	wantReserved(t, "1234,2000-2010")
	c := d.dial()
	overlap := pblock{portres.TCP, 2005, 11}  // 2005-2015 overlaps 2000-2010
	contains := pblock{portres.UDP, 1230, 11} // 1230-1240 contains 1234
	inside := pblock{portres.TCP, 2001, 3}    // 2001-2003 lies inside 2000-2010
	tokOverlap := mustCreate(t, c, overlap)
	wantReserved(t, "1234,2000-2015")
	tokContains := mustCreate(t, c, contains)
	tokInside := mustCreate(t, c, inside)
	wantReserved(t, "1230-1240,2000-2015")

	// Restart: nothing changes, and every token is kept.
	d.stop()
	wantReserved(t, "1230-1240,2000-2015")
	d.start()
	c = d.dial()
	wantReserved(t, "1230-1240,2000-2015")
	mustLookup(t, c, overlap, tokOverlap)
	mustLookup(t, c, contains, tokContains)
	mustLookup(t, c, inside, tokInside)

	// Another program adds an entry (merging with what is there).
	setReserved(t, "1230-1240,2000-2015,3000")
	if err := c.DeletePersistent(context.Background(), overlap.proto, overlap.start, overlap.count); err != nil {
		t.Fatal(err)
	}
	wantReserved(t, "1230-1240,2000-2010,3000")
	if err := c.DeletePersistent(context.Background(), inside.proto, inside.start, inside.count); err != nil {
		t.Fatal(err)
	}
	wantReserved(t, "1230-1240,2000-2010,3000")
	if err := c.DeletePersistent(context.Background(), contains.proto, contains.start, contains.count); err != nil {
		t.Fatal(err)
	}
	wantReserved(t, "1234,2000-2010,3000")

	// A restart with no persistent blocks leaves every foreign entry.
	d.stop()
	d.start()
	wantReserved(t, "1234,2000-2010,3000")

	// The kernel list is rebuilt as after a reboot (only the foreign
	// entries come back): the daemon re-adds its block and still removes
	// only its own ports on delete.
	c = d.dial()
	tokOverlap = mustCreate(t, c, overlap)
	d.stop()
	setReserved(t, "1234,2000-2010")
	d.start()
	wantReserved(t, "1234,2000-2015")
	c = d.dial()
	mustLookup(t, c, overlap, tokOverlap)
	if err := c.DeletePersistent(context.Background(), overlap.proto, overlap.start, overlap.count); err != nil {
		t.Fatal(err)
	}
	wantReserved(t, "1234,2000-2010")
}

// ---------------------------------------------------------------------
// 4. Automatic assignment keeps out of persistent blocks

// TestPersistentAutobindExcluded: a program that knows nothing of
// portres never gets a port of a persistent block from bind(0) or
// connect(), even with every other ephemeral port taken, for a TCP and a
// UDP block (the sysctl has no protocol: either excludes both), while an
// explicit bind of a port in the block works.
func TestPersistentAutobindExcluded(t *testing.T) {
	narrowEphemeral(t, 51000, 51199)
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	ctx := context.Background()
	for _, proto := range []portres.Proto{portres.TCP, portres.UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			if _, err := c.CreatePersistent(ctx, proto, 51050, 100); err != nil {
				t.Fatal(err)
			}
			defer c.DeletePersistent(ctx, proto, 51050, 100)
			wantReserved(t, "51050-51149")
			p := testutil.StartHelper(t, "persistent-autobind", quickExit(), "51050", "51149", "51100")
			counts := map[string]int{}
			explicit := map[string]string{}
			for {
				l := p.Line(30 * time.Second)
				f := strings.Fields(l)
				if l == "done" {
					break
				}
				switch f[0] {
				case "count":
					counts[f[1]] = mustAtoi(f[2])
				case "explicit":
					explicit[f[1]] = strings.Join(f[2:], " ")
				default:
					t.Errorf("foreign program: %s", l)
				}
			}
			if code := p.Wait(); code != 0 {
				t.Fatalf("foreign program exited %d", code)
			}
			// 100 ports lie outside the block: the kernel must have handed
			// out (nearly) all of them and never more. Stray TIME_WAIT
			// entries of earlier tests may take a few.
			for _, kind := range []string{"tcp-connect", "tcp-bind0", "udp-bind0", "udp-connect"} {
				if counts[kind] < 50 || counts[kind] > 100 {
					t.Errorf("%s got %d ports, want 50-100 (the ports outside the block)", kind, counts[kind])
				}
			}
			t.Logf("ports handed out: %v", counts)
			for _, pr := range []string{"tcp", "udp"} {
				if explicit[pr] != "ok" {
					t.Errorf("explicit %s bind of port 51100 in the persistent block: %q, want ok", pr, explicit[pr])
				}
			}
		})
	}
}

// ---------------------------------------------------------------------
// 5. Win32 errors

// TestPersistentErrorCodes provokes every Win32 code of the persistent
// and dynamic-range functions through the client API (ACCESS_DENIED is
// in TestPersistentUnprivileged) and checks errors.Is against the Go
// equivalents and that SHARING_VIOLATION says what is in the way.
func TestPersistentErrorCodes(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	ctx := context.Background()
	existing := pblock{portres.TCP, 47500, 10}
	tok := mustCreate(t, c, existing)
	if _, err := c.Acquire(ctx, portres.TCP, 47600, 5); err != nil {
		t.Fatal(err)
	}
	inUse, err := net.Listen("tcp", "127.0.0.1:47700")
	if err != nil {
		t.Fatal(err)
	}
	defer inUse.Close()
	udpInUse, err := net.ListenPacket("udp6", "[::1]:47710")
	if err != nil {
		t.Fatal(err)
	}
	defer udpInUse.Close()
	dlo, dn, err := c.DynamicPortRange(ctx, portres.TCP)
	if err != nil {
		t.Fatal(err)
	}

	create := func(p portres.Proto, s, n uint16) func() error {
		return func() error { _, err := c.CreatePersistent(ctx, p, s, n); return err }
	}
	del := func(p portres.Proto, s, n uint16) func() error {
		return func() error { return c.DeletePersistent(ctx, p, s, n) }
	}
	lookup := func(p portres.Proto, s, n uint16) func() error {
		return func() error { _, err := c.LookupPersistent(ctx, p, s, n); return err }
	}
	dynset := func(p portres.Proto, s, n uint16) func() error {
		return func() error { return c.SetDynamicPortRange(ctx, p, s, n) }
	}
	const (
		inval  = 87
		share  = 32
		nfound = 1168
	)
	pid := strconv.Itoa(os.Getpid())
	cases := []struct {
		name string
		do   func() error
		num  int
		goes error
		msg  string
	}{
		{"create zero start", create(portres.TCP, 0, 5), inval, syscall.EINVAL, "starting port"},
		{"create zero count", create(portres.TCP, 47800, 0), inval, os.ErrInvalid, "got 0"},
		{"create past 65535", create(portres.TCP, 65530, 10), inval, syscall.EINVAL, "past port 65535"},
		{"create max count", create(portres.UDP, 2, 65535), inval, syscall.EINVAL, "past port 65535"},
		{"create bad protocol", create(portres.Proto(1), 47800, 1), inval, syscall.EINVAL, "neither tcp"},
		{"delete zero start", del(portres.TCP, 0, 10), inval, syscall.EINVAL, "starting port"},
		{"lookup zero count", lookup(portres.TCP, 47500, 0), inval, syscall.EINVAL, "got 0"},
		{"lookup past 65535", lookup(portres.UDP, 65535, 2), inval, syscall.EINVAL, "past port 65535"},
		{"dynamicport start < 1025", dynset(portres.TCP, 1024, 1000), inval, syscall.EINVAL, "1025"},
		{"dynamicport < 255 ports", dynset(portres.TCP, 50000, 254), inval, syscall.EINVAL, "at least 255"},
		{"dynamicport end > 65535", dynset(portres.UDP, 65281, 256), inval, syscall.EINVAL, "past 65535"},
		{"dynamicport count 65535", dynset(portres.UDP, 1025, 65535), inval, syscall.EINVAL, "past 65535"},
		{"dynamicport bad protocol", dynset(portres.Proto(1), 50000, 1000), inval, syscall.EINVAL, "neither tcp"},

		{"create same block", create(portres.TCP, 47500, 10), share, syscall.EADDRINUSE, "persistent tcp reservation 47500-47509"},
		{"create overlapping persistent", create(portres.TCP, 47505, 10), share, syscall.EADDRINUSE, "persistent tcp reservation 47500-47509"},
		{"create inside persistent", create(portres.TCP, 47501, 1), share, syscall.EADDRINUSE, "persistent tcp reservation 47500-47509"},
		{"create overlapping runtime", create(portres.TCP, 47598, 3), share, syscall.EADDRINUSE, "tcp reservation 47600-47604 of pid " + pid},
		{"create over a listening port", create(portres.TCP, 47698, 5), share, syscall.EADDRINUSE, "tcp port 47700 is in use"},
		{"create over a bound udp port", create(portres.UDP, 47710, 1), share, syscall.EADDRINUSE, "udp port 47710 is in use"},

		{"delete unknown", del(portres.TCP, 47800, 5), nfound, os.ErrNotExist, "no persistent tcp reservation is exactly 47800-47804"},
		{"lookup unknown", lookup(portres.TCP, 47800, 5), nfound, os.ErrNotExist, "exactly 47800-47804"},
		{"delete same start, other count", del(portres.TCP, 47500, 11), nfound, os.ErrNotExist, "exactly 47500-47510"},
		{"lookup same start, other count", lookup(portres.TCP, 47500, 9), nfound, os.ErrNotExist, "exactly 47500-47508"},
		{"lookup inside the block", lookup(portres.TCP, 47501, 9), nfound, os.ErrNotExist, "exactly"},
		{"lookup other protocol", lookup(portres.UDP, 47500, 10), nfound, os.ErrNotExist, "no persistent udp"},
		{"delete other protocol", del(portres.UDP, 47500, 10), nfound, os.ErrNotExist, "no persistent udp"},
		{"lookup a runtime block", lookup(portres.TCP, 47600, 5), nfound, os.ErrNotExist, "exactly 47600-47604"},
		{"delete a runtime block", del(portres.TCP, 47600, 5), nfound, os.ErrNotExist, "exactly 47600-47604"},
	}
	names := map[int]string{inval: "ERROR_INVALID_PARAMETER", share: "ERROR_SHARING_VIOLATION", nfound: "ERROR_NOT_FOUND"}
	for _, tc := range cases {
		wantCode(t, tc.name, tc.do(), tc.num, names[tc.num], tc.goes, tc.msg)
	}
	// The port in the way is reported in the error.
	var pe *portres.Error
	if err := create(portres.TCP, 47698, 5)(); errors.As(err, &pe) && pe.Port != 47700 {
		t.Errorf("port in use: Error.Port = %d, want 47700", pe.Port)
	}
	// Nothing failed left a trace.
	mustLookup(t, c, existing, tok)
	if shown := persistentShown(t, c); len(shown) != 1 || shown[existing] != tok {
		t.Errorf("after the failures Show lists %v, want only %v", shown, existing)
	}
	wantReserved(t, "47500-47509,47552-47615") // the persistent block, and the runtime block's 64-port chunk
	if lo, n, err := c.DynamicPortRange(ctx, portres.TCP); err != nil || lo != dlo || n != dn {
		t.Errorf("dynamic range after refused sets: %d+%d, %v; want %d+%d", lo, n, err, dlo, dn)
	}
	// The bounds themselves are accepted.
	for _, r := range [][2]uint16{{1025, 255}, {65281, 255}, {dlo, dn}} {
		if err := c.SetDynamicPortRange(ctx, portres.UDP, r[0], r[1]); err != nil {
			t.Errorf("dynamicport set udp %d+%d: %v", r[0], r[1], err)
		}
	}
	if err := c.DeletePersistent(ctx, existing.proto, existing.start, existing.count); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "delete twice", c.DeletePersistent(ctx, existing.proto, existing.start, existing.count), nfound, names[nfound], os.ErrNotExist, "exactly 47500-47509")
	wantCode(t, "lookup deleted", lookup(existing.proto, existing.start, existing.count)(), nfound, names[nfound], os.ErrNotExist, "exactly 47500-47509")
}

// ---------------------------------------------------------------------
// 6. Permissions

// TestPersistentUnprivileged runs the persistent API in a process of
// another uid: without rights, create, delete and dynamicport set answer
// ERROR_ACCESS_DENIED and consuming a persistent token WSAEACCES, while
// lookup, show (without the token) and runtime acquires work; in the
// broker's admin group (supplementary or primary) everything works.
func TestPersistentUnprivileged(t *testing.T) {
	const gid = 4242
	cases := []struct {
		name  string
		group string
		cred  *syscall.Credential
		admin bool
	}{
		{"nobody", "", &syscall.Credential{Uid: 65534, Gid: 65534}, false},
		{"nobody, another admin group", strconv.Itoa(gid), &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{65533}}, false},
		{"supplementary admin group", strconv.Itoa(gid), &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{gid}}, true},
		{"primary admin group", strconv.Itoa(gid), &syscall.Credential{Uid: 65534, Gid: gid}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := testbroker.Start(t, func(c *broker.Config) { c.AdminGroup = tc.group })
			c := b.Dial(t)
			ctx := context.Background()
			blk := pblock{portres.TCP, 49000, 4}
			tok := mustCreate(t, c, blk)
			dlo, dn, err := c.DynamicPortRange(ctx, portres.TCP)
			if err != nil {
				t.Fatal(err)
			}
			p := testutil.StartHelperAs(t, tc.cred, "persistent-client", append(socketEnv(b), quickExit()...), "tcp", "49000", "4", "49100")
			got := map[string][]string{}
			for {
				l := p.Line(20 * time.Second)
				if l == "done" {
					break
				}
				f := strings.SplitN(l, " ", 4)
				if len(f) < 4 || f[0] == "fail" {
					t.Fatalf("client: %s", l)
				}
				got[f[0]] = f[1:]
			}
			if code := p.Wait(); code != 0 {
				t.Fatalf("client exited %d", code)
			}
			tokS := fmt.Sprint(tok)
			check := func(op string, code int, detail string) {
				t.Helper()
				g := got[op]
				if g == nil {
					t.Errorf("%s: no answer", op)
					return
				}
				if g[0] != strconv.Itoa(code) || g[1] != "true" {
					t.Errorf("%s: code %s (errors.Is Go equivalent: %s), want %d: %s", op, g[0], g[1], code, g[2])
				}
				if detail != "" && !strings.Contains(g[2], detail) {
					t.Errorf("%s: %q lacks %q", op, g[2], detail)
				}
			}
			check("lookup", 0, tokS)
			check("acquire", 0, "")
			check("dynamicshow", 0, "")
			if !tc.admin {
				check("show", 0, "")
				if got["show"][2] != "0" {
					t.Errorf("Show revealed the persistent token %s to a client that may not consume it", got["show"][2])
				}
				check("associate", 10013, "uid 65534 may not consume")
				check("bind", 10013, "uid 65534 may not consume")
				check("create", 5, "uid 65534 may not create")
				check("delete-new", 5, "uid 65534 may not delete")
				check("delete", 5, "uid 65534 may not delete")
				check("dynamicset", 5, "uid 65534 may not set")
				check("dynamicshow", 0, fmt.Sprintf("%d+%d", dlo, dn))
				// Nothing changed (the helper's runtime block leaves the
				// list at the sweep after its exit).
				mustLookup(t, c, blk, tok)
				waitReserved(t, "49000-49003")
				if lo, n, err := c.DynamicPortRange(ctx, portres.TCP); err != nil || lo != dlo || n != dn {
					t.Errorf("dynamic range %d+%d, %v; want it unchanged at %d+%d", lo, n, err, dlo, dn)
				}
				return
			}
			check("show", 0, tokS)
			check("associate", 0, "")
			check("bind", 0, "")
			if port := mustAtoi(got["bind"][2]); port < 49000 || port > 49003 {
				t.Errorf("bound port %d, want one of 49000-49003", port)
			}
			check("create", 0, "")
			check("delete-new", 0, "")
			check("delete", 0, "")
			check("dynamicset", 0, "")
			check("dynamicshow", 0, "50000+1000")
			_, err = c.LookupPersistent(ctx, blk.proto, blk.start, blk.count)
			wantCode(t, "lookup after the admin deleted it", err, 1168, "ERROR_NOT_FOUND", os.ErrNotExist, "exactly")
			if shown := persistentShown(t, c); len(shown) != 0 {
				t.Errorf("persistent blocks left: %v", shown)
			}
			wantReserved(t, "")
			if lo, n, err := c.DynamicPortRange(ctx, portres.TCP); err != nil || lo != 50000 || n != 1000 {
				t.Errorf("dynamic range %d+%d, %v; want 50000+1000", lo, n, err)
			}
		})
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// ---------------------------------------------------------------------
// 7. Consuming persistent reservations

// TestPersistentConsume: root binds from a persistent token (port 0 and
// an explicit port, TCP and UDP); foreign explicit binds of its free
// ports are allowed (administered exclusions); a port a foreign socket
// holds is skipped; deleting the block leaves bound sockets working while
// nothing new is bound from it.
func TestPersistentConsume(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	ctx := context.Background()
	tcpTok := mustCreate(t, c, pblock{portres.TCP, 48500, 3})
	udpTok := mustCreate(t, c, pblock{portres.UDP, 48500, 2})
	wantReserved(t, "48500-48502")

	r, err := c.Reservation(ctx, tcpTok)
	if err != nil {
		t.Fatalf("associate with a persistent token as root: %v", err)
	}
	if r.Proto() != portres.TCP || r.Start() != 48500 || r.Count() != 3 {
		t.Fatalf("associate answered %v", r)
	}
	ln0, err := r.Listen(ctx, "tcp", ":0")
	if err != nil {
		t.Fatalf("listen on port 0 of a persistent block: %v", err)
	}
	defer ln0.Close()
	port0 := ln0.Addr().(*net.TCPAddr).Port
	if port0 < 48500 || port0 > 48502 {
		t.Fatalf("port 0 bound %d, outside 48500-48502", port0)
	}
	explicit := 48502
	if port0 == explicit {
		explicit = 48500
	}
	lnE, err := r.Listen(ctx, "tcp4", "127.0.0.1:"+strconv.Itoa(explicit))
	if err != nil {
		t.Fatalf("listen on port %d of a persistent block: %v", explicit, err)
	}
	defer lnE.Close()
	ur, err := c.Reservation(ctx, udpTok)
	if err != nil {
		t.Fatal(err)
	}
	pc0, err := ur.ListenPacket(ctx, "udp", ":0")
	if err != nil {
		t.Fatalf("udp port 0 of a persistent block: %v", err)
	}
	defer pc0.Close()
	upc := pc0.LocalAddr().(*net.UDPAddr).Port
	pcE, err := ur.ListenPacket(ctx, "udp", ":"+strconv.Itoa(48501-(upc-48500)))
	if err != nil {
		t.Fatalf("udp explicit port of a persistent block: %v", err)
	}
	defer pcE.Close()
	if _, err := ur.ListenPacket(ctx, "udp", ":0"); !errors.Is(err, portres.WSAENOBUFS) {
		t.Errorf("third bind from a 2-port udp block: %v, want WSAENOBUFS", err)
	}
	if _, err := r.Listen(ctx, "tcp", ":"+strconv.Itoa(port0)); !errors.Is(err, portres.WSAEADDRINUSE) {
		t.Errorf("binding a port already bound from the block: %v, want WSAEADDRINUSE", err)
	}

	// A foreign program may bind the free port explicitly (v4 and v6).
	free := 48500 + 48501 + 48502 - port0 - explicit
	f := testutil.StartHelper(t, "foreign", quickExit(), "tcp", strconv.Itoa(free), "1", "0")
	n := 0
	for l := f.Line(5 * time.Second); l != "done"; l = f.Line(5 * time.Second) {
		if l != "bound "+strconv.Itoa(free) {
			t.Errorf("foreign: %s", l)
		}
		n++
	}
	f.Wait()
	if n != 2 {
		t.Errorf("foreign explicit binds of free persistent port %d: %d of 2 worked", free, n)
	}
	// While a foreign socket holds it, port 0 skips it and the block runs out.
	held, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(free))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Listen(ctx, "tcp", ":"+strconv.Itoa(free)); !errors.Is(err, portres.WSAEADDRINUSE) || !strings.Contains(err.Error(), "outside portres") {
		t.Errorf("explicit bind of a port a foreign socket holds: %v, want WSAEADDRINUSE naming it", err)
	}
	if _, err := r.Listen(ctx, "tcp", ":0"); !errors.Is(err, portres.WSAENOBUFS) {
		t.Errorf("port 0 with the last free port held by a foreign socket: %v, want WSAENOBUFS", err)
	}
	held.Close()
	lnF, err := r.Listen(ctx, "tcp", ":0")
	if err != nil {
		t.Fatalf("port 0 after the foreign socket closed: %v", err)
	}
	if got := lnF.Addr().(*net.TCPAddr).Port; got != free {
		t.Errorf("port 0 bound %d, want the freed %d", got, free)
	}
	lnF.Close()

	infos, err := c.Show(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.Kind == portres.Persistent && in.Proto == portres.TCP {
			sort.Slice(in.Bound, func(i, j int) bool { return in.Bound[i] < in.Bound[j] })
			want := []uint16{uint16(min(port0, explicit)), uint16(max(port0, explicit))}
			if fmt.Sprint(in.Bound) != fmt.Sprint(want) || in.Token != tcpTok {
				t.Errorf("Show: %+v, want bound %v and token %#x", in, want, tcpTok)
			}
		}
	}

	// Delete while bound: the sockets keep working.
	if err := c.DeletePersistent(ctx, portres.TCP, 48500, 3); err != nil {
		t.Fatal(err)
	}
	wantReserved(t, "48500-48501") // the udp block still excludes its ports
	for _, ln := range []net.Listener{ln0, lnE} {
		conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		if err != nil {
			t.Fatalf("dial a socket bound from the deleted block: %v", err)
		}
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		a, err := ln.Accept()
		if err != nil {
			t.Fatalf("accept on a socket bound from the deleted block: %v", err)
		}
		conn.Write([]byte("x"))
		buf := make([]byte, 1)
		a.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(a, buf); err != nil || buf[0] != 'x' {
			t.Errorf("read on the accepted connection: %q, %v", buf, err)
		}
		conn.(*net.TCPConn).SetLinger(0) // RST: no TIME_WAIT left on the ports
		conn.Close()
		a.Close()
	}
	if shown := persistentShown(t, c); len(shown) != 1 || shown[pblock{portres.UDP, 48500, 2}] != udpTok {
		t.Errorf("after delete Show lists %v, want only the udp block", shown)
	}
	if _, err := r.Listen(ctx, "tcp", ":0"); !errors.Is(err, portres.WSAEINVAL) || !strings.Contains(err.Error(), "no reservation") {
		t.Errorf("bind with the deleted token: %v, want WSAEINVAL (no reservation)", err)
	}
	if _, err := c.Reservation(ctx, tcpTok); !errors.Is(err, portres.WSAEINVAL) {
		t.Errorf("associate with the deleted token: %v, want WSAEINVAL", err)
	}
	// Its ports are in use now: a new persistent block over them is refused.
	_, err = c.CreatePersistent(ctx, portres.TCP, 48500, 3)
	wantCode(t, "create over ports still bound from a deleted block", err, 32, "ERROR_SHARING_VIOLATION", syscall.EADDRINUSE, "is in use")
}

// ---------------------------------------------------------------------
// 8. Dynamic port range

// TestDynamicPortRangePersisted: dynamicport set is what show returns,
// wildcard acquires land in the new range, an existing reservation is
// left alone, and the setting survives a daemon restart.
func TestDynamicPortRangePersisted(t *testing.T) {
	d := newPDaemon(t, "")
	d.start()
	c := d.dial()
	ctx := context.Background()
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	var klo, khi int
	fmt.Sscan(string(data), &klo, &khi)
	for _, proto := range []portres.Proto{portres.TCP, portres.UDP} {
		if lo, n, err := c.DynamicPortRange(ctx, proto); err != nil || int(lo) != klo || int(n) != khi-klo+1 {
			t.Errorf("default %s dynamic range %d+%d, %v; want the kernel's %d-%d", proto, lo, n, err, klo, khi)
		}
	}
	// A reservation made before the change, with a bound port.
	old, err := c.Acquire(ctx, portres.TCP, 0, 5)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := old.Listen(ctx, "tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pers := mustCreate(t, c, pblock{portres.TCP, 53100, 10}) // inside the range to come

	if err := c.SetDynamicPortRange(ctx, portres.TCP, 53000, 300); err != nil {
		t.Fatal(err)
	}
	if err := c.SetDynamicPortRange(ctx, portres.UDP, 54000, 500); err != nil {
		t.Fatal(err)
	}
	checkRanges := func(when string) {
		t.Helper()
		for _, w := range []struct {
			proto    portres.Proto
			lo, n    uint16
			acquires int
		}{{portres.TCP, 53000, 300, 8}, {portres.UDP, 54000, 500, 4}} {
			lo, n, err := c.DynamicPortRange(ctx, w.proto)
			if err != nil || lo != w.lo || n != w.n {
				t.Errorf("%s: %s dynamic range %d+%d, %v; want %d+%d", when, w.proto, lo, n, err, w.lo, w.n)
			}
			for i := 0; i < w.acquires; i++ {
				r, err := c.Acquire(ctx, w.proto, 0, 20)
				if err != nil {
					t.Fatalf("%s: wildcard %s acquire: %v", when, w.proto, err)
				}
				if int(r.Start()) < int(w.lo) || int(r.End()) > int(w.lo)+int(w.n)-1 {
					t.Errorf("%s: wildcard %s block %d-%d outside %d+%d", when, w.proto, r.Start(), r.End(), w.lo, w.n)
				}
				if w.proto == portres.TCP && int(r.End()) >= 53100 && r.Start() <= 53109 {
					t.Errorf("%s: wildcard block %d-%d overlaps the persistent 53100-53109", when, r.Start(), r.End())
				}
				r.Release(ctx)
			}
		}
	}
	checkRanges("after set")

	// The older reservation is undisturbed: still listed, still bound,
	// still held against foreign binds, still usable.
	infos, err := c.Show(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, in := range infos {
		if in.Kind == portres.Runtime && in.Start == old.Start() && in.Count == 5 && len(in.Bound) == 1 {
			found = true
		}
	}
	if !found {
		t.Errorf("the reservation made before the change is gone or changed: %+v", infos)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	f := testutil.StartHelper(t, "foreign", quickExit(), "tcp", strconv.Itoa(int(old.Start())), "5", "0")
	if l := f.Line(5 * time.Second); l != "done" {
		t.Errorf("after the dynamic range changed, a foreign program bound a port of the older reservation: %s", l)
	}
	f.Wait()
	ln2, err := old.Listen(ctx, "tcp", ":0")
	if err != nil {
		t.Errorf("binding from the older reservation after the change: %v", err)
	} else {
		if p := ln2.Addr().(*net.TCPAddr).Port; p == port || p < int(old.Start()) || p > int(old.End()) {
			t.Errorf("second bind got %d", p)
		}
		ln2.Close()
	}

	d.stop()
	d.start()
	c = d.dial()
	checkRanges("after restart")
	mustLookup(t, c, pblock{portres.TCP, 53100, 10}, pers)
}

// ---------------------------------------------------------------------
// 9. Corrupt or foreign database

// TestPersistentCorruptDatabaseRefused: the daemon refuses a state file
// that is random bytes, empty, another program's bbolt database, or a
// truncated portres database, with a message naming the file, and leaves
// the file byte for byte as it was (and the kernel list untouched).
func TestPersistentCorruptDatabaseRefused(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.ClearReservedPorts(t)
	t.Cleanup(func() { testutil.ClearReservedPorts(t) })
	dir := testutil.Dir(t)
	random := make([]byte, 64<<10)
	crand.Read(random)

	foreignDB := filepath.Join(dir, "foreign.db")
	db, err := bolt.Open(foreignDB, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucket([]byte("settings"))
		if err != nil {
			return err
		}
		return bk.Put([]byte("k"), []byte("v"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	foreignBytes, err := os.ReadFile(foreignDB)
	if err != nil {
		t.Fatal(err)
	}

	// A real portres database with a persistent block, then truncated.
	ours := filepath.Join(dir, "ours.db")
	{
		cfg := broker.Config{Socket: filepath.Join(dir, "make.sock"), State: ours, ReservedPorts: "-", Enforce: broker.EnforceHold}
		cfg.Logger = quietLogger()
		b, err := broker.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		go b.Serve(context.Background())
		c, err := portres.Dial(context.Background(), cfg.Socket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreatePersistent(context.Background(), portres.TCP, 5000, 10); err != nil {
			t.Fatal(err)
		}
		c.Close()
		b.Close()
	}
	oursBytes, err := os.ReadFile(ours)
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		data []byte
	}{
		{"random bytes", random},
		{"random page", random[:4096]},
		{"empty", []byte{}},
		{"text", []byte("tcp 5000 10\n")},
		{"another program's bbolt database", foreignBytes},
		{"truncated portres database", oursBytes[:len(oursBytes)/2]},
	}
	setReserved(t, "1234")
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			state := filepath.Join(dir, fmt.Sprintf("state-%d.db", i))
			if err := os.WriteFile(state, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := broker.Config{Socket: filepath.Join(dir, "portres.sock"), State: state, Logger: quietLogger(), Enforce: broker.EnforceHold}
			b, err := broker.New(cfg)
			if err == nil {
				b.Close()
				t.Fatal("broker started on it")
			}
			if !strings.Contains(err.Error(), state) {
				t.Errorf("refusal does not name the file %s: %v", state, err)
			}
			t.Logf("refused: %v", err)
			after, rerr := os.ReadFile(state)
			if rerr != nil || !bytes.Equal(after, tc.data) {
				t.Errorf("the file changed: %d bytes before, %d after (%v)", len(tc.data), len(after), rerr)
			}
			if ents, _ := filepath.Glob(state + "*"); len(ents) != 1 {
				t.Errorf("files left next to it: %v", ents)
			}
			if _, err := os.Stat(cfg.Socket); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket created by a refused start: %v", err)
			}
			wantReserved(t, "1234")
		})
	}
	// The daemon process says the same and exits non-zero.
	d := newPDaemon(t, "")
	setReserved(t, "1234")
	if err := os.WriteFile(d.state, random, 0o600); err != nil {
		t.Fatal(err)
	}
	p := testutil.StartHelper(t, "persistent-daemon", quickExit(), d.sock, d.state, d.logf)
	if l := p.Line(20 * time.Second); !strings.HasPrefix(l, "error") || !strings.Contains(l, d.state) {
		t.Errorf("daemon on a corrupt database said %q, want an error naming %s", l, d.state)
	}
	if code := p.Wait(); code == 0 {
		t.Error("daemon on a corrupt database exited 0")
	}
	if after, _ := os.ReadFile(d.state); !bytes.Equal(after, random) {
		t.Error("the daemon changed the corrupt database")
	}
	wantReserved(t, "1234")
	// The lock was released: a daemon on a sound database starts on the same socket.
	os.Remove(d.state)
	d.start()
	d.stop()
}
