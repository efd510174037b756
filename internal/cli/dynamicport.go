package cli

import (
	"fmt"

	"github.com/portres/portres"
	"github.com/spf13/cobra"
)

func dynamicPortCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dynamicport",
		Short: "Show or set the range wildcard reservations are drawn from",
	}
	var proto string
	show := &cobra.Command{
		Use:   "show [--proto tcp|udp]",
		Short: "Show the dynamic port range (both protocols unless --proto)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			protos := []portres.Proto{portres.TCP, portres.UDP}
			if proto != "" {
				p, err := portres.ParseProto(proto)
				if err != nil {
					return err
				}
				protos = protos[:0]
				protos = append(protos, p)
			}
			c, err := e.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			var out []rangeJSON
			for _, p := range protos {
				start, num, err := c.DynamicPortRange(cmd.Context(), p)
				if err != nil {
					return err
				}
				if e.json {
					out = append(out, rangeJSON{Proto: p.String(), Start: start, Count: num, End: int(start) + int(num) - 1})
					continue
				}
				fmt.Fprintf(e.stdout, "Protocol %s Dynamic Port Range\n---------------------------------\nStart Port      : %d\nNumber of Ports : %d\n\n", p, start, num)
			}
			if e.json {
				return e.printJSON(out)
			}
			return nil
		},
	}
	protoFlagDef(show, &proto, "tcp or udp")
	var setProto string
	var start, num uint16
	set := &cobra.Command{
		Use:   "set --proto tcp|udp --start N --num N",
		Short: "Set the dynamic port range (at least 255 ports, start >= 1025, end <= 65535)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := protoFlag(setProto)
			if err != nil {
				return err
			}
			if err := e.withClient(cmd, func(c *portres.Client) error {
				return c.SetDynamicPortRange(cmd.Context(), p, start, num)
			}); err != nil {
				return err
			}
			if e.json {
				return e.printJSON(rangeJSON{Proto: p.String(), Start: start, Count: num, End: int(start) + int(num) - 1})
			}
			fmt.Fprintf(e.stdout, "Dynamic %s port range set to %d-%d (%s).\n", p, start, int(start)+int(num)-1, ports(num))
			return nil
		},
	}
	protoFlagDef(set, &setProto, "tcp or udp")
	portFlag(set.Flags(), &start, "start", "first port (>= 1025)")
	countFlag(set.Flags(), &num, "num", "number of ports (>= 255)")
	cmd.AddCommand(show, set)
	return cmd
}

// rangeJSON is a dynamic port range in --json output, keys in the order
// the README documents.
type rangeJSON struct {
	Proto string `json:"proto"`
	Start uint16 `json:"start"`
	Count uint16 `json:"count"`
	End   int    `json:"end"`
}
