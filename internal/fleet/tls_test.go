//go:build linux

package fleet_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portres/portres"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// tlsFiles are a CA, an etcd server certificate for the cluster's
// addresses and a client certificate, as PEM files.
type tlsFiles struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

// client is the TLS configuration of a client with the client
// certificate, trusting the CA.
func (f *tlsFiles) client(t testing.TB) *tls.Config {
	cfg, err := (transport.TLSInfo{CertFile: f.clientCert, KeyFile: f.clientKey, TrustedCAFile: f.ca}).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newTLSFiles makes the certificates in dir.
func newTLSFiles(t testing.TB, dir string) *tlsFiles {
	f := &tlsFiles{ca: filepath.Join(dir, "ca.pem"), serverCert: filepath.Join(dir, "server.pem"), serverKey: filepath.Join(dir, "server-key.pem"),
		clientCert: filepath.Join(dir, "client.pem"), clientKey: filepath.Join(dir, "client-key.pem")}
	write := func(path, typ string, der []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "portres test CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write(f.ca, "CERTIFICATE", caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP, certPath, keyPath string) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, NotBefore: now.Add(-time.Hour),
			NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		write(certPath, "CERTIFICATE", der)
		kder, _ := x509.MarshalECPrivateKey(k)
		write(keyPath, "EC PRIVATE KEY", kder)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1)}
	for n := 1; n <= 9; n++ {
		ips = append(ips, net.IPv4(10, 77, byte(n), 1))
	}
	issue(2, "etcd", x509.ExtKeyUsageServerAuth, ips, f.serverCert, f.serverKey)
	issue(3, "portresd", x509.ExtKeyUsageClientAuth, nil, f.clientCert, f.clientKey)
	return f
}

// tryStart runs a broker in m's network namespace with args (on its own
// socket and state) and returns what it printed if it exits within 20 s;
// one that starts is killed and reported as an error.
func (c *cluster) tryStart(m *member, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	name := fmt.Sprintf("try%d", nextTag())
	base := []string{"netns", "exec", m.ns, c.portresd, "--socket", filepath.Join(c.dir, name+".sock"), "--state", filepath.Join(c.dir, name+".db"),
		"--portserver", "-", "--runtime-state", "-", "--enforce", "hold", "--etcd-prefix", "/portres-" + c.tag + "/", "--fleet-name", name}
	out, err := exec.CommandContext(ctx, "ip", append(base, args...)...).CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("it started")
	}
	return string(out), err
}

// TestFleetTLSAuth: a fleet on an etcd that takes TLS clients with
// certificates and authenticates users: brokers join with --etcd-cacert,
// --etcd-cert, --etcd-key and --etcd-user (the password from
// $PORTRES_ETCD_PASSWORD), their user's role limited to the fleet's
// prefix; without the certificate, or with a wrong password, or with a
// role that does not cover the prefix, a broker refuses to start and says
// why.
func TestFleetTLSAuth(t *testing.T) {
	certs := newTLSFiles(t, t.TempDir())
	c := newClusterWith(t, 1, certs)
	ctx := context.Background()

	// Users: root (needed to enable auth) and portres, whose role may
	// read and write the fleet's prefix only.
	ecl := c.etcdClient()
	prefix := "/portres-" + c.tag + "/"
	for _, step := range []func() error{
		func() error { _, err := ecl.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := ecl.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := ecl.RoleAdd(ctx, "portres"); return err },
		func() error {
			_, err := ecl.RoleGrantPermission(ctx, "portres", prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := ecl.UserAdd(ctx, "portres", "s3cret"); return err },
		func() error { _, err := ecl.UserGrantRole(ctx, "portres", "portres"); return err },
		func() error { _, err := ecl.UserAdd(ctx, "other", "otherpw"); return err },
		func() error { _, err := ecl.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("etcd auth setup: %v", err)
		}
	}
	tlsArgs := []string{"--etcd-cacert", certs.ca, "--etcd-cert", certs.clientCert, "--etcd-key", certs.clientKey}
	c.brokerArgs = append(tlsArgs, "--etcd-user", "portres")
	os.Setenv("PORTRES_ETCD_PASSWORD", "s3cret") // the brokers inherit it: not on their command lines
	defer os.Unsetenv("PORTRES_ETCD_PASSWORD")

	m1, m2 := c.addMember("m1"), c.addMember("m2")
	c1, c2 := c.client(m1), c.client(m2)
	r, err := c1.CreateFleetPersistent(ctx, portres.UDP, 7000, 8)
	if err != nil {
		t.Fatalf("a fleet create over TLS with auth: %v", err)
	}
	eventually(t, time.Second, "the block on m2", func() error {
		got, err := c2.LookupFleetPersistent(ctx, portres.UDP, 7000, 8)
		if err == nil && got.Token() != r.Token() {
			return fmt.Errorf("token %#x, want %#x", got.Token(), r.Token())
		}
		return err
	})
	if _, err := c2.AcquireFleet(ctx, portres.TCP, 0, 2); err != nil {
		t.Fatalf("a fleet lease over TLS with auth: %v", err)
	}

	cases := []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"no client certificate", []string{"--etcd-cacert", certs.ca, "--etcd-user", "portres"}, "s3cret", "bad certificate"},
		{"wrong password", append(append([]string{}, tlsArgs...), "--etcd-user", "portres"), "wrong", "authentication failed"},
		{"a user without the prefix", append(append([]string{}, tlsArgs...), "--etcd-user", "other:otherpw"), "", "permission denied"},
		{"no CA: the server is not trusted", []string{"--etcd-cert", certs.clientCert, "--etcd-key", certs.clientKey, "--etcd-user", "portres"}, "s3cret", "unknown authority"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			os.Setenv("PORTRES_ETCD_PASSWORD", tc.env)
			defer os.Setenv("PORTRES_ETCD_PASSWORD", "s3cret")
			out, err := c.tryStart(m1, append([]string{"--etcd", c.endpoints(m1.n), "--fleet-range", "30000-30999"}, tc.args...)...)
			if err == nil || err.Error() == "it started" {
				t.Fatalf("the broker started (%v):\n%s", err, out)
			}
			if !strings.Contains(out, tc.want) || !strings.Contains(out, "etcd") {
				t.Errorf("the broker's refusal does not say why (want %q and etcd):\n%s", tc.want, out)
			}
			t.Logf("refused: %s", strings.TrimSpace(out))
		})
	}
}
