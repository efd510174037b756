//go:build linux

package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.Helpers["portresd"] = run
	testutil.Main(m)
}

// daemon starts the real portresd main in a child process, configured
// only through the environment, and waits until it listens.
func daemon(t *testing.T, dir string, args ...string) *testutil.Process {
	t.Helper()
	env := []string{"PORTRES_SOCKET=" + filepath.Join(dir, "s.sock"), "PORTRES_STATE=" + filepath.Join(dir, "state.db")}
	p := testutil.StartHelper(t, "portresd", env, args...)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := portres.Dial(context.Background(), filepath.Join(dir, "s.sock")); err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatal("portresd did not start listening")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDaemonLifecycle: portresd starts on its defaults plus the
// environment and refuses a second instance. SIGTERM stops it cleanly
// (exit 0, socket removed) but keeps the runtime reservations (live
// restore): in bpf mode the pinned guard keeps refusing their ports while
// it is down; started again, it restores them and the client reclaims
// its own by itself. --uninstall-guard then removes the pinned guard.
func TestDaemonLifecycle(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.Dir(t)
	d := daemon(t, dir, "--sweep", "100ms")
	sock := filepath.Join(dir, "s.sock")
	st, err := os.Stat(sock)
	if err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o666 {
		t.Fatalf("socket %v %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.db")); err != nil {
		t.Fatalf("state database from PORTRES_STATE: %v", err)
	}

	second := exec.Command(os.Args[0], "-test.run=^$")
	second.Env = append(os.Environ(), "PORTRES_TEST_HELPER=portresd", "PORTRES_SOCKET="+sock, "PORTRES_STATE="+filepath.Join(dir, "other.db"))
	out, err := second.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another portresd") {
		t.Fatalf("second daemon: %v\n%s", err, out)
	}

	ctx := context.Background()
	c, err := portres.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	restarts := make(chan portres.Restart, 1)
	c.OnRestart(func(r portres.Restart) { restarts <- r })
	status, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Acquire(ctx, portres.TCP, 36000, 2)
	if err != nil {
		t.Fatal(err)
	}
	d.Cmd.Process.Signal(syscall.SIGTERM)
	if code := d.Wait(); code != 0 {
		t.Fatalf("portresd exit %d after SIGTERM", code)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	bindErr := func(port int) error {
		fd, _ := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		defer syscall.Close(fd)
		return syscall.Bind(fd, &syscall.SockaddrInet4{Port: port})
	}
	if status.Enforcement.Mode == "bpf" {
		if err := bindErr(36000); err != syscall.EACCES {
			t.Errorf("bpf mode, portresd stopped: bind of a reserved port: %v, want EACCES from the pinned guard", err)
		}
	}

	d = daemon(t, dir, "--sweep", "100ms")
	select {
	case got := <-restarts:
		if len(got.Kept) != 1 || got.Kept[0].Token() != r.Token() || len(got.Lost) != 0 {
			t.Errorf("after the restart the client kept %v and lost %v, want its one reservation kept", got.Kept, got.Lost)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client did not reconnect to the restarted broker")
	}
	if st, err := c.Status(ctx); err != nil || st.Restore.Waiting != 0 || st.Counts.Runtime != 1 {
		t.Errorf("after reclaiming: status %+v, %v; want 1 runtime reservation, none waiting", st, err)
	}
	ln, err := r.Listen(ctx, "tcp", ":36001")
	if err != nil {
		t.Fatalf("Listen on the reclaimed reservation: %v", err)
	}
	ln.Close()
	if err := r.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bindErr(36000); err != nil {
		t.Errorf("port still held after release: %v", err)
	}
	d.Cmd.Process.Signal(syscall.SIGTERM)
	d.Wait()

	uninstall := func() string {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "PORTRES_TEST_HELPER=portresd", "PORTRES_TEST_HELPER_ARGS=--uninstall-guard")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("portresd --uninstall-guard: %v\n%s", err, out)
		}
		return string(out)
	}
	if status.Enforcement.Mode == "bpf" {
		if out := uninstall(); !strings.Contains(out, "removed the bpf guard pinned in /sys/fs/bpf/portres/net-") {
			t.Errorf("first --uninstall-guard: %q", out)
		}
	}
	if out := uninstall(); !strings.Contains(out, "no bpf guard pinned") {
		t.Errorf("second --uninstall-guard: %q", out)
	}
}

func TestBadArguments(t *testing.T) {
	for args, want := range map[string]string{
		"stray":                   "unexpected arguments",
		"--sweep\x1f-1s":          "--sweep must be positive",
		"--socket-mode\x1f0":      "must be permission bits",
		"--socket-mode\x1f070000": "must be permission bits",
		"--socket-mode\x1f999":    "not an octal mode",
		"--log-format\x1fxml":     "--log-format must be text or json",
		"-sweep\x1f1s":            "unknown shorthand flag",
		"--fleet-ttl\x1f30s":      "--fleet-ttl needs --etcd",
		"--fleet-user-ports\x1f0": "--fleet-user-ports needs --etcd",
		"--etcd-prefix\x1f/x/":    "--etcd-prefix needs --etcd",
		"--fleet-range\x1f1-2":    "--fleet-range needs --etcd",
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "PORTRES_TEST_HELPER=portresd", "PORTRES_TEST_HELPER_ARGS="+args)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("portresd %q: %v\n%s", args, err, out)
		}
	}
}

// TestHelpListsLimits: portresd -h names every per-user limit and reserve
// with its default.
func TestHelpListsLimits(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-h")
	cmd.Env = append(os.Environ(), "PORTRES_TEST_HELPER=portresd", "PORTRES_TEST_HELPER_ARGS=-h")
	out, _ := cmd.CombinedOutput()
	for _, want := range []string{"-user-ports", "(default 4096)", "-user-reservations", "(default 256)",
		"-user-connections", "(default 128)", "-user-rate", "(default 5000)", "-fd-reserve", "a tenth of RLIMIT_NOFILE",
		"-list-reserve", "(default 1024)", "-repair-state"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("portresd -h does not say %q:\n%s", want, out)
		}
	}
}

// TestVersionAndHelpStyle: --version prints the build's version; the
// help shows GNU-style long flags and the socket mode in octal.
func TestVersionAndHelpStyle(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PORTRES_TEST_HELPER=portresd", "PORTRES_TEST_HELPER_ARGS=--version")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "portresd ") {
		t.Errorf("portresd --version: %v %q", err, out)
	}
	cmd = exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PORTRES_TEST_HELPER=portresd", "PORTRES_TEST_HELPER_ARGS=--help")
	out, _ = cmd.CombinedOutput()
	for _, want := range []string{"--socket-mode mode", "(default 0666)", "--log-format", "--uninstall-guard", "ip_local_reserved_ports"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("portresd --help does not say %q:\n%s", want, out)
		}
	}
}

// TestNotifyReady: started with $NOTIFY_SOCKET (systemd Type=notify),
// portresd says READY=1 once its socket accepts, and STOPPING=1 when it
// is told to stop.
func TestNotifyReady(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.Dir(t)
	nsock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: nsock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	env := []string{"PORTRES_SOCKET=" + filepath.Join(dir, "s.sock"), "PORTRES_STATE=" + filepath.Join(dir, "state.db"), "NOTIFY_SOCKET=" + nsock}
	p := testutil.StartHelper(t, "portresd", env, "--enforce", "hold")
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "READY=1\n") {
		t.Fatalf("notification: %q, %v; want READY=1 first", buf[:n], err)
	}
	if c, err := portres.Dial(context.Background(), filepath.Join(dir, "s.sock")); err != nil {
		t.Errorf("READY=1 sent before the socket accepts: %v", err)
	} else {
		c.Close()
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	n, err = conn.Read(buf)
	if err != nil || string(buf[:n]) != "STOPPING=1" {
		t.Errorf("notification at SIGTERM: %q, %v; want STOPPING=1", buf[:n], err)
	}
	p.Wait()
}
