//go:build linux

package broker_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
)

// debianPython is Debian's python3, which python3-portpicker installs
// into (the PATH's python3 may be another).
const debianPython = "/usr/bin/python3"

// pickerScript asks portpicker for N ports, prints them on one line and
// holds them until stdin closes.
const pickerScript = `
import sys, portpicker
ports = [portpicker.pick_unused_port() for _ in range(int(sys.argv[1]))]
print(" ".join(map(str, ports)), flush=True)
sys.stdin.read()
`

// TestPortserver: unmodified portpicker processes with PORTSERVER_ADDRESS
// set get their ports from the broker: distinct across processes, free
// for TCP and UDP, reserved for the asking pid (delegated blocks, kept
// out of automatic assignment) and released when that process exits. A
// caller may not ask for another user's process.
func TestPortserver(t *testing.T) {
	if err := exec.Command(debianPython, "-c", "import portpicker").Run(); err != nil {
		t.Skipf("needs Debian's python3-portpicker (%s: %v)", debianPython, err)
	}
	addr := "@portres-test-" + strconv.Itoa(os.Getpid())
	b := testbroker.Start(t, func(c *broker.Config) { c.Portserver = addr })
	c := b.Dial(t)
	ctx := context.Background()

	const procs, each = 12, 5
	type picker struct {
		cmd   *exec.Cmd
		stdin interface{ Close() error }
		ports []int
	}
	var ps []*picker
	for i := 0; i < procs; i++ {
		cmd := exec.Command(debianPython, "-c", pickerScript, strconv.Itoa(each))
		cmd.Env = append(os.Environ(), "PORTSERVER_ADDRESS="+addr)
		cmd.Stderr = os.Stderr
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := &picker{cmd: cmd, stdin: in}
		t.Cleanup(func() { in.Close(); cmd.Process.Kill(); cmd.Wait() })
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			t.Fatalf("portpicker process %d: %v", i, err)
		}
		for _, f := range strings.Fields(line) {
			n, _ := strconv.Atoi(f)
			p.ports = append(p.ports, n)
		}
		ps = append(ps, p)
	}
	owner := map[int]int{} // port → pid
	for _, p := range ps {
		if len(p.ports) != each {
			t.Fatalf("pid %d got %v", p.cmd.Process.Pid, p.ports)
		}
		for _, port := range p.ports {
			if prev, dup := owner[port]; dup {
				t.Errorf("port %d handed to pid %d and pid %d", port, prev, p.cmd.Process.Pid)
			}
			owner[port] = p.cmd.Process.Pid
		}
	}
	infos, err := c.Show(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]portres.Info{}
	for _, in := range infos {
		held[fmt.Sprintf("%s/%d", in.Proto, in.Start)] = in
	}
	for port, pid := range owner {
		for _, proto := range []string{"tcp", "udp"} {
			in, ok := held[fmt.Sprintf("%s/%d", proto, port)]
			if !ok || int(in.PID) != pid || !in.Delegated || in.Count != 1 {
				t.Errorf("%s port %d of pid %d: show has %+v (found %v); want a delegated block of the pid", proto, port, pid, in, ok)
			}
		}
	}
	// The ports are out of automatic assignment (bind to port 0).
	if list := reservedNow(t); len(list) == 0 {
		t.Error("the portserver's ports are not in ip_local_reserved_ports")
	}

	// Half the processes exit: their ports go, the others' stay.
	for _, p := range ps[:procs/2] {
		p.stdin.Close()
		p.cmd.Wait()
	}
	gone := func(in []portres.Info) bool { return len(in) == 2*each*(procs-procs/2) }
	waitShow(t, c, gone)

	// Asking for another user's process gets 0.
	other := testutil.StartHelperAs(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "portserver-ask", nil, addr, "1")
	if l := other.Line(10 * time.Second); l != "0" {
		t.Errorf("uid 65534 asking a port for pid 1: %q, want 0", l)
	}
	other.Wait()
}

func init() { testutil.Helpers["portserver-ask"] = helperPortserverAsk }

// helperPortserverAsk speaks the portserver protocol itself: ADDR PID →
// prints the answer line.
func helperPortserverAsk(args []string) int {
	c, err := net.Dial("unix", args[0])
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer c.Close()
	fmt.Fprintf(c, "%s\n", args[1])
	line, _ := bufio.NewReader(c).ReadString('\n')
	fmt.Println(strings.TrimSpace(line))
	return 0
}
