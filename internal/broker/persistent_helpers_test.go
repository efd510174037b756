//go:build linux

package broker_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

// Helpers of the persistent-reservation tests (persistent_test.go). They
// run in child processes started with testutil.StartHelper(As).
func init() {
	testutil.Helpers["persistent-daemon"] = helperPersistentDaemon
	testutil.Helpers["persistent-autobind"] = helperPersistentAutobind
	testutil.Helpers["persistent-client"] = helperPersistentClient
}

// helperPersistentDaemon is portresd in a process of its own: SOCKET
// STATE LOGFILE [ADMINGROUP]. It runs broker.Run until SIGTERM, logging
// to LOGFILE, and prints "ready" once the socket accepts connections, or
// "error MSG" if the broker does not start.
func helperPersistentDaemon(args []string) int {
	cfg := broker.Config{Socket: args[0], State: args[1], Sweep: 50 * time.Millisecond}
	if len(args) > 3 {
		cfg.AdminGroup = args[3]
	}
	return serveDaemon(cfg, args[2])
}

// serveDaemon runs broker.Run with cfg (placeholder enforcement unless it
// says otherwise), logging to logFile, until
// SIGTERM; it prints "ready" once the socket accepts connections, or
// "error MSG" if the broker does not start.
func serveDaemon(cfg broker.Config, logFile string) int {
	return serveDaemonLevel(slog.LevelDebug, cfg, logFile)
}

// serveDaemonLevel is serveDaemon logging at level.
func serveDaemonLevel(level slog.Level, cfg broker.Config, logFile string) int {
	if cfg.Enforce == "" {
		cfg.Enforce = broker.EnforceHold
	}
	if cfg.Portserver == "" {
		cfg.Portserver = "-"
	}
	lf, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer lf.Close()
	cfg.Logger = slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- broker.Run(ctx, cfg) }()
	for {
		select {
		case err := <-errc:
			if err == nil {
				err = errors.New("broker.Run returned before the socket accepted a connection")
			}
			fmt.Println("error", err)
			return 1
		default:
		}
		if c, err := portres.Dial(context.Background(), cfg.Socket); err == nil {
			c.Close()
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Println("ready")
	if err := <-errc; err != nil {
		fmt.Fprintln(os.Stderr, "daemon:", err)
		return 1
	}
	return 0
}

// helperPersistentAutobind is a program that knows nothing of portres.
// For the block LO HI it lets the kernel pick local ports as often as it
// can — TCP connect() to a local listener, TCP bind(0), UDP bind(0), UDP
// connect() — keeping every socket open within a phase, and prints
// "auto KIND PORT" for each port picked inside the block and "count KIND
// N" for how many ports each phase got. Then it binds PORT (a port of the
// block) explicitly, TCP and UDP, and prints "explicit tcp|udp ok|ERR".
// Last line: "done".
func helperPersistentAutobind(args []string) int {
	lo, hi, port := mustAtoi(args[0]), mustAtoi(args[1]), mustAtoi(args[2])
	const attempts = 400
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	var fds []int
	closeAll := func() {
		for _, fd := range fds {
			// RST instead of FIN: no TIME_WAIT left behind on the ports.
			unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
			unix.Close(fd)
		}
		fds = fds[:0]
	}
	check := func(kind string, fd int) bool {
		sa, err := unix.Getsockname(fd)
		if err != nil {
			fmt.Fprintln(w, "fail", kind, "getsockname", err)
			return false
		}
		p := sa.(*unix.SockaddrInet4).Port
		if p >= lo && p <= hi {
			fmt.Fprintln(w, "auto", kind, p)
		}
		return true
	}
	loopback := [4]byte{127, 0, 0, 1}

	// The listener itself is placed by the kernel too.
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Bind(lfd, &unix.SockaddrInet4{Addr: loopback})
	}
	if err == nil {
		err = unix.Listen(lfd, 4096)
	}
	if err != nil {
		fmt.Fprintln(w, "fail listener", err)
		return 1
	}
	defer unix.Close(lfd)
	check("listener", lfd)
	lsa, _ := unix.Getsockname(lfd)

	type phase struct {
		kind string
		typ  int
		do   func(fd int) error
	}
	phases := []phase{
		{"tcp-connect", unix.SOCK_STREAM, func(fd int) error { return unix.Connect(fd, lsa) }},
		{"tcp-bind0", unix.SOCK_STREAM, func(fd int) error { return unix.Bind(fd, &unix.SockaddrInet4{Addr: loopback}) }},
		{"udp-bind0", unix.SOCK_DGRAM, func(fd int) error { return unix.Bind(fd, &unix.SockaddrInet4{Addr: loopback}) }},
		{"udp-connect", unix.SOCK_DGRAM, func(fd int) error { return unix.Connect(fd, &unix.SockaddrInet4{Addr: loopback, Port: 9}) }},
	}
	for _, ph := range phases {
		n := 0
		for i := 0; i < attempts; i++ {
			fd, err := unix.Socket(unix.AF_INET, ph.typ|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				fmt.Fprintln(w, "fail", ph.kind, "socket", err)
				return 1
			}
			if err := ph.do(fd); err != nil {
				unix.Close(fd) // the ephemeral range is used up
				break
			}
			fds = append(fds, fd)
			if check(ph.kind, fd) {
				n++
			}
		}
		fmt.Fprintln(w, "count", ph.kind, n)
		if ph.kind == "udp-bind0" {
			// Explicit binds with the ephemeral range exhausted.
			for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM} {
				name := map[int]string{unix.SOCK_STREAM: "tcp", unix.SOCK_DGRAM: "udp"}[typ]
				fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
				if err == nil {
					err = unix.Bind(fd, &unix.SockaddrInet4{Addr: loopback, Port: port})
					unix.Close(fd)
				}
				if err != nil {
					fmt.Fprintln(w, "explicit", name, err)
				} else {
					fmt.Fprintln(w, "explicit", name, "ok")
				}
			}
		}
		if ph.kind != "tcp-bind0" { // tcp-bind0 sockets stay for udp-bind0: bind(0) pressure on both
			closeAll()
		}
	}
	closeAll()
	fmt.Fprintln(w, "done")
	return 0
}

// helperPersistentClient exercises the persistent API as whoever it runs
// as (another uid, maybe in the admin group). Args: PROTO START COUNT (an
// existing persistent block) NEWSTART (a free block of COUNT ports it
// tries to create and delete). For each operation it prints
// "OP CODE ISGO DETAIL", CODE the Win32/Winsock number (0 = success),
// ISGO whether errors.Is matched the Go equivalent of that code, DETAIL
// the token, port or error text. Ends with "done".
func helperPersistentClient(args []string) int {
	ctx := context.Background()
	proto, _ := portres.ParseProto(args[0])
	start, count, newStart := uint16(mustAtoi(args[1])), uint16(mustAtoi(args[2])), uint16(mustAtoi(args[3]))
	c, err := portres.Dial(ctx, "")
	if err != nil {
		fmt.Println("fail dial", err)
		return 1
	}
	defer c.Close()
	out := func(op string, err error, detail any) {
		is := true
		var pe *portres.Error
		if errors.As(err, &pe) {
			if se := pe.Code.Syscall(); se != 0 {
				is = errors.Is(err, se)
			}
			if pe.Code == portres.ERROR_ACCESS_DENIED || pe.Code == portres.WSAEACCES {
				is = is && errors.Is(err, os.ErrPermission)
			}
			detail = err.Error()
		} else if err != nil {
			detail = err.Error()
		}
		fmt.Printf("%s %d %v %v\n", op, code(err), is, detail)
	}

	r, err := c.LookupPersistent(ctx, proto, start, count)
	var tok uint64
	if err == nil {
		tok = r.Token()
	}
	out("lookup", err, tok)

	shown := uint64(0)
	infos, err := c.Show(ctx)
	for _, in := range infos {
		if in.Kind == portres.Persistent && in.Proto == proto && in.Start == start {
			shown = in.Token
		}
	}
	out("show", err, shown)

	_, err = c.Reservation(ctx, tok)
	out("associate", err, tok)

	typ := unix.SOCK_STREAM
	if proto == portres.UDP {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_INET6, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Println("fail socket", err)
		return 1
	}
	port, err := c.BindFD(ctx, tok, fd, netip.Addr{}, 0)
	unix.Close(fd)
	out("bind", err, port)

	rt, err := c.Acquire(ctx, proto, 0, 2)
	if err == nil {
		rt.Release(ctx)
	}
	out("acquire", err, "")

	nr, err := c.CreatePersistent(ctx, proto, newStart, count)
	var ntok uint64
	if err == nil {
		ntok = nr.Token()
	}
	out("create", err, ntok)

	out("delete-new", c.DeletePersistent(ctx, proto, newStart, count), "")
	out("delete", c.DeletePersistent(ctx, proto, start, count), "")
	out("dynamicset", c.SetDynamicPortRange(ctx, proto, 50000, 1000), "")
	dlo, dn, err := c.DynamicPortRange(ctx, proto)
	out("dynamicshow", err, strconv.Itoa(int(dlo))+"+"+strconv.Itoa(int(dn)))
	fmt.Println("done")
	return 0
}
