//go:build linux || windows

package cli

import (
	"context"
	"fmt"

	"github.com/portres/portres"
	"github.com/spf13/cobra"
)

// persistentAPI is what persistent add, delete and lookup call: portresd
// on Linux (brokerPersistent), the system's iphlpapi.dll through the
// winsock package on Windows (winsockPersistent).
type persistentAPI interface {
	create(ctx context.Context, p portres.Proto, start, count uint16) (token uint64, err error)
	remove(ctx context.Context, p portres.Proto, start, count uint16) error
	lookup(ctx context.Context, p portres.Proto, start, count uint16) (token uint64, err error)
	Close() error
}

// openPersistent opens the platform's persistentAPI (set by the
// platform's file; tests may swap it).
var openPersistent func(ctx context.Context, e *env) (persistentAPI, error)

func persistentCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "persistent",
		Short: "Administer persistent reservations (kept across restarts, never handed out automatically)",
		Long: `persistent administers persistent reservations: blocks of ports kept across
restarts and reboots, never handed out by the kernel's automatic
assignment, whose token root and the broker's admin group may consume.

On Windows, add, delete and lookup call the system's API directly
(Create/Delete/LookupPersistent{Tcp,Udp}PortReservation in iphlpapi.dll,
which need an administrator for add and delete) instead of portresd;
show needs portresd (on Windows: netsh int ipv4 show excludedportrange).`,
	}
	cmd.AddCommand(
		blockCmd(e, "add", "Create a persistent reservation (root or the admin group)", func(api persistentAPI, ctx context.Context, p portres.Proto, start, count uint16) (uint64, error) {
			return api.create(ctx, p, start, count)
		}),
		blockCmd(e, "delete", "Delete the persistent reservation that is exactly --start/--count", func(api persistentAPI, ctx context.Context, p portres.Proto, start, count uint16) (uint64, error) {
			return 0, api.remove(ctx, p, start, count)
		}),
		blockCmd(e, "lookup", "Print the token of the persistent reservation that is exactly --start/--count", func(api persistentAPI, ctx context.Context, p portres.Proto, start, count uint16) (uint64, error) {
			return api.lookup(ctx, p, start, count)
		}),
		persistentShow(e),
	)
	return cmd
}

// blockCmd is a persistent verb taking --proto, --start and --count; do
// returns the block's token, 0 for delete.
func blockCmd(e *env, verb, short string, do func(persistentAPI, context.Context, portres.Proto, uint16, uint16) (uint64, error)) *cobra.Command {
	var proto string
	var start, count uint16
	var fleet bool
	cmd := &cobra.Command{
		Use:   verb + " --proto tcp|udp --start N --count N [--fleet]",
		Short: short,
		Long:  short + ".\n\nOn Windows it calls the system's API (iphlpapi.dll) instead of portresd.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := protoFlag(proto)
			if err != nil {
				return err
			}
			open := openPersistent
			if fleet {
				open = openFleetPersistent
			}
			api, err := open(cmd.Context(), e)
			if err != nil {
				return err
			}
			defer api.Close()
			token, err := do(api, cmd.Context(), p, start, count)
			if err != nil {
				return err
			}
			kind := "persistent"
			if fleet {
				kind = "fleet persistent"
			}
			end := uint16(int(start) + int(count) - 1)
			switch {
			case verb == "delete" && e.json:
				return e.printJSON(map[string]any{"deleted": reservationJSON{Proto: p.String(), Start: start, End: end, Count: count}})
			case verb == "delete":
				fmt.Fprintf(e.stdout, "Deleted %s %s.\n", kind, block(p, start, count))
			case e.json:
				return e.printJSON(reservationJSON{Proto: p.String(), Start: start, End: end, Count: count, Token: tokenString(token)})
			case fleet:
				fmt.Fprintf(e.stdout, "Fleet persistent %s (%s), token %s\n", block(p, start, count), ports(count), tokenString(token))
			default:
				fmt.Fprintf(e.stdout, "Persistent %s (%s), token %s\n", block(p, start, count), ports(count), tokenString(token))
			}
			return nil
		},
	}
	protoFlagDef(cmd, &proto, "tcp or udp")
	portFlag(cmd.Flags(), &start, "start", "first port")
	countFlag(cmd.Flags(), &count, "count", "number of ports")
	cmd.Flags().BoolVar(&fleet, "fleet", false, "the fleet persistent reservation: on every member of the broker's fleet (portresd --etcd), or on none")
	return cmd
}
