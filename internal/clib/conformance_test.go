//go:build linux

package clib

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
)

// A conformance script: one driver command a line, then "#" and what the
// line must print: "ok" (or the start of the ok line) or an error code.
// Both drivers must print the same line (after normalizing pids), and it
// must match the expectation.
const rootScript = `
acquire tcp 5000 20 =a            # ok tcp 5000 20 token=$a
acquire tcp 5010 5                # 10048
acquire tcp 5000 0                # 10022
acquire tcp 65530 10              # 10022
acquire 99 5000 1                 # 10022
acquire udp 5000 20 =u            # ok udp 5000 20 token=$u
acquire tcp 0 8 =w                # ok tcp
acquire tcp 0 4 delegate =d       # ok tcp
associate $a                      # ok tcp 5000 20
associate 0x1234                  # 10022
bind tcp4 $a 127.0.0.1 5003       # ok 5003
bind tcp4 $a - 0                  # ok 5000
bind tcp4 $a 127.0.0.1 5003       # 10048
bind tcp4 $a 127.0.0.1 6000       # 10022
bind udp4 $a 127.0.0.1 5005       # 10022
bind tcp6 $a ::1 5004             # ok 5004
bindmany tcp4 $a 127.0.0.1 5010 4 # ok 5010,5011,5012,5013
bindmany tcp4 $a - 0 2            # ok 5001,5002
bindmany tcp4 $a 127.0.0.1 5018 4 # 10022
bindmany udp4 $a - 0 2            # 10022
bindmany tcp4 $a 127.0.0.1 5003 2 # 10048
acqbind tcp4 127.0.0.1 6100 =l    # ok tcp 6100 token=$l
acqbind tcp4 127.0.0.1 5007       # 10048
acqbind udp6 ::1 0 =l6            # ok udp
release 0 $l                      # ok tcp 6100 1
release 0 $l6                     # ok udp
acquire tcp 6000 1 =one           # ok tcp 6000 1
bind tcp4 $one - 0                # ok 6000
bind tcp4 $one - 0                # 10055
release tcp $u                    # 10022
show                              # ok 5
release udp $u                    # ok udp 5000 20
release 0 $u                      # 10022
release 0 $a                      # ok tcp 5000 20
pcreate tcp 8000 10 =p            # ok token=new
pcreate tcp 8005 10               # 32
pcreate tcp 0 10                  # 87
pcreate tcp 65530 10              # 87
plookup tcp 8000 10 =p2           # ok token=$p
plookup tcp 8000 9                # 1168
associate $p                      # ok tcp 8000 10
bind udp6 $p ::1 8001             # 10022
bind tcp6 $p ::1 8001             # ok 8001
dynamic tcp                       # ok
dynamic udp                       # ok
pdelete tcp 8000 10               # ok token=-
pdelete tcp 8000 10               # 1168
show                              # ok 3
close                             # ok
connect /nonexistent/portres.sock # 10050
acquire tcp 5000 1                # err - no connection
connect                           # ok
acquire tcp 5000 20               # 10048
acquire tcp 5100 20               # ok tcp 5100 20
show                              # ok 1
`

// userScript runs as uid 65534, against a broker allowing 2 runtime
// reservations per user; OTHER is a runtime reservation of the test
// process and PERSIST a persistent block the test created.
const userScript = `
pcreate tcp 9000 10               # 5
pdelete tcp 9500 10               # 5
plookup tcp 9500 10 =q            # ok token=new
associate $q                      # 10013
acquire tcp 80 1                  # 10013
acquire tcp 20000 1 =r1           # ok tcp 20000 1
acquire tcp 20001 1               # ok tcp 20001 1
acquire tcp 20002 1               # 10069
release 0 OTHER                   # 10013
associate OTHER                   # 10013
bindmany tcp4 OTHER - 0 2         # 10013
bindmany tcp4 $q - 0 2            # 10013
acqbind tcp4 127.0.0.1 80         # 10013
release 0 $r1                     # ok tcp 20000 1
acquire tcp 20002 1               # ok tcp 20002 1
`

type scriptLine struct{ cmd, want string }

func parseScript(s string) []scriptLine {
	var out []scriptLine
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		cmd, want, _ := strings.Cut(l, "#")
		out = append(out, scriptLine{strings.TrimSpace(cmd), strings.TrimSpace(want)})
	}
	return out
}

// pids are the only thing that may differ between the drivers' lines:
// broker messages name the owner "pid N (command)".
var pidRE = regexp.MustCompile(`pid \d+( \([^)]*\))?`)

// runScript feeds script to a driver (the Go one, a helper of this test
// binary, or the C one at cDriver) as cred, against the broker socket
// sock, and returns its output lines, pids normalized.
func runScript(t *testing.T, cDriver string, cred *syscall.Credential, sock string, lines []scriptLine, subst map[string]string) []string {
	t.Helper()
	var (
		cmd   *exec.Cmd
		stdin io.WriteCloser
		r     *bufio.Reader
	)
	if cDriver == "" {
		p := testutil.StartHelperAs(t, cred, "godriver", []string{"PORTRES_SOCKET=" + sock})
		cmd, stdin, r = p.Cmd, p.Stdin, p.Stdout
	} else {
		cmd = exec.Command(cDriver)
		cmd.Env = append(os.Environ(), "PORTRES_SOCKET="+sock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Stderr = os.Stderr
		stdin, _ = cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r = bufio.NewReader(stdout)
	}
	defer cmd.Wait()
	defer stdin.Close()
	var out []string
	read := func() string {
		ch := make(chan string, 1)
		go func() {
			l, _ := r.ReadString('\n')
			ch <- strings.TrimSuffix(l, "\n")
		}()
		select {
		case l := <-ch:
			return l
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("the driver did not answer within 20 s; so far:\n%s", strings.Join(out, "\n"))
			return ""
		}
	}
	for _, l := range lines {
		c := l.cmd
		for k, v := range subst {
			c = strings.ReplaceAll(c, k, v)
		}
		fmt.Fprintln(stdin, c)
		got := read()
		if strings.HasPrefix(got, "ok ") && strings.HasPrefix(l.cmd, "show") {
			var n int
			fmt.Sscan(strings.TrimPrefix(got, "ok "), &n)
			for i := 0; i < n; i++ {
				got += "\n" + read()
			}
		}
		for k, v := range subst {
			got = strings.ReplaceAll(got, v, k)
		}
		out = append(out, pidRE.ReplaceAllString(got, "pid N (CMD)"))
	}
	return out
}

// compare checks that the Go and C drivers printed the same lines and
// that each line meets its expectation.
func compare(t *testing.T, lines []scriptLine, goOut, cOut []string) {
	t.Helper()
	var log strings.Builder
	for i, l := range lines {
		fmt.Fprintf(&log, "%-34s %s\n", l.cmd, cOut[i])
	}
	t.Logf("the C driver's answers (the Go driver's are the same unless reported):\n%s", log.String())
	for i, l := range lines {
		g, c := goOut[i], cOut[i]
		if g != c {
			t.Errorf("%q:\n   Go: %s\n    C: %s", l.cmd, g, c)
		}
		first, _, _ := strings.Cut(c, "\n")
		switch {
		case strings.HasPrefix(l.want, "ok") || strings.HasPrefix(l.want, "err"):
			if !strings.HasPrefix(first, l.want) {
				t.Errorf("%q printed %q, want %q...", l.cmd, first, l.want)
			}
		default:
			if !strings.HasPrefix(first, "err "+l.want+" ") {
				t.Errorf("%q printed %q, want error %s", l.cmd, first, l.want)
			}
		}
	}
}

// TestConformance runs the same scripts through the Go client and
// through libportres, each against a fresh broker, and requires the same
// answers, codes and messages alike: as root (every operation, and the
// errors a caller can provoke) and as an unprivileged user (the access
// and quota errors).
func TestConformance(t *testing.T) {
	dir := libDir(t)
	cDriver := filepath.Join(dir, "driver")
	drivers := []string{"go", "c"}
	path := map[string]string{"go": "", "c": cDriver}
	lines := parseScript(rootScript)
	var outs [2][]string
	for i, d := range drivers {
		// A subtest each, so that each broker is gone before the next
		// starts: they share the network namespace and its kernel list.
		t.Run("root/"+d, func(t *testing.T) {
			b := testbroker.Start(t, nil)
			outs[i] = runScript(t, path[d], nil, b.Config.Socket, lines, nil)
		})
	}
	if outs[0] != nil && outs[1] != nil {
		compare(t, lines, outs[0], outs[1])
	}

	user := parseScript(userScript)
	outs = [2][]string{}
	for i, d := range drivers {
		t.Run("user/"+d, func(t *testing.T) {
			b := testbroker.Start(t, func(c *broker.Config) { c.Limits.UserReservations = 2 })
			admin := b.Dial(t)
			ctx := context.Background()
			if _, err := admin.CreatePersistent(ctx, portres.TCP, 9500, 10); err != nil {
				t.Fatal(err)
			}
			other, err := admin.Acquire(ctx, portres.TCP, 21000, 5)
			if err != nil {
				t.Fatal(err)
			}
			outs[i] = runScript(t, path[d], nobody, b.Config.Socket, user, map[string]string{"OTHER": fmt.Sprintf("%#x", other.Token())})
		})
	}
	if outs[0] != nil && outs[1] != nil {
		compare(t, user, outs[0], outs[1])
	}
}
