//go:build linux

package fdpass

import (
	"errors"
	"net"
	"os"
	"testing"

	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

func pair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

func TestSendRecvFD(t *testing.T) {
	testutil.CheckFDLeak(t)
	a, b := pair(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := Send(a, []byte("hello"), int(w.Fd())); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, files, err := Recv(b, buf)
	if err != nil || string(buf[:n]) != "hello" || len(files) != 1 {
		t.Fatalf("Recv = %q %v %v", buf[:n], files, err)
	}
	got := os.NewFile(uintptr(files[0]), "received")
	defer got.Close()
	flags, err := unix.FcntlInt(uintptr(files[0]), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("received fd not close-on-exec: %#x %v", flags, err)
	}
	if _, err := got.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	if _, err := r.Read(one); err != nil || one[0] != 'x' {
		t.Fatalf("pipe through passed fd: %q %v", one, err)
	}
}

func TestRecvTruncatedMessage(t *testing.T) {
	testutil.CheckFDLeak(t)
	a, b := pair(t)
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Send(a, make([]byte, 100), int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	_, files, err := Recv(b, make([]byte, 10))
	if !errors.Is(err, ErrTruncated) || files != nil {
		t.Fatalf("Recv of a cut datagram = %v, %v; want ErrTruncated and no files", files, err)
	}
}

func TestRecvTooManyFDs(t *testing.T) {
	testutil.CheckFDLeak(t)
	a, b := pair(t)
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	many := make([]int, MaxFDs+3)
	for i := range many {
		many[i] = int(f.Fd())
	}
	if _, _, err := a.WriteMsgUnix([]byte("x"), unix.UnixRights(many...), nil); err != nil {
		t.Fatal(err)
	}
	_, files, err := Recv(b, make([]byte, 10))
	if !errors.Is(err, ErrTruncated) || files != nil {
		t.Fatalf("Recv with too many fds = %v, %v; want ErrTruncated", files, err)
	}
}

func TestMain(m *testing.M) { testutil.Main(m) }
