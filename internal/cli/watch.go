//go:build linux

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/sockdiag"
	"golang.org/x/sys/unix"
)

// minInterval is the shortest --interval: each view costs the broker a
// sweep of the socket tables.
const minInterval = 100 * time.Millisecond

// watcher is show --watch (and top): the port map and the reservations,
// redrawn in place on a terminal, printed again when they change
// otherwise, or one JSON array per change with --json.
type watcher struct {
	e        *env
	c        *portres.Client
	want     portres.Proto // 0: both
	wide     bool
	interval time.Duration
	tty      bool // stdout is a terminal: redraw in place
	color    bool
	last     []byte // the last view printed, its clock aside
}

// watch runs until ctx ends (Ctrl-C): that is its normal end.
func (e *env) watch(ctx context.Context, c *portres.Client, want portres.Proto, wide bool, interval time.Duration) error {
	if interval < minInterval {
		return fmt.Errorf("--interval %v: at least %v", interval, minInterval)
	}
	w := &watcher{e: e, c: c, want: want, wide: wide, interval: interval}
	if f, ok := e.stdout.(*os.File); ok && !e.json {
		if _, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil {
			w.tty = true
			w.color = os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
		}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := w.once(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// once reads the broker and prints the view if it is due.
func (w *watcher) once(ctx context.Context) error {
	infos, err := w.c.Show(ctx)
	if ctx.Err() != nil {
		return nil
	}
	var st *portres.Status
	if err == nil {
		st, err = w.c.Status(ctx)
	}
	if w.want != 0 {
		infos = slices.DeleteFunc(infos, func(i portres.Info) bool { return i.Proto != w.want })
	}
	now := time.Now()
	if w.e.json {
		if err != nil {
			return w.changed(nil, []byte(err.Error()), func() { fmt.Fprintf(w.e.stderr, "portres: %v; retrying\n", err) })
		}
		js, jerr := json.Marshal(portres.ShowEntries(infos))
		if jerr != nil {
			return jerr
		}
		js = append(jsonTermSafe(js), '\n')
		return w.changed(js, js, nil)
	}
	var body bytes.Buffer
	if err != nil {
		fmt.Fprintf(&body, "lost the broker: %v; retrying every %v\n", err, w.interval)
	} else {
		w.view(&body, infos, st)
	}
	head := fmt.Sprintf("portres show --watch · %s · every %v · Ctrl-C to stop\n", now.Format("15:04:05"), w.interval)
	if err == nil {
		head = fmt.Sprintf("portres show --watch · %s · portresd %s · enforcement %s · %s · Ctrl-C to stop\n",
			now.Format("15:04:05"), st.Version, st.Enforcement.Mode, reservations(len(infos)))
	}
	if w.tty {
		// Redraw in place: home, each line cleared to its end, the rest
		// of the screen cleared; the clock ticks even when nothing else
		// changed.
		var out bytes.Buffer
		out.WriteString("\x1b[H")
		for _, l := range strings.SplitAfter(head+"\n"+w.fit(body.String()), "\n") {
			out.WriteString(strings.TrimSuffix(l, "\n"))
			if strings.HasSuffix(l, "\n") {
				out.WriteString("\x1b[K\n")
			}
		}
		out.WriteString("\x1b[J")
		_, werr := w.e.stdout.Write(out.Bytes())
		return werr
	}
	return w.changed(append([]byte(head+"\n"), body.Bytes()...), body.Bytes(), func() {})
}

// changed prints out if key differs from the last view's (when out is
// nil it runs say instead), so a pipe gets one view per change, each
// ended by a blank line.
func (w *watcher) changed(out, key []byte, say func()) error {
	if bytes.Equal(key, w.last) {
		return nil
	}
	w.last = slices.Clone(key)
	if out == nil {
		say()
		return nil
	}
	if !w.e.json {
		out = append(out, '\n') // a view ends with a blank line
	}
	_, err := w.e.stdout.Write(out)
	return err
}

// view draws the map of each protocol shown and the reservations' table.
func (w *watcher) view(out *bytes.Buffer, infos []portres.Info, st *portres.Status) {
	excluded := st.KernelList.ForeignRanges()
	for _, p := range []portres.Proto{portres.TCP, portres.UDP} {
		if w.want != 0 && p != w.want {
			continue
		}
		m := portMap{proto: p, infos: infos, excluded: excluded}
		for _, d := range st.Dynamic {
			if d.Proto == p {
				m.dynamic = [2]uint16{d.Start, d.End}
			}
		}
		note := ""
		if set, err := sockdiag.Ports(uint8(p), 0, 65535); err == nil {
			m.inUse = set
		} else {
			note = " · others' sockets unknown: " + err.Error()
		}
		fmt.Fprintf(out, "%s  dynamic %d-%d · %d ports a cell%s\n", strings.ToUpper(p.String()), m.dynamic[0], m.dynamic[1], cellPorts, note)
		drawMap(out, m, w.color)
		out.WriteByte('\n')
	}
	out.WriteString(mapLegend)
	out.WriteByte('\n')
	sub := *w.e
	sub.stdout = out
	sub.printInfos(infos, st.KernelList.Foreign, w.wide)
}

// fit cuts body to the terminal's height, saying how much was left out.
func (w *watcher) fit(body string) string {
	f, ok := w.e.stdout.(*os.File)
	if !ok {
		return body
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Row < 10 {
		return body
	}
	lines := strings.SplitAfter(body, "\n")
	room := int(ws.Row) - 3 // the header, its blank line, the note
	if len(lines) <= room {
		return body
	}
	return strings.Join(lines[:room], "") + fmt.Sprintf("… %d more lines: enlarge the terminal, or portres show\n", len(lines)-room)
}

// reservations says "1 reservation" or "N reservations".
func reservations(n int) string {
	if n == 1 {
		return "1 reservation"
	}
	return fmt.Sprintf("%d reservations", n)
}
