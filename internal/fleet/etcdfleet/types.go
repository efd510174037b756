//go:build linux

package etcdfleet

import (
	"context"
	"log/slog"

	"github.com/portres/portres/internal/fleet"
)

// The fleet's types and errors, as package fleet defines them.
type (
	Config     = fleet.Config
	Block      = fleet.Block
	Local      = fleet.Local
	Entry      = fleet.Entry
	MemberInfo = fleet.MemberInfo
	Status     = fleet.Status
)

// The fleet's errors (see package fleet).
var (
	ErrCutOff   = fleet.ErrCutOff
	ErrNoVote   = fleet.ErrNoVote
	ErrTaken    = fleet.ErrTaken
	ErrNoRoom   = fleet.ErrNoRoom
	ErrOverlap  = fleet.ErrOverlap
	ErrCollides = fleet.ErrCollides
	ErrNotFound = fleet.ErrNotFound
	ErrConflict = fleet.ErrConflict
)

// Limits, as package fleet sets them.
const (
	DefaultTTL    = fleet.DefaultTTL
	MaxLeasePorts = fleet.MaxLeasePorts
)

var _ fleet.Member = (*Member)(nil)

// JoinFleet is Join as a fleet.JoinFunc, for the broker's configuration.
func JoinFleet(ctx context.Context, cfg Config, local Local, log *slog.Logger) (fleet.Member, error) {
	m, err := Join(ctx, cfg, local, log)
	if err != nil {
		return nil, err
	}
	return m, nil
}
