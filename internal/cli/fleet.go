//go:build linux

package cli

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/portres/portres"
)

// fleetPersistent is persistentAPI over the broker's fleet: the fleet
// persistent reservations of persistent add|delete|lookup --fleet.
type fleetPersistent struct{ c *portres.Client }

var openFleetPersistent = func(ctx context.Context, e *env) (persistentAPI, error) {
	c, err := e.dial(ctx)
	if err != nil {
		return nil, err
	}
	return fleetPersistent{c}, nil
}

func (f fleetPersistent) create(ctx context.Context, p portres.Proto, start, count uint16) (uint64, error) {
	r, err := f.c.CreateFleetPersistent(ctx, p, start, count)
	if err != nil {
		return 0, err
	}
	return r.Token(), nil
}

func (f fleetPersistent) remove(ctx context.Context, p portres.Proto, start, count uint16) error {
	return f.c.DeleteFleetPersistent(ctx, p, start, count)
}

func (f fleetPersistent) lookup(ctx context.Context, p portres.Proto, start, count uint16) (uint64, error) {
	r, err := f.c.LookupFleetPersistent(ctx, p, start, count)
	if err != nil {
		return 0, err
	}
	return r.Token(), nil
}

func (f fleetPersistent) Close() error { return f.c.Close() }

// printFleetShow prints show --fleet: every member's reservations.
func (e *env) printFleetShow(es []portres.FleetEntry, wide bool) error {
	if e.json {
		return e.printJSON(es)
	}
	if len(es) == 0 {
		fmt.Fprintln(e.stdout, "No reservations in the fleet.")
		return nil
	}
	w := tabwriter.NewWriter(e.stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "Member\tHost\tProtocol\tStart\tEnd\tPorts\tKind\tOwner\tBound")
	for _, i := range es {
		owner := fmt.Sprintf("uid %d", i.UID)
		if i.PID != 0 {
			owner = processOwner(i.PID, i.Command, wide)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", termSafe(i.Member), termSafe(i.Host), i.Proto, i.Start,
			int(i.Start)+int(i.Count)-1, i.Count, i.Kind, owner, compactPorts(i.Bound))
	}
	return w.Flush()
}

// printFleetStatus prints status --fleet.
func (e *env) printFleetStatus(st *portres.Status) error {
	f := st.Fleet
	if f == nil {
		return fmt.Errorf("this broker is not a member of a fleet (portresd --etcd)")
	}
	if e.json {
		return e.printJSON(f)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 8, 2, ' ', 0)
	state := "connected"
	if !f.Connected {
		state = "CUT OFF: " + termSafe(f.Error)
	}
	fmt.Fprintf(w, "Fleet member\t%s (%s)\n", termSafe(f.Name), state)
	fmt.Fprintf(w, "etcd\t%v, prefix %s\n", f.Endpoints, termSafe(f.Prefix))
	if f.Range != "" {
		fmt.Fprintf(w, "Fleet range\t%s: %d ports leased across the fleet\n", f.Range, f.Leased)
	}
	fmt.Fprintf(w, "Fleet blocks\t%d persistent\n", f.Blocks)
	w.Flush()
	fmt.Fprintln(e.stdout)
	w = tabwriter.NewWriter(e.stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "Member\tHost\tPID\tVersion\tFleet range\tSince")
	for _, m := range f.Members {
		rng := "-"
		if m.RangeStart != 0 {
			rng = fmt.Sprintf("%d-%d", m.RangeStart, m.RangeEnd)
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\n", termSafe(m.Name), termSafe(m.Host), m.PID, termSafe(m.Version), rng, m.Since.Format("2006-01-02 15:04:05"))
	}
	return w.Flush()
}
