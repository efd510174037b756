package winsock

import (
	"sync"
	"time"
)

// sysOverlapped is the state of an Overlapped on Linux: the record
// alone (overlapped.go).
type sysOverlapped struct{ ovRecord }

// start claims ov for an operation on s; WSAEINVAL if it is in use.
func (ov *Overlapped) start(name string, s *Socket, useEvent bool) error {
	ov.sys.mu.Lock()
	defer ov.sys.mu.Unlock()
	if err := ov.sys.inUse(name); err != nil {
		return err
	}
	ov.begin(s, useEvent)
	return nil
}

func (s *Socket) cancelIo() error { return s.cancelOps("CancelIo", nil) }

// sysEvent is a manual-reset event: ch is closed while it is signalled.
type sysEvent struct {
	mu     sync.Mutex
	ch     chan struct{}
	set    bool
	closed bool
}

func newEvent() (*Event, error) {
	return &Event{sys: sysEvent{ch: make(chan struct{})}}, nil
}

// lock locks e, failing with WSA_INVALID_HANDLE if it is nil or closed.
func (e *Event) lock(name string) error {
	if e == nil {
		return newError(name, WSA_INVALID_HANDLE, "nil Event")
	}
	e.sys.mu.Lock()
	if e.sys.closed {
		e.sys.mu.Unlock()
		return newError(name, WSA_INVALID_HANDLE, "the event is closed")
	}
	if e.sys.ch == nil {
		e.sys.ch = make(chan struct{})
	}
	return nil
}

func (e *Event) set() error {
	if err := e.lock("WSASetEvent"); err != nil {
		return err
	}
	defer e.sys.mu.Unlock()
	if !e.sys.set {
		close(e.sys.ch)
		e.sys.set = true
	}
	return nil
}

func (e *Event) reset() error {
	if err := e.lock("WSAResetEvent"); err != nil {
		return err
	}
	defer e.sys.mu.Unlock()
	if e.sys.set {
		e.sys.ch = make(chan struct{})
		e.sys.set = false
	}
	return nil
}

func (e *Event) wait(timeout time.Duration) (bool, error) {
	if err := e.lock("WSAWaitForMultipleEvents"); err != nil {
		return false, err
	}
	ch := e.sys.ch
	e.sys.mu.Unlock()
	select {
	case <-ch:
		return true, nil
	default:
	}
	if timeout < 0 {
		<-ch
		return true, nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return true, nil
	case <-t.C:
		return false, nil
	}
}

func (e *Event) close() error {
	if err := e.lock("WSACloseEvent"); err != nil {
		return err
	}
	e.sys.closed = true
	e.sys.mu.Unlock()
	return nil
}
