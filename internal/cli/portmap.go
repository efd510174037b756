//go:build linux

package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/sockdiag"
)

// The terminal port map: a protocol's 65,536 ports as mapRows rows of
// mapCols cells, each cell cellPorts ports, drawn as the most notable
// thing in it.
const (
	mapCols   = 64
	mapRows   = 8
	cellPorts = 65536 / (mapCols * mapRows)
)

// What a port is, least notable first: a cell shows its most notable port.
const (
	portFree = iota
	portDynamic
	portExcluded
	portForeign
	portPersistent
	portDelegated
	portRuntime
	portRestored
)

// glyphs are the cells' characters (a bound port capitalizes a
// reservation's letter) and colors their ANSI SGR codes.
var (
	glyphs = [...]byte{portFree: '.', portDynamic: '-', portExcluded: 'x', portForeign: 'f',
		portPersistent: 'p', portDelegated: 'd', portRuntime: 'r', portRestored: '!'}
	colors = [...]string{portFree: "2", portDynamic: "2;36", portExcluded: "33", portForeign: "31",
		portPersistent: "34", portDelegated: "35", portRuntime: "32", portRestored: "1;91"}
)

// mapLegend explains the glyphs.
const mapLegend = ". free  - dynamic range  r runtime  d delegated  p persistent  (capital: a port of it bound)\n" +
	"! restored, waiting for its owner  x excluded by other software  f a socket outside portres\n"

// portMap is what one protocol's map is drawn from.
type portMap struct {
	proto    portres.Proto
	dynamic  [2]uint16         // the dynamic range, inclusive; {0,0}: unknown
	infos    []portres.Info    // every reservation (other protocols' are skipped)
	inUse    *sockdiag.PortSet // ports with anyone's socket; nil: unknown
	excluded [][2]uint16       // the kernel list's ranges portres did not add
}

// drawMap writes m as mapRows lines of cells, each labeled with its first
// port; color adds ANSI colors.
func drawMap(w io.Writer, m portMap, color bool) {
	var kind [65536]uint8
	var bound [65536]bool
	if m.dynamic[1] != 0 {
		for p := int(m.dynamic[0]); p <= int(m.dynamic[1]); p++ {
			kind[p] = portDynamic
		}
	}
	for _, r := range m.excluded {
		for p := int(r[0]); p <= int(r[1]); p++ {
			kind[p] = portExcluded
		}
	}
	if m.inUse != nil {
		for p := 0; p < 65536; p++ {
			if m.inUse.Has(uint16(p)) {
				kind[p] = portForeign
			}
		}
	}
	for _, i := range m.infos {
		if i.Proto != m.proto {
			continue
		}
		k := uint8(portRuntime)
		switch {
		case i.Restored:
			k = portRestored
		case i.Kind == portres.Persistent:
			k = portPersistent
		case i.Delegated:
			k = portDelegated
		}
		for p := int(i.Start); p < int(i.Start)+int(i.Count); p++ {
			kind[p] = k
		}
		for _, p := range i.Bound {
			bound[p] = true
		}
	}
	var line strings.Builder
	for row := 0; row < mapRows; row++ {
		line.Reset()
		fmt.Fprintf(&line, "%6d ", row*mapCols*cellPorts)
		last := ""
		for col := 0; col < mapCols; col++ {
			lo := (row*mapCols + col) * cellPorts
			k, b := uint8(portFree), false
			for p := lo; p < lo+cellPorts; p++ {
				k = max(k, kind[p])
			}
			for p := lo; p < lo+cellPorts && k >= portPersistent; p++ {
				b = b || (bound[p] && kind[p] == k)
			}
			g := glyphs[k]
			if b {
				g -= 'a' - 'A'
			}
			if color && colors[k] != last {
				fmt.Fprintf(&line, "\x1b[0;%sm", colors[k])
				last = colors[k]
			}
			line.WriteByte(g)
		}
		if color {
			line.WriteString("\x1b[0m")
		}
		line.WriteByte('\n')
		io.WriteString(w, line.String())
	}
}
