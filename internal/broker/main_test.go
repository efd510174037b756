//go:build linux

package broker_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// The helpers below run in child processes (testutil.StartHelper): real
// processes with their own pid, connection and fd table. They find the
// broker through PORTRES_SOCKET.
func init() {
	testutil.Helpers["hold"] = helperHold
	testutil.Helpers["foreign"] = helperForeign
	testutil.Helpers["hammer"] = helperHammer
	testutil.Helpers["steal"] = helperSteal
}

func mustAtoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

func code(err error) int {
	var e *portres.Error
	if errors.As(err, &e) {
		return int(e.Code)
	}
	if err != nil {
		return -1
	}
	return 0
}

// helperHold acquires PROTO START COUNT, binds its first port, prints
// "ready TOKEN START" and holds until stdin closes.
func helperHold(args []string) int {
	ctx := context.Background()
	c, err := portres.Dial(ctx, "")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	proto, _ := portres.ParseProto(args[0])
	r, err := c.Acquire(ctx, proto, uint16(mustAtoi(args[1])), uint16(mustAtoi(args[2])))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	if proto == portres.TCP {
		ln, err := r.Listen(ctx, "tcp", ":0")
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		defer ln.Close()
	}
	fmt.Println("ready", r.Token(), r.Start())
	bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

// helperForeign is a program that knows nothing of portres. For PROTO
// START COUNT it tries an explicit bind of every port (v4 and v6, with
// SO_REUSEADDR and SO_REUSEPORT) and prints "bound PORT" for each that
// works; then it binds port 0 AUTO times, keeping the sockets, and prints
// "auto PORT" for each port the kernel picked inside the block; then
// "done".
func helperForeign(args []string) int {
	proto, _ := portres.ParseProto(args[0])
	start, count, auto := mustAtoi(args[1]), mustAtoi(args[2]), mustAtoi(args[3])
	typ := unix.SOCK_STREAM
	if proto == portres.UDP {
		typ = unix.SOCK_DGRAM
	}
	for p := start; p < start+count; p++ {
		for _, sa := range []unix.Sockaddr{&unix.SockaddrInet4{Port: p, Addr: [4]byte{127, 0, 0, 1}}, &unix.SockaddrInet6{Port: p}} {
			af := unix.AF_INET
			if _, ok := sa.(*unix.SockaddrInet6); ok {
				af = unix.AF_INET6
			}
			fd, _ := unix.Socket(af, typ, 0)
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			if unix.Bind(fd, sa) == nil {
				fmt.Println("bound", p)
			}
			unix.Close(fd)
		}
	}
	for i := 0; i < auto; i++ {
		fd, _ := unix.Socket(unix.AF_INET, typ, 0)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			break // the ephemeral range is used up
		}
		sa, _ := unix.Getsockname(fd)
		if p := sa.(*unix.SockaddrInet4).Port; p >= start && p < start+count {
			fmt.Println("auto", p)
		}
	}
	fmt.Println("done")
	return 0
}

// helperHammer acquires, binds and releases wildcard TCP blocks N times
// with seed SEED, printing "R start count t0 t1 port" per round, where
// [t0, t1] (CLOCK_MONOTONIC ns) is a span inside which it held the block,
// and "E err" for any failure.
func helperHammer(args []string) int {
	ctx := context.Background()
	n, seed := mustAtoi(args[0]), mustAtoi(args[1])
	rng := rand.New(rand.NewPCG(uint64(seed), 7))
	c, err := portres.Dial(ctx, "")
	if err != nil {
		fmt.Println("E", err)
		return 1
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for i := 0; i < n; i++ {
		r, err := c.Acquire(ctx, portres.TCP, 0, uint16(1+rng.IntN(3)))
		if err != nil {
			fmt.Fprintln(w, "E acquire", err)
			continue
		}
		t0 := mono()
		ln, err := r.Listen(ctx, "tcp", "127.0.0.1:0")
		port := 0
		if err != nil {
			fmt.Fprintln(w, "E listen", err)
		} else {
			port = int(netip.MustParseAddrPort(ln.Addr().String()).Port())
			ln.Close()
		}
		t1 := mono()
		fmt.Fprintln(w, "R", r.Start(), r.Count(), t0, t1, port)
		if err := r.Release(ctx); err != nil {
			fmt.Fprintln(w, "E release", err)
		}
	}
	return 0
}

func mono() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// helperSteal tries to use TOKEN, which another process acquired, and
// prints the Winsock code of each attempt.
func helperSteal(args []string) int {
	ctx := context.Background()
	tok, _ := strconv.ParseUint(args[0], 10, 64)
	c, err := portres.Dial(ctx, "")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	_, err = c.Release(ctx, tok)
	fmt.Println("release", code(err))
	_, err = c.Reservation(ctx, tok)
	fmt.Println("associate", code(err))
	fd, _ := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	_, err = c.BindFD(ctx, tok, fd, netip.Addr{}, 0)
	fmt.Println("bind", code(err))
	return 0
}
