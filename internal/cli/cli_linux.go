package cli

import (
	"context"

	"github.com/portres/portres"
	"github.com/spf13/cobra"
)

// platformNote ends the root command's description.
const platformNote = ""

// platformCommands are the subcommands of Linux, where portresd runs
// (sample and gen-man register themselves).
func platformCommands(e *env) []*cobra.Command {
	return []*cobra.Command{acquireCmd(e), runCmd(e), showCmd(e), topCmd(e), statusCmd(e), persistentCmd(e), dynamicPortCmd(e)}
}

// dial connects to the broker named by --socket or the default.
func (e *env) dial(ctx context.Context) (*portres.Client, error) {
	return portres.Dial(ctx, e.socket)
}

// withClient runs f with a broker connection that is closed afterwards.
func (e *env) withClient(cmd *cobra.Command, f func(*portres.Client) error) error {
	c, err := e.dial(cmd.Context())
	if err != nil {
		return err
	}
	defer c.Close()
	return f(c)
}

func toJSON(r *portres.Reservation) reservationJSON {
	return reservationJSON{Proto: r.Proto().String(), Start: r.Start(), End: r.End(), Count: r.Count(), Token: tokenString(r.Token())}
}

// brokerPersistent is persistentAPI over portresd.
type brokerPersistent struct{ c *portres.Client }

func openBrokerPersistent(ctx context.Context, e *env) (persistentAPI, error) {
	c, err := e.dial(ctx)
	if err != nil {
		return nil, err
	}
	return brokerPersistent{c}, nil
}

func (b brokerPersistent) create(ctx context.Context, p portres.Proto, start, count uint16) (uint64, error) {
	r, err := b.c.CreatePersistent(ctx, p, start, count)
	if err != nil {
		return 0, err
	}
	return r.Token(), nil
}

func (b brokerPersistent) remove(ctx context.Context, p portres.Proto, start, count uint16) error {
	return b.c.DeletePersistent(ctx, p, start, count)
}

func (b brokerPersistent) lookup(ctx context.Context, p portres.Proto, start, count uint16) (uint64, error) {
	r, err := b.c.LookupPersistent(ctx, p, start, count)
	if err != nil {
		return 0, err
	}
	return r.Token(), nil
}

func (b brokerPersistent) Close() error { return b.c.Close() }

// persistentShow is persistent show: the persistent rows of show.
func persistentShow(e *env) *cobra.Command {
	return &cobra.Command{
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
	}
}

func init() { openPersistent = openBrokerPersistent }
