//go:build linux

package broker

import (
	"github.com/portres/portres/internal/fleet"
	"log/slog"
	"os"
	"time"

	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/paths"
)

// Config is the daemon's configuration. The zero value plus Defaults is a
// working daemon: portresd needs no flags and no configuration file.
type Config struct {
	// Socket is the path of the listening Unix socket.
	Socket string
	// SocketMode is the socket file's permission bits. Any local user may
	// take runtime reservations, so the default is 0666; access to
	// persistent reservations is checked per request (AdminGroup).
	SocketMode os.FileMode
	// State is the path of the bbolt database holding persistent
	// reservations and dynamic port ranges.
	State string
	// RepairState lets the broker open a state database whose bbolt meta
	// page is damaged by accepting its last intact transaction (anything
	// committed after it is lost). Without it such a database is refused.
	RepairState bool
	// AdminGroup names a group (or a numeric gid) whose members, besides
	// root, may create, delete and consume persistent reservations and
	// set the dynamic port range. Empty: root only.
	AdminGroup string
	// ReservedPorts is the path of net.ipv4.ip_local_reserved_ports; "-"
	// disables kernel exclusion.
	ReservedPorts string
	// PortRange is the path of net.ipv4.ip_local_port_range, read at
	// start-up as the default dynamic range.
	PortRange string
	// Enforce is how runtime reservations are kept from other processes:
	// "auto" (the default) is bpf where the broker may load and attach
	// the guard, else hold, with one log line per missing requirement;
	// "hold" binds a placeholder socket on every free port and needs no
	// privilege; "bpf" attaches a cgroup eBPF bind guard and adds the
	// blocks to ip_local_reserved_ports: no descriptor per port and no
	// window during a brokered bind, but it needs root and cgroup v2. If
	// the guard cannot be loaded the broker says so and holds.
	Enforce string
	// Cgroup is the cgroup v2 directory the bpf guard attaches to: its
	// processes (all of them, for the root) are kept off guarded ports.
	Cgroup string
	// BPFPin is the bpffs directory the bpf guard is pinned in, so that
	// it keeps guarding while the broker is down and the next broker
	// adopts it (default: /sys/fs/bpf/portres/net-COOKIE, one per network
	// namespace; a bpffs is mounted on /sys/fs/bpf if none is); "-"
	// leaves the guard unpinned, gone with the broker.
	BPFPin string
	// Metrics is a TCP address ("127.0.0.1:9750") to serve Prometheus
	// metrics on at /metrics; empty: none.
	Metrics string
	// HTTP is an address ("127.0.0.1:9750", or "unix:PATH") to serve the
	// port map at /, the JSON API at /api/v1/ and the metrics at
	// /metrics on; empty: none. A TCP address must be a loopback one
	// unless HTTPPublic: the pages show every user's command lines.
	HTTP       string
	HTTPPublic bool
	// Fleet makes the broker a member of a fleet of brokers on etcd
	// (portresd --etcd); nil: a broker of this host alone.
	Fleet *fleet.Config
	// JoinFleet joins the fleet of Fleet (portresd passes
	// etcdfleet.JoinFleet): the broker itself links no etcd client.
	JoinFleet fleet.JoinFunc
	// Sweep is how often bound ports are re-probed so that a port whose
	// socket the client closed gets its placeholder back.
	Sweep time.Duration
	// Runtime is the file where runtime reservations are recorded so that
	// they survive a restart or a crash of the broker (live restore;
	// default: the socket's path plus ".runtime", under /run for root);
	// "-" keeps none: a restart then drops them all, and Close releases
	// them.
	Runtime string
	// RestoreGrace is how long runtime reservations restored after a
	// restart wait for their owner to reconnect and reclaim them (the Go
	// client does so by itself) before they are released (default 30s).
	// Blocks whose owner exited are released at once.
	RestoreGrace time.Duration
	// Portserver is where the broker answers Google's portserver
	// protocol (portpicker with $PORTSERVER_ADDRESS): a Unix socket path,
	// or an abstract name starting with '@' (default: DefaultPortserver,
	// "@portres" for root); "-" turns it off.
	Portserver string
	// Dynamic, if set (lo, hi), is the dynamic range of both protocols,
	// in place of the kernel's ip_local_port_range (a range set with
	// dynamicport set still wins). portrestest's brokers place ports
	// outside the kernel's automatic assignment with it.
	Dynamic [2]uint16
	// IdleExit, if set, ends the broker once it has had no client and no
	// runtime reservation for that long (portrestest's brokers).
	IdleExit time.Duration
	// Limits are the per-user limits and the budgets kept for admins.
	Limits Limits
	// UnprivilegedPortStart is the path of
	// net.ipv4.ip_unprivileged_port_start: ports below its value need
	// CAP_NET_BIND_SERVICE or the admin group.
	UnprivilegedPortStart string
	// Logger receives the daemon's structured log.
	Logger *slog.Logger
}

// Limits bound what one local user can take from the broker, so that no
// user can deny service to others (see the README's Security section).
// Root and the admin group are exempt from the per-user limits; the
// reserves are kept for them. A zero field takes its default; a negative
// per-user limit means none.
type Limits struct {
	// UserPorts is the most ports one uid may hold in runtime and
	// delegated reservations at once (default 4096).
	UserPorts int
	// UserReservations is the most runtime and delegated reservations
	// one uid may hold at once (default 256).
	UserReservations int
	// UserConnections is the most connections one uid may have open to
	// the broker at once (default 128).
	UserConnections int
	// UserRate is how many requests a second one uid's connections may
	// make together, with bursts of a tenth of it; past it the uid's
	// requests wait (default 5000).
	UserRate int
	// FDReserve is how many of the broker's descriptors (RLIMIT_NOFILE)
	// unprivileged users can never take: connections and placeholder
	// sockets of other users stop short of them (default: a tenth of the
	// limit, at least 64).
	FDReserve int
	// ListReserve is how many bytes of the kernel's reserved-port list
	// (one write of at most 4095 bytes) blocks of unprivileged users can
	// never take, kept for persistent reservations and admins (default
	// 1024).
	ListReserve int
}

// Default limits.
const (
	DefaultUserPorts        = 4096
	DefaultUserReservations = 256
	DefaultUserConnections  = 128
	DefaultUserRate         = 5000
	DefaultListReserve      = 1024
	DefaultRestoreGrace     = 30 * time.Second
)

// defaults fills unset limits; nofile is the broker's RLIMIT_NOFILE.
func (l *Limits) defaults(nofile int) {
	if l.UserPorts == 0 {
		l.UserPorts = DefaultUserPorts
	}
	if l.UserReservations == 0 {
		l.UserReservations = DefaultUserReservations
	}
	if l.UserConnections == 0 {
		l.UserConnections = DefaultUserConnections
	}
	if l.UserRate == 0 {
		l.UserRate = DefaultUserRate
	}
	if l.FDReserve == 0 {
		l.FDReserve = max(64, nofile/10)
	}
	if l.ListReserve == 0 {
		l.ListReserve = DefaultListReserve
	}
}

// Enforcement modes (Config.Enforce).
const (
	EnforceAuto = "auto"
	EnforceHold = "hold"
	EnforceBPF  = "bpf"
)

// Defaults fills every unset field with the embedded default.
func (c *Config) Defaults() {
	if c.Socket == "" {
		c.Socket = paths.DaemonSocket()
	}
	if c.SocketMode == 0 {
		c.SocketMode = 0o666
	}
	if c.State == "" {
		c.State = paths.State()
	}
	if c.ReservedPorts == "" {
		c.ReservedPorts = enforce.DefaultReservedPortsPath
	}
	if c.UnprivilegedPortStart == "" {
		c.UnprivilegedPortStart = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
	}
	if c.PortRange == "" {
		c.PortRange = "/proc/sys/net/ipv4/ip_local_port_range"
	}
	if c.Enforce == "" {
		c.Enforce = EnforceAuto
	}
	if c.Cgroup == "" {
		c.Cgroup = enforce.DefaultCgroup()
	}
	if c.Sweep == 0 {
		c.Sweep = time.Second
	}
	if c.Runtime == "" {
		c.Runtime = c.Socket + ".runtime"
	}
	if c.Portserver == "" {
		c.Portserver = DefaultPortserver()
	}
	if c.RestoreGrace == 0 {
		c.RestoreGrace = DefaultRestoreGrace
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
}
