//go:build linux

package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/fdpass"
	"github.com/portres/portres/internal/fleet"
	"github.com/portres/portres/internal/pool"
	"github.com/portres/portres/internal/sockdiag"
	"github.com/portres/portres/internal/store"
	"github.com/portres/portres/internal/web"
	"golang.org/x/sys/unix"
)

// Broker is a running portresd.
type Broker struct {
	fleet     fleet.Member   // nil unless a member of a fleet (Config.Fleet)
	fleetStop chan struct{}  // ends publishFleet
	fleetWG   sync.WaitGroup // frees of fleet leases in the background
	// fleetApplied is closed (and cleared) when the watch applies a
	// fleet block here; under mu, made by whoever waits for it.
	fleetApplied chan struct{}

	cfg         Config
	log         *slog.Logger
	ln          *fdpass.Listener
	psln        *net.UnixListener // the portserver's socket; nil when off
	sock        fileID            // the socket listen created: the only file removeSocket unlinks
	lock        *os.File
	netns       uint64 // inode of the broker's network namespace
	netnsCookie uint64 // its cookie (SO_NETNS_COOKIE; 0 before kernel 5.14)
	userns      uint64 // inode of the broker's user namespace
	adminGID    int    // -1: root only
	store       *store.Store
	sysctl      *enforce.ReservedPorts // nil: kernel exclusion disabled or unavailable
	guard       *enforce.BindGuard     // nil: placeholders enforce runtime blocks
	runtime     *store.Runtime         // runtime reservations, for live restore; nil: none kept
	metrics     *metrics
	sysctlOK    atomic.Bool // the last ip_local_reserved_ports update worked

	privStart atomic.Uint32                // net.ipv4.ip_unprivileged_port_start, refreshed by the sweeper
	fds       atomic.Int64                 // descriptors held for clients: connections, placeholders, passed sockets
	fdLimit   int64                        // descriptors clients may hold in all (RLIMIT_NOFILE less the broker's own)
	rlog      *logLimiter                  // per-request log lines, rate-limited per uid
	why       string                       // why the enforcement mode in force was chosen
	debug     bool                         // the logger takes debug lines: build their arguments
	fair      *fairQueue                   // admits requests into service, round robin over uids
	hints     [2]atomic.Pointer[placeHint] // TCP, UDP: recent reads of the dynamic range's socket tables
	watchers  [2]*sockdiag.Watcher         // TCP, UDP: destroyed sockets; nil where unavailable
	watched   [2][1024]atomic.Uint64       // TCP, UDP: ports the watchers look up (boundMarks), unless...
	marks     [2]*sockdiag.PortBits        // ... the kernel filters announcements by a bitmap of its own (openWatchers)
	sockets   [2]*sockdiag.PortCookies     // TCP, UDP: the socket bound per port, for the kernel's filter; nil without it

	sysctlMu   sync.Mutex   // serializes sysctl writes; taken before mu
	dynMu      sync.Mutex   // serializes dynamic range changes (store, pools, ip_local_port_range); taken before mu
	sysctlQMu  sync.Mutex   // guards sysctlNext
	sysctlNext *sysctlBatch // changes waiting for the next write
	sweepMu    sync.Mutex   // one sweep at a time; taken before mu
	recorded   *string      // the sysctl claim last stored, formatted; nil: unknown

	exclMu sync.Mutex // guards the covers; taken inside mu or sysctlMu, never around them
	// adminCover and userCover count the admitted excluded blocks (what
	// the kernel list holds for portres) of admins and of other users.
	adminCover, userCover enforce.Cover
	written               enforce.Bitmap // portres's entries as last written (empty: unknown)
	// listPlanned: a write's plan has read the covers and its write is
	// not done; it may drop a chunk written holds (the lazy take-out),
	// so a block may not count on written until it is.
	listPlanned bool
	listDirty   atomic.Bool // released guarded blocks wait for the next write
	// lingerQ: blocks whose placeholders linger (lingerPlaceholders), in
	// the order they end; under mu.
	lingerQ []*resv

	mu       sync.Mutex // guards everything below
	pools    map[portres.Proto]*pool.Pool
	byToken  map[pool.Token]*resv
	sessions map[*session]struct{}
	takeSeq  uint64                 // counts ports marked bound (takeLocked)
	bound    map[portres.Proto]span // covers every port bound since the last sweep began (and what it saw bound)
	users    map[uint32]*usage      // per-uid use, for the per-user limits
	orphans  map[*resv]struct{}     // restored runtime reservations waiting for their owner
	pidOwned map[*resv]struct{}     // the portserver's reservations, ending with their owner's process
	closed   bool

	wg        sync.WaitGroup
	stop      chan struct{}
	accepting chan struct{} // closed when Serve's accept loop ends; nil until Serve runs
	loops     []*loop       // read the sessions' requests; made by New, started by Serve
	looping   bool          // Serve started the loops, under mu
	nextLoop  int           // the loop the next session goes to (round robin), under mu
}

// New opens the state database, takes the socket's lock file, re-applies
// persistent reservations to the kernel and starts listening. It refuses
// to start if another broker owns the socket, or if the database is
// corrupt or not portres's.
func New(cfg Config) (_ *Broker, err error) {
	cfg.Defaults()
	b := &Broker{cfg: cfg, log: cfg.Logger, adminGID: -1, stop: make(chan struct{}),
		pools: map[portres.Proto]*pool.Pool{}, byToken: map[pool.Token]*resv{}, sessions: map[*session]struct{}{},
		users: map[uint32]*usage{}, bound: map[portres.Proto]span{}, orphans: map[*resv]struct{}{}, pidOwned: map[*resv]struct{}{}}
	b.rlog = newLogLimiter(b.log)
	b.debug = b.log.Enabled(context.Background(), slog.LevelDebug)
	b.fair = newFairQueue(inService)
	defer func() {
		if err != nil {
			b.closeResources()
		}
	}()
	if cfg.AdminGroup != "" {
		if b.adminGID, err = lookupGroup(cfg.AdminGroup); err != nil {
			return nil, err
		}
	}
	if b.netns, err = ownNetNS(); err != nil {
		return nil, err
	}
	b.netnsCookie, _ = enforce.NetNSCookie()
	if b.userns, err = ownUserNS(); err != nil {
		return nil, err
	}
	b.readPrivStart()
	if err = b.startGuard(); err != nil {
		return nil, err
	}
	if err = b.takeLock(); err != nil {
		return nil, err
	}
	if b.store, err = store.OpenWithOptions(cfg.State, store.Options{Repair: cfg.RepairState}); err != nil {
		return nil, fmt.Errorf("portresd: state database: %w", err)
	}
	if r := b.store.Repaired(); r != nil {
		b.log.Warn("state database repaired", "state", cfg.State, "repair", r.String())
	}
	b.initFDLimit()
	if err = b.loadState(); err != nil {
		return nil, err
	}
	if err = b.joinFleet(); err != nil {
		return nil, err
	}
	if err = b.listen(); err != nil {
		return nil, err
	}
	if b.psln, err = b.listenPortserver(); err != nil {
		return nil, err
	}
	b.openWatchers()
	for i := 0; i < max(1, runtime.NumCPU()); i++ {
		l, err := newLoop(b)
		if err != nil {
			return nil, fmt.Errorf("portresd: request loop: %w", err)
		}
		b.loops = append(b.loops, l)
	}
	b.metrics = newMetrics(b)
	if err = b.serveHTTP(); err != nil {
		return nil, err
	}
	b.log.Info("portresd listening", "socket", cfg.Socket, "state", cfg.State,
		"portserver", cfg.Portserver, "dynamic_tcp", b.dynString(portres.TCP), "dynamic_udp", b.dynString(portres.UDP),
		"kernel_exclusion", b.sysctl != nil, "enforce", b.mode(), "enforce_why", b.why, "admin_group", cfg.AdminGroup,
		"metrics", b.MetricsAddr(), "unprivileged_port_start", b.privStart.Load(), "user_ports", b.cfg.Limits.UserPorts,
		"user_reservations", b.cfg.Limits.UserReservations, "user_connections", b.cfg.Limits.UserConnections,
		"fd_limit", b.fdLimit, "fd_reserve", b.cfg.Limits.FDReserve, "list_reserve", b.cfg.Limits.ListReserve)
	return b, nil
}

// Run starts a broker with cfg and serves until ctx is done, then shuts
// it down cleanly.
func Run(ctx context.Context, cfg Config) error {
	b, err := New(cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	// The socket accepts from here on (connections wait in its backlog
	// until Serve takes them): tell a service manager so.
	if err := notify(fmt.Sprintf("READY=1\nSTATUS=serving on %s, enforcing with %s\nMAINPID=%d", b.cfg.Socket, b.mode(), os.Getpid())); err != nil {
		b.log.Warn("cannot tell the service manager the broker is ready", "NOTIFY_SOCKET", os.Getenv("NOTIFY_SOCKET"), "err", err)
	}
	context.AfterFunc(ctx, func() { notify("STOPPING=1") })
	return b.Serve(ctx)
}

// Serve accepts clients until ctx is done or Close is called.
func (b *Broker) Serve(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.wg.Add(2 + len(b.loops)) // under mu: never concurrent with Close's Wait
	b.accepting = make(chan struct{})
	b.looping = true
	for _, l := range b.loops {
		go l.run()
	}
	go b.lingerReaper()
	for i, proto := range []portres.Proto{portres.TCP, portres.UDP} {
		if w := b.watchers[i]; w != nil {
			b.wg.Add(1)
			go b.watchClosed(proto, w)
		}
	}
	if b.psln != nil {
		b.wg.Add(1)
		go b.servePortserver(b.psln)
	}
	b.mu.Unlock()
	go b.sweeper()
	go func() {
		select {
		case <-ctx.Done():
			b.ln.Shutdown()
		case <-b.stop:
		}
	}()
	defer close(b.accepting)
	for {
		c, err := b.ln.Accept()
		if err != nil {
			if errors.Is(err, fdpass.ErrClosed) {
				return nil
			}
			if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) {
				b.log.Warn("accept failed", "err", err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("portresd: accept: %w", err)
		}
		b.startSession(c)
	}
}

// Close stops accepting, ends every session (releasing their runtime
// reservations and placeholders), removes the socket and closes the
// database.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.stop)
	for _, w := range b.watchers {
		if w != nil {
			w.Close() // ends watchClosed
		}
	}
	sessions := make([]*session, 0, len(b.sessions))
	for s := range b.sessions {
		sessions = append(sessions, s)
	}
	accepting := b.accepting
	b.mu.Unlock()
	if b.ln != nil {
		b.ln.Shutdown()
	}
	if b.psln != nil {
		b.psln.Close() // ends servePortserver
	}
	if accepting != nil {
		<-accepting // Serve's Accept returned: the listener may be closed
	}
	for _, s := range sessions {
		s.conn.Shutdown() // the loops see them end
	}
	b.mu.Lock()
	looping := b.looping
	b.mu.Unlock()
	for _, l := range b.loops {
		if looping {
			l.close() // and end whatever they did not see end
		} else {
			l.stop() // never started: only its descriptors to close
		}
	}
	b.wg.Wait()
	b.closeResources()
	b.log.Info("portresd stopped")
	return nil
}

// Addr is the socket path the broker listens on.
func (b *Broker) Addr() string { return b.cfg.Socket }

func (b *Broker) closeResources() {
	if b.fleet != nil && b.fleetStop != nil {
		close(b.fleetStop)
		b.fleetStop = nil
		b.fleetWG.Wait() // the frees of fleet leases under way
		b.fleet.Close()  // revokes the member lease: its fleet leases end fleet-wide
	}
	if !b.closed {
		for _, l := range b.loops {
			l.stop() // New failed after making them
		}
	}
	for _, w := range b.watchers {
		if w != nil {
			w.Close() // again after Close: harmless
		}
	}
	b.mu.Lock()
	for _, rv := range b.byToken {
		rv.closeHolders()
	}
	b.mu.Unlock()
	if b.ln != nil {
		b.ln.Close() // already closed by Close; not when New fails late
		b.removeSocket()
	}
	if b.psln != nil {
		b.psln.Close()
	}
	if b.store != nil {
		b.store.Close()
	}
	if b.runtime != nil {
		b.runtime.Flush()
		b.runtime.Close() // what it records stays, for the next broker
	}
	if b.guard != nil {
		b.guard.Close()
	}
	b.metrics.close()
	if b.lock != nil {
		b.lock.Close()
	}
}

func lookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, fmt.Errorf("portresd: admin group: %w", err)
	}
	return strconv.Atoi(g.Gid)
}

// ownNetNS is the inode of the broker's network namespace.
func ownNetNS() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("portresd: own network namespace: %w", err)
	}
	return st.Ino, nil
}

// mayAdmin reports whether p may create and delete persistent
// reservations, consume them and set the dynamic port range.
func (b *Broker) mayAdmin(p *peer) bool { return p.uid == 0 || p.inGroup(b.adminGID) }

// startGuard loads the eBPF bind guard in bpf and auto mode, adopting
// the one an earlier broker pinned. In auto mode it first checks what the
// guard needs and, for each thing missing, logs one line and keeps
// placeholders; in both modes a guard that fails to load falls back to
// placeholders, out loud. b.why says why the mode in force was chosen.
// In hold mode, or after such a fall-back, a guard an earlier broker
// pinned is removed: its map would refuse the placeholders' binds.
func (b *Broker) startGuard() error {
	switch b.cfg.Enforce {
	case EnforceHold:
		b.why = "placeholder sockets, as configured (--enforce hold)"
		b.dropPinnedGuard()
		return nil
	case EnforceBPF, EnforceAuto:
	default:
		return fmt.Errorf("portresd: unknown enforcement %q (want %s, %s or %s)", b.cfg.Enforce, EnforceAuto, EnforceBPF, EnforceHold)
	}
	if b.cfg.Enforce == EnforceAuto {
		if missing := bpfMissing(b.cfg.Cgroup); len(missing) > 0 {
			for _, m := range missing {
				b.log.Warn("enforce auto: the eBPF bind guard cannot be used; runtime blocks are held by placeholder sockets", "missing", m)
			}
			b.why = "placeholder sockets: the eBPF bind guard needs " + strings.Join(missing, "; ")
			b.dropPinnedGuard()
			return nil
		}
	}
	pin, err := b.pinDir()
	if err != nil {
		b.log.Warn("eBPF bind guard: no pin directory; it will not outlive the broker", "err", err)
	}
	g, err := enforce.OpenBindGuard(enforce.GuardOptions{Cgroup: b.cfg.Cgroup, PinDir: pin})
	if err != nil {
		b.log.Warn("eBPF bind guard unavailable; falling back to placeholder sockets", "cgroup", b.cfg.Cgroup, "pin", pin, "err", err)
		b.why = fmt.Sprintf("placeholder sockets: the eBPF bind guard did not load: %v", err)
		b.dropPinnedGuard()
		return nil
	}
	b.guard = g
	b.why = fmt.Sprintf("eBPF bind guard on cgroup %s (--enforce %s)", b.cfg.Cgroup, b.cfg.Enforce)
	switch {
	case pin == "":
		b.why += ", not pinned: it goes with the broker"
	case g.Adopted():
		b.why += ", adopted from the previous broker, pinned in " + pin
		b.log.Info("eBPF bind guard adopted: it kept guarding while the broker was down", "pin", pin)
	default:
		b.why += ", pinned in " + pin
	}
	if b.cfg.ReservedPorts == "-" {
		b.log.Warn("bpf mode without ip_local_reserved_ports: runtime ports are not excluded from automatic assignment")
	}
	return nil
}

// pinDir is where the guard is pinned: Config.BPFPin, its default, or ""
// for none.
func (b *Broker) pinDir() (string, error) {
	switch b.cfg.BPFPin {
	case "-":
		return "", nil
	case "":
		return enforce.DefaultPinDir()
	}
	return b.cfg.BPFPin, nil
}

// UninstallGuard removes the eBPF bind guard that brokers configured
// with cfg pin (Config.BPFPin, or its default) while no broker uses it:
// its programs are detached from the cgroup and its maps freed. It
// reports the directory and whether there was a guard there. Runtime
// reservations recorded for live restore stay recorded; a broker started
// later guards them again.
func UninstallGuard(cfg Config) (dir string, removed bool, err error) {
	b := &Broker{cfg: cfg}
	if dir, err = b.pinDir(); err != nil || dir == "" {
		return dir, false, err
	}
	removed, err = enforce.UninstallGuard(dir)
	return dir, removed, err
}

// dropPinnedGuard removes a guard an earlier broker pinned where this one
// would, when this one holds runtime blocks with placeholders instead.
func (b *Broker) dropPinnedGuard() {
	pin, err := b.pinDir()
	if err != nil || pin == "" {
		return
	}
	if removed, err := enforce.UninstallGuard(pin); err != nil {
		b.log.Debug("no pinned eBPF guard removed", "pin", pin, "err", err)
	} else if removed {
		b.log.Warn("removed the eBPF bind guard an earlier broker pinned: runtime blocks are held by placeholders now", "pin", pin)
	}
}

// mode names the enforcement in force.
func (b *Broker) mode() string {
	if b.guard != nil {
		return EnforceBPF
	}
	return EnforceHold
}

// Enforcement is the mode in force: EnforceHold, or EnforceBPF when the
// eBPF bind guard loaded.
func (b *Broker) Enforcement() string { return b.mode() }

// serveHTTP starts the HTTP server of --metrics (/metrics only) or of
// --http (the port map, the JSON API and /metrics).
func (b *Broker) serveHTTP() error {
	addr, pages := b.cfg.Metrics, http.Handler(nil)
	if b.cfg.HTTP != "" {
		if addr != "" && addr != b.cfg.HTTP {
			return fmt.Errorf("portresd: --metrics %s and --http %s: the pages serve /metrics too; give one address", addr, b.cfg.HTTP)
		}
		addr, pages = b.cfg.HTTP, web.Handler(b)
	}
	if addr == "" {
		return nil
	}
	var ln net.Listener
	var err error
	if pages != nil {
		ln, err = httpListen(addr, b.cfg.HTTPPublic)
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		return fmt.Errorf("portresd: HTTP listener: %w", err)
	}
	return b.metrics.serve(ln, pages)
}
