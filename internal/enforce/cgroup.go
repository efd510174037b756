//go:build linux

package enforce

import "golang.org/x/sys/unix"

// DefaultCgroup is the root of the cgroup v2 hierarchy: /sys/fs/cgroup on
// unified systems, /sys/fs/cgroup/unified on hybrid ones (as on this
// project's machines). It returns /sys/fs/cgroup when neither is cgroup v2;
// attaching there then fails with a clear error.
func DefaultCgroup() string {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		if IsCgroup2(p) {
			return p
		}
	}
	return "/sys/fs/cgroup"
}

// IsCgroup2 reports whether path is on a cgroup v2 file system.
func IsCgroup2(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}
