package broker

import (
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
	// "hold" (the default) binds a placeholder socket on every free port
	// and needs no privilege; "bpf" attaches a cgroup eBPF bind guard and
	// adds the blocks to ip_local_reserved_ports: no descriptor per port
	// and no window during a brokered bind, but it needs root and cgroup
	// v2. If the guard cannot be loaded the broker says so and holds.
	Enforce string
	// Cgroup is the cgroup v2 directory the bpf guard attaches to: its
	// processes (all of them, for the root) are kept off guarded ports.
	Cgroup string
	// Metrics is a TCP address ("127.0.0.1:9750") to serve Prometheus
	// metrics on at /metrics; empty: none.
	Metrics string
	// Sweep is how often bound ports are re-probed so that a port whose
	// socket the client closed gets its placeholder back.
	Sweep time.Duration
	// Logger receives the daemon's structured log.
	Logger *slog.Logger
}

// Enforcement modes (Config.Enforce).
const (
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
	if c.PortRange == "" {
		c.PortRange = "/proc/sys/net/ipv4/ip_local_port_range"
	}
	if c.Enforce == "" {
		c.Enforce = EnforceHold
	}
	if c.Cgroup == "" {
		c.Cgroup = enforce.DefaultCgroup()
	}
	if c.Sweep == 0 {
		c.Sweep = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
}
