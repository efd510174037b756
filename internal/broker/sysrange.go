//go:build linux

package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/wire"
)

// portRange is a range of ports, ends inclusive, in the JSON of an
// OpDynamicSet answer with wire.FlagSystem.
type portRange struct {
	Start uint16 `json:"start"`
	End   uint16 `json:"end"`
}

// systemRangeChange is that JSON: the ranges before the change.
type systemRangeChange struct {
	Kernel portRange `json:"kernel"`
	TCP    portRange `json:"tcp"`
	UDP    portRange `json:"udp"`
}

// dynamicSetSystem sets the dynamic range of both protocols and the
// kernel's ephemeral range (net.ipv4.ip_local_port_range, one range for
// TCP and UDP) to lo-hi, as netsh int ipv4 set dynamicport does on
// Windows. The kernel has the last word, so its sysctl is written first:
// if it refuses the range, nothing has changed; if recording the portres
// ranges fails afterwards, the sysctl is put back. Caller holds dynMu and
// has checked the range and the caller's right.
func (b *Broker) dynamicSetSystem(lo, hi uint16) *wire.Response {
	path := b.cfg.PortRange
	oldLo, oldHi, err := readPortRange(path)
	if err != nil {
		return errf(portres.ERROR_INVALID_PARAMETER, "cannot read the kernel's ephemeral port range %s: %v", path, err)
	}
	var before systemRangeChange
	before.Kernel = portRange{oldLo, oldHi}
	b.mu.Lock()
	before.TCP.Start, before.TCP.End = b.pools[portres.TCP].Dynamic()
	before.UDP.Start, before.UDP.End = b.pools[portres.UDP].Dynamic()
	b.mu.Unlock()

	if err := writePortRange(path, lo, hi); err != nil {
		code := portres.ERROR_INVALID_PARAMETER
		why := err.Error()
		switch {
		case errors.Is(err, syscall.EINVAL):
			why = "the kernel refuses it"
			b.readPrivStart()
			if ps := b.privStart.Load(); uint32(lo) < ps {
				why += fmt.Sprintf(": it must start at or above net.ipv4.ip_unprivileged_port_start (%d)", ps)
			}
		case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
			code = portres.ERROR_ACCESS_DENIED
			why = fmt.Sprintf("the broker may not write it (%v)", err)
		}
		return errf(code, "set net.ipv4.ip_local_port_range (%s) to %d %d: %s; nothing was changed (it stays %d %d)", path, lo, hi, why, oldLo, oldHi)
	}
	if gotLo, gotHi, err := readPortRange(path); err != nil || gotLo != lo || gotHi != hi {
		b.restorePortRange(path, oldLo, oldHi)
		return errf(portres.ERROR_INVALID_PARAMETER, "set net.ipv4.ip_local_port_range (%s) to %d %d: the kernel reads back %d %d (%v); put back to %d %d, nothing was changed", path, lo, hi, gotLo, gotHi, err, oldLo, oldHi)
	}
	for _, proto := range []portres.Proto{portres.TCP, portres.UDP} {
		if err := b.store.SetDynamicRange(uint8(proto), lo, hi); err != nil {
			b.restorePortRange(path, oldLo, oldHi)
			// A protocol recorded already goes back too.
			b.store.SetDynamicRange(uint8(portres.TCP), before.TCP.Start, before.TCP.End)
			return errf(portres.WSAEINVAL, "store dynamic range: %v; net.ipv4.ip_local_port_range put back to %d %d, nothing was changed", err, oldLo, oldHi)
		}
	}
	b.mu.Lock()
	for _, proto := range []portres.Proto{portres.TCP, portres.UDP} {
		b.pools[proto].SetDynamic(lo, hi) // checked: lo >= 1025, lo <= hi
	}
	b.mu.Unlock()
	b.log.Info("dynamic port range of tcp and udp and net.ipv4.ip_local_port_range set", "start", lo, "end", hi,
		"kernel_was", fmt.Sprintf("%d-%d", oldLo, oldHi), "tcp_was", fmt.Sprintf("%d-%d", before.TCP.Start, before.TCP.End),
		"udp_was", fmt.Sprintf("%d-%d", before.UDP.Start, before.UDP.End))
	msg, _ := json.Marshal(before)
	return &wire.Response{Start: lo, Count: hi - lo + 1, Msg: string(msg)}
}

// restorePortRange puts the kernel's ephemeral range back after a change
// that could not be completed.
func (b *Broker) restorePortRange(path string, lo, hi uint16) {
	if err := writePortRange(path, lo, hi); err != nil {
		b.log.Error("cannot put net.ipv4.ip_local_port_range back", "path", path, "range", fmt.Sprintf("%d %d", lo, hi), "err", err)
	}
}

// readPortRange reads a net.ipv4.ip_local_port_range file: "LO\tHI".
func readPortRange(path string) (lo, hi uint16, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	if _, err := fmt.Sscan(string(bytes.TrimSpace(data)), &lo, &hi); err != nil {
		return 0, 0, fmt.Errorf("%s: %q is not two ports: %w", path, bytes.TrimSpace(data), err)
	}
	return lo, hi, nil
}

// writePortRange writes "LO HI" to a net.ipv4.ip_local_port_range file
// in one write, as sysctl(8) does; the kernel answers EINVAL for a range
// it refuses.
func writePortRange(path string, lo, hi uint16) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%d %d\n", lo, hi)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
