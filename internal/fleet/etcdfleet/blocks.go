//go:build linux

package etcdfleet

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/portres/portres/internal/fleet"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// prepareTTL bounds a create: votes not in by then fail it.
const prepareTTL = 10 * time.Second

// voteWait is how long a create waits for every member's vote.
const voteWait = 5 * time.Second

type prepareValue struct {
	Block   Block    `json:"block"`
	Members []string `json:"members"` // who must vote
}

// CreateBlock creates a fleet persistent reservation: every registered
// member reserves it, or none does. The members vote on a prepare key;
// a member on which the block collides with local use votes no and says
// why. When all said yes, one transaction creates the block key (and
// takes the blocks' turn, so two creates cannot both pass their overlap
// checks); each member then makes its prepared block a fleet persistent
// reservation. On failure the prepare key goes and the members drop
// what they prepared.
func (m *Member) CreateBlock(ctx context.Context, proto uint8, start, count uint16, uid uint32) (Block, error) {
	b := Block{Proto: proto, Start: start, Count: count, UID: uid, Created: time.Now().UTC(), By: m.cfg.Name}
	if err := m.check(); err != nil {
		return b, err
	}
	caller := ctx // its end is a cancel; the deadline below is the create's own
	ctx, cancel := context.WithTimeout(ctx, opTimeout+voteWait)
	defer cancel()
	for {
		var t [8]byte
		rand.Read(t[:])
		if b.Token = binary.LittleEndian.Uint64(t[:]); b.Token != 0 {
			break
		}
	}
	lockKey := m.key("lock", "blocks")
	// The current blocks and the turn to change them, read together.
	var resp *clientv3.TxnResponse
	err := retry(ctx, func(bool) (err error) {
		resp, err = m.cli.Txn(ctx).Then(clientv3.OpGet(m.key("blocks")+"/", clientv3.WithPrefix()), clientv3.OpGet(lockKey),
			clientv3.OpGet(m.key("members")+"/", clientv3.WithPrefix())).Commit()
		return err
	})
	if err != nil {
		return b, m.etcdErr(fmt.Sprintf("create %s: read the fleet", b), err)
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		if o, err := decodeBlock(kv.Value); err == nil && o.Overlaps(b) {
			return b, fmt.Errorf("%w: %s overlaps fleet reservation %s", ErrOverlap, b, o)
		}
	}
	readRev := resp.Header.Revision
	var lockRev int64
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		lockRev = kvs[0].ModRevision
	}
	var voters []string
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		voters = append(voters, strings.TrimPrefix(string(kv.Key), m.key("members")+"/"))
	}
	sort.Strings(voters)

	id := fmt.Sprintf("%016x", b.Token)
	var g *clientv3.LeaseGrantResponse
	err = retry(ctx, func(bool) (err error) {
		g, err = m.cli.Grant(ctx, int64(prepareTTL/time.Second))
		return err
	})
	if err != nil {
		return b, m.etcdErr(fmt.Sprintf("create %s", b), err)
	}
	votesKey := m.key("votes", id) + "/"
	defer func() {
		// The prepare key goes with its lease (members drop what they
		// prepared unless the block was created), and so do the votes.
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		m.cli.Revoke(cctx, g.ID)
		m.cli.Delete(cctx, votesKey, clientv3.WithPrefix())
		cancel()
	}()
	pv, _ := json.Marshal(prepareValue{Block: b, Members: voters})
	var put *clientv3.PutResponse
	if err := retry(ctx, func(bool) (err error) {
		put, err = m.cli.Put(ctx, m.key("prepare", id), string(pv), clientv3.WithLease(g.ID))
		return err
	}); err != nil {
		return b, m.etcdErr(fmt.Sprintf("create %s", b), err)
	}
	// Votes come after the prepare key: watched from its revision on,
	// none is missed.
	wctx, wcancel := context.WithTimeout(ctx, voteWait)
	defer wcancel()
	wc := m.cli.Watch(wctx, votesKey, clientv3.WithPrefix(), clientv3.WithRev(put.Header.Revision+1))
	votes := map[string]string{}
	collect := func(kvs []*mvccpb.KeyValue) {
		for _, kv := range kvs {
			votes[strings.TrimPrefix(string(kv.Key), votesKey)] = string(kv.Value)
		}
	}
	all := func() bool {
		for _, v := range voters {
			if _, ok := votes[v]; !ok {
				return false
			}
		}
		return true
	}
	if r, err := m.cli.Get(ctx, votesKey, clientv3.WithPrefix()); err == nil {
		collect(r.Kvs)
	}
	for !all() {
		wr, ok := <-wc
		if !ok || wr.Err() != nil {
			// The wait ended: the caller gave up, the watch failed, this
			// member was cut off, or a voter did not answer in time.
			switch {
			case caller.Err() != nil:
				return b, fmt.Errorf("create %s: %w; nothing was created", b, caller.Err())
			case ok && wctx.Err() == nil:
				return b, m.etcdErr(fmt.Sprintf("create %s: watch the votes", b), wr.Err())
			}
			if err := m.check(); err != nil {
				return b, err
			}
			var missing []string
			for _, v := range voters {
				if _, ok := votes[v]; !ok {
					missing = append(missing, v)
				}
			}
			return b, fmt.Errorf("%w: create %s: member %s did not answer within %v (cut off from etcd, or stopped); nothing was created",
				ErrNoVote, b, strings.Join(missing, ", "), voteWait)
		}
		for _, ev := range wr.Events {
			if ev.Type == mvccpb.PUT {
				collect([]*mvccpb.KeyValue{ev.Kv})
			}
		}
	}
	var refusals []string
	for _, v := range voters {
		if votes[v] != "ok" {
			refusals = append(refusals, fmt.Sprintf("on member %s: %s", v, votes[v]))
		}
	}
	if len(refusals) > 0 {
		return b, fmt.Errorf("%w: %s %s; nothing was created", ErrCollides, b, strings.Join(refusals, "; "))
	}
	val, _ := json.Marshal(b)
	lockCmp := clientv3.Compare(clientv3.ModRevision(lockKey), "=", lockRev)
	if lockRev == 0 {
		lockCmp = clientv3.Compare(clientv3.CreateRevision(lockKey), "=", 0)
	}
	var tr *clientv3.TxnResponse
	var ambiguous bool
	err = retry(ctx, func(again bool) (err error) {
		ambiguous = again
		// No member registered since the voters were read: one that joined
		// meanwhile did not vote, and may already use the block's ports.
		noNewMember := clientv3.Compare(clientv3.CreateRevision(m.key("members")+"/"), "<", readRev+1).WithPrefix()
		tr, err = m.cli.Txn(ctx).If(lockCmp, noNewMember, clientv3.Compare(clientv3.CreateRevision(m.key("prepare", id)), ">", 0)).
			Then(clientv3.OpPut(m.blockKey(proto, start, count), string(val)), clientv3.OpPut(lockKey, id),
				clientv3.OpDelete(m.key("prepare", id)), clientv3.OpDelete(votesKey, clientv3.WithPrefix())).Commit()
		return err
	})
	if err != nil {
		return b, m.etcdErr(fmt.Sprintf("create %s", b), err)
	}
	if !tr.Succeeded && ambiguous {
		// A try whose answer was lost may have created it: then the
		// block key holds this create's token.
		if r, err := m.cli.Get(ctx, m.blockKey(proto, start, count)); err == nil && len(r.Kvs) > 0 {
			if o, err := decodeBlock(r.Kvs[0].Value); err == nil && o.Token == b.Token {
				return b, nil
			}
		}
	}
	if !tr.Succeeded {
		return b, fmt.Errorf("%w: create %s: the fleet's blocks or members changed meanwhile; nothing was created", ErrConflict, b)
	}
	return b, nil
}

// DeleteBlock deletes the fleet persistent reservation that is exactly
// proto/start/count; every member drops it (sockets stay bound).
func (m *Member) DeleteBlock(ctx context.Context, proto uint8, start, count uint16) (Block, error) {
	if err := m.check(); err != nil {
		return Block{}, err
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	key := m.blockKey(proto, start, count)
	notFound := fmt.Errorf("%w: %s", ErrNotFound, fleet.Block{Proto: proto, Start: start, Count: count})
	what := fmt.Sprintf("delete %s", fleet.Block{Proto: proto, Start: start, Count: count})
	// Read it first, then delete that version of it: a try whose answer
	// was lost is then told from a block that was never there.
	var cur *clientv3.GetResponse
	if err := retry(ctx, func(bool) (err error) {
		cur, err = m.cli.Get(ctx, key)
		return err
	}); err != nil {
		return Block{}, m.etcdErr(what, err)
	}
	if len(cur.Kvs) == 0 {
		return Block{}, notFound
	}
	b, _ := decodeBlock(cur.Kvs[0].Value)
	var tr *clientv3.TxnResponse
	var ambiguous bool
	err := retry(ctx, func(again bool) (err error) {
		ambiguous = again
		tr, err = m.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", cur.Kvs[0].ModRevision)).
			Then(clientv3.OpDelete(key), clientv3.OpPut(m.key("lock", "blocks"), "delete")).
			Else(clientv3.OpGet(key)).Commit()
		return err
	})
	if err != nil {
		return Block{}, m.etcdErr(what, err)
	}
	if !tr.Succeeded && len(tr.Responses[0].GetResponseRange().Kvs) > 0 {
		return Block{}, fmt.Errorf("%w: %s: it was deleted and created again meanwhile", ErrConflict, what)
	}
	if !tr.Succeeded && !ambiguous {
		return Block{}, notFound // another member deleted it meanwhile
	}
	return b, nil // deleted (by a try whose answer was lost, if this one did not)
}

// LookupBlock finds the fleet persistent reservation that is exactly
// proto/start/count, from what the member follows (it works cut off too).
func (m *Member) LookupBlock(proto uint8, start, count uint16) (Block, error) {
	m.mu.Lock()
	b, ok := m.blocks[m.blockKey(proto, start, count)]
	m.mu.Unlock()
	if !ok {
		return b, fmt.Errorf("%w: %s", ErrNotFound, fleet.Block{Proto: proto, Start: start, Count: count})
	}
	return b, nil
}

// Blocks lists the fleet persistent reservations the member follows.
func (m *Member) Blocks() []Block {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Block, 0, len(m.blocks))
	for _, b := range m.blocks {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Proto != out[j].Proto {
			return out[i].Proto < out[j].Proto
		}
		return out[i].Start < out[j].Start
	})
	return out
}

// prepareEvent votes on a create: the host reserves the block
// tentatively, or says why it cannot. When the prepare key goes without
// the block having been created, the tentative reservation is dropped.
func (m *Member) prepareEvent(typ mvccpb.Event_EventType, id string, value []byte) {
	if typ == mvccpb.DELETE {
		m.mu.Lock()
		b, ok := m.prepared[id]
		delete(m.prepared, id)
		cur, exists := m.blocks[m.blockKey(b.Proto, b.Start, b.Count)]
		created := exists && cur.Token == b.Token // the block this create made, not another of that range
		m.mu.Unlock()
		if ok && !created {
			m.local.AbortBlock(b)
		}
		return
	}
	var pv prepareValue
	if err := json.Unmarshal(value, &pv); err != nil {
		return
	}
	asked := false
	for _, n := range pv.Members {
		asked = asked || n == m.cfg.Name
	}
	if !asked {
		return
	}
	m.mu.Lock()
	_, again := m.prepared[id]
	m.mu.Unlock()
	// A prepare key written twice (a retried put) finds the block
	// prepared here already: the vote is ok again.
	vote := "ok"
	if !again {
		if err := m.local.PrepareBlock(pv.Block); err != nil {
			vote = err.Error()
		} else {
			m.mu.Lock()
			m.prepared[id] = pv.Block
			m.mu.Unlock()
		}
	}
	m.mu.Lock()
	lease := m.lease
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(m.ctx, 3*time.Second)
	defer cancel()
	if _, err := m.cli.Put(ctx, m.key("votes", id, m.cfg.Name), vote, clientv3.WithLease(lease)); err != nil {
		m.log.Warn("fleet: cannot vote on a create", "block", pv.Block.String(), "err", err)
	}
}

// blockEvent applies a created or deleted fleet block to the host.
func (m *Member) blockEvent(typ mvccpb.Event_EventType, key string, value []byte) {
	if typ == mvccpb.DELETE {
		m.mu.Lock()
		b, ok := m.blocks[key]
		delete(m.blocks, key)
		m.mu.Unlock()
		if ok {
			m.local.RemoveBlock(b)
		}
		return
	}
	b, err := decodeBlock(value)
	if err != nil {
		return
	}
	m.mu.Lock()
	m.blocks[key] = b
	for id, p := range m.prepared {
		if p.Token == b.Token {
			delete(m.prepared, id)
		}
	}
	m.mu.Unlock()
	if err := m.local.CommitBlock(b); err != nil {
		m.log.Error("fleet: cannot enforce a fleet block here", "member", m.cfg.Name, "block", b.String(), "err", err)
	}
}
