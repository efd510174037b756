//go:build linux

package broker

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"

	"golang.org/x/time/rate"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/wire"
	"golang.org/x/sys/unix"
)

// usage is what one uid holds through the broker. Guarded by b.mu.
type usage struct {
	conns int // open connections
	resvs int // runtime and delegated reservations
	ports int // ports in those reservations
	// rate paces the uid's requests (Limits.UserRate); nil: no limit.
	rate *rate.Limiter
	// passed counts the descriptors its requests hold in the broker
	// (session.takePassed); atomic, read and written without b.mu.
	passed atomic.Int64
}

// inService is how many requests the broker works on at once; the others
// wait for their uid's turn (fairQueue).
var inService = max(2, runtime.NumCPU())

// userLocked returns uid's usage, creating it. Caller holds b.mu.
func (b *Broker) userLocked(uid uint32) *usage {
	u := b.users[uid]
	if u == nil {
		u = &usage{}
		if r := b.cfg.Limits.UserRate; r > 0 {
			u.rate = rate.NewLimiter(rate.Limit(r), max(1, r/10))
		}
		b.users[uid] = u
	}
	return u
}

// forgetUserLocked drops uid's usage once it holds nothing. Caller holds
// b.mu.
func (b *Broker) forgetUserLocked(uid uint32) {
	if u := b.users[uid]; u != nil && u.conns == 0 && u.resvs == 0 && u.ports == 0 {
		delete(b.users, uid)
	}
}

// quotaError is the answer to a request over a per-user limit: it names
// the limit, the flag that sets it, and the uid's current use.
func quotaError(uid uint32, what string, have, want, limit int, flag string) *wire.Response {
	return errf(portres.WSAEDQUOT, "uid %d holds %d %s and asks for %d more: over the per-user limit of %d (portresd --%s; release some, or ask the administrator to raise it)",
		uid, have, what, want, limit, flag)
}

// chargeLocked checks rv, a new runtime reservation, against its owner's
// per-user limits and the descriptor budget, and charges it. Admins are
// counted but not limited by the per-user limits. Caller holds b.mu.
func (b *Broker) chargeLocked(rv *resv, count int) *wire.Response {
	uid := rv.owner.uid
	u := b.userLocked(uid)
	lim := b.cfg.Limits
	if !rv.admin {
		switch {
		case lim.UserReservations >= 0 && u.resvs+1 > lim.UserReservations:
			return quotaError(uid, "reservations", u.resvs, 1, lim.UserReservations, "user-reservations")
		case lim.UserPorts >= 0 && u.ports+count > lim.UserPorts:
			return quotaError(uid, "ports", u.ports, count, lim.UserPorts, "user-ports")
		}
	}
	if rv.holds() {
		if resp := b.takeFDs(count, rv.admin, "placeholders for %d %s ports", count, rv.proto); resp != nil {
			return resp
		}
	}
	u.resvs++
	u.ports += count
	rv.charged = count
	return nil
}

// refundLocked gives back what chargeLocked took for rv. Caller holds
// b.mu.
func (b *Broker) refundLocked(rv *resv) {
	if rv.charged == 0 || rv.owner == nil {
		return
	}
	if u := b.users[rv.owner.uid]; u != nil {
		u.resvs--
		u.ports -= rv.charged
		b.forgetUserLocked(rv.owner.uid)
	}
	if rv.holds() {
		b.fds.Add(-int64(rv.charged))
	}
	rv.charged = 0
}

// takeFDs reserves n of the broker's descriptors for what (a format and
// its arguments, formatted only for a refusal: this runs on every
// acquire). Unprivileged callers stop short of the reserve kept for
// admins (Limits.FDReserve); admins may use every descriptor.
func (b *Broker) takeFDs(n int, admin bool, what string, args ...any) *wire.Response {
	limit := b.fdLimit
	if !admin {
		limit -= int64(b.cfg.Limits.FDReserve)
	}
	if used := b.fds.Add(int64(n)); used > limit {
		b.fds.Add(-int64(n))
		return errf(portres.WSAEMFILE, "the broker has no descriptors left for %s: %d of %d in use, %d kept for root and the admin group (portresd --fd-reserve)",
			fmt.Sprintf(what, args...), used-int64(n), b.fdLimit, b.cfg.Limits.FDReserve)
	}
	return nil
}

// initFDLimit raises RLIMIT_NOFILE's soft limit to the hard one and
// notes how many descriptors clients may take: the limit less what the
// broker itself uses (counted now, plus slack for its own files).
func (b *Broker) initFDLimit() {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		rl.Cur = 1024
	} else if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if unix.Setrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
			unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
		}
	}
	const slack = 64 // the store, the sysctl, /proc reads, metrics connections
	own := 0
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		own = len(ents)
	}
	b.fdLimit = int64(rl.Cur) - int64(own) - slack
	b.cfg.Limits.defaults(int(rl.Cur))
}

// SetMaxProcs sets GOMAXPROCS for a broker process, unless the GOMAXPROCS
// environment variable chose it: two per CPU, at least 4. The broker's
// goroutines spend their time in short syscalls; with one P per CPU, a
// client's request that became ready can wait for the netpoller, which
// busy Ps check only every 10 ms, while another client keeps every P busy.
// A spare P picks it up at once; many spare Ps cost CPU in idle spinning
// (BenchmarkFairness under a flood: 2 Ps 1.8x, 4 Ps 1.7x, 8 Ps 2.3x the
// unloaded p99). portresd calls it at start.
func SetMaxProcs() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(max(4, 2*runtime.NumCPU()))
	}
}
