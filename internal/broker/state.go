//go:build linux

package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/pool"
	"github.com/portres/portres/internal/wire"
)

// loadState builds the pools from the kernel's ephemeral range and the
// store, restores the runtime reservations of the previous broker (live
// restore), then brings the bind guard and ip_local_reserved_ports in
// line.
func (b *Broker) loadState() error {
	lo, hi := b.kernelPortRange()
	if d := b.cfg.Dynamic; d[0] != 0 && d[1] >= d[0] {
		lo, hi = d[0], d[1]
	}
	for _, proto := range []portres.Proto{portres.TCP, portres.UDP} {
		plo, phi := lo, hi
		if slo, shi, ok, err := b.store.DynamicRange(uint8(proto)); err != nil {
			return fmt.Errorf("portresd: load dynamic range: %w", err)
		} else if ok {
			plo, phi = slo, shi
		}
		p, err := pool.New(plo, phi)
		if err != nil {
			return fmt.Errorf("portresd: %s dynamic range %d-%d: %w", proto, plo, phi, err)
		}
		b.pools[proto] = p
	}
	ps, err := b.store.Persistent()
	if err != nil {
		return fmt.Errorf("portresd: load persistent reservations: %w", err)
	}
	for _, p := range ps {
		proto := portres.Proto(p.Proto)
		pl := b.pools[proto]
		if pl == nil {
			return fmt.Errorf("portresd: state holds a reservation of unknown protocol %d", p.Proto)
		}
		rv := &resv{proto: proto, kind: wire.KindPersistent, uid: p.UID, created: p.Created, admin: true, admitted: true, fleetBlock: p.Fleet}
		rv.r, err = pl.Reserve(pool.Block{Start: p.Start, Count: p.Count}, pool.Token(p.Token), rv)
		if err != nil {
			return fmt.Errorf("portresd: restore persistent %s %d+%d: %w", proto, p.Start, p.Count, err)
		}
		b.byToken[rv.r.Token] = rv
		b.adminCover.Add(rv.listed())
	}
	if err := b.restore(); err != nil {
		return err
	}
	if err := b.reconcileGuard(); err != nil {
		return fmt.Errorf("portresd: %w", err)
	}
	b.initSysctl()
	return nil
}

// kernelPortRange reads net.ipv4.ip_local_port_range, the default
// dynamic range; 49152-65535 (Windows' default) if it cannot be read.
func (b *Broker) kernelPortRange() (uint16, uint16) {
	lo, hi, err := readPortRange(b.cfg.PortRange)
	if err != nil || lo == 0 || hi < lo {
		b.log.Warn("cannot read the kernel's ephemeral port range; using 49152-65535", "path", b.cfg.PortRange, "err", err)
		return 49152, 65535
	}
	return lo, hi
}

func (b *Broker) dynString(proto portres.Proto) string {
	lo, hi := b.pools[proto].Dynamic()
	return fmt.Sprintf("%d-%d", lo, hi)
}

// initSysctl sets up kernel exclusion. What portres added before is taken
// from the store only if it was recorded in this boot and this network
// namespace; otherwise every entry present now is treated as foreign.
// Whether the kernel list can be written at all is probed first (a
// non-root broker cannot): without it kernel exclusion is off, and said
// so, rather than failing on every request.
func (b *Broker) initSysctl() {
	if b.cfg.ReservedPorts == "-" {
		b.log.Warn("kernel exclusion disabled (--reserved-ports -): persistent, delegated and (in bpf mode) runtime ports are not excluded from automatic assignment")
		return
	}
	if err := enforce.Writable(b.cfg.ReservedPorts); err != nil {
		b.log.Warn("kernel exclusion unavailable: the broker cannot write ip_local_reserved_ports, so persistent, delegated and (in bpf mode) runtime ports are not excluded from automatic assignment",
			"sysctl", b.cfg.ReservedPorts, "err", err)
		return
	}
	added, boot, netns, err := b.store.SysctlAdded()
	if err != nil {
		b.log.Warn("cannot read sysctl bookkeeping; treating every present entry as foreign", "err", err)
		added = nil
	}
	if boot != bootID() || netns != b.netns {
		added = nil
	}
	b.sysctl = enforce.NewReservedPorts(b.cfg.ReservedPorts, added)
	if err := b.applySysctl(nil); err != nil {
		b.log.Warn("degraded: persistent reservations are not all excluded from automatic assignment",
			"sysctl", b.cfg.ReservedPorts, "err", err)
	}
}

// errListFull is wrapped by exclusions refused for want of room in the
// kernel's reserved-port list.
var errListFull = errors.New("no room in the kernel's reserved-port list")

// sysctlBatch is a set of kernel-list changes written together: the
// blocks to admit, and the callers waiting for the write.
type sysctlBatch struct {
	adds []*resv
	errs map[*resv]error // per block refused for want of room
	err  error           // the write's own failure, for everyone
	done chan struct{}
}

// applySysctl makes portres's entries in ip_local_reserved_ports exactly
// the admitted excluded blocks (persistent, delegated, and guarded ones in
// bpf mode), plus add if not nil, which it admits on success. Changes
// that arrive while a write is under way are written together by the
// next one (group commit): a caller returns once a write that includes
// its change is done. What portres may have added (never a foreign entry)
// is recorded before the kernel is written, and the exact set after, so a
// crash at any point neither orphans portres's entries nor claims foreign
// ones.
//
// The list takes at most enforce.MaxReservedPortsWrite bytes in one
// write. Blocks of root and the admin group (persistent ones among them)
// come first and may use all of it; blocks of other users may only use
// what leaves Limits.ListReserve bytes free, so no user can crowd a
// persistent block out. A block that does not fit is refused (an error
// wrapping errListFull) and left out: never half-protected.
func (b *Broker) applySysctl(add *resv) error {
	if b.sysctl == nil {
		return nil
	}
	if add != nil && add.chunked() {
		// Inside a chunk the list already holds: nothing to write. Not
		// while a write planned without this block is under way: it may
		// take the chunk out (nothing else in it was live), and this
		// block would be in the covers but not in the kernel's list.
		lo, hi := add.listed()
		b.exclMu.Lock()
		if !b.listPlanned && b.written.Covers(lo, hi) {
			b.coverOf(add).Add(lo, hi)
			add.admitted = true
			b.exclMu.Unlock()
			return nil
		}
		b.exclMu.Unlock()
	}
	b.sysctlQMu.Lock()
	bt := b.sysctlNext
	leader := bt == nil
	if leader {
		bt = &sysctlBatch{errs: map[*resv]error{}, done: make(chan struct{})}
		b.sysctlNext = bt
	}
	if add != nil {
		bt.adds = append(bt.adds, add)
	}
	b.sysctlQMu.Unlock()
	if leader {
		b.sysctlMu.Lock() // the previous batch's write; changes gather meanwhile
		b.sysctlQMu.Lock()
		b.sysctlNext = nil
		b.sysctlQMu.Unlock()
		b.writeBatch(bt)
		b.sysctlMu.Unlock()
		close(bt.done)
	} else {
		<-bt.done
	}
	if err := bt.errs[add]; err != nil {
		return err
	}
	return bt.err
}

// writeBatch admits bt's blocks in order, each only if the list still
// fits its owner's share, and writes the list once. Caller holds
// sysctlMu.
func (b *Broker) writeBatch(bt *sysctlBatch) {
	var admitted []*resv
	var planned enforce.Bitmap
	plan := func(foreign []enforce.Range) ([]enforce.Range, error) {
		admitted = admitted[:0]
		clear(bt.errs)
		b.exclMu.Lock()
		first, users := b.adminCover.Bits(), b.userCover.Bits()
		b.listPlanned = true
		b.exclMu.Unlock()
		for _, add := range bt.adds {
			f, u := first, users
			lo, hi := add.listed()
			if add.admin {
				f.Set(lo, hi)
			} else {
				u.Set(lo, hi)
			}
			if err := b.listFits(foreign, &f, &u, add.admin); err != nil {
				bt.errs[add] = err
				continue
			}
			first, users = f, u
			admitted = append(admitted, add)
		}
		users.Or(&first)
		planned = users
		return users.Ranges(), nil
	}
	boot := bootID()
	err := b.sysctl.Update(plan, func(claim []enforce.Range) error {
		return b.recordSysctl(claim, boot)
	})
	if serr := b.recordSysctl(b.sysctl.Added(), boot); serr != nil && err == nil {
		err = fmt.Errorf("record sysctl entries: %w", serr)
	}
	b.sysctlOK.Store(err == nil)
	bt.err = err
	b.exclMu.Lock()
	defer b.exclMu.Unlock()
	b.listPlanned = false
	if err != nil {
		b.written = enforce.Bitmap{} // unknown: no shortcut until a write works
		return
	}
	b.written = planned
	for _, add := range admitted {
		b.coverOf(add).Add(add.listed())
		add.admitted = true
	}
}

// listFits checks the list planned from foreign entries, admins' ports
// first and every block's ports all: admins' blocks may fill the whole
// write, other users' must leave Limits.ListReserve bytes.
func (b *Broker) listFits(foreign []enforce.Range, first, users *enforce.Bitmap, admin bool) error {
	if n := enforce.ListLen(enforce.UnionRanges(foreign, first.Ranges())); n > enforce.MaxReservedPortsWrite {
		return fmt.Errorf("%w: it would take %d bytes of the %d one write can hold", errListFull, n, enforce.MaxReservedPortsWrite)
	}
	if admin {
		return nil
	}
	all := *users
	all.Or(first)
	limit := enforce.MaxReservedPortsWrite - b.cfg.Limits.ListReserve
	if n := enforce.ListLen(enforce.UnionRanges(foreign, all.Ranges())); n > limit {
		return fmt.Errorf("%w: it would take %d bytes; blocks of unprivileged users may fill %d of its %d (%d kept for persistent reservations and admins: portresd --list-reserve)",
			errListFull, n, limit, enforce.MaxReservedPortsWrite, b.cfg.Limits.ListReserve)
	}
	return nil
}

// coverOf is the cover rv's block counts in. Caller holds exclMu.
func (b *Broker) coverOf(rv *resv) *enforce.Cover {
	if rv.admin {
		return &b.adminCover
	}
	return &b.userCover
}

// exclude puts rv, a new persistent, delegated or guarded block, into the
// kernel's reserved-port list before its ports are checked. It returns an
// error response if the block cannot be excluded; with kernel exclusion
// off it admits nothing and succeeds (the answer then says NotExcluded).
func (b *Broker) exclude(rv *resv, code portres.Errno) *wire.Response {
	err := b.applySysctl(rv)
	if err == nil {
		return nil
	}
	if rv.holds() {
		// Placeholders keep it from automatic assignment: the list is
		// an optimisation for it, not its protection.
		b.log.Debug("placeholder-held block left out of ip_local_reserved_ports", "proto", rv.proto, "block", rv.block().String(), "err", err)
		return nil
	}
	blk := rv.block()
	if errors.Is(err, errListFull) {
		return rv.errf(code, "%s %s cannot be excluded from automatic assignment: %v", rv.proto, blk, err)
	}
	return rv.errf(code, "%s %s cannot be excluded from automatic assignment: ip_local_reserved_ports: %v", rv.proto, blk, err)
}

// recordSysctl stores what portres may have added to the sysctl, skipping
// the write when the store already says exactly that. Caller holds
// sysctlMu.
func (b *Broker) recordSysctl(claim []enforce.Range, boot string) error {
	text := enforce.FormatRanges(claim)
	if b.recorded != nil && *b.recorded == text {
		return nil
	}
	if err := b.store.SetSysctlAdded(claim, boot, b.netns); err != nil {
		b.recorded = nil
		return err
	}
	b.recorded = &text
	return nil
}

// unlist takes rv, removed, out of the kernel list: at once for blocks the
// list protects, lazily (the next sweep, or the next write) for chunked
// blocks, whose ports may stay out of automatic assignment a little
// longer, so that a release costs no write.
func (b *Broker) unlist(rv *resv, why string) {
	switch {
	case !rv.admitted:
	case rv.chunked():
		b.listDirty.Store(true)
	default:
		b.applySysctlLogged(why)
	}
}

// applySysctlLogged brings the kernel list in line after blocks went away:
// failure is a degraded-mode warning, never a failed request.
func (b *Broker) applySysctlLogged(why string) {
	if err := b.applySysctl(nil); err != nil {
		b.rlog.Log(0, slog.LevelWarn, "degraded: ip_local_reserved_ports not updated", "after", why, "err", err)
	}
}

// bootID is the kernel's boot id, read once: it names this boot for the
// sysctl bookkeeping (reading it on every kernel-list write cost a sixth
// of the broker's CPU under load).
var bootID = sync.OnceValue(func() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
})
