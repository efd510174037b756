package broker

import (
	"errors"
	"time"

	"github.com/portres/portres/internal/enforce"
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

// sweepReservation re-probes rv's bound ports. A port is free again when a
// placeholder can be bound on it: the client's socket is closed (a TCP
// port in TIME_WAIT stays bound until the kernel lets it go). Each port is
// probed under the lock so a concurrent bind never races the probe.
func (b *Broker) sweepReservation(rv *resv) {
	b.mu.Lock()
	ports := rv.r.Bound()
	b.mu.Unlock()
	b.sweepPorts(rv, ports)
}

// sweepPorts re-probes the given bound ports of rv.
func (b *Broker) sweepPorts(rv *resv, ports []uint16) {
	for _, port := range ports {
		b.mu.Lock()
		if b.byToken[rv.r.Token] != rv || !rv.r.IsBound(port) {
			b.mu.Unlock()
			continue
		}
		fd, err := enforce.Hold(uint8(rv.proto), port)
		switch {
		case err == nil:
			rv.r.Put(port)
			if rv.holds() {
				rv.holders[port-rv.block().Start] = int32(fd)
			} else {
				enforce.Unhold(fd)
			}
		case !errors.Is(err, unix.EADDRINUSE):
			b.log.Warn("sweep probe failed", "proto", rv.proto, "port", port, "err", err)
		}
		b.mu.Unlock()
	}
}

// noteDelegatedBinds marks the ports of delegated blocks that are in use:
// the process they were handed to binds them itself, so the broker only
// learns of it by probing. A later sweep frees them again once closed.
func (b *Broker) noteDelegatedBinds() {
	b.mu.Lock()
	var rvs []*resv
	for _, rv := range b.byToken {
		if rv.delegated && !rv.pending {
			rvs = append(rvs, rv)
		}
	}
	b.mu.Unlock()
	for _, rv := range rvs {
		blk := rv.block()
		for p := int(blk.Start); p <= blk.End(); p++ {
			port := uint16(p)
			b.mu.Lock()
			if b.byToken[rv.r.Token] == rv && !rv.r.IsBound(port) {
				if err := enforce.Probe(uint8(rv.proto), port); errors.Is(err, unix.EADDRINUSE) {
					rv.r.Take(port)
				}
			}
			b.mu.Unlock()
		}
	}
}
