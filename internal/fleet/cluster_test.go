//go:build linux

package fleet_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// etcdBin is Debian's etcd-server, which .ci/run installs.
const etcdBin = "/usr/bin/etcd"

// cluster is a real fleet for a test: three etcd members (processes) in
// the test's network namespace, and brokers (portresd processes), each
// in a network namespace of its own joined to the test's by a veth pair,
// so that taking a link down cuts one broker off.
type cluster struct {
	t     testing.TB
	dir   string
	tag   string // unique per test: netns and link names
	etcd  []*exec.Cmd
	ports []int     // etcd client ports
	tls   *tlsFiles // etcd serves clients over TLS, with client certificates
	// brokerArgs are flags every broker gets (before a member's own).
	brokerArgs []string
	members    map[string]*member
	portresd   string
	mu         sync.Mutex
}

// member is one broker of the cluster.
type member struct {
	name, ns, link string
	n              int // 10.77.n.0/24
	sock           string
	cmd            *exec.Cmd
	log            *os.File
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newCluster starts three etcd members; brokers come with addMember.
func newCluster(t testing.TB) *cluster {
	t.Helper()
	return newClusterWith(t, 3, nil)
}

// newClusterWith starts n etcd members, serving clients over TLS with
// the certificates of tlsf unless it is nil.
func newClusterWith(t testing.TB, n int, tlsf *tlsFiles) *cluster {
	t.Helper()
	testutil.RequireRoot(t)
	if _, err := os.Stat(etcdBin); err != nil {
		if os.Getenv("PORTRES_REQUIRE_ETCD") != "" {
			t.Fatalf("PORTRES_REQUIRE_ETCD is set and there is no etcd: %v", err)
		}
		t.Skipf("needs Debian's etcd-server (%s, apt-get install etcd-server): %v", etcdBin, err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("needs iproute2's ip: %v", err)
	}
	c := &cluster{t: t, dir: testutil.Dir(t), tag: fmt.Sprintf("%d%02d", os.Getpid()%10000, nextTag()), members: map[string]*member{},
		etcd: make([]*exec.Cmd, n), ports: make([]int, n), tls: tlsf}
	exec.Command("ip", "link", "set", "lo", "up").Run()
	privateNetnsDir(t)
	peers := make([]int, n)
	for i := range c.ports {
		c.ports[i], peers[i] = freePort(t), freePort(t)
	}
	var initial []string
	for i := range peers {
		initial = append(initial, fmt.Sprintf("e%d=http://127.0.0.1:%d", i, peers[i]))
	}
	for i := range c.etcd {
		c.etcd[i] = c.startEtcd(i, peers[i], strings.Join(initial, ","), "new")
	}
	t.Cleanup(c.close)
	// Wait for a leader: a put succeeds.
	c.waitEtcd()
	c.portresd = filepath.Join(c.dir, "portresd")
	build := []string{"build", "-o", c.portresd}
	if raceBuild {
		build = append(build, "-race")
	}
	if out, err := exec.Command("go", append(build, "github.com/portres/portres/cmd/portresd")...).CombinedOutput(); err != nil {
		t.Fatalf("go build portresd: %v\n%s", err, out)
	}
	return c
}

var netnsDir sync.Once

// privateNetnsDir mounts a tmpfs on /run/netns in the test's own mount
// namespace (testutil.Main makes one): the names ip netns add makes there
// never outlive the test binary, even one that is killed.
func privateNetnsDir(t testing.TB) {
	if !testutil.InNetNS() {
		return
	}
	netnsDir.Do(func() {
		os.MkdirAll("/run/netns", 0o755)
		if err := unix.Mount("tmpfs", "/run/netns", "tmpfs", 0, "mode=0755"); err != nil {
			t.Logf("a private /run/netns: %v (names may outlive a killed test)", err)
		}
	})
}

var tagMu sync.Mutex
var tagN int

func nextTag() int {
	tagMu.Lock()
	defer tagMu.Unlock()
	tagN++
	return tagN
}

func (c *cluster) startEtcd(i, peer int, initial, state string) *exec.Cmd {
	dir := filepath.Join(c.dir, fmt.Sprintf("etcd%d", i))
	args := []string{"--name", fmt.Sprintf("e%d", i), "--data-dir", dir,
		"--listen-client-urls", fmt.Sprintf("%s://0.0.0.0:%d", c.scheme(), c.ports[i]),
		"--advertise-client-urls", fmt.Sprintf("%s://127.0.0.1:%d", c.scheme(), c.ports[i]),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peer),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peer),
		"--initial-cluster", initial, "--initial-cluster-state", state, "--initial-cluster-token", "portres-" + c.tag,
		"--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "error"}
	if c.tls != nil {
		args = append(args, "--cert-file", c.tls.serverCert, "--key-file", c.tls.serverKey,
			"--trusted-ca-file", c.tls.ca, "--client-cert-auth")
	}
	cmd := exec.Command(etcdBin, args...)
	log, _ := os.Create(filepath.Join(c.dir, fmt.Sprintf("etcd%d.log", i)))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start etcd: %v", err)
	}
	return cmd
}

// scheme is the etcd client URLs' scheme.
func (c *cluster) scheme() string {
	if c.tls != nil {
		return "https"
	}
	return "http"
}

// waitEtcd waits until the cluster has a leader: a put succeeds.
func (c *cluster) waitEtcd() {
	c.t.Helper()
	cl := c.etcdClient()
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = cl.Put(ctx, "/portres-test-ready", "1")
		cancel()
		if err == nil {
			return
		}
	}
	logs, _ := os.ReadFile(filepath.Join(c.dir, "etcd0.log"))
	c.t.Fatalf("etcd did not come up: %v\n%s", err, logs)
}

// etcdClient is a client of the cluster's etcd, from the test's netns.
func (c *cluster) etcdClient() *clientv3.Client {
	c.t.Helper()
	var eps []string
	for _, p := range c.ports {
		eps = append(eps, fmt.Sprintf("%s://127.0.0.1:%d", c.scheme(), p))
	}
	cfg := clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if c.tls != nil {
		cfg.TLS = c.tls.client(c.t)
	}
	cl, err := clientv3.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// leader is the index of the etcd member that leads.
func (c *cluster) leader() int {
	c.t.Helper()
	cl := c.etcdClient()
	for i, p := range c.ports {
		st, err := cl.Status(context.Background(), fmt.Sprintf("%s://127.0.0.1:%d", c.scheme(), p))
		if err == nil && st.Header.MemberId == st.Leader {
			return i
		}
	}
	c.t.Fatal("no etcd member leads")
	return 0
}

// stopEtcd kills etcd member i.
func (c *cluster) stopEtcd(i int) {
	c.etcd[i].Process.Kill()
	c.etcd[i].Wait()
}

// endpoints are the etcd client URLs as seen from member n's namespace.
func (c *cluster) endpoints(n int) string {
	var eps []string
	for _, p := range c.ports {
		eps = append(eps, fmt.Sprintf("%s://10.77.%d.1:%d", c.scheme(), n, p))
	}
	return strings.Join(eps, ",")
}

func run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// addMember makes a network namespace joined by a veth pair and starts a
// broker in it, a member of the fleet named name, with extra flags.
func (c *cluster) addMember(name string, extra ...string) *member {
	c.t.Helper()
	c.mu.Lock()
	n := len(c.members) + 1
	c.mu.Unlock()
	m := &member{name: name, n: n, ns: fmt.Sprintf("prt%s-%d", c.tag, n), link: fmt.Sprintf("pv%s%d", c.tag, n)}
	run(c.t, "ip", "netns", "add", m.ns)
	c.t.Cleanup(func() { exec.Command("ip", "netns", "del", m.ns).Run() })
	run(c.t, "ip", "link", "add", m.link, "type", "veth", "peer", "name", "eth0", "netns", m.ns)
	run(c.t, "ip", "addr", "add", fmt.Sprintf("10.77.%d.1/24", n), "dev", m.link)
	run(c.t, "ip", "link", "set", m.link, "up")
	run(c.t, "ip", "-n", m.ns, "addr", "add", fmt.Sprintf("10.77.%d.2/24", n), "dev", "eth0")
	run(c.t, "ip", "-n", m.ns, "link", "set", "eth0", "up")
	run(c.t, "ip", "-n", m.ns, "link", "set", "lo", "up")
	m.sock = filepath.Join(c.dir, name+".sock")
	c.mu.Lock()
	c.members[name] = m
	c.mu.Unlock()
	c.start(m, extra...)
	return m
}

// start runs m's broker and waits until it serves.
func (c *cluster) start(m *member, extra ...string) {
	c.t.Helper()
	args := []string{"netns", "exec", m.ns, c.portresd, "--socket", m.sock, "--state", filepath.Join(c.dir, m.name+".db"),
		"--portserver", "-", "--runtime-state", "-", "--enforce", "hold", "--sweep", "200ms",
		"--etcd", c.endpoints(m.n), "--etcd-prefix", "/portres-" + c.tag + "/", "--fleet-name", m.name,
		"--fleet-range", "30000-30999", "--fleet-ttl", "3s"}
	args = append(append(args, c.brokerArgs...), extra...)
	m.cmd = exec.Command("ip", args...)
	var err error
	if m.log, err = os.OpenFile(filepath.Join(c.dir, m.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		c.t.Fatal(err)
	}
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if cl, err := portres.Dial(context.Background(), m.sock); err == nil {
			cl.Close()
			return
		}
		if m.cmd.ProcessState != nil || time.Now().After(deadline) {
			// A goroutine dump says where a hung broker waits.
			m.cmd.Process.Signal(syscall.SIGQUIT)
			time.Sleep(200 * time.Millisecond)
			logs, _ := os.ReadFile(filepath.Join(c.dir, m.name+".log"))
			c.t.Fatalf("broker %s did not start:\n%s", m.name, logs)
		}
	}
}

// inNetNS runs f on a thread in m's network namespace: sockets f makes
// are m's host's, as its broker requires.
func (c *cluster) inNetNS(m *member, f func()) {
	c.t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		c.t.Fatal(err)
	}
	defer self.Close()
	ns, err := os.Open("/run/netns/" + m.ns)
	if err != nil {
		c.t.Fatal(err)
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		c.t.Fatalf("setns %s: %v", m.ns, err)
	}
	defer func() {
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			panic(err) // a thread left in another netns must not be reused
		}
	}()
	f()
}

// kill SIGKILLs m's broker.
func (c *cluster) kill(m *member) {
	m.cmd.Process.Kill()
	m.cmd.Wait()
}

// stop ends m's broker with SIGTERM.
func (c *cluster) stop(m *member) {
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.cmd.Wait()
}

// cut takes m's link down (true) or up again (false).
func (c *cluster) cut(m *member, down bool) {
	state := "up"
	if down {
		state = "down"
	}
	run(c.t, "ip", "link", "set", m.link, state)
}

// client dials m's broker; closed when the test ends.
func (c *cluster) client(m *member) *portres.Client {
	c.t.Helper()
	cl, err := portres.Dial(context.Background(), m.sock)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// reservedPorts reads ip_local_reserved_ports in m's network namespace.
func (c *cluster) reservedPorts(m *member) string {
	out, _ := exec.Command("ip", "netns", "exec", m.ns, "cat", "/proc/sys/net/ipv4/ip_local_reserved_ports").Output()
	return strings.TrimSpace(string(out))
}

func (c *cluster) close() {
	for _, m := range c.members {
		if m.cmd != nil && m.cmd.ProcessState == nil {
			m.cmd.Process.Kill()
			m.cmd.Wait()
		}
		if m.log != nil {
			m.log.Close()
		}
		logs, _ := os.ReadFile(filepath.Join(c.dir, m.name+".log"))
		if i := strings.Index(string(logs), "WARNING: DATA RACE"); i >= 0 {
			c.t.Errorf("broker %s: data race:\n%s", m.name, tail(string(logs[i:]), 60))
		}
		if c.t.Failed() {
			c.t.Logf("broker %s log:\n%s", m.name, tail(string(logs), 40))
		}
	}
	for _, e := range c.etcd {
		if e != nil && e.ProcessState == nil {
			e.Process.Kill()
			e.Wait()
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// eventually retries f until it returns nil or d passes.
func eventually(t *testing.T, d time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for deadline := start.Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err = f(); err == nil {
			return time.Since(start)
		}
	}
	t.Fatalf("%s: not within %v: %v", what, d, err)
	return 0
}
