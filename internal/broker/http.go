//go:build linux

package broker

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/web"
	"github.com/portres/portres/internal/wire"
)

// Snapshot is the state the port map and the JSON API show (web.Source):
// every reservation without its token, the status, and the ports in use
// by anyone, read with one sweep a chunk at a time (walk), never holding
// the broker's lock over all of it.
func (b *Broker) Snapshot() web.Snapshot {
	var inUse [2]*enforce.PortSet
	var es []wire.Entry
	b.entries(nil, false, &inUse, func(e wire.Entry) {
		e.Token = 0
		es = append(es, e)
	})
	s := web.Snapshot{Entries: es, Status: b.statusValue()}
	for i, set := range inUse {
		if set == nil {
			continue
		}
		bm := enforce.Bitmap(*set)
		for _, r := range bm.Ranges() {
			s.InUse[i] = append(s.InUse[i], web.Range{r.Lo, r.Hi})
		}
	}
	return s
}

// httpListen opens the listener of --http: a Unix socket for "unix:PATH"
// or an absolute path, else a TCP address, which must be a loopback one
// unless public: the pages show who holds which port (command lines of
// every user), which is no business of other hosts.
func httpListen(addr string, public bool) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok || strings.HasPrefix(addr, "/") {
		if !ok {
			path = addr
		}
		if err := removeStale(path); err != nil {
			return nil, err
		}
		return net.Listen("unix", path)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("portresd: --http %s: %w", addr, err)
	}
	if !public {
		ip, perr := netip.ParseAddr(host)
		if host != "localhost" && (perr != nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("portresd: --http %s is not a loopback address: the port map shows every user's command lines; bind it to 127.0.0.1, [::1] or a Unix socket, or say --http-public", addr)
		}
	}
	return net.Listen("tcp", addr)
}
