//go:build linux

package broker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

func init() {
	testutil.Helpers["rebind-owner"] = helperRebindOwner
	testutil.Helpers["partial-owner"] = helperPartialOwner
	testutil.Helpers["partial-foreign"] = helperPartialForeign
}

// helperRebindOwner acquires a wildcard block of 2 TCP ports, prints
// "block START", then listens on each port explicitly and closes it, N
// times over (a restarting server), and prints "done OK ADDRINUSE
// NOBUFS OTHER".
func helperRebindOwner(args []string) int {
	ctx := context.Background()
	c, err := portres.Dial(ctx, "")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer c.Close()
	r, err := c.Acquire(ctx, portres.TCP, 0, 2)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("block", r.Start())
	var ok, inuse, nobufs, other int
	for i := 0; i < mustAtoi(args[0]); i++ {
		port := int(r.Start()) + i%2
		ln, err := r.Listen(ctx, "tcp", ":"+strconv.Itoa(port))
		switch {
		case err == nil:
			ok++
			ln.Close()
		case errors.Is(err, portres.WSAEADDRINUSE):
			inuse++
		case errors.Is(err, portres.WSAENOBUFS):
			nobufs++
		default:
			other++
		}
	}
	fmt.Println("done", ok, inuse, nobufs, other)
	return 0
}

// helperPartialOwner acquires one TCP port, listens on 127.0.0.1 only
// (an IPv4 socket), prints "ready PORT" and waits for stdin to close.
func helperPartialOwner([]string) int {
	ctx := context.Background()
	c, err := portres.Dial(ctx, "")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer c.Close()
	r, err := c.Acquire(ctx, portres.TCP, 0, 1)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	ln, err := r.Listen(ctx, "tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer ln.Close()
	fmt.Println("ready", r.Start())
	os.Stdin.Read(make([]byte, 1))
	return 0
}

// partialAddrs are the addresses a foreign process tries on a port its
// owner bound on 127.0.0.1 only.
var partialAddrs = []string{"127.0.0.2", "0.0.0.0", "::1", "::"}

// helperPartialForeign tries TCP binds of PORT on each of partialAddrs
// (v6 sockets IPv6-only), with SO_REUSEADDR, and prints one line per
// address: "ADDR ok" or "ADDR ERRNO".
func helperPartialForeign(args []string) int {
	port := mustAtoi(args[0])
	for _, a := range partialAddrs {
		af := unix.AF_INET
		var sa unix.Sockaddr
		if strings.Contains(a, ":") {
			af = unix.AF_INET6
			s6 := &unix.SockaddrInet6{Port: port}
			if a == "::1" {
				s6.Addr[15] = 1
			}
			sa = s6
		} else {
			s4 := &unix.SockaddrInet4{Port: port}
			copy(s4.Addr[:], parseV4(a))
			sa = s4
		}
		fd, _ := unix.Socket(af, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if af == unix.AF_INET6 {
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
		}
		res := "ok"
		if err := unix.Bind(fd, sa); err != nil {
			res = unix.ErrnoName(err.(unix.Errno))
		}
		unix.Close(fd)
		fmt.Println(a, res)
	}
	return 0
}

func parseV4(s string) []byte {
	var b [4]byte
	fmt.Sscanf(s, "%d.%d.%d.%d", &b[0], &b[1], &b[2], &b[3])
	return b[:]
}

// BenchmarkForeignWins measures, per enforcement mode, what a hostile
// local process wins against a live block (the README's enforcement
// table, measured with -benchtime 3000x): while the owner listens on each
// port of a 2-port block and closes it again, b.N times, a foreign process in the guarded cgroup
// loops on explicit binds (v4, v6, with reuse flags) and bind(0) over
// the narrowed ephemeral range; and, with the owner listening on
// 127.0.0.1:P only, a foreign process binds P on 127.0.0.2, 0.0.0.0, ::1
// and ::. Broker, owner and foreign binder are processes of their own.
func BenchmarkForeignWins(b *testing.B) {
	cg, cgfd := testutil.Cgroup(b)
	for _, mode := range []string{broker.EnforceHold, broker.EnforceBPF} {
		b.Run(mode, func(b *testing.B) {
			narrowEphemeral(b, 46500, 46799)
			dir := testutil.Dir(b)
			sock := filepath.Join(dir, "portres.sock")
			d := daemonProc(b, daemonConfig{Socket: sock, State: filepath.Join(dir, "state.db"), LogFile: filepath.Join(dir, "log"),
				Enforce: mode, Cgroup: cg})
			defer func() {
				d.Cmd.Process.Signal(unix.SIGTERM)
				d.Wait()
				testutil.ClearReservedPorts(b)
			}()
			c, err := portres.Dial(context.Background(), sock)
			if err != nil {
				b.Fatal(err)
			}
			st, err := c.Status(context.Background())
			c.Close()
			if err != nil || st.Enforcement.Mode != mode {
				b.Skipf("mode %s not available here (%v)", mode, err)
			}
			env := []string{"PORTRES_SOCKET=" + sock}
			owner := testutil.StartHelperIn(b, cgfd, "rebind-owner", env, strconv.Itoa(b.N))
			var start int
			if l := owner.Line(10 * time.Second); !scan(l, "block %d", &start) {
				b.Fatalf("owner: %s", l)
			}
			foreign := testutil.StartHelperIn(b, cgfd, "foreign-loop", nil, fmt.Sprintf("tcp:%d-%d", start, start+1))
			wins := collectForeign(foreign)
			var ok, inuse, nobufs, other int
			if l := owner.Line(5 * time.Minute); !scan(l, "done %d %d %d %d", &ok, &inuse, &nobufs, &other) {
				b.Fatalf("owner: %s", l)
			}
			foreign.Stdin.Close()
			won := <-wins
			owner.Wait()

			partial := testutil.StartHelperIn(b, cgfd, "partial-owner", env)
			var port int
			if l := partial.Line(10 * time.Second); !scan(l, "ready %d", &port) {
				b.Fatalf("partial owner: %s", l)
			}
			pf := testutil.StartHelperIn(b, cgfd, "partial-foreign", nil, strconv.Itoa(port))
			var partialWins []string
			for range partialAddrs {
				if f := strings.Fields(pf.Line(10 * time.Second)); len(f) == 2 && f[1] == "ok" {
					partialWins = append(partialWins, f[0])
				}
			}
			pf.Wait()
			partial.Wait()

			b.Logf("%s: foreign process won %d binds inside a live 2-port block while its owner rebound it %d times (owner: %d ok, %d WSAEADDRINUSE, %d WSAENOBUFS, %d other); owner on 127.0.0.1:P, foreign won P on %v",
				mode, len(won), ok+inuse+nobufs+other, ok, inuse, nobufs, other, partialWins)
			b.ReportMetric(float64(len(won)), "foreign-wins")
			b.ReportMetric(float64(inuse+nobufs+other), "owner-failures")
			b.ReportMetric(float64(len(partialWins)), "partial-addr-wins")
		})
	}
}
