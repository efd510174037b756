//go:build linux

// Command portresd is the portres broker daemon: it owns the host's TCP
// and UDP port pools and serves clients on a Unix socket. It runs with no
// flags and no configuration file on embedded defaults.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/portres/portres/internal/broker"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// run parses args and runs the daemon (or --uninstall-guard); it returns
// the exit status: 0, 1 on failure, 2 on bad usage.
func run(args []string) int {
	cmd := command()
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		if ue, ok := err.(usageError); ok {
			fmt.Fprintf(os.Stderr, "portresd: %v\n", ue.error)
			return 2
		}
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// usageError is a bad flag or argument: exit status 2.
type usageError struct{ error }

// command is portresd's command line: GNU-style long flags (the same
// library as the portres CLI), each with its default in --help.
func command() *cobra.Command {
	var cfg broker.Config
	var debug, uninstall bool
	var logFormat, manDir string
	var fl fleetFlags
	mode := octalMode(0o666)
	cmd := &cobra.Command{
		Use:   "portresd",
		Short: "The portres broker: Windows-style TCP/UDP port reservations for Linux",
		Long: `portresd owns the host's TCP and UDP port pools, serves clients on a Unix
socket, binds their sockets for them and makes the kernel enforce their
reservations. It needs no flags: as root its socket is
/run/portres/portres.sock and its state /var/lib/portres/state.db.

As root it changes the host's kernel settings: it adds its blocks to
net.ipv4.ip_local_reserved_ports (never removing entries it did not add),
attaches an eBPF bind guard to the cgroup v2 root (pinned in
/sys/fs/bpf/portres, mounting a bpffs on /sys/fs/bpf if none is there)
and raises its own RLIMIT_NOFILE to the hard limit. portresd
--uninstall-guard removes the guard.`,
		Version: broker.Version(),
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unexpected arguments %q (portresd takes flags only; see --help)", args)}
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case cfg.Sweep <= 0:
				return usageError{fmt.Errorf("--sweep must be positive, got %v", cfg.Sweep)}
			case cfg.RestoreGrace <= 0:
				return usageError{fmt.Errorf("--restore-grace must be positive, got %v", cfg.RestoreGrace)}
			case cfg.Limits.FDReserve < 0:
				return usageError{fmt.Errorf("--fd-reserve must be 0 or more, got %d", cfg.Limits.FDReserve)}
			case cfg.Limits.ListReserve < 0 || cfg.Limits.ListReserve > 4000:
				return usageError{fmt.Errorf("--list-reserve must be 0 to 4000 bytes, got %d", cfg.Limits.ListReserve)}
			case logFormat != "text" && logFormat != "json":
				return usageError{fmt.Errorf("--log-format must be text or json, got %q", logFormat)}
			}
			cfg.SocketMode = os.FileMode(mode)
			if err := fl.config(&cfg); err != nil {
				return usageError{err}
			}
			if manDir != "" {
				cmd.DisableAutoGenTag = true
				hdr := &doc.GenManHeader{Title: "PORTRESD", Section: "8", Source: "portresd " + cmd.Version, Manual: "portres manual"}
				return doc.GenManTree(cmd, hdr, manDir)
			}
			if uninstall {
				return uninstallGuard(cfg)
			}
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			opts := &slog.HandlerOptions{Level: level}
			if logFormat == "json" {
				cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, opts))
			} else {
				cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, opts))
			}
			broker.SetMaxProcs()
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return broker.Run(ctx, cfg)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	cmd.SetVersionTemplate("portresd {{.Version}}\n")
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&cfg.Socket, "socket", "", "listening socket (default $PORTRES_SOCKET, /run/portres/portres.sock for root, else $XDG_RUNTIME_DIR/portres.sock)")
	f.Var(&mode, "socket-mode", "permission bits of the socket file, in octal")
	f.StringVar(&cfg.State, "state", "", "state database (default $PORTRES_STATE, /var/lib/portres/state.db for root, else $XDG_STATE_HOME/portres/state.db)")
	f.StringVar(&cfg.AdminGroup, "group", "", "group (name or gid) that may administer and consume persistent reservations besides root")
	f.StringVar(&cfg.Enforce, "enforce", broker.EnforceAuto, "how runtime reservations are enforced: auto (bpf where the broker may load the guard, else hold, saying why), hold (placeholder sockets) or bpf (cgroup eBPF bind guard; root, cgroup v2)")
	f.StringVar(&cfg.Cgroup, "cgroup", "", "cgroup v2 directory the bpf guard attaches to (default: the cgroup v2 root)")
	f.StringVar(&cfg.BPFPin, "bpf-pin", "", "bpffs directory the bpf guard is pinned in, so it keeps guarding while portresd is down, or - for none (default /sys/fs/bpf/portres/net-COOKIE)")
	f.StringVar(&cfg.ReservedPorts, "reserved-ports", "", "path of net.ipv4.ip_local_reserved_ports, or - to disable kernel exclusion")
	f.StringVar(&cfg.Runtime, "runtime-state", "", "file recording runtime reservations so a restarted portresd restores them (live restore), or - for none (default: the socket path plus .runtime)")
	f.DurationVar(&cfg.RestoreGrace, "restore-grace", broker.DefaultRestoreGrace, "how long restored runtime reservations wait for their owners to reclaim them after a restart")
	f.StringVar(&cfg.Portserver, "portserver", "", "Unix socket (an abstract one if it starts with @) where the portserver protocol of Google's portpicker is answered, or - for none (default @portres for root, @portres-UID for another user)")
	f.StringVar(&cfg.Metrics, "metrics", "", "serve Prometheus metrics on this TCP address at /metrics (e.g. 127.0.0.1:9750)")
	fl.define(f)
	f.StringVar(&cfg.HTTP, "http", "", "serve the port map at /, the JSON API at /api/v1/ and the metrics at /metrics on this address: a loopback host:port or unix:PATH (off by default)")
	f.BoolVar(&cfg.HTTPPublic, "http-public", false, "let --http listen on a non-loopback address (the pages show every user's command lines)")
	f.DurationVar(&cfg.Sweep, "sweep", time.Second, "how often bound ports are re-checked")
	f.BoolVar(&cfg.RepairState, "repair-state", false, "open a state database whose meta page is damaged by accepting its last intact transaction (later commits are lost); without it such a database is refused")
	f.IntVar(&cfg.Limits.UserPorts, "user-ports", broker.DefaultUserPorts, "most ports one uid may hold in runtime and delegated reservations (root and --group exempt; -1: no limit)")
	f.IntVar(&cfg.Limits.UserReservations, "user-reservations", broker.DefaultUserReservations, "most runtime and delegated reservations one uid may hold (root and --group exempt; -1: no limit)")
	f.IntVar(&cfg.Limits.UserConnections, "user-connections", broker.DefaultUserConnections, "most connections one uid may have open to the broker (root and --group exempt; -1: no limit)")
	f.IntVar(&cfg.Limits.UserRate, "user-rate", broker.DefaultUserRate, "requests a second one uid may make (bursts of a tenth); past it its requests wait (root and --group exempt; -1: no limit)")
	f.IntVar(&cfg.Limits.FDReserve, "fd-reserve", 0, "descriptors kept for root and --group: other users' connections and placeholders stop short of them (default: a tenth of RLIMIT_NOFILE, at least 64)")
	f.IntVar(&cfg.Limits.ListReserve, "list-reserve", broker.DefaultListReserve, "bytes of the 4095-byte ip_local_reserved_ports list kept for persistent reservations and admins' blocks")
	f.StringVar(&logFormat, "log-format", "text", "log format on stderr: text or json")
	f.BoolVar(&debug, "debug", false, "log every client connection, acquire and release")
	f.BoolVar(&uninstall, "uninstall-guard", false, "remove the pinned bpf guard (portresd must not be running) and exit")
	f.StringVar(&manDir, "gen-man", "", "write portresd's man page into this directory and exit (for packaging)")
	f.MarkHidden("gen-man")
	return cmd
}

// uninstallGuard removes the pinned eBPF guard and says what it did.
func uninstallGuard(cfg broker.Config) error {
	dir, removed, err := broker.UninstallGuard(cfg)
	switch {
	case err != nil:
		return fmt.Errorf("portresd: --uninstall-guard: %w", err)
	case removed:
		fmt.Printf("removed the bpf guard pinned in %s\n", dir)
	default:
		fmt.Printf("no bpf guard pinned in %s\n", dir)
	}
	return nil
}

// octalMode is a flag of permission bits written in octal ("660"), as
// chmod takes them, shown the same way in --help.
type octalMode uint32

func (m *octalMode) String() string { return fmt.Sprintf("%04o", uint32(*m)) }

func (m *octalMode) Set(s string) error {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return fmt.Errorf("%q is not an octal mode (like 660)", s)
	}
	if v == 0 || v > 0o777 {
		return fmt.Errorf("must be permission bits 0001-0777, got %#o", v)
	}
	*m = octalMode(v)
	return nil
}

func (m *octalMode) Type() string { return "mode" }
