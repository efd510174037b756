//go:build linux

package etcdfleet

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/fleet"
	clientv3 "go.etcd.io/etcd/client/v3"
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
	return m.cfg.InRange(start, count)
}

// Overlaps reports whether the block touches the fleet range.
func (m *Member) Overlaps(start, count uint16) bool {
	return m.cfg.Overlaps(start, count)
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
	return 0, fmt.Errorf("%w: %d %s ports in %d-%d", ErrNoRoom, count, portres.Proto(proto).String(), lo, hi)
}

// Allocate takes the fleet lease proto/start/count for a client (pid) of
// this member: one transaction that checks no key exists in the block's
// port range and puts a key per port under the member's lease. The
// ticket it returns names this allocation (Free and Live take it): a
// later allocation of the same block is another.
func (m *Member) Allocate(ctx context.Context, proto uint8, start, count uint16, pid int32) (uint64, error) {
	if err := m.check(); err != nil {
		return 0, err
	}
	if count == 0 || count > MaxLeasePorts {
		return 0, fmt.Errorf("fleet: a fleet lease holds 1 to %d ports, not %d", MaxLeasePorts, count)
	}
	if !m.InRange(start, count) {
		return 0, fmt.Errorf("fleet: %s is outside the fleet range %d-%d", fleet.Block{Proto: proto, Start: start, Count: count},
			m.cfg.RangeStart, m.cfg.RangeEnd)
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	m.mu.Lock()
	lease := m.lease
	m.mu.Unlock()
	mine := portInfo{Member: m.cfg.Name, Start: start, Count: count, PID: pid, Nonce: rand.Uint64() | 1}
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
		// A try whose answer never came (lost, cancelled, timed out) may
		// have taken it after all: delete its keys, if they are there,
		// once etcd answers again. The value carries this call's nonce:
		// no other allocation's keys can match.
		go m.deleteIf(proto, start, count, string(val))
	}
	if err != nil {
		if clientv3IsLeaseGone(err) {
			return 0, fmt.Errorf("%w: member %s lost its etcd lease", ErrCutOff, m.cfg.Name)
		}
		return 0, m.etcdErr(fmt.Sprintf("lease %s", fleet.Block{Proto: proto, Start: start, Count: count}), err)
	}
	if !tr.Succeeded {
		who := "another member"
		if kvs := tr.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			if pi, err := decodePort(kvs[0].Value); err == nil {
				who = fmt.Sprintf("member %s (fleet lease %s)", pi.Member, fleet.Block{Proto: proto, Start: pi.Start, Count: pi.Count})
			}
		}
		return 0, fmt.Errorf("%w: %s overlaps what %s holds", ErrTaken, fleet.Block{Proto: proto, Start: start, Count: count}, who)
	}
	// Mark them at once, so that this member's next candidate skips them
	// before the watch reports them.
	m.mu.Lock()
	for p := int(start); p < int(start)+int(count); p++ {
		m.ports[protoIndex(proto)][uint16(p)] = portInfo{Member: m.cfg.Name, Start: start, Count: count, PID: pid}
	}
	m.mine[Lease{proto, start, count}] = held{lease: lease, nonce: mine.Nonce, val: string(val)}
	m.mu.Unlock()
	return mine.Nonce, nil
}

// held is a fleet lease of this member as Allocate took it: the etcd
// lease its keys are under, its ticket, and its keys' value.
type held struct {
	lease clientv3.LeaseID
	nonce uint64
	val   string
}

// Free ends the fleet lease of this member that Allocate's ticket names:
// its keys are deleted if they still hold that allocation's value. A key
// of another allocation is never deleted: if this member's lease lapsed,
// its keys went with it and another member may hold those ports now; a
// second Free of one allocation, or a late one after the block was
// allocated again, does nothing.
func (m *Member) Free(ctx context.Context, proto uint8, start, count uint16, ticket uint64) error {
	l := Lease{proto, start, count}
	m.mu.Lock()
	h, ok := m.mine[l]
	if ok && h.nonce == ticket {
		delete(m.mine, l)
	}
	m.mu.Unlock()
	if !ok || h.nonce != ticket {
		return nil // freed already
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	if err := m.deleteIfCtx(ctx, proto, start, count, h.val); err != nil {
		// Keep trying in the background: the member lease may outlive
		// this call by most of a TTL.
		go m.deleteIf(proto, start, count, h.val)
		return fmt.Errorf("fleet: free %s (tried again in the background): %w", fleet.Block{Proto: proto, Start: start, Count: count}, err)
	}
	return nil
}

// deleteIfCtx deletes the block's keys if every one holds val.
func (m *Member) deleteIfCtx(ctx context.Context, proto uint8, start, count uint16, val string) error {
	first, end := m.portKey(proto, int(start)), m.portKey(proto, int(start)+int(count))
	return retry(ctx, func(bool) error {
		_, err := m.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(first), "=", val).WithRange(end)).
			Then(clientv3.OpDelete(first, clientv3.WithRange(end))).Commit()
		return err
	})
}

// deleteIf is deleteIfCtx in the background, for up to twice the
// member lease's TTL (by then the keys went with the lease, if the member
// could not renew it) or until the member leaves the fleet.
func (m *Member) deleteIf(proto uint8, start, count uint16, val string) {
	ctx, cancel := context.WithTimeout(m.ctx, max(30*time.Second, 2*m.cfg.TTL))
	defer cancel()
	if err := m.deleteIfCtx(ctx, proto, start, count, val); err != nil {
		m.log.Warn("fleet: delete the keys of a lease whose answer was lost; they lapse with the member lease",
			"member", m.cfg.Name, "block", fleet.Block{Proto: proto, Start: start, Count: count}.String(), "err", err)
	}
}

// Live reports whether this member holds the fleet lease that Allocate's
// ticket names, under its current etcd lease, and that lease is not
// being given up. A lease allocated just before the member was cut off
// is not live: the broker must not keep it (Local.LeasesLost may have run
// before it was recorded).
func (m *Member) Live(proto uint8, start, count uint16, ticket uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.mine[Lease{proto, start, count}]
	return ok && h.nonce == ticket && h.lease == m.lease && m.connected
}
