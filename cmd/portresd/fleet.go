//go:build linux

package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/fleet"
	"github.com/portres/portres/internal/fleet/etcdfleet"
	"github.com/spf13/pflag"
)

// fleetFlags are the flags that make portresd a member of a fleet on
// etcd, named as etcd's own clients name them.
type fleetFlags struct {
	endpoints, prefix, cacert, cert, key, user, name, rng string
	ttl                                                   time.Duration
	userPorts                                             int
	flags                                                 *pflag.FlagSet
	needEtcd                                              []string // the flags define adds besides --etcd
}

func (fl *fleetFlags) define(f *pflag.FlagSet) {
	fl.flags = f
	before := map[string]bool{}
	f.VisitAll(func(fl *pflag.Flag) { before[fl.Name] = true })
	defer f.VisitAll(func(g *pflag.Flag) {
		if !before[g.Name] && g.Name != "etcd" {
			fl.needEtcd = append(fl.needEtcd, g.Name)
		}
	})
	f.StringVar(&fl.endpoints, "etcd", "", "join the fleet on these etcd endpoints (comma-separated URLs, e.g. http://10.0.0.1:2379,http://10.0.0.2:2379); off by default")
	f.StringVar(&fl.prefix, "etcd-prefix", "/portres/", "the fleet's etcd key prefix (see docs/FLEET.md)")
	f.StringVar(&fl.cacert, "etcd-cacert", "", "verify the etcd servers with this CA bundle (TLS)")
	f.StringVar(&fl.cert, "etcd-cert", "", "identify to etcd with this client certificate (TLS)")
	f.StringVar(&fl.key, "etcd-key", "", "the client certificate's key (TLS)")
	f.StringVar(&fl.user, "etcd-user", "", "etcd user name, or name:password (the password may come from $PORTRES_ETCD_PASSWORD instead)")
	f.StringVar(&fl.name, "fleet-name", "", "this member's name in the fleet (default: the host name)")
	f.StringVar(&fl.rng, "fleet-range", "", "ports handed out as fleet leases, unique across the fleet, and kept out of local use (e.g. 30000-32767); none by default")
	f.IntVar(&fl.userPorts, "fleet-user-ports", 0, "the most ports of fleet leases one uid (not root or the admin group) may hold through this member; 0: a quarter of the fleet range, -1: no limit")
	f.DurationVar(&fl.ttl, "fleet-ttl", fleet.DefaultTTL, "the member's etcd lease: how long its fleet leases outlive a broker that died or a host that was lost")
}

// config fills cfg.Fleet from the flags; an error is a usage error.
func (fl *fleetFlags) config(cfg *broker.Config) error {
	if fl.endpoints == "" {
		// A fleet flag without --etcd would be silently ignored: say so.
		for _, name := range fl.needEtcd {
			if fl.flags.Changed(name) {
				return fmt.Errorf("--%s needs --etcd", name)
			}
		}
		return nil
	}
	if fl.userPorts < -1 {
		return fmt.Errorf("--fleet-user-ports must be -1 (no limit), 0 (a quarter of the range) or a number of ports, not %d", fl.userPorts)
	}
	fc := &fleet.Config{Prefix: fl.prefix, CACert: fl.cacert, Cert: fl.cert, Key: fl.key, Name: fl.name, TTL: fl.ttl, UserPorts: fl.userPorts}
	for _, e := range strings.Split(fl.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			fc.Endpoints = append(fc.Endpoints, e)
		}
	}
	if fl.user != "" {
		fc.Username, fc.Password, _ = strings.Cut(fl.user, ":")
		if fc.Password == "" {
			fc.Password = os.Getenv("PORTRES_ETCD_PASSWORD")
		}
	}
	if (fl.cert == "") != (fl.key == "") {
		return fmt.Errorf("--etcd-cert and --etcd-key go together")
	}
	if fl.ttl < 2*time.Second || fl.ttl%time.Second != 0 {
		return fmt.Errorf("--fleet-ttl must be whole seconds, at least 2s, got %v", fl.ttl)
	}
	if !strings.HasPrefix(fl.prefix, "/") {
		return fmt.Errorf("--etcd-prefix must start with /, got %q", fl.prefix)
	}
	if fl.rng != "" {
		var lo, hi int
		if n, _ := fmt.Sscanf(fl.rng, "%d-%d", &lo, &hi); n != 2 || lo < 1 || hi > 65535 || lo > hi {
			return fmt.Errorf("--fleet-range must be START-END within 1-65535, got %q", fl.rng)
		}
		fc.RangeStart, fc.RangeEnd = uint16(lo), uint16(hi)
	}
	cfg.Fleet, cfg.JoinFleet = fc, etcdfleet.JoinFleet
	return nil
}
