//go:build linux

package broker_test

import (
	"context"
	"fmt"
	"time"

	"testing"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

func init() {
	testutil.Helpers["rawbind"] = func([]string) int {
		fd, _ := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err := unix.Bind(fd, &unix.SockaddrInet6{}); err != nil {
			fmt.Println(err)
			return 1
		}
		unix.Listen(fd, 1)
		unix.Close(fd)
		return 0
	}
	testutil.Helpers["portresbind"] = func([]string) int {
		ctx := context.Background()
		c, err := portres.Dial(ctx, "")
		if err != nil {
			fmt.Println(err)
			return 1
		}
		defer c.Close()
		r, err := c.Acquire(ctx, portres.TCP, 0, 1)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		ln, err := r.Listen(ctx, "tcp", ":0")
		if err != nil {
			fmt.Println(err)
			return 1
		}
		ln.Close()
		return 0
	}
}

// BenchmarkProcess compares whole processes: one that binds and listens
// on a kernel-chosen port with raw syscalls (the floor), and one that
// does the same through portres (dial the broker, acquire one wildcard
// port, listen on it, exit: the broker releases on hang-up). Both are
// this test binary, so start-up cost is the same; "x-floor" is the ratio.
//
//	go test -run '^$' -bench Process ./internal/broker
func BenchmarkProcess(b *testing.B) {
	tb := testbroker.Start(b, nil)
	env := []string{"PORTRES_SOCKET=" + tb.Config.Socket}
	var floor time.Duration
	spawn := func(b *testing.B, name string) {
		for i := 0; i < b.N; i++ {
			p := testutil.StartHelper(b, name, env)
			if code := p.Wait(); code != 0 {
				b.Fatalf("%s exited %d", name, code)
			}
		}
	}
	b.Run("floor/raw-bind-listen", func(b *testing.B) {
		spawn(b, "rawbind")
		floor = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("portres/acquire-listen", func(b *testing.B) {
		spawn(b, "portresbind")
		if floor > 0 {
			b.ReportMetric(float64(b.Elapsed()/time.Duration(b.N))/float64(floor), "x-floor")
		}
	})
}
