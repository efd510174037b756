//go:build linux

package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/portres/portres"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// forwarded are the signals portres run passes on to its command.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

func runCmd(e *env) *cobra.Command {
	var tcp, udp uint16
	var listens []string
	cmd := &cobra.Command{
		Use:   "run [--tcp N] [--udp M] [--listen tcp:N|udp:N]... -- CMD [ARGS...]",
		Short: "Reserve ports for the life of a command and hand them to it",
		Long: `run reserves ports placed by the broker and starts CMD with them, in one
of two ways (both may be combined):

  --tcp N, --udp M   N TCP and/or M UDP ports, handed over as
                     PORTRES_TCP_PORTS / PORTRES_UDP_PORTS (comma-separated);
                     CMD binds them with a plain bind(). While it runs the
                     kernel never hands them out by automatic assignment
                     wherever the broker may write ip_local_reserved_ports
                     (run warns when it cannot); explicit binds by other
                     programs are not prevented.
  --listen tcp:N     N TCP sockets (UDP: udp:N) bound through the broker on
                     reserved ports and passed to CMD as systemd passes
                     sockets (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, from
                     descriptor 3 on): any server that supports socket
                     activation gets ports nobody else can take, in every
                     enforcement mode.

CMD runs in a process group of its own, in the terminal's foreground when
run is: Ctrl-C reaches it once. SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1
and SIGUSR2 sent to run are passed to the whole group. run adopts the
processes CMD leaves behind (a subreaper) and keeps the ports until the
last process of CMD's tree has exited, then exits with CMD's status
(128+N if a signal N killed it).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return codeError{127, errors.New("portres run: no command to run: give it after the flags, as in portres run --tcp 1 -- CMD [ARGS...]")}
			}
			specs, err := parseListens(listens)
			if err != nil {
				return err
			}
			if tcp == 0 && udp == 0 && len(specs) == 0 {
				return errors.New("nothing to reserve: give --tcp N, --udp M or --listen tcp:N|udp:N")
			}
			ctx := cmd.Context()
			c, err := e.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			envv := os.Environ()
			var held []*portres.Reservation
			defer func() {
				// Release explicitly: the broker answers only once the
				// ports are out of ip_local_reserved_ports again.
				for _, r := range held {
					r.Release(context.Background())
				}
			}()
			for _, want := range []struct {
				proto portres.Proto
				n     uint16
				name  string
			}{{portres.TCP, tcp, "PORTRES_TCP_PORTS"}, {portres.UDP, udp, "PORTRES_UDP_PORTS"}} {
				if want.n == 0 {
					continue
				}
				r, err := c.AcquireDelegated(ctx, want.proto, 0, want.n)
				if err != nil {
					return err
				}
				held = append(held, r)
				envv = append(envv, want.name+"="+joinPorts(r.Ports()))
			}
			warnNotExcluded(e, held)
			files, names, err := activationSockets(ctx, c, specs, &held)
			defer func() {
				for _, f := range files {
					f.Close()
				}
			}()
			if err != nil {
				return err
			}
			if len(files) > 0 {
				// LISTEN_PID must be CMD's own pid, known only once it
				// runs: a shell sets it and execs CMD in its place.
				envv = append(envv, fmt.Sprintf("LISTEN_FDS=%d", len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
				args = append([]string{"/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$@"`, "sh"}, args...)
			}
			watchRestarts(e, c, "portres run") // CMD keeps running; what was lost is said
			status, err := runChild(e, args, envv, files)
			if err != nil {
				return err
			}
			return exitError(status)
		},
	}
	countFlag(cmd.Flags(), &tcp, "tcp", "number of TCP ports handed over by number")
	countFlag(cmd.Flags(), &udp, "udp", "number of UDP ports handed over by number")
	cmd.Flags().StringArrayVar(&listens, "listen", nil, "tcp:N or udp:N: N sockets bound on reserved ports, passed as systemd passes them (repeatable)")
	return cmd
}

// listenSpec is one --listen: N sockets of proto.
type listenSpec struct {
	proto portres.Proto
	n     int
}

// parseListens reads the --listen flags.
func parseListens(ls []string) ([]listenSpec, error) {
	var specs []listenSpec
	for _, l := range ls {
		p, n, ok := strings.Cut(l, ":")
		proto, err := portres.ParseProto(p)
		count, cerr := strconv.Atoi(n)
		if !ok || err != nil || cerr != nil || count < 1 || count > 64 {
			return nil, fmt.Errorf("--listen %q: want tcp:N or udp:N with N from 1 to 64", l)
		}
		specs = append(specs, listenSpec{proto, count})
	}
	return specs, nil
}

// activationSockets reserves a block for each spec and binds its sockets
// through the broker (TCP ones listening), returning them as files for
// CMD and their LISTEN_FDNAMES names ("tcp-40000").
func activationSockets(ctx context.Context, c *portres.Client, specs []listenSpec, held *[]*portres.Reservation) ([]*os.File, []string, error) {
	var files []*os.File
	var names []string
	for _, sp := range specs {
		r, err := c.Acquire(ctx, sp.proto, 0, uint16(sp.n))
		if err != nil {
			return files, nil, err
		}
		*held = append(*held, r)
		for _, port := range r.Ports() {
			addr := ":" + strconv.Itoa(int(port))
			var f *os.File
			if sp.proto == portres.TCP {
				ln, err := r.Listen(ctx, "tcp", addr)
				if err != nil {
					return files, nil, err
				}
				f, err = ln.(*net.TCPListener).File()
				ln.Close()
				if err != nil {
					return files, nil, err
				}
			} else {
				pc, err := r.ListenPacket(ctx, "udp", addr)
				if err != nil {
					return files, nil, err
				}
				f, err = pc.(*net.UDPConn).File()
				pc.Close()
				if err != nil {
					return files, nil, err
				}
			}
			files = append(files, f)
			names = append(names, fmt.Sprintf("%s-%d", sp.proto, port))
		}
	}
	return files, names, nil
}

// warnNotExcluded prints one warning on stderr naming the blocks of held
// the kernel does not keep out of automatic assignment: until CMD binds
// them, any program's bind(0) or connect() may take one of their ports.
func warnNotExcluded(e *env, held []*portres.Reservation) {
	var blocks []string
	ports := 0
	for _, r := range held {
		if r.Excluded() {
			continue
		}
		ports += int(r.Count())
		if r.Count() == 1 {
			blocks = append(blocks, fmt.Sprintf("%s port %d", r.Proto(), r.Start()))
		} else {
			blocks = append(blocks, fmt.Sprintf("%s ports %d-%d", r.Proto(), r.Start(), r.End()))
		}
	}
	if len(blocks) == 0 {
		return
	}
	are, them := "are", "them"
	if ports == 1 {
		are, them = "is", "it"
	}
	fmt.Fprintf(e.stderr, "portres run: warning: %s %s not excluded from automatic assignment (the broker cannot write net.ipv4.ip_local_reserved_ports): another program's bind(0) or connect() may take %s before CMD binds %s\n",
		strings.Join(blocks, " and "), are, them, them)
}

// runChild runs args with envv (and files from descriptor 3 on) as a
// supervisor: CMD gets a process group of its own, in the terminal's
// foreground if run holds it, signals sent to run go to that whole group
// once, and run, a subreaper, waits for every process of that group it
// adopts before it returns CMD's exit status (128+N if killed by signal N, as a
// shell reports it).
func runChild(e *env, args, envv []string, files []*os.File) (int, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return 0, fmt.Errorf("portres run: become a subreaper: %w", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	child := exec.Command(args[0], args[1:]...)
	child.Env = envv
	child.Stdin, child.Stdout, child.Stderr = e.stdin, e.stdout, e.stderr
	child.ExtraFiles = files
	attr := &syscall.SysProcAttr{Setpgid: true}
	tty := foregroundTTY()
	if tty >= 0 {
		// Job control, as a shell does it: CMD's group takes the
		// terminal, so Ctrl-C goes to it (and not to run, which would
		// pass it on: CMD would see it twice).
		attr.Foreground, attr.Ctty = true, tty
	}
	child.SysProcAttr = attr
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)
	if err := child.Start(); err != nil {
		// As env(1) and timeout(1) say it: 127 not found, 126 not runnable.
		code := 126
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = 127
		}
		return 0, codeError{code, fmt.Errorf("portres run: %s: %w", args[0], err)}
	}
	if tty >= 0 {
		defer takeTerminalBack(tty)
	}
	pgid := child.Process.Pid
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				unix.Kill(-pgid, s.(syscall.Signal))
			case <-done:
				return
			}
		}
	}()
	status := reapAll(child.Process.Pid)
	close(done)
	child.Wait() // the child is reaped already: this only ends the copying of its streams
	return status, nil
}

// reapAll waits for pid, the leader of its process group, and for every
// process of that group this process adopts as a subreaper (what CMD
// leaves behind), and returns pid's exit status. Other children of this
// process, in other groups, are left alone.
func reapAll(pid int) int {
	status := 0
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(-pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return status // ECHILD: no one left
		}
		if wpid == pid {
			switch {
			case ws.Exited():
				status = ws.ExitStatus()
			case ws.Signaled():
				status = 128 + int(ws.Signal())
			}
		}
	}
}

// foregroundTTY returns a descriptor of the controlling terminal if
// stdin is one and this process's group holds it, else -1.
func foregroundTTY() int {
	fd := int(os.Stdin.Fd())
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	if err != nil || pgrp != unix.Getpgrp() {
		return -1
	}
	return fd
}

// takeTerminalBack makes this process's group the terminal's foreground
// again once CMD is done.
func takeTerminalBack(tty int) {
	signal.Ignore(syscall.SIGTTOU) // a background group setting it gets SIGTTOU
	defer signal.Reset(syscall.SIGTTOU)
	unix.IoctlSetPointerInt(tty, unix.TIOCSPGRP, unix.Getpgrp())
}

func joinPorts(ps []uint16) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}
