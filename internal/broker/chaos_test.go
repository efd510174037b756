//go:build linux

package broker_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testutil"
)

func init() {
	testutil.Helpers["chaos-client"] = helperChaosClient
}

// helperChaosClient does random operations until stdin closes: acquire a
// wildcard block of 1-4 TCP or UDP ports, bind a socket from a block it
// holds (Listen / ListenPacket on port 0), close a socket, release a
// block. Before each it prints "call ID OP PROTO TOKEN PORT MONO", after
// it "ret ID CODE TOKEN START COUNT PORT MONO" (CODE 0, a Winsock code,
// or 1 for a reservation lost in a restart). Each reconnection to a
// restarted broker prints "restart KEPT LOST". Arguments: a seed.
func helperChaosClient(args []string) int {
	rng := rand.New(rand.NewPCG(uint64(mustAtoi(args[0])), 7))
	ctx := context.Background()
	say := lineSayer()
	c, err := portres.Dial(ctx, "")
	if err != nil {
		say("error %v", err)
		return 1
	}
	c.SetReconnectWait(time.Minute)
	c.OnRestart(func(r portres.Restart) {
		say("restart %d %d", len(r.Kept), len(r.Lost))
		for _, l := range r.Lost {
			fmt.Fprintln(os.Stderr, "chaos client: lost", l.Reservation, l.Err)
		}
	})
	type sock struct {
		r    *portres.Reservation
		port uint16
		c    io.Closer
	}
	var held []*portres.Reservation
	var socks []sock
	say("ready") // connected: the test starts its schedule of kills once all are
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	codeOf := func(err error) uint32 {
		var e *portres.Error
		switch {
		case err == nil:
			return 0
		case errors.Is(err, portres.ErrReservationLost):
			return lostCode
		case errors.As(err, &e):
			return uint32(e.Code)
		}
		return uint32(portres.WSAEINVAL)
	}
	for id := 1; ; id++ {
		select {
		case <-stop:
			for _, s := range socks {
				s.c.Close()
			}
			at := monoNow() // the broker may release from here on
			c.Close()
			say("end %d", at)
			return 0
		default:
		}
		var op string
		switch n := rng.IntN(100); {
		case n < 30 && len(held) < 4 || len(held) == 0:
			op = "acquire"
		case n < 65:
			op = "bind"
		case n < 85 && len(socks) > 0:
			op = "close"
		default:
			op = "release"
		}
		switch op {
		case "acquire":
			proto := portres.TCP
			if rng.IntN(2) == 1 {
				proto = portres.UDP
			}
			say("call %d acquire %s 0 0 %d", id, proto, monoNow())
			r, err := c.Acquire(ctx, proto, 0, uint16(1+rng.IntN(4)))
			if err != nil {
				say("ret %d %d 0 0 0 0 %d", id, codeOf(err), monoNow())
				break
			}
			held = append(held, r)
			say("ret %d 0 %d %d %d 0 %d", id, r.Token(), r.Start(), r.Count(), monoNow())
		case "bind":
			r := held[rng.IntN(len(held))]
			say("call %d bind %s %d 0 %d", id, r.Proto(), r.Token(), monoNow())
			var cl io.Closer
			var port int
			if r.Proto() == portres.TCP {
				ln, err := r.Listen(ctx, "tcp", ":0")
				if err != nil {
					say("ret %d %d 0 0 0 0 %d", id, codeOf(err), monoNow())
					break
				}
				cl, port = ln, ln.Addr().(*net.TCPAddr).Port
			} else {
				pc, err := r.ListenPacket(ctx, "udp", ":0")
				if err != nil {
					say("ret %d %d 0 0 0 0 %d", id, codeOf(err), monoNow())
					break
				}
				cl, port = pc, pc.LocalAddr().(*net.UDPAddr).Port
			}
			socks = append(socks, sock{r, uint16(port), cl})
			say("ret %d 0 0 0 0 %d %d", id, port, monoNow())
		case "close":
			i := rng.IntN(len(socks))
			s := socks[i]
			socks = append(socks[:i], socks[i+1:]...)
			say("call %d close %s %d %d %d", id, s.r.Proto(), s.r.Token(), s.port, monoNow())
			s.c.Close()
			say("ret %d 0 0 0 0 0 %d", id, monoNow())
		case "release":
			i := rng.IntN(len(held))
			r := held[i]
			held = append(held[:i], held[i+1:]...)
			say("call %d release %s %d 0 %d", id, r.Proto(), r.Token(), monoNow())
			err := r.Release(ctx)
			say("ret %d %d 0 0 0 0 %d", id, codeOf(err), monoNow())
		}
		time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
	}
}

// chaosClient is the test's view of one chaos client process.
type chaosClient struct {
	id       int
	p        *testutil.Process
	killedAt int64 // 0: not killed
	calls    map[int]chaosCall
	order    []int
	restarts []string
	endedAt  int64         // when it closed its client; 0: it did not end
	ready    chan struct{} // closed once it connected, or its output ended
	readyOK  bool
	errLine  string // what it said if it could not run
}

// chaosCall is one operation as a client logged it.
type chaosCall struct {
	in        chaosIn
	call, ret int64 // ret 0: never returned
	out       chaosOut
}

// read collects the client's log until its output ends.
func (cc *chaosClient) read(done *sync.WaitGroup) {
	defer done.Done()
	for {
		line, err := cc.p.Stdout.ReadString('\n')
		f := strings.Fields(line)
		switch {
		case len(f) == 7 && f[0] == "call":
			id := mustAtoi(f[1])
			proto, _ := portres.ParseProto(f[3])
			tok, _ := strconv.ParseUint(f[4], 10, 64)
			at, _ := strconv.ParseInt(f[6], 10, 64)
			cc.calls[id] = chaosCall{in: chaosIn{Op: f[2], Client: cc.id, Proto: proto, Token: tok, Port: uint16(mustAtoi(f[5]))}, call: at}
			cc.order = append(cc.order, id)
		case len(f) == 8 && f[0] == "ret":
			id := mustAtoi(f[1])
			c := cc.calls[id]
			tok, _ := strconv.ParseUint(f[3], 10, 64)
			c.ret, _ = strconv.ParseInt(f[7], 10, 64)
			c.out = chaosOut{Known: true, Code: uint32(mustAtoi(f[2])), Token: tok, Start: uint16(mustAtoi(f[4])), Count: uint16(mustAtoi(f[5])), Port: uint16(mustAtoi(f[6]))}
			cc.calls[id] = c
		case len(f) == 3 && f[0] == "restart":
			cc.restarts = append(cc.restarts, f[1]+" "+f[2])
		case len(f) == 1 && f[0] == "ready":
			cc.readyOK = true
			close(cc.ready)
		case len(f) > 0 && f[0] == "error":
			cc.errLine = strings.TrimSpace(line)
		case len(f) == 2 && f[0] == "end":
			cc.endedAt, _ = strconv.ParseInt(f[1], 10, 64)
		}
		if err != nil {
			if !cc.readyOK {
				close(cc.ready)
			}
			return
		}
	}
}

// TestChaos runs 36 client processes doing random acquire, bind, close
// and release in bpf mode, SIGKILLs 4 of them (10%) at random moments,
// SIGKILLs and restarts the broker every 2-4 s, and keeps a foreign
// binder looping over the dynamic range throughout. Then it checks the
// history of every operation against the reservation semantics
// (chaosModel) with porcupine, and asserts: no port bound twice, no
// foreign bind inside a block while it was live, no reservation lost in
// a restart, and once everyone is gone no reservation, placeholder or
// descriptor left in the broker. PORTRES_CHAOS=DURATION runs it longer
// (default 15s).
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: not in -short")
	}
	cg, cgfd := testutil.Cgroup(t)
	narrowEphemeral(t, 46000, 46999)
	dur := 15 * time.Second
	if v := os.Getenv("PORTRES_CHAOS"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("PORTRES_CHAOS: %v", err)
		}
		dur = d
	}
	dir := testutil.Dir(t)
	sock := filepath.Join(dir, "portres.sock")
	dc := daemonConfig{Socket: sock, State: filepath.Join(dir, "state.db"), LogFile: filepath.Join(dir, "log"),
		Enforce: broker.EnforceBPF, Cgroup: cg, BPFPin: testutil.BPFPin(t), RestoreGrace: 5 * time.Second, Sweep: 100 * time.Millisecond}
	d := daemonProc(t, dc)
	ctx := context.Background()
	admin, err := portres.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	admin.SetReconnectWait(time.Minute)
	if st, err := admin.Status(ctx); err != nil || st.Enforcement.Mode != broker.EnforceBPF {
		t.Skipf("the eBPF bind guard did not load here (%v): the chaos test runs in bpf mode", err)
	}
	foreign := testutil.StartHelperIn(t, cgfd, "foreign-loop", nil, "tcp:46000-46999", "udp:46000-46999")
	wins := collectForeign(foreign)

	const nClients, nKilled = 36, 4
	env := []string{"PORTRES_SOCKET=" + sock}
	clients := make([]*chaosClient, nClients)
	var readers sync.WaitGroup
	for i := range clients {
		p := testutil.StartHelperIn(t, cgfd, "chaos-client", env, strconv.Itoa(i+1))
		clients[i] = &chaosClient{id: i, p: p, calls: map[int]chaosCall{}, ready: make(chan struct{})}
		readers.Add(1)
		go clients[i].read(&readers)
	}
	// Every client connected before the broker's first kill: on a loaded
	// machine, starting 36 processes can take longer than the first
	// restart comes.
	for _, cc := range clients {
		select {
		case <-cc.ready:
			if !cc.readyOK {
				t.Fatalf("chaos client %d did not start: %s", cc.id, cc.errLine)
			}
		case <-time.After(time.Minute):
			t.Fatalf("chaos client %d did not connect within a minute", cc.id)
		}
	}
	start := time.Now()
	killAt := map[int]time.Duration{}
	for _, i := range rand.Perm(nClients)[:nKilled] {
		killAt[i] = time.Duration(rand.Int64N(int64(dur)))
	}
	restarts := 0
	var brokerKills []int64
	nextRestart := time.Now().Add(2*time.Second + time.Duration(rand.Int64N(int64(2*time.Second))))
	for time.Since(start) < dur {
		time.Sleep(20 * time.Millisecond)
		for i, at := range killAt {
			if time.Since(start) >= at {
				clients[i].killedAt = monoNow()
				clients[i].p.Cmd.Process.Signal(syscall.SIGKILL)
				delete(killAt, i)
			}
		}
		if time.Now().After(nextRestart) {
			brokerKills = append(brokerKills, monoNow())
			d.Cmd.Process.Signal(syscall.SIGKILL)
			d.Wait()
			time.Sleep(time.Duration(rand.Int64N(int64(300 * time.Millisecond))))
			d = daemonProc(t, dc)
			restarts++
			nextRestart = time.Now().Add(2*time.Second + time.Duration(rand.Int64N(int64(2*time.Second))))
		}
	}
	for _, cc := range clients {
		cc.p.Stdin.Close()
	}
	readers.Wait() // to the end of every log: Wait closes the pipes
	for _, cc := range clients {
		if code := cc.p.Wait(); code != 0 && cc.killedAt == 0 {
			t.Errorf("client %d exited %d %s", cc.id, code, cc.errLine)
		}
	}
	end := monoNow()
	foreign.Stdin.Close()
	foreignWins := <-wins
	defer func() {
		d.Cmd.Process.Signal(syscall.SIGTERM)
		d.Wait()
	}()

	// The history.
	var history []porcupine.Operation
	ops, lost := 0, 0
	for _, cc := range clients {
		if cc.killedAt == 0 && cc.endedAt == 0 {
			t.Errorf("client %d neither ended nor was killed", cc.id)
		}
		for _, r := range cc.restarts {
			var kept, l int
			fmt.Sscan(r, &kept, &l)
			lost += l
		}
		for _, id := range cc.order {
			c := cc.calls[id]
			ret := c.ret
			if ret == 0 {
				if cc.killedAt == 0 {
					t.Errorf("client %d: %s %d never returned", cc.id, c.in.Op, id)
				}
				ret = never
			}
			history = append(history, porcupine.Operation{ClientId: cc.id, Input: c.in, Call: c.call, Output: c.out, Return: ret})
			ops++
		}
		// A client that ends closes its connection, and the broker then
		// releases its blocks, as it does when the client is killed.
		if gone := cmp.Or(cc.killedAt, cc.endedAt); gone != 0 {
			history = append(history, porcupine.Operation{ClientId: cc.id, Input: chaosIn{Op: "kill", Client: cc.id}, Call: gone, Return: never, Output: chaosOut{}})
		}
	}
	t.Logf("%d operations of %d clients (%d killed), %d broker restarts, %d foreign binds won in the range",
		ops, nClients, nKilled, restarts, len(foreignWins))
	if restarts == 0 || ops < 500 {
		t.Errorf("only %d restarts and %d operations: the test proves little", restarts, ops)
	}
	if lost > 0 {
		t.Errorf("%d reservations lost in restarts", lost)
	}
	t0 := time.Now()
	res, info := porcupine.CheckOperationsVerbose(chaosModel, history, 5*time.Minute)
	t.Logf("linearizability: %s in %v", res, time.Since(t0).Round(time.Millisecond))
	if res != porcupine.Ok {
		out := filepath.Join(os.TempDir(), "portres-chaos.html")
		if f, err := os.Create(out); err == nil {
			porcupine.Visualize(chaosModel, info, f)
			f.Close()
		}
		t.Errorf("the history is %s against the reservation model (visualization: %s)", res, out)
		logIllegalPartition(t, history)
	}

	checkNoDoubleBind(t, clients, end)
	checkForeignWins(t, clients, foreignWins, brokerKills)
	if t.Failed() {
		// Keep the broker's log (all its lives) for a look.
		if data, err := os.ReadFile(dc.LogFile); err == nil {
			keep := filepath.Join(os.TempDir(), "portres-chaos-broker.log")
			os.WriteFile(keep, data, 0o644)
			t.Logf("broker log kept in %s", keep)
		}
	}

	// Nothing left once everyone is gone: blocks of killed clients and
	// blocks acquired by calls a restart interrupted go within the
	// grace period.
	deadline := time.Now().Add(dc.RestoreGrace + 5*time.Second)
	for {
		infos, err := admin.Show(ctx)
		st, serr := admin.Status(ctx)
		if err == nil && serr == nil && len(infos) == 0 && st.Counts.Placeholders == 0 && st.Counts.FDs == int64(st.Counts.Clients) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left in the broker: %d reservations %+v, status %+v (%v, %v)", len(infos), infos, st, err, serr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bindSpan is how long one socket held a port: from its bind's return to
// its close's call (or its owner's kill, or its owner's end: a client that
// ends closes its sockets first, unlogged, or the end of the test).
type bindSpan struct {
	client     int
	from, till int64
}

// checkNoDoubleBind fails t if two sockets held one port at once.
func checkNoDoubleBind(t *testing.T, clients []*chaosClient, end int64) {
	t.Helper()
	spans := map[string][]bindSpan{}
	for _, cc := range clients {
		open := map[string]int{} // proto/port → index in spans
		for _, id := range cc.order {
			c := cc.calls[id]
			switch {
			case c.in.Op == "bind" && c.out.Known && c.out.Code == 0:
				key := fmt.Sprintf("%s/%d", c.in.Proto, c.out.Port)
				till := end
				if gone := cmp.Or(cc.killedAt, cc.endedAt); gone != 0 {
					till = gone
				}
				spans[key] = append(spans[key], bindSpan{cc.id, c.ret, till})
				open[key] = len(spans[key]) - 1
			case c.in.Op == "close":
				key := fmt.Sprintf("%s/%d", c.in.Proto, c.in.Port)
				if i, ok := open[key]; ok {
					spans[key][i].till = c.call
					delete(open, key)
				}
			}
		}
	}
	double := 0
	for key, ss := range spans {
		for i := range ss {
			for j := i + 1; j < len(ss); j++ {
				if ss[i].from < ss[j].till && ss[j].from < ss[i].till {
					double++
					if double <= 5 {
						t.Errorf("port %s bound twice at once: by client %d from %v to %v, and by client %d from %v to %v (before the end of the test)",
							key, ss[i].client, time.Duration(end-ss[i].from), time.Duration(end-ss[i].till),
							ss[j].client, time.Duration(end-ss[j].from), time.Duration(end-ss[j].till))
					}
				}
			}
		}
	}
	if double > 0 {
		t.Errorf("%d double-bound ports", double)
	}
}

// checkForeignWins fails t for each foreign bind inside a block while the
// block was certainly live: after its acquire returned, before its
// release was called and before its owner was killed.
func checkForeignWins(t *testing.T, clients []*chaosClient, wins []foreignWin, brokerKills []int64) {
	t.Helper()
	type live struct {
		proto      string
		start, end int
		from, till int64
		client     int
	}
	var blocks []live
	for _, cc := range clients {
		idx := map[uint64]int{}
		for _, id := range cc.order {
			c := cc.calls[id]
			switch {
			case c.in.Op == "acquire" && c.out.Known && c.out.Code == 0:
				till := int64(never)
				if cc.killedAt != 0 {
					till = cc.killedAt
				}
				blocks = append(blocks, live{c.in.Proto.String(), int(c.out.Start), int(c.out.Start) + int(c.out.Count) - 1, c.ret, till, cc.id})
				idx[c.out.Token] = len(blocks) - 1
			case c.in.Op == "release":
				if i, ok := idx[c.in.Token]; ok {
					blocks[i].till = min(blocks[i].till, c.call)
				}
			}
		}
		// A client that ended closed its connection: its blocks went.
		if cc.endedAt != 0 {
			for _, i := range idx {
				blocks[i].till = min(blocks[i].till, cc.endedAt)
			}
		}
	}
	byPort := map[string][]int{} // proto/port → indexes of blocks holding it
	for i, b := range blocks {
		for p := b.start; p <= b.end; p++ {
			key := fmt.Sprintf("%s/%d", b.proto, p)
			byPort[key] = append(byPort[key], i)
		}
	}
	bad := 0
	for _, w := range wins {
		for _, i := range byPort[fmt.Sprintf("%s/%d", w.proto, w.port)] {
			if b := blocks[i]; w.at > b.from && w.at < b.till {
				bad++
				if bad <= 5 {
					since := "no broker kill before"
					for _, k := range brokerKills {
						if k < w.at {
							since = fmt.Sprintf("%v after the last broker kill", time.Duration(w.at-k))
						}
					}
					t.Errorf("foreign process bound %s port %d (%s, called %v after the acquire returned) inside client %d's live block %d-%d, %v after its acquire returned (%s)",
						w.proto, w.port, w.how, time.Duration(w.started-b.from), b.client, b.start, b.end, time.Duration(w.at-b.from), since)
				}
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d foreign binds won inside live blocks", bad)
	}
}

// logIllegalPartition logs the operations of the first port whose
// history porcupine finds illegal, in call order, with times relative to
// the first call.
func logIllegalPartition(t *testing.T, history []porcupine.Operation) {
	t.Helper()
	single := chaosModel
	single.Partition = nil
	for _, part := range chaosPartition(history) {
		if porcupine.CheckOperations(single, part) {
			continue
		}
		slices.SortFunc(part, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
		base := part[0].Call
		t.Logf("illegal history of %s port %d:", part[0].Input.(chaosIn).Proto, part[0].Input.(chaosIn).At)
		for _, op := range part {
			ret := "never"
			if op.Return != never {
				ret = time.Duration(op.Return - base).String()
			}
			t.Logf("  [%v, %s] %s", time.Duration(op.Call-base), ret, chaosModel.DescribeOperation(op.Input, op.Output))
		}
		return
	}
}
