//go:build linux

package enforce

import (
	"testing"

	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

// BenchmarkInUse reads the TCP socket table of a namespace holding 12,000
// TCP sockets (4,000 listeners, v4 and v6, and 4,000 connected pairs to
// them) the old way, from /proc, and through sock_diag for every port and
// for a 100-port range; and checks one port for TIME_WAIT both ways (a
// port with no socket: like one with only TIME_WAIT entries, the /proc
// scan must read every line to be sure).
func BenchmarkInUse(b *testing.B) {
	testutil.RequireRoot(b)
	const listeners, pairs, first = 4000, 4000, 20000
	lns := make([]int, listeners)
	for i := range lns {
		family := unix.AF_INET
		if i%2 == 1 {
			family = unix.AF_INET6
		}
		lns[i] = testutil.ListenTCP(b, family, first+i)
	}
	for i := range pairs {
		family := unix.AF_INET
		if i%2 == 1 {
			family = unix.AF_INET6
		}
		testutil.ConnectTCP(b, family, lns[i%listeners], first+i%listeners, 0)
	}
	const lo, hi = first + 1000, first + 1099
	const free = first + listeners + 10
	some, err := InUseRange(unix.IPPROTO_TCP, lo, hi)
	if err != nil {
		b.Fatal(err)
	}
	all, err := InUse(unix.IPPROTO_TCP)
	if err != nil {
		b.Fatal(err)
	}
	proc, err := procInUse(unix.IPPROTO_TCP)
	if err != nil {
		b.Fatal(err)
	}
	if p, ok := sameSet(all, proc); !ok {
		b.Fatalf("/proc and sock_diag differ on port %d", p)
	}
	for p := 0; p <= 0xffff; p++ {
		if want := p >= lo && p <= hi; some.Has(uint16(p)) != want {
			b.Fatalf("range %d-%d: port %d listed = %v", lo, hi, p, !want)
		}
	}

	b.Run("proc", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := procInUse(unix.IPPROTO_TCP); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sockdiag-all", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := InUse(unix.IPPROTO_TCP); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sockdiag-100", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := InUseRange(unix.IPPROTO_TCP, lo, hi); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proc-timewait", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := procOnlyTimeWait(free); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sockdiag-timewait", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := OnlyTimeWait(free); err != nil {
				b.Fatal(err)
			}
		}
	})
}
