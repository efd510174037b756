//go:build linux

// Package etcdfleet is a fleet member (package fleet) on etcd: its
// registration, the fleet's blocks and leases, and its view, kept in
// etcd under a key prefix (see docs/FLEET.md for the layout).
package etcdfleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Member is this broker's membership of the fleet.
type Member struct {
	cfg   Config
	local Local
	log   *slog.Logger
	cli   *clientv3.Client
	host  string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	lease     clientv3.LeaseID
	validTill time.Time // the member lease certainly lives until then (send time of the last renewal + TTL)
	connected bool
	lastErr   error
	blocks    map[string]Block       // fleet blocks by key, from the watch
	ports     [2]map[uint16]portInfo // TCP, UDP: fleet lease ports by port, from the watch
	members   map[string]MemberInfo
	prepared  map[string]Block // prepare ID → block this member voted ok on
	mine      map[Lease]held   // this member's fleet leases, as Allocate took them
	published string           // the last show/NAME value written
}

// Join connects to etcd, registers the member under a lease, applies
// every fleet block to the host (before the broker serves), and starts
// following the fleet. It fails if etcd cannot be reached: a member
// starts only with the fleet's state in hand.
func Join(ctx context.Context, cfg Config, local Local, log *slog.Logger) (*Member, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = "/portres/"
	}
	if cfg.Prefix[len(cfg.Prefix)-1] != '/' {
		cfg.Prefix += "/"
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	host, _ := os.Hostname()
	if cfg.Name == "" {
		cfg.Name = host
	}
	if cfg.RangeStart != 0 && (cfg.RangeEnd < cfg.RangeStart) {
		return nil, fmt.Errorf("fleet: range %d-%d is empty", cfg.RangeStart, cfg.RangeEnd)
	}
	ccfg := clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: 5 * time.Second, Username: cfg.Username,
		Password: cfg.Password, Logger: zap.NewNop(), DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: 2 * time.Second}
	if cfg.CACert != "" || cfg.Cert != "" {
		tlsCfg, err := (transport.TLSInfo{CertFile: cfg.Cert, KeyFile: cfg.Key, TrustedCAFile: cfg.CACert}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("fleet: etcd TLS: %w", err)
		}
		tlsCfg.MinVersion = tls.VersionTLS12
		ccfg.TLS = tlsCfg
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		return nil, fmt.Errorf("fleet: connect to etcd %v: %w%s", cfg.Endpoints, err, diagnose(cfg.Endpoints, ccfg.TLS))
	}
	m := &Member{cfg: cfg, local: local, log: log, cli: cli, host: host, blocks: map[string]Block{},
		members: map[string]MemberInfo{}, prepared: map[string]Block{}}
	m.ports = [2]map[uint16]portInfo{{}, {}}
	m.mine = map[Lease]held{}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if err := m.start(ctx); err != nil {
		cli.Close()
		m.cancel()
		return nil, err
	}
	return m, nil
}

// diagnose says why etcd could not be reached when the client only says
// that time ran out: it connects to each endpoint itself and reports the
// first failure (refused, unreachable, or the TLS handshake's: an
// untrusted server certificate, a client certificate the server wants).
func diagnose(endpoints []string, tlsCfg *tls.Config) string {
	for _, ep := range endpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" {
			return fmt.Sprintf(" (%s: not a URL)", ep)
		}
		d := &net.Dialer{Timeout: 2 * time.Second}
		if u.Scheme != "https" || tlsCfg == nil {
			c, err := d.Dial("tcp", u.Host)
			if err != nil {
				return fmt.Sprintf(" (%s: %v)", ep, err)
			}
			c.Close()
			if u.Scheme == "https" {
				return fmt.Sprintf(" (%s: https without --etcd-cacert)", ep)
			}
			continue
		}
		cfg := tlsCfg.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		c, err := tls.DialWithDialer(d, "tcp", u.Host, cfg)
		if err != nil {
			return fmt.Sprintf(" (%s: %v)", ep, err)
		}
		// With TLS 1.3 a server refuses a client certificate after the
		// client's handshake is done: its alert comes with the first read.
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) && !errors.Is(err, io.EOF) {
			return fmt.Sprintf(" (%s: %v)", ep, err)
		}
	}
	return ""
}

// start registers the member and loads the fleet's state.
func (m *Member) start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sent := time.Now()
	var g *clientv3.LeaseGrantResponse
	err := retry(ctx, func(bool) (err error) {
		g, err = m.cli.Grant(ctx, int64(m.cfg.TTL/time.Second))
		return err
	})
	if err != nil {
		return fmt.Errorf("fleet: etcd %v: grant the member lease: %w", m.cfg.Endpoints, err)
	}
	m.lease = g.ID
	m.validTill = sent.Add(time.Duration(g.TTL) * time.Second)
	m.connected = true
	// A member of the same name on another host, or a live broker on
	// this one, is another broker: refuse, rather than share its name and
	// leases. A dead broker of this host is this one before a restart:
	// its lease is revoked, which frees its fleet leases at once (their
	// owners were told the broker went; fleet leases are not restored
	// across a broker restart).
	for tries := 0; ; tries++ {
		old, oldLease, err := m.register(ctx, m.lease)
		if err != nil {
			return err
		}
		if oldLease == 0 {
			break
		}
		switch {
		case tries >= 2:
			return fmt.Errorf("fleet: register member %s: another broker keeps registering that name (pid %d on host %s)", m.cfg.Name, old.PID, old.Host)
		case old.Host != m.host:
			return fmt.Errorf("fleet: a member named %s is registered from host %s; give this one another --fleet-name", m.cfg.Name, old.Host)
		case brokerAlive(old.PID):
			return fmt.Errorf("fleet: member %s is registered by portresd pid %d, which runs on this host; give this one another --fleet-name", m.cfg.Name, old.PID)
		}
		m.log.Info("fleet: taking over this host's registration from before a restart", "member", m.cfg.Name, "old_pid", old.PID)
		if _, err := m.cli.Revoke(ctx, oldLease); err != nil && !clientv3IsLeaseGone(err) {
			return fmt.Errorf("fleet: revoke the previous registration of %s: %w", m.cfg.Name, err)
		}
	}
	rev, err := m.load(ctx)
	if err != nil {
		return err
	}
	m.wg.Add(2)
	go m.keepAlive()
	go m.follow(rev)
	return nil
}

// Close leaves the fleet: the member's lease is revoked, so its
// registration and fleet leases go at once.
func (m *Member) Close() {
	m.cancel()
	m.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	m.cli.Revoke(ctx, m.lease)
	cancel()
	m.cli.Close()
}

// Name is the member's name.
func (m *Member) Name() string { return m.cfg.Name }

// Range is the fleet range, (0, 0) if none.
func (m *Member) Range() (uint16, uint16) { return m.cfg.RangeStart, m.cfg.RangeEnd }

func (m *Member) key(parts ...string) string {
	k := m.cfg.Prefix
	for i, p := range parts {
		if i > 0 {
			k += "/"
		}
		k += p
	}
	return k
}

// opTimeout bounds each fleet operation's talk with etcd: a member cut
// off answers within it (WSAENETDOWN), rather than when its lease lapses.
const opTimeout = 5 * time.Second

// opCtx is ctx bounded by opTimeout.
func opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, opTimeout)
}

// transient reports whether err is one etcd answers while it elects a
// leader or loses a member: worth another try within the operation's time.
func transient(err error) bool {
	for _, e := range []error{rpctypes.ErrLeaderChanged, rpctypes.ErrNoLeader, rpctypes.ErrTimeout,
		rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost} {
		if errors.Is(err, e) {
			return true
		}
	}
	return status.Code(err) == codes.Unavailable
}

// retry runs f until it returns nil or an error that is not transient,
// or ctx ends. again tells f that an earlier try failed transiently: it
// may have been applied all the same (etcd may commit a proposal whose
// answer a leader change lost), which a write must tell from a refusal.
func retry(ctx context.Context, f func(again bool) error) error {
	again := false
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, 400*time.Millisecond) {
		err := f(again)
		if err == nil || !transient(err) {
			return err
		}
		again = true
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// etcdErr wraps an error of a call to etcd: a timeout or an unreachable
// cluster is ErrCutOff.
func (m *Member) etcdErr(what string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "context deadline exceeded") ||
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "no leader") {
		return fmt.Errorf("%w: member %s: %s: %v", ErrCutOff, m.cfg.Name, what, err)
	}
	return fmt.Errorf("fleet: %s: %w", what, err)
}

// check says whether fleet operations may run: the member reaches etcd
// and its lease certainly lives.
func (m *Member) check() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.connected || time.Now().After(m.validTill) {
		why := "its etcd lease could not be renewed"
		if m.lastErr != nil {
			why = m.lastErr.Error()
		}
		return fmt.Errorf("%w: member %s (%s); fleet operations resume when it reconnects, local reservations are unaffected", ErrCutOff, m.cfg.Name, why)
	}
	return nil
}

// keepAlive renews the member lease every TTL/8. The lease certainly
// lives until the send time of the last successful renewal plus the TTL
// (etcd renews it on receipt, later); a member that passes that point
// without a renewal gives its fleet leases up before etcd can free them
// for others: never two holders of a port. When etcd answers again it
// registers anew (a new lease if the old one expired) and reconciles.
func (m *Member) keepAlive() {
	defer m.wg.Done()
	// Every TTL/8, and each renewal waits at most that long: the check
	// below runs at least that often, so leases are given up at least
	// TTL/8 before etcd can expire them.
	tick := time.NewTicker(m.cfg.TTL / 8)
	defer tick.Stop()
	lost := false
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-tick.C:
		}
		m.mu.Lock()
		id, till := m.lease, m.validTill
		m.mu.Unlock()
		// Give the leases up a quarter TTL before they can lapse.
		if !lost && time.Now().After(till.Add(-m.cfg.TTL/4)) {
			lost = true
			m.mu.Lock()
			m.connected = false
			m.mu.Unlock()
			m.log.Warn("fleet: cut off from etcd: giving up this member's fleet leases before they can lapse", "member", m.cfg.Name)
			m.local.LeasesLost("the member was cut off from etcd for longer than its lease")
		}
		sent := time.Now()
		ctx, cancel := context.WithTimeout(m.ctx, m.cfg.TTL/8)
		r, err := m.cli.KeepAliveOnce(ctx, id)
		cancel()
		if err == nil && !lost {
			m.mu.Lock()
			m.validTill = sent.Add(time.Duration(r.TTL) * time.Second)
			m.connected, m.lastErr = true, nil
			m.mu.Unlock()
			continue
		}
		if err != nil {
			m.mu.Lock()
			m.lastErr = err
			m.mu.Unlock()
			if !errors.Is(err, context.DeadlineExceeded) && !lost && clientv3IsLeaseGone(err) {
				lost = true
				m.mu.Lock()
				m.connected = false
				m.mu.Unlock()
				m.local.LeasesLost("the member's etcd lease expired")
			}
			if !lost {
				continue
			}
		}
		// Lost: register again, then reconcile the blocks.
		if err := m.rejoin(); err != nil {
			m.mu.Lock()
			m.lastErr = err
			m.mu.Unlock()
			continue
		}
		lost = false
		m.log.Info("fleet: back in touch with etcd", "member", m.cfg.Name)
	}
}

// rejoin takes a new member lease and registration after the member was
// cut off (the broker gave up every fleet lease of the old one). The
// fleet blocks are reconciled by follow, whose watch resumes or reloads.
func (m *Member) rejoin() error {
	ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
	defer cancel()
	m.mu.Lock()
	old := m.lease
	m.mu.Unlock()
	// If the old lease outlived the cut, revoking it frees its ports now
	// rather than at its expiry, and its registration with them.
	if _, err := m.cli.Revoke(ctx, old); err != nil && !clientv3IsLeaseGone(err) {
		return fmt.Errorf("fleet: revoke the member lease from before the cut: %w", err)
	}
	sent := time.Now()
	g, err := m.cli.Grant(ctx, int64(m.cfg.TTL/time.Second))
	if err != nil {
		return err
	}
	other, otherLease, err := m.register(ctx, g.ID)
	if err == nil && otherLease != 0 && other.PID == os.Getpid() && other.Host == m.host {
		// This broker's own registration from an earlier try whose
		// answer was lost: revoke it and register again.
		if _, err = m.cli.Revoke(ctx, otherLease); err == nil || clientv3IsLeaseGone(err) {
			other, otherLease, err = m.register(ctx, g.ID)
		}
	}
	if err == nil && otherLease != 0 {
		err = fmt.Errorf("fleet: member name %s was taken meanwhile by pid %d on host %s; this broker stays out of the fleet", m.cfg.Name, other.PID, other.Host)
		m.log.Error("fleet: cannot rejoin", "member", m.cfg.Name, "err", err)
	}
	if err != nil {
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		m.cli.Revoke(rctx, g.ID) // ctx may have run out
		rcancel()
		return err
	}
	m.mu.Lock()
	m.lease, m.validTill, m.connected, m.lastErr = g.ID, sent.Add(time.Duration(g.TTL)*time.Second), true, nil
	m.published = ""
	m.mine = map[Lease]held{}
	m.mu.Unlock()
	return nil
}

// register puts the member's key under lease if no other holds it; else
// it returns who does and under which lease.
func (m *Member) register(ctx context.Context, lease clientv3.LeaseID) (MemberInfo, clientv3.LeaseID, error) {
	key := m.key("members", m.cfg.Name)
	var resp *clientv3.TxnResponse
	err := retry(ctx, func(bool) (err error) {
		resp, err = m.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, m.info(), clientv3.WithLease(lease))).
			Else(clientv3.OpGet(key)).Commit()
		return err
	})
	if err != nil {
		return MemberInfo{}, 0, fmt.Errorf("fleet: register member %s: %w", m.cfg.Name, err)
	}
	if resp.Succeeded {
		return MemberInfo{}, 0, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return MemberInfo{}, 0, fmt.Errorf("fleet: register member %s: the name is held and not readable", m.cfg.Name)
	}
	if kvs[0].Lease == 0 {
		return MemberInfo{}, 0, fmt.Errorf("fleet: register member %s: the name is held by a key without a lease (delete %s)", m.cfg.Name, key)
	}
	if clientv3.LeaseID(kvs[0].Lease) == lease {
		return MemberInfo{}, 0, nil // a try whose answer was lost
	}
	old, _ := decodeMember(kvs[0].Value)
	return old, clientv3.LeaseID(kvs[0].Lease), nil
}

// brokerAlive reports whether pid is a running process of the same
// program as this one (a portresd that still serves).
func brokerAlive(pid int) bool {
	if pid <= 0 || pid == os.Getpid() {
		return false
	}
	self, err1 := os.ReadFile("/proc/self/comm")
	other, err2 := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err1 == nil && err2 == nil && string(self) == string(other)
}
