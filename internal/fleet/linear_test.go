//go:build linux

package fleet_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/portres/portres"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The fleet lease semantics as a sequential specification, checked with
// porcupine over a history of concurrent allocations, releases and client
// exits on every member. The history is partitioned per port; the state
// of a port is the lease holding it, fleet-wide: the token and the client
// connection it was handed to (0: free).
//
//   - acquire → ok(token, block): each port of the block is free; it
//     becomes held. A refused acquire constrains nothing (left out).
//   - release(token) → ok: each port is held by the token; it becomes free.
//   - exit(client): the client's connection closed; its leases end at
//     some point after (the operation never returns).

type linIn struct {
	Op     string // acquire, release, exit
	Client int
	Token  uint64
	At     uint16 // the partition's port
}

type linOut struct {
	OK           bool
	Token        uint64
	Start, Count uint16
}

type linPort struct {
	token  uint64
	client int
}

func linStep(st, in, out interface{}) []interface{} {
	s, i, o := st.(linPort), in.(linIn), out.(linOut)
	switch i.Op {
	case "acquire":
		if s.token != 0 {
			return nil // held twice
		}
		return []interface{}{linPort{o.Token, i.Client}}
	case "release":
		if s.token != i.Token || s.client != i.Client {
			return nil
		}
		return []interface{}{linPort{}}
	case "exit":
		if s.token != 0 && s.client == i.Client {
			return []interface{}{linPort{}}
		}
		return []interface{}{s}
	}
	return nil
}

func linPartition(h []porcupine.Operation) [][]porcupine.Operation {
	type block struct{ start, count uint16 }
	blocks := map[uint64]block{}
	byClient := map[int][]block{}
	for _, op := range h {
		in, out := op.Input.(linIn), op.Output.(linOut)
		if in.Op == "acquire" {
			blocks[out.Token] = block{out.Start, out.Count}
			byClient[in.Client] = append(byClient[in.Client], block{out.Start, out.Count})
		}
	}
	parts := map[uint16][]porcupine.Operation{}
	addBlock := func(op porcupine.Operation, b block) {
		for p := int(b.start); p < int(b.start)+int(b.count); p++ {
			in := op.Input.(linIn)
			in.At = uint16(p)
			op.Input = in
			parts[uint16(p)] = append(parts[uint16(p)], op)
		}
	}
	for _, op := range h {
		in := op.Input.(linIn)
		switch in.Op {
		case "acquire", "release":
			addBlock(op, blocks[in.Token])
		case "exit":
			for _, b := range byClient[in.Client] {
				addBlock(op, b)
			}
		}
	}
	var out [][]porcupine.Operation
	for _, p := range parts {
		out = append(out, p)
	}
	return out
}

var linModel = (&porcupine.NondeterministicModel{
	Partition: linPartition,
	Init:      func() []interface{} { return []interface{}{linPort{}} },
	Step:      linStep,
	Equal:     func(a, b interface{}) bool { return a.(linPort) == b.(linPort) },
	DescribeOperation: func(in, out interface{}) string {
		i, o := in.(linIn), out.(linOut)
		return fmt.Sprintf("c%d %s %#x @%d → %d+%d", i.Client, i.Op, i.Token, i.At, o.Start, o.Count)
	},
}).ToModel()

// TestFleetLinearizable: clients on all three members allocate, release
// and exit concurrently, many of them contending for the same few ports;
// porcupine checks the history against the specification: 0 violations.
// Apart from it, no port may be certainly held by two leases at once,
// and once every client is gone no lease key is left in etcd.
func TestFleetLinearizable(t *testing.T) {
	c := newCluster(t)
	members := []*member{c.addMember("m1"), c.addMember("m2"), c.addMember("m3")}
	ctx := context.Background()
	const perMember = 3
	run := 4 * time.Second
	if testing.Short() {
		run = 2 * time.Second
	}

	var (
		mu      sync.Mutex
		history []porcupine.Operation
		refused int
		wg      sync.WaitGroup
	)
	record := func(op porcupine.Operation) {
		mu.Lock()
		history = append(history, op)
		mu.Unlock()
	}
	deadline := time.Now().Add(run)
	for mi, m := range members {
		for g := 0; g < perMember; g++ {
			wg.Add(1)
			go func(worker int) {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(worker), 7))
				gen := 0
				client := func() int { return worker*1000 + gen }
				cl, err := portres.Dial(ctx, m.sock)
				if err != nil {
					t.Error(err)
					return
				}
				var held []*portres.Reservation
				for time.Now().Before(deadline) {
					switch r := rng.IntN(20); {
					case r == 0: // the client exits
						call := time.Now().UnixNano()
						cl.Close()
						record(porcupine.Operation{ClientId: worker, Input: linIn{Op: "exit", Client: client()}, Output: linOut{}, Call: call, Return: math.MaxInt64})
						held = held[:0]
						gen++
						if cl, err = portres.Dial(ctx, m.sock); err != nil {
							t.Error(err)
							return
						}
					case r < 11 && len(held) < 3: // acquire, mostly in a hot corner of the range
						start := uint16(0)
						if rng.IntN(3) > 0 {
							start = 30000 + uint16(rng.IntN(24))
						}
						count := uint16(1 + rng.IntN(3))
						call := time.Now().UnixNano()
						res, err := cl.AcquireFleet(ctx, portres.TCP, start, count)
						ret := time.Now().UnixNano()
						if err != nil {
							mu.Lock()
							refused++
							mu.Unlock()
							continue
						}
						held = append(held, res)
						record(porcupine.Operation{ClientId: worker, Input: linIn{Op: "acquire", Client: client(), Token: res.Token()},
							Output: linOut{OK: true, Token: res.Token(), Start: res.Start(), Count: res.Count()}, Call: call, Return: ret})
					case len(held) > 0: // release
						i := rng.IntN(len(held))
						res := held[i]
						held = append(held[:i], held[i+1:]...)
						call := time.Now().UnixNano()
						err := res.Release(ctx)
						ret := time.Now().UnixNano()
						if err != nil {
							t.Errorf("release %v on %s: %v", res, m.name, err)
							continue
						}
						record(porcupine.Operation{ClientId: worker, Input: linIn{Op: "release", Client: client(), Token: res.Token()},
							Output: linOut{OK: true}, Call: call, Return: ret})
					}
				}
				cl.Close()
				record(porcupine.Operation{ClientId: worker, Input: linIn{Op: "exit", Client: client()}, Output: linOut{}, Call: time.Now().UnixNano(), Return: math.MaxInt64})
			}(mi*perMember + g)
		}
	}
	wg.Wait()
	var acquires int
	for _, op := range history {
		if op.Input.(linIn).Op == "acquire" {
			acquires++
		}
	}
	t.Logf("%d operations (%d leases granted, %d refused) from %d clients on 3 members", len(history), acquires, refused, 3*perMember)
	if acquires < 50 || refused == 0 {
		t.Fatalf("too little contention to check: %d granted, %d refused", acquires, refused)
	}

	res, info := porcupine.CheckOperationsVerbose(linModel, history, 2*time.Minute)
	if res != porcupine.Ok {
		f := filepath.Join(os.TempDir(), "fleet-linearizability.html")
		if out, err := os.Create(f); err == nil {
			porcupine.Visualize(linModel, info, out)
			out.Close()
		}
		t.Fatalf("porcupine: %v (visualization: %s)", res, f)
	}

	if twice := heldTwice(history); len(twice) > 0 {
		t.Fatalf("%d ports held twice: %s", len(twice), strings.Join(twice, "; "))
	}
	t.Logf("porcupine: linearizable, 0 violations; 0 ports held twice")

	// Every lease ended: no key may stay (the releases were synchronous,
	// the exits free theirs at once).
	ecl := c.etcdClient()
	eventually(t, 3*time.Second, "no lease key left in etcd", func() error {
		r, err := ecl.Get(ctx, "/portres-"+c.tag+"/ports/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if r.Count != 0 {
			return fmt.Errorf("%d lease keys left", r.Count)
		}
		return nil
	})
}

// heldTwice lists the ports that two leases certainly held at the same
// time: from the return of one's acquire to the call of its release (or
// its client's exit), overlapping another's.
func heldTwice(h []porcupine.Operation) []string {
	type span struct {
		from, to int64
		token    uint64
	}
	ends := map[uint64]int64{}
	exits := map[int]int64{}
	for _, op := range h {
		switch in := op.Input.(linIn); in.Op {
		case "release":
			ends[in.Token] = op.Call
		case "exit":
			exits[in.Client] = op.Call
		}
	}
	byPort := map[uint16][]span{}
	for _, op := range h {
		in, out := op.Input.(linIn), op.Output.(linOut)
		if in.Op != "acquire" {
			continue
		}
		to, ok := ends[in.Token]
		if !ok {
			to = exits[in.Client]
		}
		for p := out.Start; p < out.Start+out.Count; p++ {
			byPort[p] = append(byPort[p], span{op.Return, to, in.Token})
		}
	}
	var bad []string
	for p, ss := range byPort {
		sort.Slice(ss, func(i, j int) bool { return ss[i].from < ss[j].from })
		last := 0 // the span reaching furthest so far
		for i := 1; i < len(ss); i++ {
			if ss[i].from < ss[last].to {
				bad = append(bad, fmt.Sprintf("port %d by %#x and %#x", p, ss[last].token, ss[i].token))
			}
			if ss[i].to > ss[last].to {
				last = i
			}
		}
	}
	return bad
}
