//go:build linux

package broker

import (
	"errors"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/pool"
	"github.com/portres/portres/internal/store"
	"github.com/portres/portres/internal/wire"
)

// createPersistent records a persistent block: durable in the store
// before the answer, and excluded from automatic assignment in the kernel.
func (b *Broker) createPersistent(s *session, req *wire.Request) *wire.Response {
	if !b.mayAdmin(s.peer) {
		return errf(portres.ERROR_ACCESS_DENIED, "uid %d may not create persistent reservations (root or the admin group only)", s.peer.uid)
	}
	proto, bad := checkBlock(req, true)
	if bad != nil {
		return bad
	}
	blk := pool.Block{Start: req.Start, Count: req.Count}
	if b.inFleetRange(blk) {
		lo, hi := b.fleet.Range()
		return errf(portres.ERROR_SHARING_VIOLATION, "%s %s overlaps the fleet range %d-%d", proto, blk, lo, hi)
	}
	rv := &resv{proto: proto, kind: wire.KindPersistent, uid: s.peer.uid, pending: true, created: time.Now(), admin: true}
	b.mu.Lock()
	r, err := b.reserveLocked(rv, blk)
	b.mu.Unlock()
	if err != nil {
		resp := b.poolError(proto, blk, err)
		resp.Code = uint32(portres.ERROR_SHARING_VIOLATION)
		return resp
	}

	fail := func(resp *wire.Response) *wire.Response {
		b.mu.Lock()
		b.removeLocked(rv)
		b.mu.Unlock()
		if rv.admitted {
			b.applySysctlLogged("failed persistent create")
		}
		return resp
	}
	if resp := b.excludeFree(rv); resp != nil {
		return fail(resp)
	}
	err = b.store.AddPersistent(store.Persistent{Proto: uint8(proto), Start: blk.Start, Count: blk.Count,
		Token: uint64(r.Token), Created: rv.created, UID: s.peer.uid})
	if err != nil {
		code := portres.WSAEINVAL
		if errors.Is(err, store.ErrExists) {
			code = portres.ERROR_SHARING_VIOLATION
		}
		return fail(errf(code, "store persistent %s %s: %v", proto, blk, err))
	}
	b.mu.Lock()
	rv.pending = false
	b.mu.Unlock()
	b.log.Info("persistent reservation created", "proto", proto, "block", blk.String(), "uid", s.peer.uid)
	return &wire.Response{Token: uint64(r.Token), Proto: uint8(proto), Start: blk.Start, Count: blk.Count}
}

// deletePersistent removes the persistent block with exactly that start
// and count. Sockets bound from it stay bound; nothing new is handed out.
func (b *Broker) deletePersistent(s *session, req *wire.Request) *wire.Response {
	if !b.mayAdmin(s.peer) {
		return errf(portres.ERROR_ACCESS_DENIED, "uid %d may not delete persistent reservations (root or the admin group only)", s.peer.uid)
	}
	proto, bad := checkBlock(req, true)
	if bad != nil {
		return bad
	}
	b.mu.Lock()
	if r := b.pools[proto].Find(req.Start); r != nil && r.Block.Start == req.Start && r.Block.Count == req.Count && r.Owner.(*resv).fleetBlock {
		b.mu.Unlock()
		return errf(portres.ERROR_ACCESS_DENIED, "%s %s is a fleet persistent reservation: delete it fleet-wide (persistent delete --fleet)", proto, r.Block)
	}
	b.mu.Unlock()
	p, err := b.store.DeletePersistent(uint8(proto), req.Start, req.Count)
	if errors.Is(err, store.ErrNotFound) {
		return errf(portres.ERROR_NOT_FOUND, "no persistent %s reservation is exactly %s", proto, pool.Block{Start: req.Start, Count: req.Count})
	}
	if err != nil {
		return errf(portres.WSAEINVAL, "delete persistent %s: %v", proto, err)
	}
	b.mu.Lock()
	if rv := b.byToken[pool.Token(p.Token)]; rv != nil {
		b.removeLocked(rv)
	}
	b.mu.Unlock()
	b.applySysctlLogged("persistent delete")
	b.log.Info("persistent reservation deleted", "proto", proto, "start", req.Start, "count", req.Count, "uid", s.peer.uid)
	return &wire.Response{Token: p.Token, Proto: uint8(proto), Start: p.Start, Count: p.Count}
}

// lookupPersistent returns the token of the persistent block with exactly
// that start and count. Like Windows, anyone may look up; consuming the
// token still needs the right to consume persistent reservations.
func (b *Broker) lookupPersistent(req *wire.Request) *wire.Response {
	proto, bad := checkBlock(req, true)
	if bad != nil {
		return bad
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if r := b.pools[proto].Find(req.Start); r != nil && r.Block.Start == req.Start && r.Block.Count == req.Count {
		if rv := r.Owner.(*resv); rv.kind == wire.KindPersistent && !rv.pending {
			return &wire.Response{Token: uint64(r.Token), Proto: uint8(proto), Start: req.Start, Count: req.Count}
		}
	}
	return errf(portres.ERROR_NOT_FOUND, "no persistent %s reservation is exactly %s", proto, pool.Block{Start: req.Start, Count: req.Count})
}

// minDynamic is Windows' smallest dynamic range.
const minDynamic = 255

// dynamicShow answers a protocol's dynamic range as Start and Count.
func (b *Broker) dynamicShow(req *wire.Request) *wire.Response {
	proto := portres.Proto(req.Proto)
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pools[proto]
	if p == nil {
		return errf(portres.ERROR_INVALID_PARAMETER, "protocol %d is neither tcp (6) nor udp (17)", req.Proto)
	}
	lo, hi := p.Dynamic()
	return &wire.Response{Proto: uint8(proto), Start: lo, Count: hi - lo + 1}
}

// excludeFree takes a new persistent block rv out of automatic
// assignment, then checks that its ports are free (the other order leaves
// a window for connect()). A block the kernel list cannot take is
// refused (WSAENOBUFS), not half-made; a port in use is
// ERROR_SHARING_VIOLATION naming it.
func (b *Broker) excludeFree(rv *resv) *wire.Response {
	if resp := b.exclude(rv, portres.WSAENOBUFS); resp != nil {
		return resp
	}
	blk := rv.block()
	for p := int(blk.Start); p <= blk.End(); p++ {
		if err := enforce.Probe(uint8(rv.proto), uint16(p)); err != nil {
			resp := errf(portres.ERROR_SHARING_VIOLATION, "%s port %d is in use: %v", rv.proto, p, err)
			resp.Port = uint16(p)
			return resp
		}
	}
	return nil
}

// dynamicSet changes the range wildcard reservations are drawn from,
// with Windows' rules: at least 255 ports, start >= 1025, end <= 65535.
// Existing reservations are not touched.
func (b *Broker) dynamicSet(s *session, req *wire.Request) *wire.Response {
	proto := portres.Proto(req.Proto)
	end := int(req.Start) + int(req.Count) - 1
	system := req.Flags&wire.FlagSystem != 0
	switch {
	case system && proto != 0:
		return errf(portres.ERROR_INVALID_PARAMETER, "the kernel's ephemeral port range (net.ipv4.ip_local_port_range) is one range for tcp and udp: setting it moves both protocols, so the request names none (protocol 0), not %s", proto)
	case !system && proto != portres.TCP && proto != portres.UDP:
		return errf(portres.ERROR_INVALID_PARAMETER, "protocol %d is neither tcp (6) nor udp (17)", req.Proto)
	case req.Start < 1025:
		return errf(portres.ERROR_INVALID_PARAMETER, "the dynamic range must start at 1025 or above, got %d", req.Start)
	case req.Count < minDynamic:
		return errf(portres.ERROR_INVALID_PARAMETER, "the dynamic range needs at least %d ports, got %d", minDynamic, req.Count)
	case end > 65535:
		return errf(portres.ERROR_INVALID_PARAMETER, "the dynamic range %d-%d runs past 65535", req.Start, end)
	case !b.mayAdmin(s.peer):
		return errf(portres.ERROR_ACCESS_DENIED, "uid %d may not set the dynamic port range (root or the admin group only)", s.peer.uid)
	case b.cfg.Fleet != nil && b.cfg.Fleet.Overlaps(req.Start, req.Count):
		return errf(portres.ERROR_INVALID_PARAMETER, "the dynamic range %d-%d overlaps the fleet range %d-%d: wildcard reservations would be drawn from it",
			req.Start, end, b.cfg.Fleet.RangeStart, b.cfg.Fleet.RangeEnd)
	}
	b.dynMu.Lock()
	defer b.dynMu.Unlock()
	if system {
		return b.dynamicSetSystem(req.Start, uint16(end))
	}
	if err := b.store.SetDynamicRange(uint8(proto), req.Start, uint16(end)); err != nil {
		return errf(portres.WSAEINVAL, "store dynamic range: %v", err)
	}
	b.mu.Lock()
	err := b.pools[proto].SetDynamic(req.Start, uint16(end))
	b.mu.Unlock()
	if err != nil {
		return errf(portres.ERROR_INVALID_PARAMETER, "dynamic range %d-%d: %v", req.Start, end, err)
	}
	b.log.Info("dynamic port range set", "proto", proto, "start", req.Start, "count", req.Count)
	return &wire.Response{Proto: uint8(proto), Start: req.Start, Count: req.Count}
}
