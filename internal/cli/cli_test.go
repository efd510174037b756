//go:build linux

package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

func init() {
	testutil.Helpers["bindports"] = helperBindPorts
	testutil.Helpers["hold"] = helperHold
	testutil.Helpers["holdargv"] = helperHoldArgv
	testutil.Helpers["cli"] = func(args []string) int { return Main(args, os.Stdin, os.Stdout, os.Stderr) }
}

// TestAcquireHoldsUntilSignal: in the background of a script (stdin at
// end of file) acquire keeps its block; SIGTERM releases it and exits 0.
func TestAcquireHoldsUntilSignal(t *testing.T) {
	b := testbroker.Start(t, nil)
	p := testutil.StartHelper(t, "cli", nil, "--socket", b.Config.Socket, "acquire", "--proto", "tcp", "--start", "38200", "--count", "1")
	if l := p.Line(10 * time.Second); !strings.HasPrefix(l, "Acquired tcp 38200 (1 port), token 0x") {
		t.Fatalf("acquire printed %q", l)
	}
	p.Stdin.Close() // stdin at end of file, as with `portres acquire ... &` in a script
	time.Sleep(200 * time.Millisecond)
	c := b.Dial(t)
	if infos, _ := c.Show(context.Background()); len(infos) != 1 {
		t.Fatalf("after stdin closed: %+v; want the block still held", infos)
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	if code := p.Wait(); code != 0 {
		t.Errorf("acquire exited %d after SIGTERM, want 0", code)
	}
	if infos, _ := c.Show(context.Background()); len(infos) != 0 {
		t.Errorf("after SIGTERM: %+v; want the block released", infos)
	}
}

// TestCLIRoughEdges: clear messages for bad numbers, singular "port",
// run without a command exits 127, --json errors are JSON, --version.
func TestCLIRoughEdges(t *testing.T) {
	b := testbroker.Start(t, nil)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"acquire", "--proto", "tcp", "--count", "70000"}, 1, `"70000" is not a number of ports (0-65535)`},
		{[]string{"acquire", "--proto", "tcp", "--count", "abc"}, 1, `"abc" is not a number of ports (0-65535)`},
		{[]string{"acquire", "--proto", "tcp", "--start", "-1", "--count", "1"}, 1, `"-1" is not a port (0-65535)`},
		{[]string{"run", "--tcp", "1"}, 127, "no command to run"},
		{[]string{"run", "--tcp", "1", "--", "/nonexistent/cmd"}, 127, "/nonexistent/cmd"},
		{[]string{"--json", "acquire", "--proto", "tcp", "--start", "65535", "--count", "2"}, 1, `{"error":{"op":"acquire","code":10022,"name":"WSAEINVAL","message":`},
	} {
		code, _, errs := run(t, b, c.args...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("portres %v: exit %d, stderr %q; want %d and %q", c.args, code, errs, c.code, c.want)
		}
	}
	if code, out, _ := run(t, b, "persistent", "add", "--proto", "tcp", "--start", "38300", "--count", "1"); code != 0 || !strings.HasPrefix(out, "Persistent tcp 38300 (1 port), token 0x") {
		t.Errorf("persistent add of one port: %d %q", code, out)
	}
	if code, out, _ := run(t, nil, "--version"); code != 0 || !strings.HasPrefix(out, "portres ") {
		t.Errorf("--version: %d %q", code, out)
	}
	if code, out, _ := run(t, b, "dynamicport", "show", "--proto", "tcp", "--json"); code != 0 || !strings.Contains(out, `"proto": "tcp",
    "start": `) || strings.Index(out, `"count"`) > strings.Index(out, `"end"`) {
		t.Errorf("dynamicport show --json keys out of the documented order: %q", out)
	}
	if code, out, _ := run(t, nil, "__complete", "acquire", "--proto", ""); code != 0 || !strings.Contains(out, "tcp\nudp\n") {
		t.Errorf("--proto completion: %d %q", code, out)
	}
}

// holderArgv0 marks helperHoldArgv re-executed with its chosen argv.
const holderArgv0 = "portres-test-holder"

// helperHoldArgv is helperHold in a process whose command line is
// holderArgv0 followed by the helper's args: it re-executes itself (same
// pid) with that argv first.
func helperHoldArgv(args []string) int {
	if len(os.Args) == 0 || os.Args[0] != holderArgv0 {
		exe, err := os.Executable()
		if err == nil {
			err = syscall.Exec(exe, append([]string{holderArgv0}, args...), os.Environ())
		}
		fmt.Println("error", err)
		return 1
	}
	return helperHold(nil)
}

// helperBindPorts is the command of `portres run`: it binds every port
// it was handed with a plain bind() and prints "bound P".
func helperBindPorts([]string) int {
	for _, v := range []struct {
		env string
		typ int
	}{{"PORTRES_TCP_PORTS", unix.SOCK_STREAM}, {"PORTRES_UDP_PORTS", unix.SOCK_DGRAM}} {
		for _, p := range strings.Split(os.Getenv(v.env), ",") {
			if p == "" {
				continue
			}
			port, _ := strconv.Atoi(p)
			fd, _ := unix.Socket(unix.AF_INET6, v.typ, 0)
			if err := unix.Bind(fd, &unix.SockaddrInet6{Port: port}); err != nil {
				fmt.Println("error", p, err)
				return 1
			}
			fmt.Println("bound", p)
		}
	}
	return 0
}

// helperHold acquires tcp 39000+3 through the library and holds it until
// stdin closes.
func helperHold([]string) int {
	c, err := portres.Dial(context.Background(), "")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	if _, err := c.Acquire(context.Background(), portres.TCP, 39000, 3); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// run executes the CLI in-process against b.
func run(t *testing.T, b *testbroker.Broker, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	if b != nil {
		args = append([]string{"--socket", b.Config.Socket}, args...)
	}
	code = Main(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"acquire", "--help"}, {"run", "--help"}, {"show", "--help"}, {"top", "--help"},
		{"persistent", "--help"}, {"persistent", "add", "--help"}, {"persistent", "delete", "--help"},
		{"persistent", "lookup", "--help"}, {"persistent", "show", "--help"},
		{"dynamicport", "--help"}, {"dynamicport", "show", "--help"}, {"dynamicport", "set", "--help"}} {
		code, out, errs := run(t, nil, args...)
		if code != 0 || !strings.Contains(out, "Usage:") || errs != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
	if code, _, errs := run(t, nil, "acquire", "--count", "1"); code != 1 || !strings.Contains(errs, "--proto is required") {
		t.Errorf("acquire without --proto: exit %d, %q", code, errs)
	}
	if code, _, errs := run(t, nil, "nonsense"); code != 1 || !strings.Contains(errs, "unknown command") {
		t.Errorf("unknown command: exit %d, %q", code, errs)
	}
	// Refused before any broker is asked (none is given here).
	if code, _, errs := run(t, nil, "show", "--fleet", "--watch"); code != 1 || !strings.Contains(errs, "does not follow it") {
		t.Errorf("show --fleet --watch: exit %d, %q", code, errs)
	}
}

func TestNoBroker(t *testing.T) {
	code, _, errs := run(t, nil, "--socket", "/nonexistent/portres.sock", "show")
	if code != 1 || !strings.Contains(errs, "WSAENETDOWN (10050)") || !strings.Contains(errs, "portresd running") {
		t.Errorf("show without broker: exit %d, %q", code, errs)
	}
}

// TestAcquireHoldsUntilStdinCloses: acquire --json prints the block,
// holds it while stdin is open, releases it at EOF.
func TestAcquireHoldsUntilStdinCloses(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	stdinR, stdinW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan int)
	go func() {
		done <- Main([]string{"--socket", b.Config.Socket, "acquire", "--proto", "udp", "--start", "38000", "--count", "4", "--json", "--until-stdin-closes"}, stdinR, outW, io.Discard)
		outW.Close()
	}()
	var got reservationJSON
	if err := json.NewDecoder(outR).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Proto != "udp" || got.Start != 38000 || got.End != 38003 || got.Count != 4 || !strings.HasPrefix(got.Token, "0x") {
		t.Fatalf("acquire printed %+v", got)
	}
	infos, err := c.Show(context.Background())
	if err != nil || len(infos) != 1 || infos[0].Start != 38000 {
		t.Fatalf("while held: %+v %v", infos, err)
	}
	stdinW.Close()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("acquire did not return after stdin closed")
	}
	if infos, _ := c.Show(context.Background()); len(infos) != 0 {
		t.Fatalf("after release: %+v", infos)
	}
	code, _, errs := run(t, b, "acquire", "--proto", "tcp", "--start", "65535", "--count", "2")
	if code != 1 || !strings.Contains(errs, "WSAEINVAL (10022)") {
		t.Errorf("bad block: exit %d, %q", code, errs)
	}
}

// TestRunHandsPortsToCommand: the command gets the ports in its
// environment, binds them with plain bind(), they are excluded from
// automatic assignment meanwhile, and run exits with its status.
func TestRunHandsPortsToCommand(t *testing.T) {
	b := testbroker.Start(t, nil)
	t.Setenv("PORTRES_TEST_HELPER", "bindports")
	code, out, errs := run(t, b, "run", "--tcp", "2", "--udp", "1", "--", os.Args[0], "-test.run=^$")
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errs)
	}
	if n := strings.Count(out, "bound "); n != 3 {
		t.Fatalf("command bound %d ports, want 3: %s", n, out)
	}
	os.Unsetenv("PORTRES_TEST_HELPER")
	code, out, _ = run(t, b, "run", "--tcp", "3", "--", "sh", "-c", `echo "$PORTRES_TCP_PORTS"; cat /proc/sys/net/ipv4/ip_local_reserved_ports; exit 7`)
	if code != 7 {
		t.Fatalf("run exit %d, want the command's 7", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	ports := strings.Split(lines[0], ",")
	if len(ports) != 3 {
		t.Fatalf("PORTRES_TCP_PORTS = %q", lines[0])
	}
	if want := ports[0] + "-" + ports[2]; len(lines) < 2 || !strings.Contains(lines[1], want) {
		t.Errorf("ip_local_reserved_ports during run = %q, want it to hold %s", lines[1:], want)
	}
	reserved, _ := os.ReadFile(testutil.ReservedPortsPath)
	if strings.TrimSpace(string(reserved)) != "" {
		t.Errorf("ip_local_reserved_ports after run = %q, want empty", reserved)
	}
	if code, _, errs := run(t, b, "run", "--", "true"); code != 1 || !strings.Contains(errs, "nothing to reserve") {
		t.Errorf("run without ports: %d %q", code, errs)
	}
}

// TestRunForwardsSignals: SIGTERM to portres run reaches the command,
// whose status becomes run's.
func TestRunForwardsSignals(t *testing.T) {
	b := testbroker.Start(t, nil)
	outR, outW := io.Pipe()
	done := make(chan int)
	go func() {
		done <- Main([]string{"--socket", b.Config.Socket, "run", "--udp", "1", "--", "sh", "-c",
			`trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 0.05; done`}, strings.NewReader(""), outW, io.Discard)
		outW.Close()
	}()
	lines := bufio.NewReader(outR)
	if l, _ := lines.ReadString('\n'); l != "ready\n" {
		t.Fatalf("command said %q", l)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	go io.Copy(io.Discard, lines)
	select {
	case code := <-done:
		if code != 42 {
			t.Fatalf("exit %d, want 42 from the trapped TERM", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not end after SIGTERM")
	}
}

// TestShow: the table and JSON list owner, kind and bound ports, and
// never another process's token.
func TestShow(t *testing.T) {
	b := testbroker.Start(t, nil)
	code, out, _ := run(t, b, "show")
	if code != 0 || out != "No reservations.\n" {
		t.Fatalf("empty show: %d %q", code, out)
	}
	holder := testutil.StartHelper(t, "hold", []string{"PORTRES_SOCKET=" + b.Config.Socket})
	if l := holder.Line(5 * time.Second); l != "ready" {
		t.Fatal(l)
	}
	c := b.Dial(t)
	r, err := c.Acquire(context.Background(), portres.UDP, 39100, 2)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := r.ListenPacket(context.Background(), "udp", ":39101")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	code, out, _ = run(t, b, "show")
	if code != 0 || !strings.Contains(out, "Protocol") || !strings.Contains(out, fmt.Sprintf("pid %d", holder.Cmd.Process.Pid)) ||
		!regexpMatch(out, `udp\s+39100\s+39101\s+2\s+runtime\s+pid \d+ .*\s39101\n`) {
		t.Fatalf("show:\n%s", out)
	}
	code, out, _ = run(t, b, "show", "--json")
	var infos []infoJSON
	if err := json.Unmarshal([]byte(out), &infos); code != 0 || err != nil || len(infos) != 2 {
		t.Fatalf("show --json: %d %v %s", code, err, out)
	}
	for _, i := range infos {
		switch i.Proto {
		case "tcp":
			if i.Token != "" || i.PID != int32(holder.Cmd.Process.Pid) || i.Kind != "runtime" || len(i.Bound) != 0 {
				t.Errorf("other process's entry: %+v", i)
			}
		case "udp":
			if i.Token != fmt.Sprintf("%#016x", r.Token()) || len(i.Bound) != 1 || i.Bound[0] != 39101 {
				t.Errorf("own entry: %+v", i)
			}
		}
	}
	holder.Wait()
}

// TestPersistentAndDynamicPort drives the persistent and dynamicport
// verbs, text and JSON, success and Win32 errors.
func TestPersistentAndDynamicPort(t *testing.T) {
	b := testbroker.Start(t, nil)
	code, out, _ := run(t, b, "persistent", "add", "--proto", "tcp", "--start", "37000", "--count", "5", "--json")
	var added reservationJSON
	if err := json.Unmarshal([]byte(out), &added); code != 0 || err != nil || added.Start != 37000 || added.Token == "" {
		t.Fatalf("add: %d %v %s", code, err, out)
	}
	code, out, _ = run(t, b, "persistent", "lookup", "--proto", "tcp", "--start", "37000", "--count", "5")
	if code != 0 || !strings.Contains(out, added.Token) {
		t.Errorf("lookup: %d %q, want token %s", code, out, added.Token)
	}
	code, out, _ = run(t, b, "persistent", "show", "--json")
	if code != 0 || !strings.Contains(out, `"kind": "persistent"`) {
		t.Errorf("persistent show: %d %s", code, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"persistent", "add", "--proto", "tcp", "--start", "37002", "--count", "5"}, "ERROR_SHARING_VIOLATION (32)"},
		{[]string{"persistent", "add", "--proto", "udp", "--start", "0", "--count", "5"}, "ERROR_INVALID_PARAMETER (87)"},
		{[]string{"persistent", "lookup", "--proto", "tcp", "--start", "37000", "--count", "4"}, "ERROR_NOT_FOUND (1168)"},
		{[]string{"persistent", "delete", "--proto", "tcp", "--start", "37001", "--count", "5"}, "ERROR_NOT_FOUND (1168)"},
		{[]string{"dynamicport", "set", "--proto", "udp", "--start", "1000", "--num", "300"}, "ERROR_INVALID_PARAMETER (87)"},
		{[]string{"dynamicport", "set", "--proto", "udp", "--start", "40000", "--num", "100"}, "ERROR_INVALID_PARAMETER (87)"},
	} {
		if code, _, errs := run(t, b, tc.args...); code != 1 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, %q, want %s", tc.args, code, errs, tc.want)
		}
	}
	code, out, _ = run(t, b, "persistent", "delete", "--proto", "tcp", "--start", "37000", "--count", "5")
	if code != 0 || out != "Deleted persistent tcp 37000-37004.\n" {
		t.Errorf("delete: %d %q", code, out)
	}
	code, out, _ = run(t, b, "dynamicport", "set", "--proto", "udp", "--start", "40000", "--num", "1000")
	if code != 0 || !strings.Contains(out, "40000-40999") {
		t.Errorf("dynamicport set: %d %q", code, out)
	}
	code, out, _ = run(t, b, "dynamicport", "show", "--proto", "udp")
	if code != 0 || !strings.Contains(out, "Start Port      : 40000") || !strings.Contains(out, "Number of Ports : 1000") {
		t.Errorf("dynamicport show: %d %q", code, out)
	}
	code, out, _ = run(t, b, "dynamicport", "show", "--json")
	var ranges []map[string]any
	if err := json.Unmarshal([]byte(out), &ranges); code != 0 || err != nil || len(ranges) != 2 || ranges[1]["start"] != 40000.0 {
		t.Errorf("dynamicport show --json: %d %v %s", code, err, out)
	}
}

// hostileArgv is a command line meant to take over the terminal of
// whoever runs portres show: clear the screen, set the title, forge a
// persistent row, reverse text, open a C1 control sequence.
var hostileArgv = []string{"\x1b[2J\x1b]0;pwned\x07", "x\ntcp\t1\t2\t2\tpersistent\tuid 0\t-", "\u202egnp.exe", "\u009b31m"}

// TestShowEscapesCommand: another process's command line holding escape
// sequences, a newline, tabs, a bidi override and a C1 control reaches
// show's table escaped, on one row, and its JSON exactly; a broker error
// quoting it reaches stderr escaped.
func TestShowEscapesCommand(t *testing.T) {
	b := testbroker.Start(t, nil)
	holder := testutil.StartHelper(t, "holdargv", []string{"PORTRES_SOCKET=" + b.Config.Socket}, hostileArgv...)
	if l := holder.Line(5 * time.Second); l != "ready" {
		t.Fatal(l)
	}
	want := strings.Join(append([]string{holderArgv0}, hostileArgv...), " ")
	if len(want) > 117 {
		t.Fatalf("command line of %d bytes would be shortened by the broker", len(want))
	}
	// rawControl finds what a terminal would act on.
	rawControl := func(s string) string {
		for _, r := range s {
			if r != '\n' && (r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || unicode.Is(unicode.Cf, r)) {
				return fmt.Sprintf("%U", r)
			}
		}
		return ""
	}

	code, out, errs := run(t, b, "show")
	if code != 0 {
		t.Fatalf("show: exit %d, %s", code, errs)
	}
	if c := rawControl(out); c != "" {
		t.Errorf("show printed a raw %s:\n%q", c, out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "tcp ") || strings.Contains(out, "\npersistent") {
		t.Errorf("show printed %d lines, want the header and one row:\n%s", len(lines), out)
	}
	if !strings.Contains(out, fmt.Sprintf("pid %d \"portres-test-holder \\x1b[2J\\x1b]0;pwned\\a x\\ntc\\u2026\"", holder.Cmd.Process.Pid)) {
		t.Errorf("show does not print the command line quoted and cut to %d characters:\n%s", commandColumn, out)
	}
	code, out, _ = run(t, b, "show", "--wide")
	if c := rawControl(out); c != "" || code != 0 {
		t.Errorf("show --wide printed a raw %s (exit %d):\n%q", c, code, out)
	}
	if !strings.Contains(out, fmt.Sprintf("pid %d %s", holder.Cmd.Process.Pid, strconv.QuoteToASCII(want))) ||
		!strings.Contains(out, `\x1b[2J\x1b]0;pwned\a x\ntcp\t1\t2`) || !strings.Contains(out, `\u202egnp.exe \u009b31m`) {
		t.Errorf("show --wide does not print the whole command line quoted %s:\n%s", strconv.QuoteToASCII(want), out)
	}

	code, out, errs = run(t, b, "show", "--json")
	if code != 0 {
		t.Fatalf("show --json: exit %d, %s", code, errs)
	}
	if c := rawControl(out); c != "" {
		t.Errorf("show --json printed a raw %s:\n%q", c, out)
	}
	var infos []infoJSON
	if err := json.Unmarshal([]byte(out), &infos); err != nil || len(infos) != 1 || infos[0].Command != want {
		t.Errorf("show --json: %v, %+v, want the command %q exactly", err, infos, want)
	}

	// The overlap error names the owner by its command line, escaped (by
	// the broker, or else by the CLI: the two spell BEL differently).
	code, _, errs = run(t, b, "acquire", "--proto", "tcp", "--start", "39001", "--count", "1")
	if code != 1 || !strings.Contains(errs, "WSAEADDRINUSE") ||
		!strings.Contains(errs, fmt.Sprintf(`pid %d (portres-test-holder \x1b[2J\x1b]0;pwned\`, holder.Cmd.Process.Pid)) ||
		!strings.Contains(errs, ` x\ntcp\t1\t2\t2\tpersistent\tuid 0\t- \u202egnp.exe \u009b31m)`) {
		t.Errorf("overlapping acquire: exit %d, stderr %q, want WSAEADDRINUSE naming the escaped %q", code, errs, want)
	}
	if c := rawControl(errs); c != "" || strings.Count(errs, "\n") != 1 {
		t.Errorf("the error printed a raw %s or several lines: %q", c, errs)
	}
	holder.Wait()
}

// syncBuffer is a bytes.Buffer safe for the goroutines of exec.Cmd.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestRunWarnsWhenNotExcluded: with a broker that cannot write
// ip_local_reserved_ports, run warns once on stderr, naming the blocks,
// before CMD starts; with one that can, it says nothing.
func TestRunWarnsWhenNotExcluded(t *testing.T) {
	b := testbroker.Start(t, nil)
	code, _, errs := run(t, b, "run", "--tcp", "2", "--udp", "1", "--", "true")
	if code != 0 || errs != "" {
		t.Errorf("run with kernel exclusion: exit %d, stderr %q, want no warning", code, errs)
	}

	b = testbroker.Start(t, func(c *broker.Config) { c.ReservedPorts = "-" })
	var stdout, stderr, both syncBuffer
	// CMD's stdout and run's stderr also go to one stream, where the
	// warning must come first.
	code = Main([]string{"--socket", b.Config.Socket, "run", "--tcp", "5", "--udp", "1", "--", "sh", "-c",
		`echo "ports $PORTRES_TCP_PORTS $PORTRES_UDP_PORTS"`}, strings.NewReader(""),
		io.MultiWriter(&stdout, &both), io.MultiWriter(&stderr, &both))
	if code != 0 {
		t.Fatalf("run without kernel exclusion: exit %d, %s", code, stderr.String())
	}
	var tcp, udp string
	if _, err := fmt.Sscanf(stdout.String(), "ports %s %s", &tcp, &udp); err != nil {
		t.Fatalf("command printed %q: %v", stdout.String(), err)
	}
	tp := strings.Split(tcp, ",")
	want := fmt.Sprintf("portres run: warning: tcp ports %s-%s and udp port %s are not excluded from automatic assignment "+
		"(the broker cannot write net.ipv4.ip_local_reserved_ports): another program's bind(0) or connect() may take them before CMD binds them\n",
		tp[0], tp[len(tp)-1], udp)
	if errs := stderr.String(); errs != want {
		t.Errorf("stderr = %q, want the one warning %q", errs, want)
	}
	if !strings.HasPrefix(both.String(), want) {
		t.Errorf("run's stderr and CMD's stdout = %q, want the warning first", both.String())
	}

	// One port only: singular.
	code, _, errs = run(t, b, "run", "--udp", "1", "--", "true")
	if code != 0 || !regexpMatch(errs, `^portres run: warning: udp port \d+ is not excluded .* may take it before CMD binds it\n$`) {
		t.Errorf("run --udp 1: exit %d, stderr %q", code, errs)
	}
}

// restartBroker starts another in-process broker with cfg, after the
// previous one on the same socket and state was closed, as a restarted
// portresd; it is closed when the test ends.
func restartBroker(t *testing.T, cfg broker.Config) *broker.Broker {
	t.Helper()
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Serve(context.Background())
	}()
	t.Cleanup(func() {
		b.Close()
		<-done
	})
	return b
}

// waitFor polls s until it contains want, for up to 10 s.
func waitFor(t *testing.T, s *syncBuffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(s.String(), want); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %q; got %q", want, s.String())
		}
	}
}

// TestAcquireAcrossRestart: portres acquire keeps its block across a
// restart of the broker and says so on stderr; when the restarted broker
// does not give the block back (its runtime state is gone), acquire says
// that and exits 1.
func TestAcquireAcrossRestart(t *testing.T) {
	b := testbroker.Start(t, nil)
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	outR, outW := io.Pipe()
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Main([]string{"--socket", b.Config.Socket, "acquire", "--proto", "tcp", "--start", "38100", "--count", "2", "--json"}, stdinR, outW, &stderr)
		outW.Close()
	}()
	var got reservationJSON
	if err := json.NewDecoder(outR).Decode(&got); err != nil {
		t.Fatal(err)
	}
	b.Close() // a restart: the runtime state stays for the next broker
	restartBroker(t, b.Config).Close()
	b2 := restartBroker(t, b.Config)
	_ = b2
	waitFor(t, &stderr, "portres acquire: the broker restarted; tcp 38100-38101 is still reserved\n")
	c, err := portres.Dial(context.Background(), b.Config.Socket)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := c.Show(context.Background())
	c.Close()
	if err != nil || len(infos) != 1 || infos[0].Start != 38100 || infos[0].Restored {
		t.Fatalf("after the restart: %+v %v; want the block, reclaimed", infos, err)
	}

	// A broker that lost its runtime state cannot give it back.
	b2.Close()
	if err := os.Remove(b.Config.Socket + ".runtime"); err != nil {
		t.Fatal(err)
	}
	restartBroker(t, b.Config)
	select {
	case code := <-done:
		if code != 1 {
			t.Errorf("acquire exited %d after losing its block, want 1", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("acquire did not stop after losing its block")
	}
	if !strings.Contains(stderr.String(), "portres acquire: the broker restarted; tcp 38100-38101 is no longer reserved: ") {
		t.Errorf("stderr %q does not say the block was lost", stderr.String())
	}
}

// TestShowFilterAndForeign: --proto keeps one protocol's rows; ranges of
// the kernel list that portres did not add show as such.
func TestShowFilterAndForeign(t *testing.T) {
	testutil.RequireRoot(t)
	if err := os.WriteFile(testutil.ReservedPortsPath, []byte("1234,2000-2010"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	ctx := context.Background()
	if _, err := c.Acquire(ctx, portres.TCP, 38400, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(ctx, portres.UDP, 38500, 1); err != nil {
		t.Fatal(err)
	}
	code, out, _ := run(t, b, "show", "--proto", "udp")
	if code != 0 || !strings.Contains(out, "udp       38500") || strings.Contains(out, "38400") {
		t.Errorf("show --proto udp: %d\n%s", code, out)
	}
	code, out, _ = run(t, b, "show")
	for _, want := range []string{"tcp+udp   1234   1234   1      excluded", "tcp+udp   2000   2010   11     excluded  not portres"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("show does not list %q:\n%s", want, out)
		}
	}
}

func init() { testutil.Helpers["activated-server"] = helperActivatedServer }

// helperActivatedServer is a socket-activated server built on
// go-systemd's activation package, as real ones are: it takes the TCP
// listeners passed with LISTEN_FDS and answers each connection with the
// listener's name and port, and prints "serving NAME:PORT ...".
func helperActivatedServer([]string) int {
	lns, err := activation.ListenersWithNames()
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	var desc []string
	for name, ls := range lns {
		for _, ln := range ls {
			desc = append(desc, fmt.Sprintf("%s:%d", name, ln.Addr().(*net.TCPAddr).Port))
			go func(ln net.Listener, name string) {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					fmt.Fprintf(c, "%s %s\n", name, ln.Addr())
					c.Close()
				}
			}(ln, name)
		}
	}
	sort.Strings(desc)
	fmt.Println("serving " + strings.Join(desc, " "))
	select {}
}

// TestRunSocketActivation: run --listen passes sockets bound through the
// broker to a socket-activated server, which serves on them; they are
// the reservation's, shown bound, and released when the server ends.
func TestRunSocketActivation(t *testing.T) {
	b := testbroker.Start(t, nil)
	p := testutil.StartHelper(t, "cli", []string{"PORTRES_TEST_HELPER_NEXT=activated-server"},
		"--socket", b.Config.Socket, "run", "--listen", "tcp:2", "--", "sh", "-c", `PORTRES_TEST_HELPER=$PORTRES_TEST_HELPER_NEXT exec "$0"`, os.Args[0])
	line := p.Line(10 * time.Second)
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "serving" {
		t.Fatalf("server printed %q", line)
	}
	c := b.Dial(t)
	infos, err := c.Show(context.Background())
	if err != nil || len(infos) != 1 || infos[0].Count != 2 || len(infos[0].Bound) != 2 || infos[0].Delegated {
		t.Fatalf("show while serving: %+v %v; want one runtime block of 2 ports, both bound", infos, err)
	}
	for _, nameport := range f[1:] {
		name, port, _ := strings.Cut(nameport, ":")
		if name != "tcp-"+port {
			t.Errorf("LISTEN_FDNAMES gave %q for port %s", name, port)
		}
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 2*time.Second)
		if err != nil {
			t.Fatalf("dial the activated server on %s: %v", port, err)
		}
		reply, _ := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if !strings.HasPrefix(reply, name+" ") {
			t.Errorf("server on %s answered %q", port, reply)
		}
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	p.Wait()
	waitGone(t, c)
}

// TestRunSupervises: kill -TERM on run reaches the whole of CMD's group
// (the shell and the server it started); a server CMD leaves behind keeps
// the reservation until it exits too.
func TestRunSupervises(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	// The README's case: sh runs a server; TERM to run must not leave the
	// server listening on a released port.
	p := testutil.StartHelper(t, "cli", nil, "--socket", b.Config.Socket, "run", "--tcp", "1", "--",
		"sh", "-c", `/usr/bin/python3 -m http.server --bind 127.0.0.1 $PORTRES_TCP_PORTS >/dev/null 2>&1 & echo $PORTRES_TCP_PORTS; wait`)
	port := strings.TrimSpace(p.Line(10 * time.Second))
	waitListening(t, port)
	p.Cmd.Process.Signal(syscall.SIGTERM)
	if code := p.Wait(); code != 128+int(syscall.SIGTERM) && code != 143 {
		t.Logf("run exited %d", code)
	}
	if conn, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second); err == nil {
		conn.Close()
		t.Errorf("the server still listens on %s after TERM to run", port)
	}
	waitGone(t, c)

	// CMD exits at once, leaving the server: run keeps the port until
	// the server is gone as well.
	p = testutil.StartHelper(t, "cli", nil, "--socket", b.Config.Socket, "run", "--tcp", "1", "--",
		"sh", "-c", `/usr/bin/python3 -m http.server --bind 127.0.0.1 $PORTRES_TCP_PORTS >/dev/null 2>&1 & echo $PORTRES_TCP_PORTS $!`)
	var pyPID int
	if _, err := fmt.Sscan(p.Line(10*time.Second), &port, &pyPID); err != nil {
		t.Fatal(err)
	}
	waitListening(t, port)
	time.Sleep(200 * time.Millisecond)
	if infos, _ := c.Show(context.Background()); len(infos) != 1 {
		t.Fatalf("CMD exited, its server runs: show %+v; want the port still reserved", infos)
	}
	if p.Cmd.ProcessState != nil {
		t.Fatal("run exited while CMD's server runs")
	}
	syscall.Kill(pyPID, syscall.SIGTERM)
	if code := p.Wait(); code != 0 {
		t.Errorf("run exited %d, want CMD's own 0", code)
	}
	waitGone(t, c)
}

// waitListening waits until something listens on 127.0.0.1:port.
func waitListening(t *testing.T, port string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second); err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s", port)
		}
	}
}

// waitGone waits until the broker holds no reservation.
func waitGone(t *testing.T, c *portres.Client) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if infos, err := c.Show(context.Background()); err == nil && len(infos) == 0 {
			return
		}
		if time.Now().After(deadline) {
			infos, _ := c.Show(context.Background())
			t.Fatalf("reservations left: %+v", infos)
		}
	}
}

// TestRunCtrlCOnce: on a terminal, Ctrl-C reaches CMD once: run puts
// CMD's group in the terminal's foreground instead of passing SIGINT on
// itself.
func TestRunCtrlCOnce(t *testing.T) {
	b := testbroker.Start(t, nil)
	ptmx, pts := openPTY(t, nil)
	log := filepath.Join(t.TempDir(), "ints")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PORTRES_TEST_HELPER=cli", "PORTRES_TEST_HELPER_ARGS="+strings.Join([]string{
		"--socket", b.Config.Socket, "run", "--tcp", "1", "--", "sh", "-c",
		`trap 'echo INT >> ` + log + `; exit 0' INT; echo ready > ` + log + `.ready; while :; do sleep 0.05; done`}, "\x1f"))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, ptmx)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(log + ".ready"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("CMD did not start")
		}
	}
	ptmx.Write([]byte{0x03}) // Ctrl-C
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("run did not end after Ctrl-C")
	}
	got, _ := os.ReadFile(log)
	if string(got) != "INT\n" {
		t.Errorf("CMD saw %q, want SIGINT once", got)
	}
}

// openPTY opens a pseudo-terminal of size ws (nil: the default), both
// ends closed when the test ends; it skips the test if there is none.
func openPTY(t *testing.T, ws *unix.Winsize) (ptmx, pts *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	if ws != nil {
		if err := unix.IoctlSetWinsize(int(ptmx.Fd()), unix.TIOCSWINSZ, ws); err != nil {
			t.Fatal(err)
		}
	}
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pts.Close() })
	return ptmx, pts
}

// TestPersistentOverWinsock runs persistent add, lookup and delete the way
// they run on Windows, through the winsock package's iphlpapi functions
// (here backed by portresd): the same output, text and JSON, and the
// Win32 codes of the functions as errors naming the block.
func TestPersistentOverWinsock(t *testing.T) {
	b := testbroker.Start(t, nil)
	openPersistent = openWinsockPersistent
	t.Cleanup(func() { openPersistent = openBrokerPersistent })
	code, out, errs := run(t, b, "persistent", "add", "--proto", "udp", "--start", "37500", "--count", "4")
	if code != 0 || !strings.HasPrefix(out, "Persistent udp 37500-37503 (4 ports), token 0x") {
		t.Fatalf("add: %d %q %q", code, out, errs)
	}
	token := strings.TrimSpace(out[strings.LastIndex(out, " "):])
	infos, err := b.Dial(t).Show(context.Background())
	if err != nil || len(infos) != 1 || infos[0].Kind != portres.Persistent || fmt.Sprintf("%#016x", infos[0].Token) != token {
		t.Fatalf("the broker lists %+v, %v; want the persistent block with token %s", infos, err, token)
	}
	code, out, _ = run(t, b, "persistent", "lookup", "--proto", "udp", "--start", "37500", "--count", "4", "--json")
	var r reservationJSON
	if err := json.Unmarshal([]byte(out), &r); code != 0 || err != nil || r != (reservationJSON{"udp", 37500, 37503, 4, token}) {
		t.Errorf("lookup --json: %d %v %s", code, err, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"persistent", "add", "--proto", "udp", "--start", "37502", "--count", "4"}, "portres: persistent create udp ports 37502-37505: ERROR_SHARING_VIOLATION (32)"},
		{[]string{"persistent", "lookup", "--proto", "tcp", "--start", "37500", "--count", "4"}, "portres: persistent lookup tcp ports 37500-37503: ERROR_NOT_FOUND (1168)"},
		{[]string{"persistent", "delete", "--proto", "udp", "--start", "37500", "--count", "3"}, "portres: persistent delete udp ports 37500-37502: ERROR_NOT_FOUND (1168)"},
		{[]string{"persistent", "add", "--proto", "tcp", "--start", "0", "--count", "4"}, "portres: persistent create tcp ports 0-3: ERROR_INVALID_PARAMETER (87)"},
	} {
		if code, _, errs := run(t, b, tc.args...); code != 1 || !strings.HasPrefix(errs, tc.want) {
			t.Errorf("%v: exit %d, %q; want %q", tc.args, code, errs, tc.want)
		}
	}
	if code, _, errs := run(t, b, "--json", "persistent", "lookup", "--proto", "tcp", "--start", "37500", "--count", "4"); code != 1 ||
		!strings.Contains(errs, `{"error":{"op":"persistent lookup","code":1168,"name":"ERROR_NOT_FOUND"`) {
		t.Errorf("--json error: %d %q", code, errs)
	}
	code, out, _ = run(t, b, "persistent", "delete", "--proto", "udp", "--start", "37500", "--count", "4")
	if code != 0 || out != "Deleted persistent udp 37500-37503.\n" {
		t.Errorf("delete: %d %q", code, out)
	}
	if infos, _ := b.Dial(t).Show(context.Background()); len(infos) != 0 {
		t.Errorf("after delete the broker lists %+v", infos)
	}
}
