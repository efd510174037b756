package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/portres/portres"
	"github.com/spf13/cobra"
)

// forwarded are the signals portres run passes on to its command.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

func runCmd(e *env) *cobra.Command {
	var tcp, udp uint16
	cmd := &cobra.Command{
		Use:   "run [--tcp N] [--udp M] -- CMD [ARGS...]",
		Short: "Reserve ports for the life of a command and hand them to it",
		Long: `run reserves a block of N TCP and/or M UDP ports placed by the broker,
starts CMD with PORTRES_TCP_PORTS / PORTRES_UDP_PORTS set to the ports
(comma-separated), forwards signals to it, releases the ports when it ends,
and exits with its status. CMD binds the ports with a plain bind(). While it
runs, the kernel never hands the ports out by automatic assignment (bind to
port 0, connect) wherever the broker may write ip_local_reserved_ports
(run warns on stderr when it cannot); explicit binds by other programs are
not prevented (see the README).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return codeError{127, errors.New("portres run: no command to run: give it after the flags, as in portres run --tcp 1 -- CMD [ARGS...]")}
			}
			if tcp == 0 && udp == 0 {
				return errors.New("nothing to reserve: give --tcp N and/or --udp M")
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
			watchRestarts(e, c, "portres run") // CMD keeps running; what was lost is said
			status, err := runChild(e, args, envv)
			if err != nil {
				return err
			}
			return exitError(status)
		},
	}
	countFlag(cmd.Flags(), &tcp, "tcp", "number of TCP ports")
	countFlag(cmd.Flags(), &udp, "udp", "number of UDP ports")
	return cmd
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

// runChild runs args with envv, forwarding signals, and returns its exit
// status (128+N if killed by signal N, as a shell reports it).
func runChild(e *env, args, envv []string) (int, error) {
	child := exec.Command(args[0], args[1:]...)
	child.Env = envv
	child.Stdin, child.Stdout, child.Stderr = e.stdin, e.stdout, e.stderr
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
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				child.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := child.Wait()
	close(done)
	if err == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 0, err
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ee.ExitCode(), nil
}

func joinPorts(ps []uint16) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}
