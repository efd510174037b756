package broker

import (
	"errors"
	"time"

	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/wire"
	"golang.org/x/sys/unix"
)

// sweeper periodically finds bound ports whose sockets are gone and makes
// them free again (with their placeholder back, for runtime blocks).
func (b *Broker) sweeper() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.Sweep)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.sweep()
		}
	}
}

// sweep re-probes every bound port of every reservation.
func (b *Broker) sweep() {
	b.mu.Lock()
	rvs := make([]*resv, 0, len(b.byToken))
	for _, rv := range b.byToken {
		if !rv.pending && rv.r.NumBound() > 0 {
			rvs = append(rvs, rv)
		}
	}
	b.mu.Unlock()
	for _, rv := range rvs {
		b.sweepReservation(rv)
	}
}

// sweepReservation re-checks rv's bound ports and frees those whose
// sockets are gone.
func (b *Broker) sweepReservation(rv *resv) {
	b.mu.Lock()
	ports := rv.r.Bound()
	b.mu.Unlock()
	b.sweepPorts(rv, ports)
}

// sweepPorts re-checks the given bound ports of rv, each under the lock
// so a concurrent bind never races the check. Runtime blocks: a port is
// free again when a placeholder can be bound on it (a TCP port in
// TIME_WAIT stays bound until the kernel lets it go); in hold mode the
// placeholder stays, in bpf mode it is closed again (only the broker gets
// past the guard, so the probe takes nothing from anyone). Persistent and
// delegated ports may be bound by other processes, whose bind a probe
// could make fail, so for them the kernel's socket tables are read.
func (b *Broker) sweepPorts(rv *resv, ports []uint16) {
	if rv.kind == wire.KindPersistent || rv.delegated {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.byToken[rv.r.Token] != rv {
			return
		}
		inuse, err := enforce.InUse(uint8(rv.proto)) // under the lock: no stale snapshot
		if err != nil {
			b.log.Warn("sweep: reading socket tables", "proto", rv.proto, "err", err)
			return
		}
		for _, port := range ports {
			if rv.r.IsBound(port) && !inuse.Has(port) {
				rv.r.Put(port)
			}
		}
		return
	}
	for _, port := range ports {
		b.mu.Lock()
		if b.byToken[rv.r.Token] != rv || !rv.r.IsBound(port) {
			b.mu.Unlock()
			continue
		}
		fd, err := enforce.Hold(uint8(rv.proto), port)
		switch {
		case err == nil && rv.holds():
			rv.r.Put(port)
			rv.holders[port-rv.block().Start] = int32(fd)
		case err == nil:
			enforce.Unhold(fd)
			rv.r.Put(port)
		case !errors.Is(err, unix.EADDRINUSE):
			b.log.Warn("sweep probe failed", "proto", rv.proto, "port", port, "err", err)
		}
		b.mu.Unlock()
	}
}

// noteDelegatedBinds marks the ports of delegated blocks that are in use:
// the process they were handed to binds them itself, so the broker learns
// of it only from the kernel's socket tables. A later sweep frees them
// again once closed.
func (b *Broker) noteDelegatedBinds() {
	var inuse [256]*enforce.PortSet
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, rv := range b.byToken {
		if !rv.delegated || rv.pending {
			continue
		}
		if inuse[rv.proto] == nil {
			set, err := enforce.InUse(uint8(rv.proto))
			if err != nil {
				b.log.Warn("show: reading socket tables", "proto", rv.proto, "err", err)
				return
			}
			inuse[rv.proto] = set
		}
		blk := rv.block()
		for p := int(blk.Start); p <= blk.End(); p++ {
			if port := uint16(p); inuse[rv.proto].Has(port) && !rv.r.IsBound(port) {
				rv.r.Take(port)
			}
		}
	}
}
