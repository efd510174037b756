//go:build linux

// Package testbroker starts a portres broker inside a test process,
// with its socket and state in a fresh directory.
package testbroker

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testutil"
)

// Broker is a broker started in-process for a test.
type Broker struct {
	*broker.Broker
	Config broker.Config
}

// Config is the configuration Start uses: socket and state in a fresh
// directory, a 50 ms sweep and placeholder enforcement (tests of the
// other modes say so in mod); mod may change it. Tests of a broker that
// must fail to start give it to broker.New themselves. It skips the test
// unless running as root in a private netns.
func Config(t testing.TB, mod func(*broker.Config)) broker.Config {
	t.Helper()
	testutil.RequireRoot(t)
	dir := testutil.Dir(t)
	cfg := broker.Config{
		Enforce: broker.EnforceHold,
		Socket:  filepath.Join(dir, "portres.sock"),
		State:   filepath.Join(dir, "state.db"),
		Sweep:   50 * time.Millisecond,
		BPFPin:  testutil.BPFPin(t),
		// Off: brokers of one test binary share a network namespace,
		// where an abstract name is taken once (tests that want it say).
		Portserver: "-",
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

// Start starts a broker in this process configured as Config says.
// The broker is closed, and ip_local_reserved_ports emptied, when the
// test ends.
func Start(t testing.TB, mod func(*broker.Config)) *Broker {
	t.Helper()
	cfg := Config(t, mod)
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := b.Serve(context.Background()); err != nil {
			t.Errorf("broker: %v", err)
		}
	}()
	t.Cleanup(func() {
		b.Close()
		<-done
		testutil.ClearReservedPorts(t)
	})
	return &Broker{Broker: b, Config: cfg}
}

// Dial connects a client to b, closed when the test ends.
func (b *Broker) Dial(t testing.TB) *portres.Client {
	t.Helper()
	c, err := portres.Dial(context.Background(), b.Config.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
