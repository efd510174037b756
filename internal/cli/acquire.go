package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func acquireCmd(e *env) *cobra.Command {
	var proto string
	var start, count uint16
	cmd := &cobra.Command{
		Use:   "acquire --proto tcp|udp [--start N] --count N",
		Short: "Reserve a block of ports and hold it until interrupted or stdin closes",
		Long: `acquire reserves count ports (a specific block from --start, or a block the
broker places in the dynamic range when --start is 0), prints it, and holds
it until interrupted or until its standard input closes; then releases it.`,
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
			r, err := c.Acquire(ctx, p, start, count)
			if err != nil {
				return err
			}
			if e.json {
				e.printJSON(toJSON(r))
			} else {
				fmt.Fprintf(e.stdout, "Acquired %s %d-%d (%d ports), token %s\n", r.Proto(), r.Start(), r.End(), r.Count(), tokenString(r.Token()))
			}
			waitStdinOrDone(ctx, e.stdin)
			return r.Release(context.Background())
		},
	}
	cmd.Flags().StringVar(&proto, "proto", "", "tcp or udp")
	cmd.Flags().Uint16Var(&start, "start", 0, "first port (0: the broker chooses in the dynamic range)")
	cmd.Flags().Uint16Var(&count, "count", 0, "number of ports")
	cmd.MarkFlagRequired("count")
	return cmd
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
