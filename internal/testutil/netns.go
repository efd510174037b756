//go:build linux

// Package testutil holds what the integration tests share: running a
// test binary as root inside its own network namespace, skipping
// privileged tests with a clear reason, and checking for leaked fds.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// EphemeralRange is net.ipv4.ip_local_port_range in every test netns.
const EphemeralRange = "55000 64999"

// envNetNS marks a test process already re-executed in a private netns.
const envNetNS = "PORTRES_TEST_NETNS"

// Main runs the tests of a package. As root it first re-executes the
// test binary under `unshare --net` so that every test, and every process
// a test starts (daemons, clients, foreign binders), lives in a fresh
// network namespace with only lo up: ports and sysctls such as
// ip_local_reserved_ports never touch the host's. Without root the tests
// run in place and privileged ones skip (RequireRoot). The namespace
// also has a private mount namespace, so that what tests mount (a bpffs)
// never shows on the host. A binary started by
// StartHelper runs its helper instead of the tests.
func Main(m interface{ Run() int }) {
	runHelper()
	if os.Geteuid() == 0 && os.Getenv(envNetNS) == "" {
		os.Exit(reexecInNetNS())
	}
	if os.Getenv(envNetNS) != "" {
		// Keep the kernel's automatic port choices (every TCP connect a
		// test makes) away from the fixed ports tests reserve, all below
		// 55000, so one test's lingering connection never sits in
		// another's block.
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte(EphemeralRange), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "testutil: setting the test netns's ephemeral range:", err)
			os.Exit(1)
		}
		if err := loopbackUp(); err != nil {
			fmt.Fprintln(os.Stderr, "testutil: bringing lo up in the test netns:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

func reexecInNetNS() int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testutil:", err)
		return 1
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envNetNS+"=1")
	// A private mount namespace too (Go makes its mounts private): what
	// tests mount, such as a bpffs for pinned guards, goes away with them.
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWNET, Unshareflags: unix.CLONE_NEWNS, Pdeathsig: unix.SIGKILL}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "testutil: re-exec in a new network namespace:", err)
		return 1
	}
	return 0
}

// InNetNS reports whether this process is a test re-executed in its own
// network namespace by Main.
func InNetNS() bool { return os.Getenv(envNetNS) != "" }

// RequireRoot skips t unless the test runs as root in its own network
// namespace (see Main), naming why.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: binds placeholder sockets and writes sysctls inside a private network namespace")
	}
	if !InNetNS() {
		t.Skip("needs a private network namespace: call testutil.Main from TestMain")
	}
}

// OpenFDs counts this process's open file descriptors, leaving out
// epoll instances: the Go runtime and the portres client each make one
// per process on first use, and they hold no port or connection.
func OpenFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == "anon_inode:[eventpoll]" {
			continue
		}
		n++
	}
	return n - 1 // the directory read itself
}

// CheckFDLeak fails t at cleanup if the process holds more fds than when
// it was called. Tests that start goroutines closing fds asynchronously
// should wait for them before cleanup.
func CheckFDLeak(t testing.TB) {
	t.Helper()
	before := OpenFDs(t)
	t.Cleanup(func() {
		// A leaked fd stays; one a background goroutine (a broker's
		// sweeper reading a sysctl or the socket tables) holds for a
		// moment does not: look again for up to a second.
		after := 0
		for i := 0; i < 100; i++ {
			runtime.GC()
			if after = OpenFDs(t); after <= before {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Errorf("fd leak: %d open fds before, %d after", before, after)
	})
}

// loopbackUp sets IFF_UP on lo, as `ip link set lo up` does.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}
