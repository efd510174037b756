//go:build linux

package broker

import (
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the broker's Prometheus metrics: request counts and
// latencies as they happen, and the reservation state read at each
// scrape (state.Collect).
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	sweeps   prometheus.Histogram
	refused  *prometheus.CounterVec
	reads    prometheus.Counter
	srv      *http.Server
	ln       net.Listener
}

func newMetrics(b *Broker) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portres_requests_total",
			Help: "Requests answered by the broker, by operation and Winsock/Win32 result code (NO_ERROR on success).",
		}, []string{"op", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "portres_request_duration_seconds",
			Help:    "Time the broker spent on a request, by operation.",
			Buckets: prometheus.ExponentialBuckets(5e-6, 4, 10), // 5 µs .. 1.3 s
		}, []string{"op"}),
	}
	m.sweeps = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "portres_sweep_duration_seconds",
		Help:    "Time a sweep of bound ports took (one read of the socket tables, then the state a chunk at a time).",
		Buckets: prometheus.ExponentialBuckets(1e-5, 4, 10), // 10 µs .. 2.6 s
	})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portres_connections_refused_total",
		Help: "Connections refused at accept, by Winsock code (WSAEDQUOT: per-user limit; WSAEMFILE: descriptor budget).",
	}, []string{"code"})
	m.reads = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "portres_socket_table_reads_total",
		Help: "Reads of one protocol's kernel socket tables (netlink sock_diag): a sweep makes one per protocol.",
	})
	listWrites := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "portres_kernel_list_writes_total",
		Help: "Writes of ip_local_reserved_ports; changes that arrive together share one.",
	}, func() float64 {
		if b.sysctl == nil {
			return 0
		}
		return float64(b.sysctl.Writes())
	})
	logDropped := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "portres_log_dropped_total",
		Help: "Log lines caused by clients that the per-uid and global log rate limits dropped.",
	}, func() float64 { return float64(b.rlog.Dropped()) })
	m.reg.MustRegister(m.requests, m.latency, m.sweeps, m.refused, m.reads, listWrites, logDropped, stateCollector{b},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if b.fleet != nil {
		m.reg.MustRegister(fleetCollector{b})
	}
	// Every operation's series exist from the start (a rate over a
	// series that appears with its first request misses that request).
	for op := wire.Op(1); op.Valid(); op++ {
		if op == wire.OpCancel {
			continue // answered by nothing
		}
		m.requests.WithLabelValues(op.String(), portres.NO_ERROR.Name())
		m.latency.WithLabelValues(op.String())
	}
	return m
}

// observe records one answered request.
func (m *metrics) observe(op wire.Op, code uint32, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(op.String(), portres.Errno(code).Name()).Inc()
	m.latency.WithLabelValues(op.String()).Observe(d.Seconds())
}

// observeSweep records one sweep's duration.
func (m *metrics) observeSweep(d time.Duration) {
	if m != nil {
		m.sweeps.Observe(d.Seconds())
	}
}

// observeTableRead counts one read of a protocol's socket tables.
func (m *metrics) observeTableRead() {
	if m != nil {
		m.reads.Inc()
	}
}

// observeRefused counts a connection refused with code.
func (m *metrics) observeRefused(code uint32) {
	if m != nil {
		m.refused.WithLabelValues(portres.Errno(code).Name()).Inc()
	}
}

// serve starts the /metrics endpoint on ln, and pages (the port map and
// the JSON API) at / if pages is not nil.
func (m *metrics) serve(ln net.Listener, pages http.Handler) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	if pages != nil {
		mux.Handle("/", pages)
	}
	m.ln = ln
	// No WriteTimeout: event streams last; each of their writes has a
	// deadline of its own (package web).
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	go m.srv.Serve(ln) // returns http.ErrServerClosed when close shuts it
	return nil
}

func (m *metrics) close() {
	if m != nil && m.srv != nil {
		m.srv.Close()
	}
}

// MetricsAddr is the address the /metrics endpoint listens on, "" if
// none.
func (b *Broker) MetricsAddr() string {
	if b.metrics == nil || b.metrics.ln == nil {
		return ""
	}
	return b.metrics.ln.Addr().String()
}

var (
	descReservations = prometheus.NewDesc("portres_reservations", "Reservations held, by protocol and kind.", []string{"proto", "kind"}, nil)
	descPorts        = prometheus.NewDesc("portres_reserved_ports", "Ports in reservations, by protocol and kind.", []string{"proto", "kind"}, nil)
	descBound        = prometheus.NewDesc("portres_bound_ports", "Reserved ports bound to a socket, by protocol and kind.", []string{"proto", "kind"}, nil)
	descHolders      = prometheus.NewDesc("portres_placeholder_sockets", "Placeholder sockets held (hold mode).", nil, nil)
	descSessions     = prometheus.NewDesc("portres_clients", "Connected clients.", nil, nil)
	descExclusion    = prometheus.NewDesc("portres_kernel_exclusion", "1 if persistent and delegated blocks are excluded through ip_local_reserved_ports.", nil, nil)
	descMode         = prometheus.NewDesc("portres_enforcement_info", "The enforcement mode in force and the one asked for (value 1).", []string{"mode", "requested"}, nil)
	descBuild        = prometheus.NewDesc("portres_build_info", "portresd's version and the Go version it was built with (value 1).", []string{"version", "goversion"}, nil)
	descLimit        = prometheus.NewDesc("portres_limit", "The broker's per-user limits and reserves (-1: none), by the flag that sets them.", []string{"flag"}, nil)
	descUsers        = prometheus.NewDesc("portres_users", "Uids holding connections or reservations.", nil, nil)
)

// stateCollector reads the broker's state at scrape time.
type stateCollector struct{ b *Broker }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReservations, descPorts, descBound, descHolders, descSessions, descExclusion, descMode, descBuild, descLimit, descUsers} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ proto, kind string }
	count, ports, bound := map[key]int{}, map[key]int{}, map[key]int{}
	holders := 0
	b := c.b
	b.walk(func(rv *resv) {
		if rv.pending {
			return
		}
		k := key{rv.proto.String(), portres.Kind(rv.kind).String()}
		count[k]++
		ports[k] += int(rv.r.Block.Count)
		bound[k] += rv.r.NumBound()
		for _, fd := range rv.holders {
			if fd >= 0 {
				holders++
			}
		}
	})
	b.mu.Lock()
	sessions, users := len(b.sessions), len(b.users)
	b.mu.Unlock()
	lim := b.cfg.Limits
	for flag, v := range map[string]int{"user-ports": lim.UserPorts, "user-reservations": lim.UserReservations,
		"user-connections": lim.UserConnections, "user-rate": lim.UserRate, "fd-reserve": lim.FDReserve, "list-reserve": lim.ListReserve} {
		ch <- prometheus.MustNewConstMetric(descLimit, prometheus.GaugeValue, float64(v), flag)
	}
	ch <- prometheus.MustNewConstMetric(descUsers, prometheus.GaugeValue, float64(users))
	for _, proto := range []string{"tcp", "udp"} {
		for _, kind := range []string{"runtime", "persistent"} {
			k := key{proto, kind}
			ch <- prometheus.MustNewConstMetric(descReservations, prometheus.GaugeValue, float64(count[k]), proto, kind)
			ch <- prometheus.MustNewConstMetric(descPorts, prometheus.GaugeValue, float64(ports[k]), proto, kind)
			ch <- prometheus.MustNewConstMetric(descBound, prometheus.GaugeValue, float64(bound[k]), proto, kind)
		}
	}
	ch <- prometheus.MustNewConstMetric(descHolders, prometheus.GaugeValue, float64(holders))
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(sessions))
	ch <- prometheus.MustNewConstMetric(descExclusion, prometheus.GaugeValue, boolFloat(b.sysctl != nil && b.sysctlOK.Load()))
	ch <- prometheus.MustNewConstMetric(descMode, prometheus.GaugeValue, 1, b.mode(), b.cfg.Enforce)
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, Version(), runtime.Version())
}

var (
	descFleetConnected = prometheus.NewDesc("portres_fleet_connected", "1 if this member reaches etcd and its member lease certainly lives; 0 while it is cut off (fleet operations are refused).", []string{"member"}, nil)
	descFleetMembers   = prometheus.NewDesc("portres_fleet_members", "Members registered in the fleet, as this member sees them.", nil, nil)
	descFleetBlocks    = prometheus.NewDesc("portres_fleet_blocks", "Fleet persistent reservations.", nil, nil)
	descFleetLeased    = prometheus.NewDesc("portres_fleet_leased_ports", "Ports held by fleet leases of all members.", nil, nil)
)

// fleetCollector reads the member's view of the fleet at scrape time
// (a broker started with --etcd).
type fleetCollector struct{ b *Broker }

func (c fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFleetConnected, descFleetMembers, descFleetBlocks, descFleetLeased} {
		ch <- d
	}
}

func (c fleetCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.b.fleet.Status()
	ch <- prometheus.MustNewConstMetric(descFleetConnected, prometheus.GaugeValue, boolFloat(st.Connected), st.Name)
	ch <- prometheus.MustNewConstMetric(descFleetMembers, prometheus.GaugeValue, float64(len(st.Members)))
	ch <- prometheus.MustNewConstMetric(descFleetBlocks, prometheus.GaugeValue, float64(st.Blocks))
	ch <- prometheus.MustNewConstMetric(descFleetLeased, prometheus.GaugeValue, float64(st.Leased))
}

func boolFloat(v bool) float64 {
	if v {
		return 1
	}
	return 0
}
