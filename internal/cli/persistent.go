package cli

import (
	"fmt"

	"github.com/portres/portres"
	"github.com/spf13/cobra"
)

func persistentCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "persistent",
		Short: "Administer persistent reservations (kept across restarts, never handed out automatically)",
	}
	cmd.AddCommand(
		blockCmd(e, "add", "Create a persistent reservation (root or the admin group)", func(c *portres.Client, cmd *cobra.Command, p portres.Proto, start, count uint16) (*portres.Reservation, error) {
			return c.CreatePersistent(cmd.Context(), p, start, count)
		}),
		blockCmd(e, "delete", "Delete the persistent reservation that is exactly --start/--count", func(c *portres.Client, cmd *cobra.Command, p portres.Proto, start, count uint16) (*portres.Reservation, error) {
			return nil, c.DeletePersistent(cmd.Context(), p, start, count)
		}),
		blockCmd(e, "lookup", "Print the token of the persistent reservation that is exactly --start/--count", func(c *portres.Client, cmd *cobra.Command, p portres.Proto, start, count uint16) (*portres.Reservation, error) {
			return c.LookupPersistent(cmd.Context(), p, start, count)
		}),
		&cobra.Command{
			Use:   "show",
			Short: "List persistent reservations",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return e.withClient(cmd, func(c *portres.Client) error {
					infos, err := c.Show(cmd.Context())
					if err != nil {
						return err
					}
					var ps []portres.Info
					for _, i := range infos {
						if i.Kind == portres.Persistent {
							ps = append(ps, i)
						}
					}
					return e.printInfos(ps, nil, false)
				})
			},
		},
	)
	return cmd
}

// blockCmd is a persistent verb taking --proto, --start and --count.
func blockCmd(e *env, verb, short string, do func(*portres.Client, *cobra.Command, portres.Proto, uint16, uint16) (*portres.Reservation, error)) *cobra.Command {
	var proto string
	var start, count uint16
	cmd := &cobra.Command{
		Use:   verb + " --proto tcp|udp --start N --count N",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := protoFlag(proto)
			if err != nil {
				return err
			}
			var r *portres.Reservation
			err = e.withClient(cmd, func(c *portres.Client) (err error) {
				r, err = do(c, cmd, p, start, count)
				return err
			})
			if err != nil {
				return err
			}
			switch {
			case r == nil && e.json:
				return e.printJSON(map[string]any{"deleted": reservationJSON{Proto: p.String(), Start: start, End: start + count - 1, Count: count}})
			case r == nil:
				fmt.Fprintf(e.stdout, "Deleted persistent %s.\n", block(p, start, count))
			case e.json:
				return e.printJSON(toJSON(r))
			default:
				fmt.Fprintf(e.stdout, "Persistent %s (%s), token %s\n", block(r.Proto(), r.Start(), r.Count()), ports(r.Count()), tokenString(r.Token()))
			}
			return nil
		},
	}
	protoFlagDef(cmd, &proto, "tcp or udp")
	portFlag(cmd.Flags(), &start, "start", "first port")
	countFlag(cmd.Flags(), &count, "count", "number of ports")
	return cmd
}
