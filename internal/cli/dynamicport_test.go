//go:build linux

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

func init() {
	// The CLI with its errors on stdout, for a helper whose output the
	// test reads.
	testutil.Helpers["cli-stdout"] = func(args []string) int { return Main(args, os.Stdin, os.Stdout, os.Stdout) }
}

const (
	portRangeSysctl = "/proc/sys/net/ipv4/ip_local_port_range"
	privStartSysctl = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
)

// keepSysctl puts path back as it is now when the test ends: the test
// netns is shared by the package's tests.
func keepSysctl(t *testing.T, path string) {
	t.Helper()
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(path, old, 0o644); err != nil {
			t.Errorf("restoring %s: %v", path, err)
		}
	})
}

func readSysctl(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

// TestDynamicPortSetSystem: dynamicport set --system sets both
// protocols' portres ranges and net.ipv4.ip_local_port_range in the
// broker's network namespace (this test's private one) and reports what
// it replaced; wildcard blocks and the kernel's own bind(0) land in the
// new range. --proto is refused with it, a range the kernel refuses
// changes nothing, and only admins may. Without --system the sysctl is
// left alone.
func TestDynamicPortSetSystem(t *testing.T) {
	testutil.RequireRoot(t) // before keepSysctl: only root in the test netns may write them back
	keepSysctl(t, portRangeSysctl)
	keepSysctl(t, privStartSysctl)
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	ctx := context.Background()
	before := readSysctl(t, portRangeSysctl)

	// The default: portres only.
	if code, _, errs := run(t, b, "dynamicport", "set", "--proto", "udp", "--start", "30000", "--num", "500"); code != 0 {
		t.Fatalf("dynamicport set --proto udp: exit %d, %s", code, errs)
	}
	if got := readSysctl(t, portRangeSysctl); got != before {
		t.Fatalf("dynamicport set without --system changed ip_local_port_range: %q, was %q", got, before)
	}
	tcpLo, tcpN, _ := c.DynamicPortRange(ctx, portres.TCP)

	code, out, errs := run(t, b, "dynamicport", "set", "--system", "--start", "40000", "--num", "1000")
	if code != 0 {
		t.Fatalf("dynamicport set --system: exit %d, %s", code, errs)
	}
	wantOut := "Dynamic tcp and udp port range set to 40000-40999 (1000 ports); it was tcp " +
		rangeText(tcpLo, tcpN) + ", udp 30000-30499.\nnet.ipv4.ip_local_port_range set to 40000 40999; it was " + before + ".\n"
	if out != wantOut {
		t.Errorf("output:\n%s\nwant:\n%s", out, wantOut)
	}
	if got := readSysctl(t, portRangeSysctl); got != "40000 40999" {
		t.Errorf("ip_local_port_range after --system: %q, want 40000 40999", got)
	}
	code, out, _ = run(t, b, "dynamicport", "show", "--json")
	var ranges []rangeJSON
	if err := json.Unmarshal([]byte(out), &ranges); code != 0 || err != nil || len(ranges) != 2 {
		t.Fatalf("dynamicport show --json: %d %v %s", code, err, out)
	}
	for _, r := range ranges {
		if r.Start != 40000 || r.Count != 1000 || r.End != 40999 {
			t.Errorf("dynamicport show: %+v, want 40000+1000", r)
		}
	}
	for _, p := range []portres.Proto{portres.TCP, portres.UDP} {
		r, err := c.Acquire(ctx, p, 0, 5)
		if err != nil {
			t.Fatal(err)
		}
		if r.Start() < 40000 || r.End() > 40999 {
			t.Errorf("wildcard %s block %v outside 40000-40999", p, r)
		}
	}
	// The kernel's automatic assignment follows the sysctl.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if sa, _ := unix.Getsockname(fd); sa.(*unix.SockaddrInet4).Port < 40000 || sa.(*unix.SockaddrInet4).Port > 40999 {
		t.Errorf("bind(0) took port %d, outside the new ephemeral range", sa.(*unix.SockaddrInet4).Port)
	}

	// --json, and the old ranges of the second change.
	code, out, errs = run(t, b, "dynamicport", "set", "--system", "--start", "45000", "--num", "500", "--json")
	var js systemJSON
	if err := json.Unmarshal([]byte(out), &js); code != 0 || err != nil {
		t.Fatalf("--system --json: %d %v %s %s", code, err, out, errs)
	}
	if js.Start != 45000 || js.Count != 500 || js.End != 45499 || len(js.Protos) != 2 || len(js.Old) != 2 ||
		js.Old[0] != (rangeJSON{"tcp", 40000, 1000, 40999}) || js.Old[1] != (rangeJSON{"udp", 40000, 1000, 40999}) ||
		js.Sysctl != (sysctlJSON{45000, 45499, 40000, 40999}) {
		t.Errorf("--system --json: %+v", js)
	}
	if !strings.Contains(out, `"ip_local_port_range": {`) {
		t.Errorf("--system --json keys: %s", out)
	}

	unchanged := func(what string) {
		t.Helper()
		if got := readSysctl(t, portRangeSysctl); got != "45000 45499" {
			t.Errorf("%s: ip_local_port_range is %q, want 45000 45499 (unchanged)", what, got)
		}
		for _, p := range []portres.Proto{portres.TCP, portres.UDP} {
			if lo, n, _ := c.DynamicPortRange(ctx, p); lo != 45000 || n != 500 {
				t.Errorf("%s: %s range %d+%d, want 45000+500 (unchanged)", what, p, lo, n)
			}
		}
	}
	// --proto with --system: refused before anything is asked.
	code, _, errs = run(t, b, "dynamicport", "set", "--system", "--proto", "tcp", "--start", "40000", "--num", "1000")
	if code != 1 || !strings.Contains(errs, "one range for tcp and udp") || !strings.Contains(errs, "leave out --proto") {
		t.Errorf("--system --proto tcp: exit %d, %q", code, errs)
	}
	unchanged("after --system --proto")
	// A range the kernel refuses: below ip_unprivileged_port_start.
	if err := os.WriteFile(privStartSysctl, []byte("5000"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs = run(t, b, "dynamicport", "set", "--system", "--start", "2000", "--num", "1000")
	for _, want := range []string{"ERROR_INVALID_PARAMETER (87)", "the kernel refuses it", "net.ipv4.ip_unprivileged_port_start (5000)", "nothing was changed", "2000 2999"} {
		if code != 1 || !strings.Contains(errs, want) {
			t.Errorf("a range the kernel refuses: exit %d, %q; want it to say %q", code, errs, want)
		}
	}
	unchanged("after a range the kernel refuses")
	// Windows' rules still apply first.
	code, _, errs = run(t, b, "dynamicport", "set", "--system", "--start", "40000", "--num", "100")
	if code != 1 || !strings.Contains(errs, "ERROR_INVALID_PARAMETER (87)") {
		t.Errorf("--system with 100 ports: exit %d, %q", code, errs)
	}
	unchanged("after 100 ports")

	// Not an admin: ERROR_ACCESS_DENIED, nothing changed.
	p := testutil.StartHelperAs(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "cli-stdout", nil,
		"--socket", b.Config.Socket, "dynamicport", "set", "--system", "--start", "40000", "--num", "1000")
	if l := p.Line(10 * time.Second); !strings.Contains(l, "ERROR_ACCESS_DENIED (5)") || !strings.Contains(l, "may not set the dynamic port range") {
		t.Errorf("as nobody: %q", l)
	}
	if code := p.Wait(); code != 1 {
		t.Errorf("as nobody: exit %d", code)
	}
	unchanged("after a refused non-admin")
}

func rangeText(start, count uint16) string {
	return fmt.Sprintf("%d-%d", start, int(start)+int(count)-1)
}
