//go:build linux

package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrTaken is wrapped by the error of a fleet lease whose ports another
// lease holds (WSAEADDRINUSE), and ErrNoRoom by that of a wildcard lease
// that fits nowhere in the fleet range (WSAENOBUFS).
var (
	ErrTaken  = errors.New("held by a fleet lease")
	ErrNoRoom = errors.New("no free block of that size in the fleet range")
)

// portInfo is the value of a lease port's key: whose block it is part of.
type portInfo struct {
	Member string `json:"member"`
	Start  uint16 `json:"start"`
	Count  uint16 `json:"count"`
	PID    int32  `json:"pid"`
	Nonce  uint64 `json:"nonce,omitempty"` // tells an allocation's own keys from another's after a lost answer
}

func decodePort(v []byte) (portInfo, error) {
	var p portInfo
	err := json.Unmarshal(v, &p)
	return p, err
}

// Lease is a fleet lease: a block of the fleet range held by this member
// for a client of its broker.
type Lease struct {
	Proto        uint8
	Start, Count uint16
}

// InRange reports whether the block lies in the fleet range.
func (m *Member) InRange(start, count uint16) bool {
	return m.cfg.RangeStart != 0 && start >= m.cfg.RangeStart && int(start)+int(count)-1 <= int(m.cfg.RangeEnd)
}

// Overlaps reports whether the block touches the fleet range.
func (m *Member) Overlaps(start, count uint16) bool {
	return m.cfg.RangeStart != 0 && int(start) <= int(m.cfg.RangeEnd) && int(start)+int(count)-1 >= int(m.cfg.RangeStart)
}

// Candidate picks where a wildcard fleet lease of count ports could go:
// the first run of free ports in the fleet range as the member's watch
// sees them, from after on (then from the start of the range), that
// free(start) also accepts (the host's own pool). It may be taken by the
// time the transaction runs: Allocate reports ErrTaken and the caller
// tries again from further on.
func (m *Member) Candidate(proto uint8, count uint16, after uint16, free func(start uint16) bool) (uint16, error) {
	if m.cfg.RangeStart == 0 {
		return 0, fmt.Errorf("fleet: member %s has no fleet range (--fleet-range)", m.cfg.Name)
	}
	lo, hi := int(m.cfg.RangeStart), int(m.cfg.RangeEnd)
	from := int(after)
	if from < lo || from > hi {
		from = lo
	}
	// The runs of [from, hi], then those of [lo, from+count-1). The
	// watch's view is read port by port, not held across free, which
	// takes the broker's lock.
	for _, span := range [][2]int{{from, hi}, {lo, min(hi, from+int(count)-2)}} {
		run := 0
		for p := span[0]; p <= span[1]; p++ {
			m.mu.Lock()
			_, taken := m.ports[protoIndex(proto)][uint16(p)]
			m.mu.Unlock()
			if taken {
				run = 0
				continue
			}
			if run++; run < int(count) {
				continue
			}
			if s := uint16(p - int(count) + 1); free(s) {
				return s, nil
			}
		}
	}
	return 0, fmt.Errorf("%w: %d %s ports in %d-%d", ErrNoRoom, count, protoName(proto), lo, hi)
}

// Allocate takes the fleet lease proto/start/count for a client (pid) of
// this member: one transaction that checks no key exists in the block's
// port range and puts a key per port under the member's lease.
func (m *Member) Allocate(ctx context.Context, proto uint8, start, count uint16, pid int32) error {
	if err := m.check(); err != nil {
		return err
	}
	if count == 0 || count > MaxLeasePorts {
		return fmt.Errorf("fleet: a fleet lease holds 1 to %d ports, not %d", MaxLeasePorts, count)
	}
	if !m.InRange(start, count) {
		return fmt.Errorf("fleet: %s %s is outside the fleet range %d-%d", protoName(proto), blockText(start, count),
			m.cfg.RangeStart, m.cfg.RangeEnd)
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	m.mu.Lock()
	lease := m.lease
	m.mu.Unlock()
	mine := portInfo{Member: m.cfg.Name, Start: start, Count: count, PID: pid, Nonce: rand.Uint64()}
	val, _ := json.Marshal(mine)
	ops := make([]clientv3.Op, 0, count)
	for p := int(start); p < int(start)+int(count); p++ {
		ops = append(ops, clientv3.OpPut(m.portKey(proto, p), string(val), clientv3.WithLease(lease)))
	}
	first, end := m.portKey(proto, int(start)), m.portKey(proto, int(start)+int(count))
	var tr *clientv3.TxnResponse
	var ambiguous bool
	err := retry(ctx, func(again bool) (err error) {
		ambiguous = again
		tr, err = m.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(first), "=", 0).WithRange(end)).
			Then(ops...).Else(clientv3.OpGet(first, clientv3.WithRange(end), clientv3.WithLimit(1))).Commit()
		return err
	})
	if err == nil && !tr.Succeeded && ambiguous {
		// A try whose answer was lost may have taken it: the first key
		// then carries this call's nonce (the transaction is atomic).
		if kvs := tr.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			if pi, derr := decodePort(kvs[0].Value); derr == nil && pi == mine && string(kvs[0].Key) == first {
				tr.Succeeded = true
			}
		}
	}
	if err != nil {
		if clientv3IsLeaseGone(err) {
			return fmt.Errorf("%w: member %s lost its etcd lease", ErrCutOff, m.cfg.Name)
		}
		return m.etcdErr(fmt.Sprintf("lease %s %s", protoName(proto), blockText(start, count)), err)
	}
	if !tr.Succeeded {
		who := "another member"
		if kvs := tr.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			if pi, err := decodePort(kvs[0].Value); err == nil {
				who = fmt.Sprintf("member %s (fleet lease %s %s)", pi.Member, protoName(proto), blockText(pi.Start, pi.Count))
			}
		}
		return fmt.Errorf("%w: %s %s overlaps what %s holds", ErrTaken, protoName(proto), blockText(start, count), who)
	}
	// Mark them at once, so that this member's next candidate skips them
	// before the watch reports them.
	m.mu.Lock()
	for p := int(start); p < int(start)+int(count); p++ {
		m.ports[protoIndex(proto)][uint16(p)] = portInfo{Member: m.cfg.Name, Start: start, Count: count, PID: pid}
	}
	m.mine[Lease{proto, start, count}] = lease
	m.mu.Unlock()
	return nil
}

// Free ends a fleet lease of this member: its keys are deleted, if they
// are still under the etcd lease they were put under. A key of another
// lease is never deleted: if this member's lease lapsed, its keys went
// with it and another member may hold those ports now.
func (m *Member) Free(ctx context.Context, proto uint8, start, count uint16) error {
	l := Lease{proto, start, count}
	m.mu.Lock()
	lease, ok := m.mine[l]
	delete(m.mine, l)
	m.mu.Unlock()
	if !ok {
		return nil // freed already
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	first, end := m.portKey(proto, int(start)), m.portKey(proto, int(start)+int(count))
	err := retry(ctx, func(bool) error {
		_, err := m.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(first), "=", lease).WithRange(end)).
			Then(clientv3.OpDelete(first, clientv3.WithRange(end))).Commit()
		return err
	})
	if err != nil {
		return fmt.Errorf("fleet: free %s %s: %w", protoName(proto), blockText(start, count), err)
	}
	return nil
}

// Live reports whether this member holds the fleet lease proto/start/
// count under its current etcd lease, and that lease is not being given
// up. A lease allocated just before the member was cut off is not live:
// the broker must not keep it (Local.LeasesLost may have run before it
// was recorded).
func (m *Member) Live(proto uint8, start, count uint16) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	lease, ok := m.mine[Lease{proto, start, count}]
	return ok && lease == m.lease && m.connected
}

// Holder says which member holds a fleet lease port, as the watch sees it.
func (m *Member) Holder(proto uint8, port uint16) (member string, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pi, ok := m.ports[protoIndex(proto)][port]
	return pi.Member, ok
}
