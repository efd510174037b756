//go:build linux

package broker

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/portres/portres/internal/enforce"
)

// Capability bits (linux/capability.h).
const (
	capNetAdmin = 12
	capSysAdmin = 21
	capBPF      = 39
)

// bpfMissing lists what the eBPF bind guard needs and this process lacks,
// one entry per requirement, in words an operator can act on; empty when
// the guard may be loaded (it can still fail, out loud, for other
// reasons).
func bpfMissing(cgroup string) []string {
	var missing []string
	caps, err := ownCaps()
	if err != nil {
		return []string{fmt.Sprintf("its own capabilities (reading /proc/self/status: %v)", err)}
	}
	if caps&(1<<capBPF) == 0 && caps&(1<<capSysAdmin) == 0 {
		missing = append(missing, "CAP_BPF (or CAP_SYS_ADMIN) to load the program: run portresd as root")
	}
	if caps&(1<<capNetAdmin) == 0 {
		missing = append(missing, "CAP_NET_ADMIN to attach it to a cgroup: run portresd as root")
	}
	if !enforce.IsCgroup2(cgroup) {
		missing = append(missing, fmt.Sprintf("a cgroup v2 directory to attach to (%s is not one; see --cgroup)", cgroup))
	}
	if nested, err := inChildPidNS(); err == nil && nested {
		missing = append(missing, "the initial pid namespace (the guard recognises the broker by its pid there; portresd runs in a container's)")
	}
	return missing
}

// ownCaps is this process's effective capability set.
func ownCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(rest), 16, 64)
		}
	}
	return 0, fmt.Errorf("no CapEff line")
}

// inChildPidNS reports whether this process sees itself in a pid
// namespace other than the initial one (NSpid lists more than one pid).
func inChildPidNS() (bool, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			return len(strings.Fields(rest)) > 1, nil
		}
	}
	return false, nil
}
