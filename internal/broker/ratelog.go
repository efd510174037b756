//go:build linux

package broker

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Rates of per-request log lines: each uid may log logBurst lines at
// once and logRate a second after that; all uids together at most
// logGlobalBurst at once and logGlobalRate a second.
const (
	logRate        = 5
	logBurst       = 20
	logGlobalRate  = 50
	logGlobalBurst = 200
	// maxLogUsers bounds the per-uid limiters kept; past it the map is
	// dropped and rebuilt (uids then start with a fresh burst).
	maxLogUsers = 4096
)

// logLimiter rate-limits the log lines that clients can cause (malformed
// requests, releases on disconnect, refused connections), so that no
// client can fill a disk through the broker's log. What it drops is
// counted (portres_log_dropped_total) and summed up in one line from
// time to time (Flush).
type logLimiter struct {
	log     *slog.Logger
	global  *rate.Limiter
	dropped atomic.Uint64 // since the start
	pending atomic.Uint64 // since the last summary

	mu    sync.Mutex
	users map[uint32]*rate.Limiter
}

func newLogLimiter(log *slog.Logger) *logLimiter {
	return &logLimiter{log: log, global: rate.NewLimiter(logGlobalRate, logGlobalBurst), users: map[uint32]*rate.Limiter{}}
}

// Log writes msg at level for a request of uid, unless uid or everyone
// together is over the rate; then it only counts it.
func (l *logLimiter) Log(uid uint32, level slog.Level, msg string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	if !l.allow(uid) {
		l.dropped.Add(1)
		l.pending.Add(1)
		return
	}
	l.log.Log(context.Background(), level, msg, append(args, "uid", uid)...)
}

func (l *logLimiter) allow(uid uint32) bool {
	l.mu.Lock()
	lim := l.users[uid]
	if lim == nil {
		if len(l.users) >= maxLogUsers {
			clear(l.users)
		}
		lim = rate.NewLimiter(logRate, logBurst)
		l.users[uid] = lim
	}
	l.mu.Unlock()
	now := time.Now()
	return lim.AllowN(now, 1) && l.global.AllowN(now, 1)
}

// Flush logs how many lines were dropped since the last call, if any.
func (l *logLimiter) Flush() {
	if n := l.pending.Swap(0); n > 0 {
		l.log.Warn("log lines suppressed: clients caused more than the log rate allows", "dropped", n,
			"rate_per_uid", logRate, "rate_total", logGlobalRate)
	}
}

// Dropped is the number of lines dropped since the start.
func (l *logLimiter) Dropped() uint64 { return l.dropped.Load() }
