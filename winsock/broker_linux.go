package winsock

import (
	"context"
	"errors"
	"sync"

	"github.com/portres/portres"
)

// shared is the broker connection the process's sockets share for
// RELEASE, ASSOCIATE and bind when they have none of their own.
var shared struct {
	mu   sync.Mutex
	path string // "" = portres.DefaultSocketPath()
	c    *portres.Client
}

// SetBrokerSocket makes the package talk to the broker listening on path
// ("" = portres.DefaultSocketPath(), which honours $PORTRES_SOCKET). It
// affects sockets that dial afterwards; the shared connection to the
// previous broker, if any, is closed. It has no effect on Windows.
func SetBrokerSocket(path string) {
	shared.mu.Lock()
	if path == shared.path {
		shared.mu.Unlock()
		return
	}
	old := shared.c
	shared.path, shared.c = path, nil
	shared.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

// brokerPath is the broker socket new connections dial.
func brokerPath() string {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.path == "" {
		return portres.DefaultSocketPath()
	}
	return shared.path
}

// sharedClient returns the process's shared broker connection, dialling
// it if needed.
func sharedClient(ctx context.Context) (*portres.Client, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.c != nil {
		return shared.c, nil
	}
	path := shared.path
	if path == "" {
		path = portres.DefaultSocketPath()
	}
	c, err := portres.Dial(ctx, path)
	if err != nil {
		return nil, err
	}
	shared.c = c
	return c, nil
}

// forgetShared drops the shared connection c if err says it is broken,
// so that the next call dials again (the broker may have restarted).
func forgetShared(c *portres.Client, err error) {
	var pe *portres.Error
	if !errors.As(err, &pe) || pe.Code != portres.WSAENETDOWN {
		return
	}
	shared.mu.Lock()
	if shared.c != c {
		shared.mu.Unlock()
		return
	}
	shared.c = nil
	shared.mu.Unlock()
	c.Close()
}

func startup() error { return nil }

// cleanup closes the shared connection.
func cleanup() error {
	shared.mu.Lock()
	c := shared.c
	shared.c = nil
	shared.mu.Unlock()
	if c != nil {
		return c.Close()
	}
	return nil
}

// brokerError wraps an error of the portres client as an *Error of op
// with the broker's Winsock code.
func brokerError(op string, err error) *Error {
	var we *Error
	if errors.As(err, &we) {
		return we
	}
	var pe *portres.Error
	if errors.As(err, &pe) {
		return &Error{Op: op, Code: pe.Code, Err: err}
	}
	return &Error{Op: op, Code: ErrorCode(err), Err: err}
}
