// Command portresd is the portres broker daemon: it owns the host's TCP
// and UDP port pools and serves clients on a Unix socket. It runs with no
// flags and no configuration file on embedded defaults.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/portres/portres/internal/broker"
)

func main() {
	var cfg broker.Config
	var debug, uninstall bool
	var mode uint
	flag.StringVar(&cfg.Socket, "socket", "", "listening socket (default $PORTRES_SOCKET, /run/portres/portres.sock for root, else $XDG_RUNTIME_DIR/portres.sock)")
	flag.StringVar(&cfg.State, "state", "", "state database (default $PORTRES_STATE, /var/lib/portres/state.db for root, else $XDG_STATE_HOME/portres/state.db)")
	flag.StringVar(&cfg.AdminGroup, "group", "", "group (name or gid) that may administer and consume persistent reservations besides root")
	flag.UintVar(&mode, "socket-mode", 0o666, "permission bits of the socket file")
	flag.StringVar(&cfg.ReservedPorts, "reserved-ports", "", "path of net.ipv4.ip_local_reserved_ports, or - to disable kernel exclusion")
	flag.StringVar(&cfg.Enforce, "enforce", broker.EnforceAuto, "how runtime reservations are enforced: auto (bpf where the broker may load the guard, else hold, saying why), hold (placeholder sockets) or bpf (cgroup eBPF bind guard; root, cgroup v2)")
	flag.StringVar(&cfg.Cgroup, "cgroup", "", "cgroup v2 directory the bpf guard attaches to (default: the cgroup v2 root)")
	flag.StringVar(&cfg.Metrics, "metrics", "", "serve Prometheus metrics on this TCP address at /metrics (e.g. 127.0.0.1:9750)")
	flag.StringVar(&cfg.BPFPin, "bpf-pin", "", "bpffs directory the bpf guard is pinned in, so it keeps guarding while portresd is down, or - for none (default /sys/fs/bpf/portres/net-COOKIE; a bpffs is mounted on /sys/fs/bpf if none is)")
	flag.StringVar(&cfg.Runtime, "runtime-state", "", "file recording runtime reservations so a restarted portresd restores them (live restore), or - for none (default: the socket path plus .runtime)")
	flag.DurationVar(&cfg.RestoreGrace, "restore-grace", broker.DefaultRestoreGrace, "how long restored runtime reservations wait for their owners to reclaim them after a restart")
	flag.BoolVar(&uninstall, "uninstall-guard", false, "remove the pinned bpf guard (portresd must not be running) and exit")
	flag.DurationVar(&cfg.Sweep, "sweep", time.Second, "how often bound ports are re-checked")
	flag.BoolVar(&cfg.RepairState, "repair-state", false, "open a state database whose meta page is damaged by accepting its last intact transaction (later commits are lost); without it such a database is refused")
	flag.IntVar(&cfg.Limits.UserPorts, "user-ports", broker.DefaultUserPorts, "most ports one uid may hold in runtime and delegated reservations (root and --group exempt; -1: no limit)")
	flag.IntVar(&cfg.Limits.UserReservations, "user-reservations", broker.DefaultUserReservations, "most runtime and delegated reservations one uid may hold (root and --group exempt; -1: no limit)")
	flag.IntVar(&cfg.Limits.UserConnections, "user-connections", broker.DefaultUserConnections, "most connections one uid may have open to the broker (root and --group exempt; -1: no limit)")
	flag.IntVar(&cfg.Limits.UserRate, "user-rate", broker.DefaultUserRate, "requests a second one uid may make (bursts of a tenth); past it its requests wait (root and --group exempt; -1: no limit)")
	flag.IntVar(&cfg.Limits.FDReserve, "fd-reserve", 0, "descriptors kept for root and --group: other users' connections and placeholders stop short of them (default: a tenth of RLIMIT_NOFILE, at least 64)")
	flag.IntVar(&cfg.Limits.ListReserve, "list-reserve", broker.DefaultListReserve, "bytes of the 4095-byte ip_local_reserved_ports list kept for persistent reservations and admins' blocks")
	flag.BoolVar(&debug, "debug", false, "log every client connection, acquire and release")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "portresd: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	switch {
	case cfg.Sweep <= 0:
		fmt.Fprintf(os.Stderr, "portresd: --sweep must be positive, got %v\n", cfg.Sweep)
		os.Exit(2)
	case cfg.RestoreGrace <= 0:
		fmt.Fprintf(os.Stderr, "portresd: --restore-grace must be positive, got %v\n", cfg.RestoreGrace)
		os.Exit(2)
	case cfg.Limits.FDReserve < 0:
		fmt.Fprintf(os.Stderr, "portresd: --fd-reserve must be 0 or more, got %d\n", cfg.Limits.FDReserve)
		os.Exit(2)
	case cfg.Limits.ListReserve < 0 || cfg.Limits.ListReserve > 4000:
		fmt.Fprintf(os.Stderr, "portresd: --list-reserve must be 0 to 4000 bytes, got %d\n", cfg.Limits.ListReserve)
		os.Exit(2)
	case mode == 0 || mode > 0o777:
		fmt.Fprintf(os.Stderr, "portresd: --socket-mode must be permission bits 0001-0777, got %#o\n", mode)
		os.Exit(2)
	}
	cfg.SocketMode = os.FileMode(mode)
	if uninstall {
		dir, removed, err := broker.UninstallGuard(cfg)
		switch {
		case err != nil:
			fmt.Fprintf(os.Stderr, "portresd: --uninstall-guard: %v\n", err)
			os.Exit(1)
		case removed:
			fmt.Printf("removed the bpf guard pinned in %s\n", dir)
		default:
			fmt.Printf("no bpf guard pinned in %s\n", dir)
		}
		return
	}
	broker.SetMaxProcs()
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := broker.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
