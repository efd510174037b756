//go:build linux

package clib

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/testutil"
)

func init() { testutil.Helpers["godriver"] = goDriver }

// goDriver is the Go side of the conformance suite: libportres/tests/driver.c
// through the Go client, line for line (the language is described there).
func goDriver([]string) int {
	ctx := context.Background()
	out := os.Stdout // unbuffered: each answer reaches the test at once
	vars := map[string]uint64{}
	var order []string
	setvar := func(name string, t uint64) {
		if _, ok := vars[name]; !ok {
			order = append(order, name)
		}
		vars[name] = t
	}
	tokenOf := func(s string) uint64 {
		if v, ok := strings.CutPrefix(s, "$"); ok {
			return vars[v]
		}
		t, _ := strconv.ParseUint(s, 0, 64)
		return t
	}
	varOf := func(t uint64) string {
		if t == 0 {
			return "-"
		}
		for _, n := range order {
			if vars[n] == t {
				return "$" + n
			}
		}
		return "other"
	}
	protoOf := func(s string) portres.Proto {
		switch s {
		case "tcp":
			return portres.TCP
		case "udp":
			return portres.UDP
		}
		n, _ := strconv.Atoi(s)
		return portres.Proto(n)
	}
	errLine := func(err error) {
		code := 0
		var pe *portres.Error
		if e, ok := err.(*portres.Error); ok {
			pe = e
			code = int(pe.Code)
		}
		msg := err.Error()
		for _, n := range order {
			if t := vars[n]; t != 0 {
				msg = strings.ReplaceAll(msg, fmt.Sprintf("%#x", t), "$"+n)
			}
		}
		fmt.Fprintf(out, "err %d %s\n", code, msg)
	}
	c, err := portres.Dial(ctx, "")
	if err != nil {
		errLine(err)
	}
	var keep []*os.File
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		argv := strings.Fields(in.Text())
		if len(argv) == 0 {
			continue
		}
		var v string
		if strings.HasPrefix(argv[len(argv)-1], "=") {
			v = argv[len(argv)-1][1:]
			argv = argv[:len(argv)-1]
		}
		switch cmd := argv[0]; {
		case cmd == "connect":
			if c != nil {
				c.Close()
				c = nil
			}
			path := ""
			if len(argv) > 1 {
				path = argv[1]
			}
			if c, err = portres.Dial(ctx, path); err != nil {
				c = nil
				errLine(err)
			} else {
				fmt.Fprintln(out, "ok")
			}
		case cmd == "close":
			if c != nil {
				c.Close()
				c = nil
			}
			fmt.Fprintln(out, "ok")
		case c == nil:
			fmt.Fprintln(out, "err - no connection")
		case cmd == "acquire" && len(argv) >= 4:
			s, _ := strconv.Atoi(argv[2])
			n, _ := strconv.Atoi(argv[3])
			var r *portres.Reservation
			if len(argv) > 4 && argv[4] == "delegate" {
				r, err = c.AcquireDelegated(ctx, protoOf(argv[1]), uint16(s), uint16(n))
			} else {
				r, err = c.Acquire(ctx, protoOf(argv[1]), uint16(s), uint16(n))
			}
			if err != nil {
				errLine(err)
				break
			}
			if v != "" {
				setvar(v, r.Token())
			}
			fmt.Fprintf(out, "ok %s %d %d token=%s\n", r.Proto(), r.Start(), r.Count(), varOf(r.Token()))
		case cmd == "release" && len(argv) >= 3:
			r, err := c.ReleaseProto(ctx, protoOf(argv[1]), tokenOf(argv[2]))
			if err != nil {
				errLine(err)
				break
			}
			fmt.Fprintf(out, "ok %s %d %d\n", r.Proto(), r.Start(), r.Count())
		case cmd == "associate" && len(argv) >= 2:
			r, err := c.Reservation(ctx, tokenOf(argv[1]))
			if err != nil {
				errLine(err)
				break
			}
			fmt.Fprintf(out, "ok %s %d %d\n", r.Proto(), r.Start(), r.Count())
		case cmd == "bind" && len(argv) >= 5:
			family, typ := sockType(argv[1])
			fd, _ := syscall.Socket(family, typ|syscall.SOCK_CLOEXEC, 0)
			var addr netip.Addr
			if argv[3] != "-" {
				addr = netip.MustParseAddr(argv[3])
			}
			want, _ := strconv.Atoi(argv[4])
			if argv[3] == "-" {
				want = 0 // as the C driver: no address, no port
			}
			port, err := c.BindFD(ctx, tokenOf(argv[2]), fd, addr, uint16(want))
			if err != nil {
				syscall.Close(fd)
				errLine(err)
				break
			}
			keep = append(keep, os.NewFile(uintptr(fd), "bound"))
			fmt.Fprintf(out, "ok %d\n", port)
		case cmd == "bindmany" && len(argv) >= 6: // bindmany FAMILY TOKEN ADDR|- PORT N
			family, typ := sockType(argv[1])
			n, _ := strconv.Atoi(argv[5])
			fds := make([]int, n)
			for i := range fds {
				fds[i], _ = syscall.Socket(family, typ|syscall.SOCK_CLOEXEC, 0)
			}
			var addr netip.Addr
			want := 0
			if argv[3] != "-" {
				addr = netip.MustParseAddr(argv[3])
				want, _ = strconv.Atoi(argv[4])
			}
			ports, err := c.BindFDs(ctx, tokenOf(argv[2]), fds, addr, uint16(want))
			for i, fd := range fds { // the bound ones stay open: their ports stay bound
				if i < len(ports) {
					keep = append(keep, os.NewFile(uintptr(fd), "bound"))
				} else {
					syscall.Close(fd)
				}
			}
			if err != nil {
				errLine(err)
				break
			}
			fmt.Fprintf(out, "ok %s\n", joinPorts(ports))
		case cmd == "acqbind" && len(argv) >= 4: // acqbind FAMILY ADDR PORT: acquire the port (0: any) and bind, one request
			r, port, f, err := acquireBind(ctx, c, argv[1], argv[2], argv[3])
			if err != nil {
				errLine(err)
				break
			}
			keep = append(keep, f)
			if v != "" {
				setvar(v, r.Token())
			}
			fmt.Fprintf(out, "ok %s %d token=%s\n", r.Proto(), port, varOf(r.Token()))
		case (cmd == "pcreate" || cmd == "pdelete" || cmd == "plookup") && len(argv) >= 4:
			p := protoOf(argv[1])
			s, _ := strconv.Atoi(argv[2])
			n, _ := strconv.Atoi(argv[3])
			var r *portres.Reservation
			switch cmd {
			case "pcreate":
				r, err = c.CreatePersistent(ctx, p, uint16(s), uint16(n))
			case "pdelete":
				err = c.DeletePersistent(ctx, p, uint16(s), uint16(n))
			default:
				r, err = c.LookupPersistent(ctx, p, uint16(s), uint16(n))
			}
			if err != nil {
				errLine(err)
				break
			}
			if cmd == "pdelete" {
				fmt.Fprintln(out, "ok token=-")
				break
			}
			same := varOf(r.Token())
			if v != "" {
				setvar(v, r.Token())
				if same == "other" {
					same = "new"
				}
			}
			fmt.Fprintf(out, "ok token=%s\n", same)
		case cmd == "dynamic" && len(argv) >= 2:
			s, n, err := c.DynamicPortRange(ctx, protoOf(argv[1]))
			if err != nil {
				errLine(err)
				break
			}
			fmt.Fprintf(out, "ok %d %d\n", s, n)
		case cmd == "show":
			infos, err := c.Show(ctx)
			if err != nil {
				errLine(err)
				break
			}
			fmt.Fprintf(out, "ok %d\n", len(infos))
			for _, i := range infos {
				b := func(v bool) int {
					if v {
						return 1
					}
					return 0
				}
				var bound []string
				for _, p := range i.Bound {
					bound = append(bound, strconv.Itoa(int(p)))
				}
				fmt.Fprintf(out, "entry %s %s %d %d mine=%d delegated=%d restored=%d token=%s self=%d bound=%s\n",
					i.Proto, i.Kind, i.Start, i.Count, b(i.Mine), b(i.Delegated), b(i.Restored), varOf(i.Token),
					b(int(i.PID) == os.Getpid()), strings.Join(bound, ","))
			}
		default:
			fmt.Fprintf(out, "err - bad command %s\n", cmd)
		}
	}
	for _, f := range keep {
		f.Close()
	}
	if c != nil {
		c.Close()
	}
	return 0
}

// sockType is the family and type of a driver's socket kind: tcp4,
// tcp6, udp4, udp6.
func sockType(kind string) (family, typ int) {
	family, typ = syscall.AF_INET, syscall.SOCK_STREAM
	if strings.Contains(kind, "6") {
		family = syscall.AF_INET6
	}
	if kind[0] == 'u' {
		typ = syscall.SOCK_DGRAM
	}
	return family, typ
}

// joinPorts is ports as the drivers print them: "5010,5011".
func joinPorts(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

// acquireBind is the Go driver's acqbind: Client.Listen or ListenPacket
// on host:port, the one-request acquire and bind. It returns the
// reservation, the port and the socket, which the caller keeps open.
func acquireBind(ctx context.Context, c *portres.Client, kind, host, port string) (*portres.Reservation, uint16, *os.File, error) {
	network, address := kind, net.JoinHostPort(host, port)
	if kind[0] == 'u' {
		pc, r, err := c.ListenPacket(ctx, network, address)
		if err != nil {
			return nil, 0, nil, err
		}
		f, err := pc.(*net.UDPConn).File()
		pc.Close()
		return r, uint16(pc.LocalAddr().(*net.UDPAddr).Port), f, err
	}
	ln, r, err := c.Listen(ctx, network, address)
	if err != nil {
		return nil, 0, nil, err
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	return r, uint16(ln.Addr().(*net.TCPAddr).Port), f, err
}
