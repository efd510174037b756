//go:build linux

package cli

import (
	"testing"

	"github.com/portres/portres/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }
