//go:build linux

package sockdiag

import (
	"testing"

	"github.com/portres/portres/internal/testutil"
)

// TestMain runs the package's tests as root in a private network
// namespace (testutil.Main), so the socket tables hold only the tests'.
func TestMain(m *testing.M) { testutil.Main(m) }
