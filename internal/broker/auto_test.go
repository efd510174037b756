//go:build linux

package broker_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
)

// TestEnforceAutoPicksBPF: auto, the default, is the eBPF guard where the
// broker may load and attach it (root, cgroup v2).
func TestEnforceAutoPicksBPF(t *testing.T) {
	cg, _ := testutil.Cgroup(t)
	var cfg broker.Config
	cfg.Defaults()
	if cfg.Enforce != broker.EnforceAuto {
		t.Errorf("default enforcement %q, want auto", cfg.Enforce)
	}
	var lines countWriter
	b := testbroker.Start(t, func(c *broker.Config) {
		c.Enforce, c.Cgroup, c.Logger = broker.EnforceAuto, cg, newCountLogger(&lines)
	})
	if b.Enforcement() != broker.EnforceBPF {
		t.Fatalf("auto as root with a cgroup v2 chose %s; log:\n%s", b.Enforcement(), lines.String())
	}
	if lines.count("enforce=bpf") != 1 || lines.count("eBPF bind guard on cgroup") != 1 {
		t.Errorf("the start-up line does not say bpf and why:\n%s", lines.String())
	}
}

// TestEnforceAutoSaysWhyNot: where the guard cannot be used, auto holds
// with placeholders and logs one line per missing requirement.
func TestEnforceAutoSaysWhyNot(t *testing.T) {
	// Root, but no cgroup v2 at --cgroup.
	var lines countWriter
	b := testbroker.Start(t, func(c *broker.Config) {
		c.Enforce, c.Cgroup, c.Logger = broker.EnforceAuto, t.TempDir(), newCountLogger(&lines)
	})
	if b.Enforcement() != broker.EnforceHold || lines.count("cgroup v2 directory") != 2 { // the missing line and the start-up line
		t.Errorf("auto without a cgroup v2 chose %s; log:\n%s", b.Enforcement(), lines.String())
	}

	// Not root: no CAP_BPF, no CAP_NET_ADMIN.
	dir := testutil.Dir(t)
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	dc := daemonConfig{Socket: filepath.Join(dir, "portres.sock"), State: filepath.Join(dir, "state.db"), LogFile: filepath.Join(dir, "log"), Enforce: broker.EnforceAuto}
	startDaemon(t, nobodyCred, dc)
	log := daemonLog(dc.LogFile)
	for _, want := range []string{"missing=\"CAP_BPF", "missing=\"CAP_NET_ADMIN", "enforce=hold"} {
		if !strings.Contains(log, want) {
			t.Errorf("a non-root broker in auto mode does not log %s:\n%s", want, log)
		}
	}
}
