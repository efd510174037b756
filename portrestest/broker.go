//go:build linux

package portrestest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/paths"
)

// envBroker, set to a socket path, makes a test binary that imports this
// package serve as the user's test broker there instead of running its
// tests (startBroker re-executes it so).
const envBroker = "PORTRESTEST_BROKER"

// IdleExit is how long the user's test broker waits without clients
// before it exits.
const IdleExit = time.Minute

func init() {
	if sock := os.Getenv(envBroker); sock != "" {
		os.Exit(serveBroker(sock))
	}
}

// socketPath is where the user's test broker listens:
// $PORTRESTEST_DIR/portres.sock, else portrestest.sock in the user's
// runtime directory ($XDG_RUNTIME_DIR, else a private /tmp/portres-UID).
func socketPath() (string, error) {
	if d := os.Getenv("PORTRESTEST_DIR"); d != "" {
		return filepath.Join(d, "portres.sock"), os.MkdirAll(d, 0o700)
	}
	uid := os.Geteuid()
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" || uid == 0 {
		dir = paths.FallbackDir(uid)
		if err := paths.EnsurePrivateDir(dir, uid); err != nil {
			return "", err
		}
	}
	return filepath.Join(dir, "portrestest.sock"), nil
}

// startBroker starts this test binary again, detached, as the user's test
// broker on sock.
func startBroker(sock string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("starting a test broker: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envBroker+"="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives the test process
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting a test broker: %w", err)
	}
	return cmd.Process.Release()
}

// serveBroker is the user's test broker: it changes nothing of the
// host's (placeholder sockets hold the ports; no kernel list, no eBPF),
// places ports outside the kernel's ephemeral range, serves only the user
// (socket mode 0600) without per-user limits, and exits after IdleExit
// without clients.
func serveBroker(sock string) int {
	dir := filepath.Dir(sock)
	logw := io.Discard
	if f, err := os.OpenFile(filepath.Join(dir, "portrestest.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
		defer f.Close()
		logw = f
	}
	lo, hi := testRange()
	cfg := broker.Config{
		Socket: sock, SocketMode: 0o600, State: filepath.Join(dir, "portrestest.db"),
		Enforce: broker.EnforceHold, ReservedPorts: "-", BPFPin: "-", Runtime: "-", Portserver: "-",
		Dynamic: [2]uint16{lo, hi}, IdleExit: IdleExit,
		Limits: broker.Limits{UserPorts: -1, UserReservations: -1, UserConnections: -1, UserRate: -1},
		Logger: slog.New(slog.NewTextHandler(logw, nil)),
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := broker.Run(ctx, cfg); err != nil {
		fmt.Fprintln(logw, err) // another test process's broker won the lock, most likely
		return 1
	}
	return 0
}

// testRange is where the test broker places ports: $PORTRESTEST_RANGE
// (LO-HI), else the widest stretch outside the kernel's ephemeral range
// (net.ipv4.ip_local_port_range) from port 10000 up, where the kernel
// never hands a port out by itself.
func testRange() (uint16, uint16) {
	var lo, hi uint16
	if v := os.Getenv("PORTRESTEST_RANGE"); v != "" {
		if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d-%d", &lo, &hi); err == nil && lo > 0 && lo <= hi {
			return lo, hi
		}
	}
	elo, ehi := uint16(32768), uint16(60999)
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &elo, &ehi)
	}
	below := int(elo) - 10000 // 10000 .. elo-1
	above := 65535 - int(ehi) // ehi+1 .. 65535
	switch {
	case below >= above && below >= 256:
		return 10000, elo - 1
	case above >= 256:
		return ehi + 1, 65535
	}
	return 1024, 65535 // the ephemeral range covers nearly everything: share it
}
