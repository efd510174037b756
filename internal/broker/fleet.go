//go:build linux

package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/fleet"
	"github.com/portres/portres/internal/pool"
	"github.com/portres/portres/internal/store"
	"github.com/portres/portres/internal/wire"
)

// joinFleet makes the broker a member of the fleet of Config.Fleet, before
// it serves: every fleet block is applied to the host, the fleet range is
// kept out of local use (and out of the kernel's automatic assignment),
// and fleet leases restored from before a restart are dropped (the
// restarted member's registration replaces the old one, whose leases
// etcd frees).
func (b *Broker) joinFleet() error {
	fc := b.cfg.Fleet
	if fc == nil {
		return nil
	}
	if fc.RangeStart != 0 {
		for proto, p := range b.pools {
			lo, hi := p.Dynamic()
			if fc.Overlaps(lo, hi-lo+1) {
				return fmt.Errorf("portresd: --fleet-range %d-%d overlaps the %s dynamic range %d-%d: wildcard reservations would be drawn from it; move one of them",
					fc.RangeStart, fc.RangeEnd, proto, lo, hi)
			}
		}
		b.mu.Lock()
		var gone []*resv
		for _, rv := range b.byToken {
			blk := rv.block()
			inRange := fc.Overlaps(blk.Start, blk.Count)
			if inRange && rv.kind == wire.KindRuntime {
				gone = append(gone, rv) // a fleet lease from before a restart
			} else if inRange {
				b.mu.Unlock()
				return fmt.Errorf("portresd: --fleet-range %d-%d overlaps the persistent %s: delete it or move the range", fc.RangeStart, fc.RangeEnd, rv.describe())
			}
		}
		for _, rv := range gone {
			b.removeLocked(rv)
			b.forgetLocked(rv)
			b.log.Warn("fleet: dropped a fleet lease restored from before the restart: its etcd lease ended with the old broker", "proto", rv.proto, "block", rv.block().String())
		}
		b.mu.Unlock()
		b.exclMu.Lock()
		b.adminCover.Add(fc.RangeStart, fc.RangeEnd)
		b.exclMu.Unlock()
		if fc.UserPorts == 0 {
			fc.UserPorts = max(1, (int(fc.RangeEnd)-int(fc.RangeStart)+1)/4)
		}
	}
	fc.Version = Version()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if b.cfg.JoinFleet == nil {
		return fmt.Errorf("portresd: a fleet is configured but this program cannot join one (broker.Config.JoinFleet is nil)")
	}
	m, err := b.cfg.JoinFleet(ctx, *fc, fleetHost{b}, b.log)
	if err != nil {
		return fmt.Errorf("portresd: %w", err)
	}
	b.fleet = m
	b.log.Info("fleet: joined", "member", m.Name(), "endpoints", fc.Endpoints, "prefix", fc.Prefix, "range",
		fmt.Sprintf("%d-%d", fc.RangeStart, fc.RangeEnd), "members", len(m.Members()), "blocks", len(m.Blocks()))
	b.fleetStop = make(chan struct{})
	go b.publishFleet(b.fleetStop)
	return nil
}

// publishFleet keeps this member's entry of the fleet view current.
func (b *Broker) publishFleet(stop chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			b.fleet.Publish()
		}
	}
}

// inFleetRange reports whether blk touches the fleet range.
func (b *Broker) inFleetRange(blk pool.Block) bool {
	return b.fleet != nil && b.fleet.Overlaps(blk.Start, blk.Count)
}

// fleetError turns an error of the fleet into the Winsock or Win32 code
// of its local counterpart.
func fleetError(err error, persistent bool) *wire.Response {
	code := portres.WSAEINVAL
	switch {
	case errors.Is(err, fleet.ErrCutOff), errors.Is(err, fleet.ErrNoVote):
		code = portres.WSAENETDOWN
	case errors.Is(err, context.Canceled):
		code = portres.WSA_OPERATION_ABORTED
	case errors.Is(err, fleet.ErrTaken):
		code = portres.WSAEADDRINUSE
	case errors.Is(err, fleet.ErrNoRoom):
		code = portres.WSAENOBUFS
	case errors.Is(err, fleet.ErrOverlap), errors.Is(err, fleet.ErrCollides), errors.Is(err, fleet.ErrConflict):
		code = portres.ERROR_SHARING_VIOLATION
	case errors.Is(err, fleet.ErrNotFound):
		code = portres.ERROR_NOT_FOUND
	case persistent:
		code = portres.ERROR_INVALID_PARAMETER
	}
	return errf(code, "fleet: %v", err)
}

func (b *Broker) noFleet() *wire.Response {
	return errf(portres.WSAEOPNOTSUPP, "this broker is not a member of a fleet (portresd --etcd)")
}

// acquireFleet hands out a fleet lease: a block of the fleet range no
// other member holds, taken in etcd by one transaction, then reserved
// here like a runtime block of s. A wildcard block is placed where the
// member's view of the fleet sees room, and placed again if another
// member took it first.
func (b *Broker) acquireFleet(ctx context.Context, s *session, req *wire.Request) *wire.Response {
	if b.fleet == nil {
		return b.noFleet()
	}
	lo, hi := b.fleet.Range()
	if lo == 0 {
		return errf(portres.WSAEOPNOTSUPP, "member %s has no fleet range (portresd --fleet-range)", b.fleet.Name())
	}
	proto, bad := checkBlock(req, false)
	if bad != nil {
		return bad
	}
	if req.Count > fleet.MaxLeasePorts {
		return errf(portres.WSAEINVAL, "a fleet lease holds 1 to %d ports, not %d", fleet.MaxLeasePorts, req.Count)
	}
	if req.Start != 0 && !b.fleet.InRange(req.Start, req.Count) {
		return errf(portres.WSAEINVAL, "%s %s is outside the fleet range %d-%d", proto, pool.Block{Start: req.Start, Count: req.Count}, lo, hi)
	}
	if limit := b.cfg.Fleet.UserPorts; !s.admin && limit >= 0 {
		if held := b.fleetPortsOf(s.peer.uid); held+int(req.Count) > limit {
			return quotaError(s.peer.uid, "ports of fleet leases", held, int(req.Count), limit, "fleet-user-ports")
		}
	}
	// A wildcard lease starts its search at a random multiple of its
	// size in the range, so that members allocating at once seldom want
	// the same block, while blocks of one size still pack the range.
	after := lo + req.Count*uint16(rand.IntN(max(1, (int(hi-lo)+1)/int(req.Count))))
	for attempt := 0; ; attempt++ {
		start := req.Start
		if start == 0 {
			var err error
			start, err = b.fleet.Candidate(uint8(proto), req.Count, after, func(st uint16) bool {
				b.mu.Lock()
				defer b.mu.Unlock()
				return len(b.pools[proto].Overlapping(pool.Block{Start: st, Count: req.Count})) == 0
			})
			if err != nil {
				return fleetError(err, false)
			}
		}
		ticket, err := b.fleet.Allocate(ctx, uint8(proto), start, req.Count, s.peer.pid)
		if errors.Is(err, fleet.ErrTaken) && req.Start == 0 && attempt < 32 {
			after = start + req.Count
			continue
		}
		if err != nil {
			return fleetError(err, false)
		}
		local := *req
		local.Start = start
		resp := b.acquireFor(ctx, s, s.peer, s.admin, &local)
		if resp.Code == 0 && b.keepFleetLease(proto, resp, ticket) {
			return resp
		}
		// Not held here: free it in etcd (the ticket keeps a late or
		// second free from touching a later allocation of the block).
		fctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		b.fleet.Free(fctx, uint8(proto), start, req.Count, ticket)
		cancel()
		if resp.Code == 0 {
			return errf(portres.WSAENETDOWN, "fleet: member %s was cut off from etcd, or the client left, while it leased %s %s; nothing is held",
				b.fleet.Name(), proto, pool.Block{Start: start, Count: req.Count})
		}
		return resp
	}
}

// fleetPortsOf counts the ports of the fleet leases uid holds here. A
// walk of every reservation: a fleet lease costs an etcd round trip,
// which dwarfs it.
func (b *Broker) fleetPortsOf(uid uint32) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, rv := range b.byToken {
		if rv.fleetLease && rv.owner != nil && rv.owner.uid == uid {
			n += int(rv.block().Count)
		}
	}
	return n
}

// keepFleetLease checks, under the broker's lock, that the fleet lease
// just reserved here is still held by its client and lives in etcd's
// view of this member, and gives the reservation its ticket. If the
// member gave its leases up meanwhile (Local.LeasesLost, which takes the
// same lock, ran before the block was recorded), or the client is gone,
// the block is dropped here and the caller frees it in etcd.
func (b *Broker) keepFleetLease(proto portres.Proto, resp *wire.Response, ticket uint64) bool {
	b.mu.Lock()
	rv := b.byToken[pool.Token(resp.Token)]
	if rv != nil && b.fleet.Live(uint8(proto), resp.Start, resp.Count, ticket) {
		rv.fleetTicket = ticket
		if rv.sess != nil {
			rv.sess.fleetLeases.Add(1)
		}
		b.mu.Unlock()
		return true
	}
	if rv != nil {
		rv.fleetFreed.Store(true)
		b.removeLocked(rv)
		b.forgetLocked(rv)
	}
	b.mu.Unlock()
	if rv != nil {
		b.unlist(rv, "fleet lease lost")
	}
	return false
}

// freeFleetLease ends rv's fleet lease in etcd, once. A reservation
// removed before it got its ticket is freed by acquireFleet instead.
func (b *Broker) freeFleetLease(rv *resv, wait bool) {
	m := b.fleet
	if !rv.fleetLease || m == nil || rv.fleetFreed.Swap(true) {
		return
	}
	blk, ticket := rv.block(), rv.fleetTicket // set under b.mu before rv could be removed, or 0
	if ticket == 0 {
		return
	}
	free := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.Free(ctx, uint8(rv.proto), blk.Start, blk.Count, ticket); err != nil {
			// The keys go with the member's lease at the latest.
			b.log.Warn("fleet: free a fleet lease", "proto", rv.proto, "block", blk.String(), "err", err)
		}
	}
	if wait {
		free()
	} else {
		b.fleetWG.Add(1)
		go func() {
			defer b.fleetWG.Done()
			free()
		}()
	}
}

// fleetAdmin checks a fleet persistent create or delete (verb): the
// broker is a fleet member, the caller an admin, the block valid.
func (b *Broker) fleetAdmin(s *session, req *wire.Request, verb string) (portres.Proto, *wire.Response) {
	if b.fleet == nil {
		return 0, b.noFleet()
	}
	if !b.mayAdmin(s.peer) {
		return 0, errf(portres.ERROR_ACCESS_DENIED, "uid %d may not %s fleet persistent reservations (root or the admin group only)", s.peer.uid, verb)
	}
	return checkBlock(req, true)
}

// createFleetPersistent creates a fleet persistent reservation (admins
// only): all members reserve it, or none.
func (b *Broker) createFleetPersistent(ctx context.Context, s *session, req *wire.Request) *wire.Response {
	proto, bad := b.fleetAdmin(s, req, "create")
	if bad != nil {
		return bad
	}
	blk, err := b.fleet.CreateBlock(ctx, uint8(proto), req.Start, req.Count, s.peer.uid)
	if err != nil {
		return fleetError(err, true)
	}
	// The creating member applies it from its watch too; wait for that,
	// so that a lookup here right after finds it.
	b.awaitFleetBlock(ctx, blk.Token, 5*time.Second)
	b.log.Info("fleet persistent reservation created", "proto", proto, "block", pool.Block{Start: blk.Start, Count: blk.Count}.String(), "uid", s.peer.uid)
	return &wire.Response{Token: blk.Token, Proto: uint8(proto), Start: blk.Start, Count: blk.Count}
}

// awaitFleetBlock waits until the fleet block token is applied here
// (CommitBlock), ctx ends or d passes.
func (b *Broker) awaitFleetBlock(ctx context.Context, token uint64, d time.Duration) {
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		b.mu.Lock()
		rv := b.byToken[pool.Token(token)]
		if rv != nil && !rv.pending {
			b.mu.Unlock()
			return
		}
		if b.fleetApplied == nil {
			b.fleetApplied = make(chan struct{})
		}
		applied := b.fleetApplied
		b.mu.Unlock()
		select {
		case <-applied:
		case <-timeout.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// deleteFleetPersistent deletes a fleet persistent reservation on every
// member (admins only).
func (b *Broker) deleteFleetPersistent(ctx context.Context, s *session, req *wire.Request) *wire.Response {
	proto, bad := b.fleetAdmin(s, req, "delete")
	if bad != nil {
		return bad
	}
	blk, err := b.fleet.DeleteBlock(ctx, uint8(proto), req.Start, req.Count)
	if err != nil {
		return fleetError(err, true)
	}
	return &wire.Response{Token: blk.Token, Proto: uint8(proto), Start: req.Start, Count: req.Count}
}

// lookupFleetPersistent finds a fleet persistent reservation by its exact
// block (anyone may).
func (b *Broker) lookupFleetPersistent(req *wire.Request) *wire.Response {
	if b.fleet == nil {
		return b.noFleet()
	}
	proto, bad := checkBlock(req, true)
	if bad != nil {
		return bad
	}
	blk, err := b.fleet.LookupBlock(uint8(proto), req.Start, req.Count)
	if err != nil {
		return fleetError(err, true)
	}
	return &wire.Response{Token: blk.Token, Proto: uint8(proto), Start: blk.Start, Count: blk.Count}
}

// showFleet answers show --fleet: every member's reservations as JSON
// (fleet.Entry), in datagrams of at most wire.MaxMessage bytes.
func (b *Broker) showFleet(ctx context.Context) []*wire.Response {
	if b.fleet == nil {
		return one(b.noFleet())
	}
	es, err := b.fleet.Show(ctx)
	if err != nil {
		return one(fleetError(err, false))
	}
	var out []*wire.Response
	for len(es) > 0 || len(out) == 0 {
		n := len(es)
		var data []byte
		for {
			data, _ = json.Marshal(es[:n])
			if len(data) < wire.MaxMessage-1024 || n <= 1 {
				break
			}
			n /= 2
		}
		if data == nil || string(data) == "null" {
			data = []byte("[]")
		}
		out = append(out, &wire.Response{Msg: string(data), Flags: wire.More})
		es = es[n:]
	}
	out[len(out)-1].Flags = 0
	return out
}

// fleetHost is the broker as the fleet sees it (fleet.Local).
type fleetHost struct{ b *Broker }

// PrepareBlock reserves a fleet block tentatively: in the pool (pending),
// in the kernel list, and with its ports checked free.
func (h fleetHost) PrepareBlock(fb fleet.Block) error {
	b := h.b
	proto := portres.Proto(fb.Proto)
	blk := pool.Block{Start: fb.Start, Count: fb.Count}
	if b.inFleetRange(blk) {
		return fmt.Errorf("%s %s overlaps this member's fleet range", proto, blk)
	}
	rv, err := h.reserve(fb)
	if err != nil {
		return err
	}
	if resp := b.excludeFree(rv); resp != nil {
		h.drop(rv)
		return errors.New(resp.Msg)
	}
	return nil
}

// reserve puts the fleet block fb in the pool, pending, with its token.
func (h fleetHost) reserve(fb fleet.Block) (*resv, error) {
	b := h.b
	proto := portres.Proto(fb.Proto)
	blk := pool.Block{Start: fb.Start, Count: fb.Count}
	rv := &resv{proto: proto, kind: wire.KindPersistent, uid: fb.UID, pending: true, created: fb.Created, admin: true, fleetBlock: true}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pools[proto] == nil {
		return nil, fmt.Errorf("protocol %d", fb.Proto)
	}
	r, err := b.pools[proto].Reserve(blk, pool.Token(fb.Token), rv)
	if err != nil {
		return nil, fmt.Errorf("%s", b.poolError(proto, blk, err).Msg)
	}
	rv.r = r
	b.byToken[r.Token] = rv
	return rv, nil
}

func (h fleetHost) drop(rv *resv) {
	b := h.b
	b.mu.Lock()
	b.removeLocked(rv)
	b.mu.Unlock()
	b.applySysctlLogged("fleet block dropped")
}

// CommitBlock makes a fleet block a persistent reservation of this host,
// recorded in the store: the one it prepared, or (joining, or a block
// created while it was cut off) a new one, enforced even if a port of it
// is in use; a reservation in its way fails it (the member tries again).
func (h fleetHost) CommitBlock(fb fleet.Block) error {
	b := h.b
	b.mu.Lock()
	rv := b.byToken[pool.Token(fb.Token)]
	b.mu.Unlock()
	if rv == nil {
		var err error
		if rv, err = h.reserve(fb); err != nil {
			return err
		}
		if resp := b.exclude(rv, portres.WSAENOBUFS); resp != nil {
			b.log.Warn("fleet: a fleet block is not excluded from automatic assignment here", "block", fb.String(), "why", resp.Msg)
		}
	}
	err := b.store.AddPersistent(store.Persistent{Proto: fb.Proto, Start: fb.Start, Count: fb.Count, Token: fb.Token,
		Created: fb.Created, UID: fb.UID, Fleet: true})
	if err != nil && !errors.Is(err, store.ErrExists) {
		b.log.Error("fleet: record a fleet block", "block", fb.String(), "err", err)
	}
	b.mu.Lock()
	rv.pending = false
	if b.fleetApplied != nil {
		close(b.fleetApplied)
		b.fleetApplied = nil
	}
	b.mu.Unlock()
	b.log.Info("fleet persistent reservation applied", "block", fb.String(), "by", fb.By)
	return nil
}

// AbortBlock drops a prepared block the fleet did not create.
func (h fleetHost) AbortBlock(fb fleet.Block) {
	b := h.b
	b.mu.Lock()
	rv := b.byToken[pool.Token(fb.Token)]
	b.mu.Unlock()
	if rv != nil && rv.fleetBlock && rv.pending {
		h.drop(rv)
	}
}

// RemoveBlock drops a deleted fleet block from the host and the store.
func (h fleetHost) RemoveBlock(fb fleet.Block) {
	b := h.b
	b.mu.Lock()
	rv := b.byToken[pool.Token(fb.Token)]
	b.mu.Unlock()
	if rv != nil && rv.fleetBlock {
		// Only the fleet block's own record: a local persistent block of
		// the same range (on which the fleet block could not apply) stays.
		b.store.DeletePersistent(fb.Proto, fb.Start, fb.Count)
		h.drop(rv)
		b.log.Info("fleet persistent reservation removed", "block", fb.String())
	}
}

// FleetBlocks lists the fleet blocks this host enforces.
func (h fleetHost) FleetBlocks() []fleet.Block {
	b := h.b
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []fleet.Block
	for _, rv := range b.byToken {
		if rv.fleetBlock && !rv.pending {
			blk := rv.block()
			out = append(out, fleet.Block{Proto: uint8(rv.proto), Start: blk.Start, Count: blk.Count, Token: uint64(rv.r.Token), UID: rv.uid, Created: rv.created})
		}
	}
	return out
}

// LeasesLost drops every fleet lease of the host: the member's etcd lease
// may have lapsed, so other members may be handed their ports.
func (h fleetHost) LeasesLost(reason string) {
	b := h.b
	b.mu.Lock()
	var gone []*resv
	for _, rv := range b.byToken {
		// A pending one is still being reserved: acquireFleet drops it
		// (fleet.Member.Live says no).
		if rv.fleetLease && !rv.pending {
			rv.fleetFreed.Store(true) // etcd frees them with the lease
			gone = append(gone, rv)
		}
	}
	for _, rv := range gone {
		b.removeLocked(rv)
		b.forgetLocked(rv)
	}
	b.mu.Unlock()
	for _, rv := range gone {
		b.unlist(rv, "fleet lease lost")
		b.log.Warn("fleet: fleet lease lost", "proto", rv.proto, "block", rv.block().String(), "pid", rv.owner.pid, "why", reason)
	}
}

// Entries are this host's reservations for the fleet view.
func (h fleetHost) Entries() []fleet.Entry {
	b := h.b
	var es []wire.Entry
	// Published every second: the sweeper keeps bound ports current, no
	// read of the socket tables of its own (under b.mu).
	b.entriesAsSwept(nil, nil, false, func(e wire.Entry) { es = append(es, e) })
	out := make([]fleet.Entry, 0, len(es))
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range es {
		kind := "runtime"
		if e.Kind == wire.KindPersistent {
			kind = "persistent"
		}
		if r := b.pools[portres.Proto(e.Proto)].Find(e.Start); r != nil {
			if rv := r.Owner.(*resv); rv.fleetBlock {
				kind = "fleet persistent"
			} else if rv.fleetLease {
				kind = "fleet lease"
			}
		}
		bound := e.Bound
		if bound == nil {
			bound = []uint16{}
		}
		out = append(out, fleet.Entry{Proto: portres.Proto(e.Proto).String(), Kind: kind, Start: e.Start, Count: e.Count,
			PID: e.PID, UID: e.UID, Command: e.Command, Bound: bound})
	}
	return out
}
