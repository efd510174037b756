// Package buildinfo says which build of portres is running.
package buildinfo

import "runtime/debug"

// Version is the module version and VCS revision the binary was built
// from ("(devel)" for a build outside a module release; the revision only
// when the build recorded it).
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v += " " + s.Value
		case "vcs.modified":
			if s.Value == "true" {
				v += " (modified)"
			}
		}
	}
	return v
}
