//go:build linux

package testutil

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envHelper names the helper a re-executed test binary should run.
const envHelper = "PORTRES_TEST_HELPER"

// Helpers maps helper names to functions run in a child process; a
// package registers its helpers in init and calls RunHelper from TestMain
// (Main does it).
var Helpers = map[string]func(args []string) int{}

// runHelper runs the helper named in the environment, if any, and exits.
func runHelper() {
	name := os.Getenv(envHelper)
	if name == "" {
		return
	}
	h, ok := Helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "testutil: no helper %q\n", name)
		os.Exit(2)
	}
	var args []string
	if a := os.Getenv(envHelper + "_ARGS"); a != "" {
		args = strings.Split(a, "\x1f")
	}
	os.Exit(h(args))
}

// Process is a helper process: this test binary re-executed to run one
// of Helpers, in the same network namespace.
type Process struct {
	Cmd    *exec.Cmd
	Stdin  io.WriteCloser
	Stdout *bufio.Reader
	t      testing.TB
}

// StartHelper starts the helper name with args and optional extra
// environment. It is killed when the test ends if still running.
func StartHelper(t testing.TB, name string, env []string, args ...string) *Process {
	t.Helper()
	return StartHelperAs(t, nil, name, env, args...)
}

// StartHelperAs is StartHelper running the helper with the credentials
// cred (another uid, gid and groups); nil keeps the test's.
func StartHelperAs(t testing.TB, cred *syscall.Credential, name string, env []string, args ...string) *Process {
	t.Helper()
	var attr *syscall.SysProcAttr
	if cred != nil {
		attr = &syscall.SysProcAttr{Credential: cred}
	}
	return startHelper(t, attr, cred != nil, name, env, args...)
}

// StartHelperAttr is StartHelper with the process attributes attr: another
// uid (attr.Credential) with ambient capabilities (attr.AmbientCaps), for
// example. The helper runs a copy of the test binary others can execute.
func StartHelperAttr(t testing.TB, attr *syscall.SysProcAttr, name string, env []string, args ...string) *Process {
	t.Helper()
	return startHelper(t, attr, true, name, env, args...)
}

// startHelper starts the helper with attr; copy runs a copy of the test
// binary that other users can execute.
func startHelper(t testing.TB, attr *syscall.SysProcAttr, copyExe bool, name string, env []string, args ...string) *Process {
	t.Helper()
	exe := os.Args[0]
	if copyExe {
		// The go tool's build directory is private to root: run a copy.
		exe = filepath.Join(Dir(t), "helper.test")
		data, err := os.ReadFile(os.Args[0])
		if err == nil {
			err = os.WriteFile(exe, data, 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return start(t, attr, exe, append([]string{envHelper + "=" + name, envHelper + "_ARGS=" + strings.Join(args, "\x1f"),
		// A -race binary sleeps 1 s at exit by default; helpers exit often.
		"GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")}, env...), "-test.run=^$")
}

// Start starts program (another program than the test binary, such as
// a C client) with args and the test's environment plus env. It is
// killed when the test ends if still running.
func Start(t testing.TB, program string, env []string, args ...string) *Process {
	t.Helper()
	return start(t, nil, program, env, args...)
}

// start starts program with args, attr and the test's environment plus
// env, its stdin and stdout piped to the Process. It is killed when the
// test ends if still running.
func start(t testing.TB, attr *syscall.SysProcAttr, program string, env []string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(program, args...)
	cmd.SysProcAttr = attr
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{Cmd: cmd, Stdin: stdin, Stdout: bufio.NewReader(out), t: t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return p
}

// Line reads the helper's next output line (without newline), failing the
// test after timeout.
func (p *Process) Line(timeout time.Duration) string {
	p.t.Helper()
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := p.Stdout.ReadString('\n')
		ch <- res{strings.TrimSuffix(s, "\n"), err}
	}()
	select {
	case r := <-ch:
		if r.err != nil && r.s == "" {
			p.t.Fatalf("helper %v: reading output: %v", p.Cmd.Args, r.err)
		}
		return r.s
	case <-time.After(timeout):
		p.t.Fatalf("helper %v: no output within %v", p.Cmd.Args, timeout)
	}
	return ""
}

// Wait waits for the helper to exit and returns its exit code.
func (p *Process) Wait() int {
	p.Stdin.Close()
	err := p.Cmd.Wait()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		p.t.Fatalf("helper %v: %v", p.Cmd.Args, err)
	}
	return 0
}
