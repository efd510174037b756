//go:build linux

package broker_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
)

// The security tests play a hostile local user (docs/MODEL.md, threat model) against a root
// broker: the callers are processes the test starts under uid 65534 (or
// 65533), with no capabilities unless a test gives one.

const nobody = 65534

var nobodyCred = &syscall.Credential{Uid: nobody, Gid: nobody}

// result is one line of helperOps.
type result struct {
	name   string
	code   int
	n      int
	edquot bool
	msg    string
}

func parseResult(t *testing.T, line string) result {
	t.Helper()
	f := strings.SplitN(line, " ", 5)
	if len(f) < 4 {
		t.Fatalf("helper said %q", line)
	}
	r := result{name: f[0], code: mustAtoi(f[1]), n: mustAtoi(f[2]), edquot: f[3] == "true"}
	if len(f) == 5 {
		r.msg = f[4]
	}
	return r
}

// runOps runs helperOps as cred with cmds and returns its results, one
// per command; with hold, the helper keeps what it took until the test
// ends (its last command is "wait").
func runOps(t *testing.T, b *testbroker.Broker, cred *syscall.Credential, hold bool, cmds ...string) []result {
	t.Helper()
	if hold {
		cmds = append(cmds, "wait")
	}
	p := testutil.StartHelperAs(t, cred, "ops", append(socketEnv(b), quickExit()...), cmds...)
	var out []result
	for range cmds {
		if len(out) == len(cmds)-1 && hold {
			break
		}
		out = append(out, parseResult(t, p.Line(60*time.Second)))
	}
	if !hold {
		p.Wait()
	} else {
		t.Cleanup(func() { p.Wait() })
	}
	return out
}

// TestPrivilegedPortsNeedCapability: an unprivileged user cannot reserve
// ports below ip_unprivileged_port_start through the root broker (it
// reserved TCP 22-24 and kept root's sshd from binding); one with
// CAP_NET_BIND_SERVICE can, as the kernel would let it.
func TestPrivilegedPortsNeedCapability(t *testing.T) {
	b := testbroker.Start(t, nil)
	rs := runOps(t, b, nobodyCred, false, "acquire tcp 22 3", "delegate udp 53 1", "acquire tcp 443 1", "delegate tcp 1000 100")
	for _, r := range rs {
		if r.code != int(portres.WSAEACCES) || !strings.Contains(r.msg, "ip_unprivileged_port_start") || !strings.Contains(r.msg, "CAP_NET_BIND_SERVICE") {
			t.Errorf("%s as uid %d: code %d %q, want WSAEACCES naming the capability", r.name, nobody, r.code, r.msg)
		}
	}
	ln, err := net.Listen("tcp", ":22")
	if err != nil {
		t.Fatalf("root's own bind of port 22 after the refused reservation: %v", err)
	}
	ln.Close()

	// With the capability, as the kernel allows.
	attr := &syscall.SysProcAttr{Credential: nobodyCred, AmbientCaps: []uintptr{unixCapNetBindService}}
	p := testutil.StartHelperAttr(t, attr, "ops", append(socketEnv(b), quickExit()...), "acquire tcp 22 3", "delegate udp 53 1")
	for i := 0; i < 2; i++ {
		if r := parseResult(t, p.Line(10*time.Second)); r.code != 0 {
			t.Errorf("%s with CAP_NET_BIND_SERVICE: code %d %q", r.name, r.code, r.msg)
		}
	}
	p.Wait()
	// Root (the admin) may (another block: the helper's 22-24 goes when
	// the broker has seen it exit).
	if _, err := b.Dial(t).Acquire(context.Background(), portres.TCP, 80, 3); err != nil {
		t.Errorf("root acquiring 80-82: %v", err)
	}
}

const unixCapNetBindService = 10

// TestAcquireBindPrivileged: the one-request acquire and bind (FlagBind,
// Client.Listen), where the root broker binds the caller's socket
// itself, refuses an unprivileged user a port below
// ip_unprivileged_port_start like a plain acquire, and leaves the port
// free.
func TestAcquireBindPrivileged(t *testing.T) {
	b := testbroker.Start(t, nil)
	rs := runOps(t, b, nobodyCred, false, "listen tcp 127.0.0.1:80", "listen tcp [::1]:443")
	for _, r := range rs {
		if r.code != int(portres.WSAEACCES) || r.n != 0 || !strings.Contains(r.msg, "ip_unprivileged_port_start") {
			t.Errorf("%s as uid %d: code %d port %d %q, want WSAEACCES naming ip_unprivileged_port_start", r.name, nobody, r.code, r.n, r.msg)
		}
	}
	if infos, err := b.Dial(t).Show(context.Background()); err != nil || len(infos) != 0 {
		t.Errorf("after the refused binds, show: %v, %v; want nothing reserved", infos, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatalf("root's own bind of port 80 after the refused acquire and bind: %v", err)
	}
	ln.Close()
}

// TestSystemRangeNeedsAdmin: an unprivileged user cannot move the
// kernel's ephemeral port range through the root broker (dynamicport set
// --system, FlagSystem): ERROR_ACCESS_DENIED, and neither the range file
// (a stand-in for net.ipv4.ip_local_port_range) nor the protocols'
// dynamic ranges change.
func TestSystemRangeNeedsAdmin(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ip_local_port_range")
	const before = "32768\t60999\n"
	if err := os.WriteFile(file, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	b := testbroker.Start(t, func(c *broker.Config) { c.PortRange = file })
	r := runOps(t, b, nobodyCred, false, "system 40000 1000")[0]
	if r.code != int(portres.ERROR_ACCESS_DENIED) || !strings.Contains(r.msg, "may not set the dynamic port range") {
		t.Errorf("dynamicport set --system as uid %d: code %d %q, want ERROR_ACCESS_DENIED", nobody, r.code, r.msg)
	}
	if data, _ := os.ReadFile(file); string(data) != before {
		t.Errorf("the range file holds %q after the refused change, want %q", data, before)
	}
	c := b.Dial(t)
	for _, p := range []portres.Proto{portres.TCP, portres.UDP} {
		if lo, n, err := c.DynamicPortRange(context.Background(), p); err != nil || lo != 32768 || n != 60999-32768+1 {
			t.Errorf("%s range %d+%d, %v after the refused change; want 32768+%d", p, lo, n, err, 60999-32768+1)
		}
	}
}

// TestWildcardNeverPrivileged: wildcard blocks stay at or above
// ip_unprivileged_port_start even when the dynamic range reaches below it.
func TestWildcardNeverPrivileged(t *testing.T) {
	testutil.RequireRoot(t) // the sysctl is the test netns's own
	const path = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("3000"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(path, old, 0o644) })
	b := testbroker.Start(t, nil)
	ctx := context.Background()
	if err := b.Dial(t).SetDynamicPortRange(ctx, portres.TCP, 1025, 2400); err != nil {
		t.Fatal(err)
	}
	p := testutil.StartHelperAs(t, nobodyCred, "ops", append(socketEnv(b), quickExit()...), "starts tcp 50 8")
	n := 0
	for l := p.Line(10 * time.Second); strings.HasPrefix(l, "start "); l = p.Line(10 * time.Second) {
		n++
		if s := mustAtoi(strings.TrimPrefix(l, "start ")); s < 3000 {
			t.Errorf("wildcard block at %d, below ip_unprivileged_port_start 3000", s)
		}
	}
	if n != 8 {
		t.Errorf("%d of 8 wildcard blocks placed", n)
	}
	p.Wait()
}

// TestUserPortLimit: one uid cannot take the port space (it once made
// delegated reservations of TCP and UDP 1-65535 in 1.6 s and wrote
// 1-65535 into ip_local_reserved_ports, breaking root's connect()).
func TestUserPortLimit(t *testing.T) {
	b := testbroker.Start(t, nil)
	rs := runOps(t, b, nobodyCred, true, "delegate tcp 1024 64512", "fill tcp 1000", "fill udp 1000")
	if rs[0].code != int(portres.WSAEDQUOT) || !rs[0].edquot || !strings.Contains(rs[0].msg, "--user-ports") {
		t.Errorf("delegated 1024-65535: %+v, want WSAEDQUOT naming --user-ports", rs[0])
	}
	if rs[1].n != 4000 || rs[1].code != int(portres.WSAEDQUOT) {
		t.Errorf("filling with 1000-port blocks: %d ports then code %d, want 4000 then WSAEDQUOT", rs[1].n, rs[1].code)
	}
	if rs[2].n != 0 || rs[2].code != int(portres.WSAEDQUOT) {
		t.Errorf("then UDP: %d ports, code %d; the limit counts both protocols", rs[2].n, rs[2].code)
	}
	list, err := enforce.NewReservedPorts(testutil.ReservedPortsPath, nil).Read()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, r := range list {
		total += int(r.Hi-r.Lo) + 1
	}
	if total > 4096 {
		t.Errorf("the kernel list holds %d ports for one user: %v", total, list)
	}
	// Root is exempt, and its connect() still finds ports.
	if _, err := b.Dial(t).Acquire(context.Background(), portres.TCP, 30000, 5000); err != nil {
		t.Errorf("root acquiring 5000 ports past the user's limit: %v", err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	if c, err := net.Dial("tcp", ln.Addr().String()); err != nil {
		t.Errorf("root's connect(): %v", err)
	} else {
		c.Close()
	}
}

// TestUserReservationAndConnectionLimits: the per-user counts of
// reservations and connections answer WSAEDQUOT naming their flag.
func TestUserReservationAndConnectionLimits(t *testing.T) {
	b := testbroker.Start(t, nil)
	rs := runOps(t, b, nobodyCred, true, "scatter udp 20000 2 1000", "conns 200")
	if r := rs[0]; r.n != broker.DefaultUserReservations || r.code != int(portres.WSAEDQUOT) || !strings.Contains(r.msg, "--user-reservations") {
		t.Errorf("1-port reservations: %+v, want %d then WSAEDQUOT naming --user-reservations", r, broker.DefaultUserReservations)
	}
	// The helper's own connection counts: 127 more.
	if r := rs[1]; r.n != broker.DefaultUserConnections-1 || r.code != int(portres.WSAEDQUOT) || !r.edquot || !strings.Contains(r.msg, "--user-connections") {
		t.Errorf("connections: %+v, want %d then WSAEDQUOT naming --user-connections", r, broker.DefaultUserConnections-1)
	}
	// Others are not affected: root and another uid still connect.
	if _, err := b.Dial(t).Show(context.Background()); err != nil {
		t.Errorf("root's show while uid %d is at its limits: %v", nobody, err)
	}
	other := runOps(t, b, &syscall.Credential{Uid: 65533, Gid: 65533}, false, "acquire udp 0 10", "conns 5")
	if other[0].code != 0 || other[1].n != 5 {
		t.Errorf("another uid: %+v", other)
	}
}

// TestFDReserve: connections and placeholders of unprivileged users stop
// short of the descriptors kept for root (19,990 idle connections from one
// uid once made root's show fail with WSAENETDOWN).
func TestFDReserve(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.Dir(t)
	dc := daemonConfig{Socket: filepath.Join(dir, "portres.sock"), State: filepath.Join(dir, "state.db"),
		LogFile: filepath.Join(dir, "log"), NoFile: 400,
		Limits: broker.Limits{UserConnections: -1, UserPorts: -1, UserReservations: -1, FDReserve: 100}}
	startDaemon(t, nil, dc)
	env := append([]string{"PORTRES_SOCKET=" + dc.Socket}, quickExit()...)
	for _, cred := range []*syscall.Credential{nobodyCred, {Uid: 65533, Gid: 65533}} {
		p := testutil.StartHelperAs(t, cred, "ops", env, "conns 1000", "acquire tcp 0 300", "wait")
		for i := 0; i < 2; i++ {
			r := parseResult(t, p.Line(30*time.Second))
			if r.code != int(portres.WSAEMFILE) || !strings.Contains(r.msg, "kept for root") {
				t.Errorf("uid %d %s: %+v, want WSAEMFILE naming the reserve", cred.Uid, r.name, r)
			}
		}
		t.Cleanup(func() { p.Wait() })
	}
	// Root still gets in, and may use the reserve.
	ctx := context.Background()
	c, err := portres.Dial(ctx, dc.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Show(ctx); err != nil {
		t.Errorf("root's show with the budget used up by others: %v", err)
	}
	if _, err := c.Acquire(ctx, portres.TCP, 0, 50); err != nil {
		t.Errorf("root's acquire of 50 held ports from the reserve: %v", err)
	}
}

// TestKernelListBudget: scattered blocks of an unprivileged user cannot
// fill the 4 KiB kernel list (2,000 of them once kept root's persistent
// block out of ip_local_reserved_ports while the create said it worked).
func TestKernelListBudget(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) {
		c.Limits = broker.Limits{UserReservations: -1, UserPorts: -1}
	})
	rs := runOps(t, b, nobodyCred, true, "scatter tcp 20000 3 2000")
	r := rs[0]
	if r.code != int(portres.WSAENOBUFS) || !strings.Contains(r.msg, "--list-reserve") || r.n < 300 || r.n >= 2000 {
		t.Fatalf("scattered blocks: %+v, want some hundreds then WSAENOBUFS naming --list-reserve", r)
	}
	kp := enforce.NewReservedPorts(testutil.ReservedPortsPath, nil)
	list, _ := kp.Read()
	if n := enforce.ListLen(list); n > enforce.MaxReservedPortsWrite-broker.DefaultListReserve {
		t.Errorf("the user's blocks take %d bytes of the list, more than %d", n, enforce.MaxReservedPortsWrite-broker.DefaultListReserve)
	}
	ctx := context.Background()
	c := b.Dial(t)
	if _, err := c.CreatePersistent(ctx, portres.TCP, 33000, 100); err != nil {
		t.Fatalf("root's persistent add with the user's share full: %v", err)
	}
	list, _ = kp.Read()
	if !covers(list, 33000, 33099) {
		t.Errorf("persistent 33000-33099 not in the kernel list: %v", list)
	}
	// The user still cannot crowd it out, and it stays.
	more := runOps(t, b, &syscall.Credential{Uid: 65533, Gid: 65533}, false, "scatter udp 40001 3 50")
	if more[0].code != int(portres.WSAENOBUFS) || more[0].n != 0 {
		t.Errorf("another user's block with the share full: %+v, want WSAENOBUFS", more[0])
	}
	if list, _ = kp.Read(); !covers(list, 33000, 33099) {
		t.Errorf("persistent 33000-33099 lost its exclusion: %v", list)
	}
}

func covers(list []enforce.Range, lo, hi uint16) bool {
	for _, r := range list {
		if r.Lo <= lo && r.Hi >= hi {
			return true
		}
	}
	return false
}

// TestLogFloodRateLimited: one client's malformed requests cannot grow
// the log without bound (18.6 MiB in 8 s once).
func TestLogFloodRateLimited(t *testing.T) {
	var lines countWriter
	b := testbroker.Start(t, func(c *broker.Config) { c.Logger = newCountLogger(&lines) })
	start := time.Now()
	rs := runOps(t, b, nobodyCred, false, "malformed 5000")
	if rs[0].n != 5000 {
		t.Errorf("%d of 5000 malformed requests answered", rs[0].n)
	}
	secs := time.Since(start).Seconds()
	got := lines.count("malformed request")
	if limit := 20 + int(5*secs) + 1; got > limit {
		t.Errorf("%d log lines for 5000 malformed requests in %.1fs, want at most %d", got, secs, limit)
	}
	if got == 0 {
		t.Error("no malformed request was logged at all")
	}
	deadline := time.Now().Add(5 * time.Second)
	for lines.count("log lines suppressed") == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if lines.count("log lines suppressed") == 0 {
		t.Error("no summary of the suppressed lines")
	}
}

// TestNonRootBrokerIsTruthful: a broker that cannot write
// ip_local_reserved_ports says so, and its answers say the blocks are not
// excluded (it once logged kernel_exclusion=true).
func TestNonRootBrokerIsTruthful(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.Dir(t)
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	dc := daemonConfig{Socket: filepath.Join(dir, "portres.sock"), State: filepath.Join(dir, "state.db"), LogFile: filepath.Join(dir, "log")}
	startDaemon(t, nobodyCred, dc)
	log := daemonLog(dc.LogFile)
	if !strings.Contains(log, "kernel_exclusion=false") || !strings.Contains(log, "kernel exclusion unavailable") {
		t.Errorf("a non-root broker's log does not say kernel exclusion is off:\n%s", log)
	}
	ctx := context.Background()
	c, err := portres.Dial(ctx, dc.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.AcquireDelegated(ctx, portres.TCP, 0, 3)
	if err != nil {
		log, _ := os.ReadFile(dc.LogFile)
		t.Fatalf("%v\nlog:\n%s", err, log)
	}
	if r.Excluded() {
		t.Error("a delegated block of a broker that cannot write the kernel list says it is excluded")
	}
}

// countWriter counts log lines by message.
type countWriter struct {
	mu   chan struct{}
	text strings.Builder
}

func (w *countWriter) Write(p []byte) (int, error) {
	w.lock()
	defer w.unlock()
	return w.text.Write(p)
}

// String returns everything written so far.
func (w *countWriter) String() string {
	w.lock()
	defer w.unlock()
	return w.text.String()
}

func (w *countWriter) count(msg string) int {
	w.lock()
	defer w.unlock()
	return strings.Count(w.text.String(), msg)
}

func (w *countWriter) lock() {
	if w.mu == nil {
		w.mu = make(chan struct{}, 1)
	}
	w.mu <- struct{}{}
}
func (w *countWriter) unlock() { <-w.mu }

// TestUserRate: one uid's requests are paced to --user-rate (bursts of a
// tenth); root's are not.
func TestUserRate(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.Limits.UserRate = 50 })
	r := runOps(t, b, nobodyCred, false, "burst 30")[0]
	if r.code != 0 || r.n < 400 { // 5 at once, then 25 at 50 a second: 500 ms
		t.Errorf("30 requests at 50 a second took %d ms (code %d), want at least 400", r.n, r.code)
	}
	ctx := context.Background()
	c := b.Dial(t)
	t0 := time.Now()
	for i := 0; i < 200; i++ {
		if _, _, err := c.DynamicPortRange(ctx, portres.TCP); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(t0); d > 3*time.Second { // paced, it would take 4 s
		t.Errorf("root's 200 requests took %v: root is paced", d)
	}
}

// TestBindManyOthersToken: another uid's bind of many sockets from a
// block it does not own is refused with WSAEACCES before any socket is
// bound.
func TestBindManyOthersToken(t *testing.T) {
	b := testbroker.Start(t, nil)
	r, err := b.Dial(t).Acquire(context.Background(), portres.TCP, 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	res := runOps(t, b, nobodyCred, false, fmt.Sprintf("bindmany %d 3", r.Token()))[0]
	if res.code != int(portres.WSAEACCES) || res.n != 0 {
		t.Errorf("uid %d binding 3 sockets from root's block: code %d, %d bound (%s); want WSAEACCES, none bound", nobody, res.code, res.n, res.msg)
	}
}

// TestPassedSocketsPerUser: an unprivileged uid's requests may hold at
// most 256 passed descriptors in the broker at once (here they queue
// behind a slow request rate): past that a request carrying more is
// refused with WSAEDQUOT and its descriptors closed, so one user cannot
// take the broker's descriptors from the others. Root is not limited.
func TestPassedSocketsPerUser(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.Limits.UserRate = 5 })
	r := runOps(t, b, nobodyCred, false, "passmany 8")[0]
	if r.code != 0 || r.n < 1 || r.n > 4 {
		t.Errorf("8 requests of 64 descriptors queued at once: %d refused with WSAEDQUOT (code %d %s), want 1 to 4", r.n, r.code, r.msg)
	}
	if r := runOps(t, b, nil, false, "passmany 8")[0]; r.code != 0 || r.n != 0 {
		t.Errorf("root: %d of 8 requests refused with WSAEDQUOT (code %d %s), want none", r.n, r.code, r.msg)
	}
	// Every descriptor went back: nobody's next requests pass again.
	if r := runOps(t, b, nobodyCred, false, "passmany 2")[0]; r.code != 0 || r.n != 0 {
		t.Errorf("after the others were answered, 2 requests: %d refused (code %d %s), want none", r.n, r.code, r.msg)
	}
}

// TestStatusForAnyone: any local user may ask the broker's status; it
// counts everyone's reservations but names no owner and no token.
func TestStatusForAnyone(t *testing.T) {
	b := testbroker.Start(t, nil)
	ctx := context.Background()
	c := b.Dial(t)
	r, err := c.Acquire(ctx, portres.TCP, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreatePersistent(ctx, portres.UDP, 38500, 3); err != nil {
		t.Fatal(err)
	}
	st := runOps(t, b, nobodyCred, false, "status")[0]
	if st.code != 0 || st.n != 2 {
		t.Fatalf("status as uid %d: %+v", nobody, st)
	}
	tok := strconv.FormatUint(r.Token(), 10)
	if strings.Contains(st.msg, tok) || strings.Contains(st.msg, fmt.Sprintf("%x", r.Token())) {
		t.Errorf("status shows a token: %s", st.msg)
	}
}
