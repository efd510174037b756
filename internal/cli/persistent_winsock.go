//go:build linux || windows

package cli

import (
	"context"
	"runtime"

	"github.com/portres/portres"
	"github.com/portres/portres/winsock"
)

// winsockPersistent is persistentAPI over the winsock package's
// iphlpapi functions: the system's own on Windows. It runs on Linux too,
// against portresd, which is how its tests run it.
type winsockPersistent struct{}

func openWinsockPersistent(_ context.Context, e *env) (persistentAPI, error) {
	winsock.SetBrokerSocket(e.socket) // Linux only; no effect on Windows
	return winsockPersistent{}, nil
}

func (winsockPersistent) create(_ context.Context, p portres.Proto, start, count uint16) (uint64, error) {
	var token uint64
	create := winsock.CreatePersistentTcpPortReservation
	if p == portres.UDP {
		create = winsock.CreatePersistentUdpPortReservation
	}
	return token, win32Error("persistent create", p, start, count, create(winsock.Htons(start), count, &token))
}

func (winsockPersistent) remove(_ context.Context, p portres.Proto, start, count uint16) error {
	remove := winsock.DeletePersistentTcpPortReservation
	if p == portres.UDP {
		remove = winsock.DeletePersistentUdpPortReservation
	}
	return win32Error("persistent delete", p, start, count, remove(winsock.Htons(start), count))
}

func (winsockPersistent) lookup(_ context.Context, p portres.Proto, start, count uint16) (uint64, error) {
	var token uint64
	lookup := winsock.LookupPersistentTcpPortReservation
	if p == portres.UDP {
		lookup = winsock.LookupPersistentUdpPortReservation
	}
	return token, win32Error("persistent lookup", p, start, count, lookup(winsock.Htons(start), count, &token))
}

// Close closes the connection the Linux backend shares; on Windows there
// is none (iphlpapi needs no WSAStartup).
func (winsockPersistent) Close() error {
	if runtime.GOOS == "linux" {
		return winsock.WSACleanup()
	}
	return nil
}

// win32Error is the error of a persistent function that returned code,
// named as the broker names it: operation, protocol, block, code.
func win32Error(op string, p portres.Proto, start, count uint16, code uint32) error {
	if code == winsock.NO_ERROR {
		return nil
	}
	return &portres.Error{Op: op, Proto: p, Start: start, Count: count, Code: portres.Errno(code)}
}
