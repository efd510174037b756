//go:build linux

// Package web serves portresd's HTTP pages: a live map of the host's
// port space (per protocol, all 65,536 ports: the dynamic range, the
// reserved blocks by kind and owner, the bound ports, what the kernel
// excludes for other software, the sockets of everybody else) and a JSON
// API with the shapes of `portres show --json` and `portres status
// --json`. Everything a page shows that came from another process is
// escaped (the page sets text, never HTML), and tokens are never shown.
// The page is plain HTML, CSS and JavaScript embedded in the binary: no
// build step.
package web

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"sync"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/wire"
)

//go:embed static
var static embed.FS

// Snapshot is the state the pages show, read by the broker without
// holding its lock over all of it.
type Snapshot struct {
	Entries []wire.Entry   // every reservation, tokens left out
	Status  portres.Status // as portres status shows it
	InUse   [2][]Range     // TCP, UDP: ports with a socket of anyone's
}

// Range is an inclusive range of ports.
type Range [2]uint16

// Source gives the pages their state.
type Source interface {
	Snapshot() Snapshot
}

// Handler serves the port map at /, its assets at /static/, and
// /api/v1/reservations, /api/v1/status, /api/v1/map and /api/v1/events
// (the map as server-sent events, once a second when it changed).
func Handler(src Source) http.Handler {
	h := &handler{src: src, subs: map[chan []byte]struct{}{}, streams: make(chan struct{}, MaxStreams)}
	mux := http.NewServeMux()
	sub, _ := fs.Sub(static, "static")
	files := http.FileServerFS(sub)
	mux.Handle("GET /static/", http.StripPrefix("/static/", files))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = "/"
		files.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /api/v1/reservations", h.reservations)
	mux.HandleFunc("GET /api/v1/status", h.status)
	mux.HandleFunc("GET /api/v1/map", h.portMap)
	mux.HandleFunc("GET /api/v1/events", h.events)
	return secure(mux)
}

// secure sets headers that keep the page's content from being read as
// anything but what it is, and from being framed.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// MaxStreams is how many event streams may be open at once; more are
// answered 503.
const MaxStreams = 64

// snapshotAge is how long one snapshot serves every request: however
// many requests come, the broker sweeps for them at most four times a
// second.
const snapshotAge = 250 * time.Millisecond

// writeWait bounds each write to an event stream, so a reader that stops
// reading does not hold its goroutine for ever.
const writeWait = 10 * time.Second

type handler struct {
	src     Source
	streams chan struct{} // a slot per open event stream

	snapMu   sync.Mutex
	snap     Snapshot
	snapTime time.Time

	mu    sync.Mutex
	subs  map[chan []byte]struct{}
	last  []byte        // the map last sent to subscribers
	stopc chan struct{} // ends publish; nil while nobody listens
}

// snapshot is the source's snapshot, shared by the requests of the same
// quarter second.
func (h *handler) snapshot() Snapshot {
	h.snapMu.Lock()
	defer h.snapMu.Unlock()
	if h.snapTime.IsZero() || time.Since(h.snapTime) >= snapshotAge {
		h.snap, h.snapTime = h.src.Snapshot(), time.Now()
	}
	return h.snap
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

func (h *handler) reservations(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, portres.ShowEntries(infos(h.snapshot().Entries)))
}

func (h *handler) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, h.snapshot().Status)
}

func (h *handler) portMap(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, mapOf(h.snapshot()))
}

// PortMap is what the page draws (/api/v1/map).
type PortMap struct {
	Time        time.Time           `json:"time"`
	Version     string              `json:"version"`
	Enforcement string              `json:"enforcement"`
	Protos      []ProtoMap          `json:"protos"`
	Blocks      []portres.ShowEntry `json:"blocks"`
}

// ProtoMap is one protocol's port space.
type ProtoMap struct {
	Proto    string  `json:"proto"`
	Dynamic  Range   `json:"dynamic"`  // the range wildcard reservations are drawn from
	InUse    []Range `json:"in_use"`   // ports with a socket, anyone's
	Excluded []Range `json:"excluded"` // ip_local_reserved_ports entries portres did not add (both protocols)
}

func mapOf(s Snapshot) PortMap {
	m := PortMap{Time: time.Now().UTC(), Version: s.Status.Version, Enforcement: s.Status.Enforcement.Mode,
		Blocks: portres.ShowEntries(infos(s.Entries))}
	var excluded []Range
	for _, r := range s.Status.KernelList.ForeignRanges() {
		excluded = append(excluded, Range(r))
	}
	for i, proto := range []portres.Proto{portres.TCP, portres.UDP} {
		pm := ProtoMap{Proto: proto.String(), InUse: s.InUse[i], Excluded: excluded}
		for _, d := range s.Status.Dynamic {
			if d.Proto == proto {
				pm.Dynamic = Range{d.Start, d.End}
			}
		}
		if pm.InUse == nil {
			pm.InUse = []Range{}
		}
		if pm.Excluded == nil {
			pm.Excluded = []Range{}
		}
		m.Protos = append(m.Protos, pm)
	}
	return m
}

// infos turns show entries into portres.Info, as the client does.
func infos(es []wire.Entry) []portres.Info {
	out := make([]portres.Info, 0, len(es))
	for _, e := range es {
		out = append(out, portres.Info{Proto: portres.Proto(e.Proto), Kind: portres.Kind(e.Kind), Start: e.Start, Count: e.Count,
			PID: e.PID, UID: e.UID, Command: e.Command, Delegated: e.Flags&wire.EntryDelegated != 0,
			Restored: e.Flags&wire.EntryRestored != 0, Bound: e.Bound})
	}
	return out
}

// events streams the map to a browser (server-sent events): at once,
// then whenever it changed, checked once a second while anyone listens.
func (h *handler) events(w http.ResponseWriter, r *http.Request) {
	select {
	case h.streams <- struct{}{}:
		defer func() { <-h.streams }()
	default:
		http.Error(w, fmt.Sprintf("%d event streams are open already", MaxStreams), http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{}) // the server's ReadTimeout is for requests, not for a stream
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	ch := make(chan []byte, 1)
	first, _ := json.Marshal(mapOf(h.snapshot()))
	ch <- first
	h.subscribe(ch)
	defer h.unsubscribe(ch)
	for {
		select {
		case <-r.Context().Done():
			return
		case data := <-ch:
			rc.SetWriteDeadline(time.Now().Add(writeWait))
			if _, err := fmt.Fprintf(w, "event: map\ndata: %s\n\n", data); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
	}
}

func (h *handler) subscribe(ch chan []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[ch] = struct{}{}
	if h.stopc == nil {
		h.stopc = make(chan struct{})
		go h.publish(h.stopc)
	}
}

func (h *handler) unsubscribe(ch chan []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, ch)
	if len(h.subs) == 0 && h.stopc != nil {
		close(h.stopc)
		h.stopc = nil
		h.last = nil
	}
}

// publish sends the map to every subscriber when it changed (the time
// aside), once a second, until stop is closed.
func (h *handler) publish(stop chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		m := mapOf(h.snapshot())
		stamp := m.Time
		m.Time = time.Time{}
		cmp, _ := json.Marshal(m)
		m.Time = stamp
		data, _ := json.Marshal(m)
		h.mu.Lock()
		if h.stopc != stop {
			h.mu.Unlock()
			return
		}
		if !bytes.Equal(cmp, h.last) {
			h.last = cmp
			for ch := range h.subs {
				select {
				case <-ch: // a slow reader gets the newest only
				default:
				}
				ch <- data
			}
		}
		h.mu.Unlock()
	}
}
