//go:build linux

package broker

import (
	"encoding/json"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/buildinfo"
	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/wire"
)

// status answers OpStatus: the broker's state as JSON (portres.Status).
// Counts are read a chunk at a time (walk).
func (b *Broker) status() *wire.Response {
	data, err := json.Marshal(b.statusValue())
	if err != nil {
		return errf(portres.WSAEINVAL, "status: %v", err)
	}
	return &wire.Response{Msg: string(data)}
}

// statusValue is the broker's status (portres.Status).
func (b *Broker) statusValue() portres.Status {
	lim := b.cfg.Limits
	st := portres.Status{
		Version:               Version(),
		Enforcement:           portres.EnforcementStatus{Mode: b.mode(), Requested: b.cfg.Enforce, Why: b.why},
		KernelList:            portres.KernelListStatus{Path: b.cfg.ReservedPorts, Writable: b.sysctl != nil, MaxBytes: enforce.MaxReservedPortsWrite},
		UnprivilegedPortStart: uint16(b.privStart.Load()),
		Limits: portres.LimitsStatus{UserPorts: lim.UserPorts, UserReservations: lim.UserReservations,
			UserConnections: lim.UserConnections, UserRate: lim.UserRate, FDReserve: lim.FDReserve, ListReserve: lim.ListReserve},
	}
	if b.fleet != nil {
		fs := b.fleet.Status()
		st.Fleet = &fs
	}
	if b.sysctl != nil {
		if list, err := b.sysctl.Read(); err == nil {
			st.KernelList.Bytes = enforce.ListLen(list)
			for _, r := range enforce.SubtractRanges(list, b.sysctl.Added()) {
				st.KernelList.Foreign = append(st.KernelList.Foreign, r.String())
			}
		}
	}
	b.mu.Lock()
	for _, proto := range []portres.Proto{portres.TCP, portres.UDP} {
		lo, hi := b.pools[proto].Dynamic()
		st.Dynamic = append(st.Dynamic, portres.DynamicRange{Proto: proto, Start: lo, End: hi})
	}
	st.Counts.Clients, st.Counts.Users = len(b.sessions), len(b.users)
	st.Restore.Waiting = len(b.orphans)
	b.mu.Unlock()
	if b.runtime != nil {
		st.Restore.State, st.Restore.Grace = b.runtime.Path(), b.cfg.RestoreGrace.String()
	}
	st.Counts.FDs, st.Counts.FDLimit = b.fds.Load(), b.fdLimit
	b.walk(func(rv *resv) {
		if rv.pending {
			return
		}
		if rv.kind == wire.KindPersistent {
			st.Counts.Persistent++
		} else {
			st.Counts.Runtime++
		}
		st.Counts.Ports += int(rv.r.Block.Count)
		for _, fd := range rv.holders {
			if fd >= 0 {
				st.Counts.Placeholders++
			}
		}
	})
	return st
}

// Version is portresd's module version and VCS revision, from the build
// information ("(devel)" for a build outside a module release).
func Version() string { return buildinfo.Version() }
