//go:build linux

package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/portres/portres"
	"github.com/spf13/cobra"
)

func acquireCmd(e *env) *cobra.Command {
	var proto string
	var start, count uint16
	var untilEOF, fleet bool
	cmd := &cobra.Command{
		Use:   "acquire --proto tcp|udp [--start N] --count N [--until-stdin-closes]",
		Short: "Reserve a block of ports and hold it until interrupted",
		Long: `acquire reserves count ports (a specific block from --start, or a block the
broker places in the dynamic range when --start is 0), prints it, and holds
it until it gets SIGINT or SIGTERM (or, with --until-stdin-closes, until its
standard input closes); then releases it. It keeps the block across a
restart of the broker and says so on stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := protoFlag(proto)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			c, err := e.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			acquire := c.Acquire
			if fleet {
				acquire = c.AcquireFleet
			}
			r, err := acquire(ctx, p, start, count)
			if err != nil {
				return err
			}
			lost := watchRestarts(e, c, "portres acquire")
			if e.json {
				e.printJSON(toJSON(r))
			} else {
				fmt.Fprintf(e.stdout, "Acquired %s (%s), token %s\n", block(r.Proto(), r.Start(), r.Count()), ports(r.Count()), tokenString(r.Token()))
			}
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			go func() {
				select {
				case <-lost:
					cancel()
				case <-wctx.Done():
				}
			}()
			if untilEOF {
				waitStdinOrDone(wctx, e.stdin)
			} else {
				<-wctx.Done()
			}
			select {
			case err := <-lost:
				return err
			default:
			}
			return r.Release(context.Background())
		},
	}
	protoFlagDef(cmd, &proto, "tcp or udp")
	portFlag(cmd.Flags(), &start, "start", "first port (0: the broker chooses in the dynamic range)")
	countFlag(cmd.Flags(), &count, "count", "number of ports")
	cmd.Flags().BoolVar(&fleet, "fleet", false, "take a fleet lease: a block of the fleet range (portresd --fleet-range) unique across every member of the broker's fleet (--start 0: wherever the fleet has room)")
	cmd.Flags().BoolVar(&untilEOF, "until-stdin-closes", false, "also release when standard input closes (for a script that holds the block while a pipe is open)")
	cmd.MarkFlagRequired("count")
	return cmd
}

// watchRestarts reports on stderr, as name, each reconnection of c to a
// restarted broker: the blocks it kept and the ones it lost. The channel
// receives the first loss.
func watchRestarts(e *env, c *portres.Client, name string) <-chan error {
	lost := make(chan error, 1)
	c.OnRestart(func(r portres.Restart) {
		for _, k := range r.Kept {
			fmt.Fprintf(e.stderr, "%s: the broker restarted; %s is still reserved\n", name, k)
		}
		for _, l := range r.Lost {
			fmt.Fprintf(e.stderr, "%s: the broker restarted; %s is no longer reserved: %s\n", name, l.Reservation, termSafe(l.Err.Error()))
			select {
			case lost <- fmt.Errorf("%s is no longer reserved: %w", l.Reservation, l.Err):
			default:
			}
		}
	})
	return lost
}

// waitStdinOrDone returns when ctx ends or stdin reaches end of file.
func waitStdinOrDone(ctx context.Context, stdin io.Reader) {
	eof := make(chan struct{})
	go func() {
		io.Copy(io.Discard, stdin)
		close(eof)
	}()
	select {
	case <-ctx.Done():
	case <-eof:
	}
}
