//go:build linux

package enforce

import (
	"testing"

	"github.com/portres/portres/internal/testutil"
)

// TestMain runs the package's tests as root in a private network
// namespace (testutil.Main), so kernel tests never touch the host's
// sysctls or ports.
func TestMain(m *testing.M) { testutil.Main(m) }
