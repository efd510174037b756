//go:build linux

package cli

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/portres/portres"
	"github.com/spf13/cobra"
)

func showCmd(e *env) *cobra.Command {
	return showOrTop(e, false)
}

// topCmd is show --watch under the name people type for a live view.
func topCmd(e *env) *cobra.Command {
	return showOrTop(e, true)
}

func showOrTop(e *env, top bool) *cobra.Command {
	var proto string
	var wide, watch, fleet bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "show [--proto tcp|udp] [--wide] [--watch [--interval D] | --fleet]",
		Short: "List every reservation: protocol, range, kind, owner, bound ports",
		Long: `show lists every reservation, runtime and persistent, with its owner and
bound ports, and the ranges of the kernel's reserved-port list that other
software put there (portres never removes those). Owners' command lines
are quoted and cut to 40 characters unless --wide.

With --watch it follows the broker until Ctrl-C: on a terminal it draws a
map of each protocol's 65,536 ports (the dynamic range, reservations by
kind, bound ports, other software's exclusions, sockets outside portres)
above the table and redraws it in place every --interval; on a pipe it
prints the view again each time it changes; with --json it prints one
JSON array (show --json's entries) per line each time they change.
Others' sockets are read from this host's socket tables (run it in the
broker's network namespace).`,
		Example: `  portres show
  portres show --proto udp --wide
  portres show --watch
  portres show --watch --json | jq -c 'map(select(.kind == "runtime"))'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var want portres.Proto
			if proto != "" {
				p, err := portres.ParseProto(proto)
				if err != nil {
					return err
				}
				want = p
			}
			if fleet && watch {
				return fmt.Errorf("show: --fleet shows the fleet once; it does not follow it (--watch)")
			}
			return e.withClient(cmd, func(c *portres.Client) error {
				if fleet {
					es, err := c.ShowFleet(cmd.Context())
					if err != nil {
						return err
					}
					if want != 0 {
						es = slices.DeleteFunc(es, func(i portres.FleetEntry) bool { return i.Proto != want.String() })
					}
					return e.printFleetShow(es, wide)
				}
				if watch || top {
					return e.watch(cmd.Context(), c, want, wide, interval)
				}
				infos, err := c.Show(cmd.Context())
				if err != nil {
					return err
				}
				if want != 0 {
					infos = slices.DeleteFunc(infos, func(i portres.Info) bool { return i.Proto != want })
				}
				var foreign []string
				if !e.json {
					if st, err := c.Status(cmd.Context()); err == nil {
						foreign = st.KernelList.Foreign
					}
				}
				return e.printInfos(infos, foreign, wide)
			})
		},
	}
	if top {
		cmd.Use = "top [--proto tcp|udp] [--wide] [--interval D]"
		cmd.Short = "Follow the port map and the reservations live (show --watch)"
		cmd.Long = "top is show --watch: " + cmd.Long[strings.Index(cmd.Long, "it follows"):]
		cmd.Example = "  portres top\n  portres top --proto tcp --interval 2s"
	} else {
		cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the broker until Ctrl-C (see above)")
		cmd.Flags().BoolVar(&fleet, "fleet", false, "every member's reservations in the broker's fleet (portresd --etcd), with member and host; tokens never leave their host")
	}
	protoFlagDef(cmd, &proto, "only tcp or only udp reservations")
	cmd.Flags().BoolVar(&wide, "wide", false, "print owners' command lines whole")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "how often to look when watching (at least 100ms)")
	return cmd
}

// commandColumn is how long a command line may be in show's table.
const commandColumn = 40

// processOwner is the Owner column of a process's block: its pid and its
// command line, cut to commandColumn characters unless wide. The command
// line is another process's: quoting it escapes anything a terminal
// could act on too.
func processOwner(pid int32, cmdline string, wide bool) string {
	if r := []rune(cmdline); !wide && len(r) > commandColumn {
		cmdline = string(r[:commandColumn-1]) + "…"
	}
	return fmt.Sprintf("pid %d %s", pid, strconv.QuoteToASCII(cmdline))
}

// infoJSON is the stable JSON form of one reservation in show. Command is
// the owner's command line exactly, escaped as JSON requires (printJSON
// also escapes DEL, C1 and format characters as \uXXXX); a command line
// that is not valid UTF-8 cannot be exact in JSON: encoding/json replaces
// each invalid byte with U+FFFD.
type infoJSON = portres.ShowEntry

// printInfos prints infos (and, as text, the kernel list's foreign
// ranges).
func (e *env) printInfos(infos []portres.Info, foreign []string, wide bool) error {
	if e.json {
		return e.printJSON(portres.ShowEntries(infos))
	}
	if len(infos) == 0 && len(foreign) == 0 {
		fmt.Fprintln(e.stdout, "No reservations.")
		return nil
	}
	w := tabwriter.NewWriter(e.stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "Protocol\tStart\tEnd\tPorts\tKind\tOwner\tBound")
	for _, i := range infos {
		owner := fmt.Sprintf("uid %d", i.UID)
		if i.Kind == portres.Runtime {
			owner = processOwner(i.PID, i.Command, wide)
		}
		kind := i.Kind.String()
		if i.Delegated {
			kind += "*"
		}
		if i.Restored {
			kind += "+"
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%s\t%s\t%s\n", i.Proto, i.Start, i.Start+i.Count-1, i.Count, kind, owner, compactPorts(i.Bound))
	}
	for _, r := range foreign {
		lo, hi, _ := strings.Cut(r, "-")
		if hi == "" {
			hi = lo
		}
		n, _ := strconv.Atoi(hi)
		m, _ := strconv.Atoi(lo)
		fmt.Fprintf(w, "tcp+udp\t%s\t%s\t%d\texcluded\tnot portres (ip_local_reserved_ports)\t-\n", lo, hi, n-m+1)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, i := range infos {
		if i.Delegated {
			fmt.Fprintln(e.stdout, "* delegated: handed to another process by portres run")
			break
		}
	}
	for _, i := range infos {
		if i.Restored {
			fmt.Fprintln(e.stdout, "+ restored: kept across a restart of the broker, waiting for its owner to reclaim it")
			break
		}
	}
	return nil
}

// compactPorts prints ascending ports as ranges: "40000-40002,40005".
func compactPorts(ps []uint16) string {
	if len(ps) == 0 {
		return "-"
	}
	var b strings.Builder
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j == i {
			fmt.Fprintf(&b, "%d", ps[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", ps[i], ps[j])
		}
		i = j + 1
	}
	return b.String()
}
