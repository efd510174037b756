//go:build linux

package fleet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portres/portres"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The cost of a fleet lease (BenchmarkFleetAllocate), in one run against
// two references on the same etcd cluster:
//
//   - the floor: one etcd transaction of the same shape as a fleet
//     lease's (a range compare and a put under a lease), from the client's
//     host: no fleet lease can cost less than that round trip;
//   - Kubernetes' way: a whole-range compare-and-swap, one key holding a
//     bitmap of the range, read, changed and written back with a
//     compare on its revision (what the NodePort allocator does).
//
// The fleet figure is a client process asking its broker (another
// process, portresd) for a wildcard lease of one port, as users run it.
// Each is measured with 0, 1,000 and 10,000 single-port blocks already
// held, one port in two of a 20,000-port range.

const (
	benchLo, benchHi = 10000, 29999
	benchFill        = 10000 // at most: every other port
)

// benchEnv is the cluster and the references of the benchmarks.
type benchEnv struct {
	c      *cluster
	m      *member
	cl     *portres.Client
	etcd   *clientv3.Client
	prefix string
	filler clientv3.LeaseID
	filled int
	casKey string
}

func newBenchEnv(b *testing.B) *benchEnv {
	c := newCluster(b)
	m := c.addMember("bench", "--fleet-range", fmt.Sprintf("%d-%d", benchLo, benchHi), "--fleet-ttl", "10s")
	e := &benchEnv{c: c, m: m, cl: c.client(m), etcd: c.etcdClient(), prefix: "/portres-" + c.tag + "/"}
	e.casKey = e.prefix + "bench/cas"
	ctx := context.Background()
	g, err := e.etcd.Grant(ctx, 600)
	if err != nil {
		b.Fatal(err)
	}
	e.filler = g.ID
	bitmap := new(big.Int)
	if _, err := e.etcd.Put(ctx, e.casKey, string(bitmap.Bytes())); err != nil {
		b.Fatal(err)
	}
	return e
}

// fill makes n single-port blocks held, every other port from benchLo,
// both as lease keys (another member's, as the broker's watch sees them)
// and as bits of the whole-range bitmap.
func (e *benchEnv) fill(b *testing.B, n int) {
	ctx := context.Background()
	val, _ := json.Marshal(map[string]any{"member": "filler", "start": 0, "count": 1, "pid": 1})
	for e.filled < n {
		var ops []clientv3.Op
		for ; e.filled < n && len(ops) < 100; e.filled++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%sports/tcp/%05d", e.prefix, benchLo+2*e.filled), string(val), clientv3.WithLease(e.filler)))
		}
		if _, err := e.etcd.Txn(ctx).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
	bitmap := new(big.Int)
	for i := 0; i < n; i++ {
		bitmap.SetBit(bitmap, 2*i, 1)
	}
	if _, err := e.etcd.Put(ctx, e.casKey, string(bitmap.Bytes())); err != nil {
		b.Fatal(err)
	}
	// Let the broker's watch catch up: a wildcard lease must then land on
	// an odd port.
	for deadline := time.Now().Add(10 * time.Second); n > 0; time.Sleep(50 * time.Millisecond) {
		r, err := e.cl.AcquireFleet(ctx, portres.TCP, benchLo+uint16(2*(n-1)), 1)
		if err != nil {
			break
		}
		r.Release(ctx)
		if time.Now().After(deadline) {
			b.Fatalf("the broker does not see the %d filled blocks", n)
		}
	}
}

// txn is the floor: a lease-shaped transaction on one key, then its
// deletion (not timed).
func (e *benchEnv) txn(b *testing.B, port int) time.Duration {
	ctx := context.Background()
	key := fmt.Sprintf("%sbench/txn/%05d", e.prefix, port)
	start := time.Now()
	r, err := e.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0).WithRange(key + "\x00")).
		Then(clientv3.OpPut(key, "x", clientv3.WithLease(e.filler))).Commit()
	d := time.Since(start)
	if err != nil || !r.Succeeded {
		b.Fatalf("txn: %v %v", r, err)
	}
	if _, err := e.etcd.Delete(ctx, key); err != nil {
		b.Fatal(err)
	}
	return d
}

// cas allocates one free port from the whole-range bitmap like
// Kubernetes: read, set a bit, write back if the revision is unchanged;
// again on conflict. It returns the port and the number of retries.
func (e *benchEnv) cas(b *testing.B, rng *rand.Rand) (int, int) {
	ctx := context.Background()
	size := benchHi - benchLo + 1
	for retries := 0; ; retries++ {
		g, err := e.etcd.Get(ctx, e.casKey)
		if err != nil || len(g.Kvs) == 0 {
			b.Fatalf("cas get: %v", err)
		}
		bitmap := new(big.Int).SetBytes(g.Kvs[0].Value)
		off := rng.IntN(size)
		bit := -1
		for i := 0; i < size; i++ {
			if j := (off + i) % size; bitmap.Bit(j) == 0 {
				bit = j
				break
			}
		}
		if bit < 0 {
			b.Fatal("cas: the range is full")
		}
		bitmap.SetBit(bitmap, bit, 1)
		r, err := e.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(e.casKey), "=", g.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(e.casKey, string(bitmap.Bytes()))).Commit()
		if err != nil {
			b.Fatalf("cas txn: %v", err)
		}
		if r.Succeeded {
			return bit, retries
		}
	}
}

// casFree clears bit like cas sets one.
func (e *benchEnv) casFree(b *testing.B, bit int) {
	ctx := context.Background()
	for {
		g, err := e.etcd.Get(ctx, e.casKey)
		if err != nil {
			b.Fatal(err)
		}
		bitmap := new(big.Int).SetBytes(g.Kvs[0].Value)
		bitmap.SetBit(bitmap, bit, 0)
		r, err := e.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(e.casKey), "=", g.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(e.casKey, string(bitmap.Bytes()))).Commit()
		if err != nil {
			b.Fatal(err)
		}
		if r.Succeeded {
			return
		}
	}
}

func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// BenchmarkFleetAllocate: one wildcard fleet lease through the broker,
// against the floor (one etcd transaction) and a whole-range CAS, each
// iteration timing all three.
func BenchmarkFleetAllocate(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	for _, n := range []int{0, 1000, benchFill} {
		e.fill(b, n)
		b.Run(fmt.Sprintf("held=%d", n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(uint64(n), 1))
			var fleet, floor, cas []time.Duration
			for i := 0; i < b.N; i++ {
				floor = append(floor, e.txn(b, i))
				start := time.Now()
				r, err := e.cl.AcquireFleet(ctx, portres.TCP, 0, 1)
				fleet = append(fleet, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				if err := r.Release(ctx); err != nil {
					b.Fatal(err)
				}
				start = time.Now()
				bit, _ := e.cas(b, rng)
				cas = append(cas, time.Since(start))
				e.casFree(b, bit)
			}
			f, t, c := median(fleet), median(floor), median(cas)
			b.ReportMetric(float64(f.Microseconds()), "fleet-µs")
			b.ReportMetric(float64(t.Microseconds()), "txn-µs")
			b.ReportMetric(float64(c.Microseconds()), "cas-µs")
			b.ReportMetric(float64(f)/float64(t), "fleet/txn")
			b.ReportMetric(float64(c)/float64(f), "cas/fleet")
		})
	}
}

// BenchmarkFleetContention: 8 allocators at once on the same etcd, each
// taking and freeing single-port blocks, with 1,000 held: per-port keys
// (a fleet lease's transaction) against the whole-range CAS, whose
// allocators retry each other's conflicts.
func BenchmarkFleetContention(b *testing.B) {
	e := newBenchEnv(b)
	e.fill(b, 1000)
	const workers = 8
	b.Run("per-port-keys", func(b *testing.B) {
		var next atomic.Int64
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				ctx := context.Background()
				rng := rand.New(rand.NewPCG(uint64(w), 2))
				for next.Add(1) <= int64(b.N) {
					for {
						p := benchLo + 1 + 2*rng.IntN((benchHi-benchLo)/2) // an odd port: free unless another worker has it
						key := fmt.Sprintf("%sports/tcp/%05d", e.prefix, p)
						r, err := e.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0).WithRange(key + "\x00")).
							Then(clientv3.OpPut(key, "x", clientv3.WithLease(e.filler))).Commit()
						if err != nil {
							b.Error(err)
							return
						}
						if r.Succeeded {
							e.etcd.Delete(ctx, key)
							break
						}
					}
				}
			}(w)
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "allocs/s")
	})
	b.Run("whole-range-cas", func(b *testing.B) {
		var next, retries atomic.Int64
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 3))
				for next.Add(1) <= int64(b.N) {
					bit, r := e.cas(b, rng)
					retries.Add(int64(r))
					e.casFree(b, bit)
				}
			}(w)
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "allocs/s")
		b.ReportMetric(float64(retries.Load())/float64(b.N), "retries/alloc")
	})
}
