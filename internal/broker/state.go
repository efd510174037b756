package broker

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/pool"
	"github.com/portres/portres/internal/wire"
)

// loadState builds the pools from the kernel's ephemeral range and the
// store, then brings ip_local_reserved_ports in line with the store.
func (b *Broker) loadState() error {
	lo, hi := b.kernelPortRange()
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
		rv := &resv{proto: proto, kind: wire.KindPersistent, uid: p.UID, created: p.Created}
		rv.r, err = pl.Reserve(pool.Block{Start: p.Start, Count: p.Count}, pool.Token(p.Token), rv)
		if err != nil {
			return fmt.Errorf("portresd: restore persistent %s %d+%d: %w", proto, p.Start, p.Count, err)
		}
		b.byToken[rv.r.Token] = rv
	}
	b.initSysctl()
	return nil
}

// kernelPortRange reads net.ipv4.ip_local_port_range, the default
// dynamic range; 49152-65535 (Windows' default) if it cannot be read.
func (b *Broker) kernelPortRange() (uint16, uint16) {
	data, err := os.ReadFile(b.cfg.PortRange)
	var lo, hi uint16
	if err == nil {
		_, err = fmt.Sscan(string(bytes.TrimSpace(data)), &lo, &hi)
	}
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
func (b *Broker) initSysctl() {
	if b.cfg.ReservedPorts == "-" {
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
	if err := b.applySysctl(); err != nil {
		b.log.Warn("degraded: persistent, delegated and (in bpf mode) runtime ports are not excluded from automatic assignment",
			"sysctl", b.cfg.ReservedPorts, "err", err)
	}
}

// applySysctl makes portres's entries in ip_local_reserved_ports exactly
// the persistent and delegated blocks. What portres may have added (never
// a foreign entry) is recorded in the store before the kernel is written,
// and the exact set after, so a crash at any point neither orphans
// portres's entries nor claims foreign ones.
func (b *Broker) applySysctl() error {
	if b.sysctl == nil {
		return nil
	}
	b.sysctlMu.Lock()
	defer b.sysctlMu.Unlock()
	b.mu.Lock()
	var want []enforce.Range
	for _, rv := range b.byToken {
		// Pending blocks too: they are excluded before their ports are
		// checked, and dropped again if the check fails.
		if rv.excluded() {
			blk := rv.block()
			want = append(want, enforce.Range{Lo: blk.Start, Hi: uint16(blk.End())})
		}
	}
	b.mu.Unlock()
	want = enforce.MergeRanges(want)
	boot := bootID()
	err := b.sysctl.ApplyRecorded(want, func(claim []enforce.Range) error {
		return b.recordSysctl(claim, boot)
	})
	if serr := b.recordSysctl(b.sysctl.Added(), boot); serr != nil && err == nil {
		err = fmt.Errorf("record sysctl entries: %w", serr)
	}
	b.sysctlOK.Store(err == nil)
	return err
}

// recordSysctl stores what portres may have added to the sysctl, skipping
// the (fsynced) write when the store already says exactly that. Caller
// holds sysctlMu.
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

// applySysctlLogged is applySysctl for request paths: failure is a
// degraded-mode warning, never a failed request.
func (b *Broker) applySysctlLogged(why string) {
	if err := b.applySysctl(); err != nil {
		b.log.Warn("degraded: ip_local_reserved_ports not updated", "after", why, "err", err)
	}
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}
