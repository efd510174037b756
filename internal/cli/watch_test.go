//go:build linux

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/sockdiag"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

// cell is the glyph drawMap gives the cell holding port p.
func cell(t *testing.T, lines []string, p int) byte {
	t.Helper()
	row, col := p/(mapCols*cellPorts), p%(mapCols*cellPorts)/cellPorts
	return lines[row][7+col]
}

// TestDrawMap: each kind of port gets its glyph, the more notable thing
// in a cell wins, a bound port capitalizes its reservation's letter, and
// colors are ANSI only when asked.
func TestDrawMap(t *testing.T) {
	var inUse sockdiag.PortSet
	inUse.Add(22)    // a foreign socket
	inUse.Add(40001) // inside a reservation: the reservation's
	inUse.Add(61000) // outside the dynamic range
	m := portMap{
		proto:    portres.TCP,
		dynamic:  [2]uint16{49152, 65535},
		inUse:    &inUse,
		excluded: [][2]uint16{{3306, 3306}, {22, 22}},
		infos: []portres.Info{
			{Proto: portres.TCP, Kind: portres.Runtime, Start: 40000, Count: 10, Bound: []uint16{40001}},
			{Proto: portres.TCP, Kind: portres.Runtime, Start: 41000, Count: 10},
			{Proto: portres.TCP, Kind: portres.Runtime, Delegated: true, Start: 42000, Count: 8},
			{Proto: portres.TCP, Kind: portres.Runtime, Restored: true, Start: 43000, Count: 8},
			{Proto: portres.TCP, Kind: portres.Persistent, Start: 8000, Count: 100},
			{Proto: portres.UDP, Kind: portres.Runtime, Start: 20000, Count: 100}, // not this map's
			{Proto: portres.TCP, Kind: portres.Runtime, Start: 52000, Count: 1},   // inside the dynamic range
		},
	}
	var b bytes.Buffer
	drawMap(&b, m, false)
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != mapRows || strings.Contains(b.String(), "\x1b") {
		t.Fatalf("map:\n%s", b.String())
	}
	for _, l := range lines {
		if len(l) != 7+mapCols {
			t.Fatalf("line %q: want a 6-digit label, a space and %d cells", l, mapCols)
		}
	}
	for _, c := range []struct {
		port int
		want byte
	}{
		{1000, '.'}, {22, 'f'}, {3306, 'x'}, {8000, 'p'}, {8099, 'p'}, {20000, '.'},
		{40000, 'R'}, {41000, 'r'}, {42000, 'd'}, {43000, '!'}, {49152, '-'}, {52000, 'r'},
		{61000, 'f'}, {65535, '-'},
	} {
		if got := cell(t, lines, c.port); got != c.want {
			t.Errorf("the cell of port %d is %q, want %q\n%s", c.port, got, c.want, b.String())
		}
	}
	if !strings.HasPrefix(lines[1], "  8192 ") {
		t.Errorf("row label %q", lines[1])
	}
	b.Reset()
	drawMap(&b, m, true)
	if !strings.Contains(b.String(), "\x1b[0;32mr") || !strings.HasSuffix(strings.Split(b.String(), "\n")[0], "\x1b[0m") {
		t.Errorf("colored map has no SGR codes or does not reset them:\n%q", b.String())
	}
}

// TestShowWatch: on a pipe show --watch prints the view again when it
// changes (a new block appears, a released one goes); --json prints one
// array per change; Ctrl-C (SIGINT) ends it with status 0; a too short
// interval is refused.
func TestShowWatch(t *testing.T) {
	b := testbroker.Start(t, nil)
	ctx := context.Background()
	if code, _, errs := run(t, b, "show", "--watch", "--interval", "10ms"); code != 1 || !strings.Contains(errs, "at least 100ms") {
		t.Errorf("--interval 10ms: %d %q", code, errs)
	}
	p := testutil.StartHelper(t, "cli", nil, "--socket", b.Config.Socket, "show", "--watch", "--interval", "100ms")
	// until reads views until one has (or lacks) a line matching want.
	until := func(want string, present bool) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var view strings.Builder
			for {
				l := p.Line(time.Until(deadline))
				if strings.HasPrefix(l, "portres show --watch") && view.Len() > 0 {
					break
				}
				view.WriteString(l + "\n")
				if strings.HasPrefix(l, "! restored") {
					// The legend's end: a blank line and the table follow,
					// then the blank line that ends the view.
					p.Line(time.Until(deadline))
					for l = p.Line(time.Until(deadline)); l != ""; l = p.Line(time.Until(deadline)) {
						view.WriteString(l + "\n")
					}
					break
				}
			}
			if v := view.String(); regexpMatch(v, want) == present {
				return v
			}
			if time.Now().After(deadline) {
				t.Fatalf("no view with %q present=%v", want, present)
			}
		}
	}
	v := until(`No reservations\.`, true)
	if !strings.Contains(v, "TCP  dynamic 55000-64999") && !strings.Contains(v, "TCP  dynamic") {
		t.Errorf("first view has no TCP map:\n%s", v)
	}
	c := b.Dial(t)
	r, err := c.Acquire(ctx, portres.TCP, 44000, 300)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := r.Listen(ctx, "tcp", "127.0.0.1:44100")
	if err != nil {
		t.Fatal(err)
	}
	v = until(`tcp\s+44000\s+44299\s+300\s+runtime .*44100`, true)
	// The TCP map comes first; in its row from 40960, the cell of 44000
	// (43904-44031) is the block's, that of 44100 (44032-44159) bound.
	row := v[strings.Index(v, "\n 40960 ")+1:]
	if row[7+23] != 'r' || row[7+24] != 'R' {
		t.Errorf("the map does not show the block with its bound port:\n%s", v)
	}
	ln.Close()
	if err := r.Release(ctx); err != nil {
		t.Fatal(err)
	}
	until(`44000`, false)
	p.Cmd.Process.Signal(syscall.SIGINT)
	if code := p.Wait(); code != 0 {
		t.Errorf("show --watch exited %d after SIGINT, want 0", code)
	}

	j := testutil.StartHelper(t, "cli", nil, "--socket", b.Config.Socket, "show", "--watch", "--json", "--interval", "100ms")
	if l := j.Line(10 * time.Second); l != "[]" {
		t.Fatalf("first JSON line %q, want []", l)
	}
	r, err = c.Acquire(ctx, portres.UDP, 45000, 2)
	if err != nil {
		t.Fatal(err)
	}
	var es []portres.ShowEntry
	if err := json.Unmarshal([]byte(j.Line(10*time.Second)), &es); err != nil || len(es) != 1 || es[0].Start != 45000 || es[0].Proto != "udp" {
		t.Fatalf("second JSON line: %+v %v", es, err)
	}
	r.Release(ctx)
	if l := j.Line(10 * time.Second); l != "[]" {
		t.Fatalf("third JSON line %q, want []", l)
	}
	j.Cmd.Process.Signal(syscall.SIGINT)
	if code := j.Wait(); code != 0 {
		t.Errorf("show --watch --json exited %d after SIGINT", code)
	}
}

// TestTopOnTerminal: on a terminal top redraws in place (cursor home,
// lines cleared) with colors, and fits the view to the terminal's height.
func TestTopOnTerminal(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	for i := 0; i < 40; i++ {
		if _, err := c.Acquire(context.Background(), portres.TCP, uint16(46000+10*i), 5); err != nil {
			t.Fatal(err)
		}
	}
	ptmx, pts := openPTY(t, &unix.Winsize{Row: 40, Col: 120})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TERM=xterm", "NO_COLOR=", "PORTRES_TEST_HELPER=cli", "PORTRES_TEST_HELPER_ARGS="+strings.Join([]string{
		"--socket", b.Config.Socket, "top", "--interval", "100ms"}, "\x1f"))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	out := make(chan []byte, 64)
	go func() {
		for {
			buf := make([]byte, 1<<16)
			n, err := ptmx.Read(buf)
			if err != nil {
				close(out)
				return
			}
			out <- buf[:n]
		}
	}()
	var got []byte
	deadline := time.After(10 * time.Second)
	for bytes.Count(got, []byte("\x1b[H")) < 2 {
		select {
		case b, ok := <-out:
			if !ok {
				t.Fatalf("top ended early: %q", got)
			}
			got = append(got, b...)
		case <-deadline:
			t.Fatalf("top did not redraw twice: %q", got)
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	frame := got[bytes.Index(got, []byte("\x1b[H")):]
	frame = frame[:bytes.Index(frame[3:], []byte("\x1b[H"))+3]
	s := string(frame)
	if !strings.Contains(s, "\x1b[K") || !strings.HasSuffix(s, "\x1b[J") || !strings.Contains(s, "\x1b[0;32m") {
		t.Errorf("the frame does not redraw in place with colors: %q", s)
	}
	if lines := strings.Count(s, "\n"); lines > 40 || !strings.Contains(s, "more lines: enlarge the terminal") {
		t.Errorf("a 40-line terminal got %d lines and no note of the rest: %q", lines, s)
	}
}
