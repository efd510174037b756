package main

import (
	"context"
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
	testutil.Helpers["portresd"] = func(args []string) int {
		os.Args = append([]string{"portresd"}, args...)
		main()
		return 0
	}
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
// environment, refuses a second instance, and on SIGTERM releases its
// placeholders, removes its socket and exits 0.
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

	c, err := portres.Dial(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(context.Background(), portres.TCP, 36000, 2); err != nil {
		t.Fatal(err)
	}
	d.Cmd.Process.Signal(syscall.SIGTERM)
	if code := d.Wait(); code != 0 {
		t.Fatalf("portresd exit %d after SIGTERM", code)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	for _, p := range []int{36000, 36001} {
		fd, _ := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: p}); err != nil {
			t.Errorf("port %d still held after shutdown: %v", p, err)
		}
		syscall.Close(fd)
	}
	if _, err := c.Show(context.Background()); err == nil {
		t.Error("client still served after shutdown")
	}
	c.Close()
}

func TestBadArguments(t *testing.T) {
	for args, want := range map[string]string{
		"stray":                   "unexpected arguments",
		"--sweep\x1f-1s":          "--sweep must be positive",
		"--socket-mode\x1f0":      "--socket-mode must be",
		"--socket-mode\x1f070000": "--socket-mode must be",
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
