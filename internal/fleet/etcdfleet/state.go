//go:build linux

package etcdfleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/portres/portres"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (m *Member) info() string {
	b, _ := json.Marshal(MemberInfo{Name: m.cfg.Name, Host: m.host, PID: os.Getpid(), Version: m.cfg.Version,
		Since: time.Now().UTC(), RangeStart: m.cfg.RangeStart, RangeEnd: m.cfg.RangeEnd})
	return string(b)
}

func decodeMember(v []byte) (MemberInfo, error) {
	var i MemberInfo
	err := json.Unmarshal(v, &i)
	return i, err
}

func decodeBlock(v []byte) (Block, error) {
	var b Block
	if err := json.Unmarshal(v, &b); err != nil {
		return b, err
	}
	if (b.Proto != 6 && b.Proto != 17) || b.Start == 0 || b.Count == 0 || b.End() > 65535 || b.Token == 0 {
		return b, fmt.Errorf("bad fleet block %+v", b)
	}
	return b, nil
}

// blockKey is blocks/PROTO/START-COUNT.
func (m *Member) blockKey(proto uint8, start, count uint16) string {
	return m.key("blocks", portres.Proto(proto).String(), fmt.Sprintf("%05d-%05d", start, count))
}

// portKey is ports/PROTO/PORT, the port in five digits so keys sort.
func (m *Member) portKey(proto uint8, port int) string {
	return m.key("ports", portres.Proto(proto).String(), fmt.Sprintf("%05d", port))
}

func protoIndex(p uint8) int {
	if p == 17 {
		return 1
	}
	return 0
}

// clientv3IsLeaseGone reports whether err says the lease does not exist
// (any more).
func clientv3IsLeaseGone(err error) bool {
	return errors.Is(err, rpctypes.ErrLeaseNotFound) || err != nil && strings.Contains(err.Error(), "requested lease not found")
}

// load reads the fleet's state (members, blocks, lease ports), applies
// the blocks to the host, and returns the revision to follow from.
func (m *Member) load(ctx context.Context) (int64, error) {
	var resp *clientv3.GetResponse
	err := retry(ctx, func(bool) (err error) {
		resp, err = m.cli.Get(ctx, m.cfg.Prefix, clientv3.WithPrefix())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("fleet: read the fleet's state: %w", err)
	}
	want := map[string]Block{}
	preparing := map[string]bool{}
	m.mu.Lock()
	// Afresh: what went while the watch was down must not linger.
	m.members, m.ports = map[string]MemberInfo{}, [2]map[uint16]portInfo{{}, {}}
	for _, kv := range resp.Kvs {
		if id, ok := strings.CutPrefix(string(kv.Key), m.key("prepare")+"/"); ok {
			preparing[id] = true
		}
		m.applyLocked(mvccpb.PUT, string(kv.Key), kv.Value, want)
	}
	// Creates that ended while the watch was down: drop what this member
	// prepared for them, unless the block was created (reconcile keeps it).
	var aborted []Block
	for id, b := range m.prepared {
		if !preparing[id] {
			delete(m.prepared, id)
			if cur, ok := want[m.blockKey(b.Proto, b.Start, b.Count)]; !ok || cur.Token != b.Token {
				aborted = append(aborted, b)
			}
		}
	}
	m.mu.Unlock()
	for _, b := range aborted {
		m.local.AbortBlock(b)
	}
	m.reconcile(want)
	return resp.Header.Revision, nil
}

// reconcile makes the host enforce exactly the fleet blocks want (keyed
// as in etcd): vanished ones removed, then new ones committed (a block
// deleted and created again meanwhile is both).
func (m *Member) reconcile(want map[string]Block) {
	have := map[uint64]Block{}
	for _, b := range m.local.FleetBlocks() {
		have[b.Token] = b
	}
	var add []Block
	for _, b := range want {
		if _, ok := have[b.Token]; ok {
			delete(have, b.Token)
			continue
		}
		add = append(add, b)
	}
	for _, b := range have {
		m.local.RemoveBlock(b)
	}
	for _, b := range add {
		if err := m.local.CommitBlock(b); err != nil {
			m.log.Error("fleet: cannot enforce a fleet block here", "member", m.cfg.Name, "block", b.String(), "err", err)
		}
	}
	m.mu.Lock()
	m.blocks = want
	m.mu.Unlock()
}

// follow watches the prefix from rev on: members, blocks, prepares,
// lease ports. A compacted or broken watch is restarted with a fresh load.
func (m *Member) follow(rev int64) {
	defer m.wg.Done()
	for m.ctx.Err() == nil {
		wc := m.cli.Watch(clientv3.WithRequireLeader(m.ctx), m.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		retry := time.NewTicker(retryEvery)
	watch:
		for {
			select {
			case wr, ok := <-wc:
				if !ok {
					break watch
				}
				if err := wr.Err(); err != nil {
					m.log.Debug("fleet: watch", "err", err)
					break watch
				}
				rev = wr.Header.Revision
				for _, ev := range wr.Events {
					m.event(ev)
				}
			case <-retry.C:
				m.applyMissing()
			}
		}
		retry.Stop()
		if m.ctx.Err() != nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
		ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
		r, err := m.load(ctx)
		cancel()
		if err == nil {
			rev = r
		}
	}
}

// retryEvery is how often fleet blocks the host could not enforce are
// tried again.
const retryEvery = 2 * time.Second

// applyMissing tries again to enforce the fleet blocks the host does not:
// each collided with local use when it came (a runtime reservation, a
// bound port, a local persistent block), which may have ended since.
// It runs on the follow goroutine, between watch events.
func (m *Member) applyMissing() {
	have := map[uint64]bool{}
	for _, b := range m.local.FleetBlocks() {
		have[b.Token] = true
	}
	var missing []Block
	m.mu.Lock()
	for _, b := range m.blocks {
		if !have[b.Token] {
			missing = append(missing, b)
		}
	}
	m.mu.Unlock()
	for _, b := range missing {
		if err := m.local.CommitBlock(b); err == nil {
			m.log.Info("fleet: a fleet block is enforced here at last: what it collided with has gone", "member", m.cfg.Name, "block", b.String())
		}
	}
}

// event applies one change seen by the watch.
func (m *Member) event(ev *clientv3.Event) {
	key := string(ev.Kv.Key)
	rest := strings.TrimPrefix(key, m.cfg.Prefix)
	switch {
	case strings.HasPrefix(rest, "blocks/"):
		m.blockEvent(ev.Type, key, ev.Kv.Value)
	case strings.HasPrefix(rest, "prepare/"):
		m.prepareEvent(ev.Type, strings.TrimPrefix(rest, "prepare/"), ev.Kv.Value)
	default:
		m.mu.Lock()
		m.applyLocked(ev.Type, key, ev.Kv.Value, nil)
		m.mu.Unlock()
	}
}

// applyLocked records members, lease ports and (into blocks, at load)
// fleet blocks. Caller holds m.mu.
func (m *Member) applyLocked(typ mvccpb.Event_EventType, key string, value []byte, blocks map[string]Block) {
	rest := strings.TrimPrefix(key, m.cfg.Prefix)
	switch {
	case strings.HasPrefix(rest, "members/"):
		name := strings.TrimPrefix(rest, "members/")
		if typ == mvccpb.DELETE {
			delete(m.members, name)
		} else if i, err := decodeMember(value); err == nil {
			m.members[name] = i
		}
	case strings.HasPrefix(rest, "ports/"):
		parts := strings.Split(strings.TrimPrefix(rest, "ports/"), "/")
		if len(parts) != 2 {
			return
		}
		port, err := strconv.Atoi(parts[1])
		if err != nil || port < 1 || port > 65535 {
			return
		}
		idx := 0
		if parts[0] == "udp" {
			idx = 1
		}
		if typ == mvccpb.DELETE {
			delete(m.ports[idx], uint16(port))
		} else if pi, err := decodePort(value); err == nil {
			m.ports[idx][uint16(port)] = pi
		}
	case strings.HasPrefix(rest, "blocks/") && blocks != nil:
		if b, err := decodeBlock(value); err == nil {
			blocks[key] = b
		}
	}
}

// Members lists the registered members, by name.
func (m *Member) Members() []MemberInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]MemberInfo, 0, len(m.members))
	for _, i := range m.members {
		out = append(out, i)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Status returns the member's view of the fleet.
func (m *Member) Status() Status {
	st := Status{Name: m.cfg.Name, Prefix: m.cfg.Prefix, Endpoints: m.cfg.Endpoints, Members: m.Members()}
	if m.cfg.RangeStart != 0 {
		st.Range = fmt.Sprintf("%d-%d", m.cfg.RangeStart, m.cfg.RangeEnd)
	}
	if err := m.check(); err != nil {
		st.Error = err.Error()
	} else {
		st.Connected = true
	}
	m.mu.Lock()
	st.Blocks = len(m.blocks)
	st.Leased = len(m.ports[0]) + len(m.ports[1])
	m.mu.Unlock()
	return st
}
