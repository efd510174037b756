//go:build linux

package broker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/pool"
	"github.com/portres/portres/internal/wire"
)

// The portserver protocol, as Google's portpicker speaks it (Python's
// portpicker.pick_unused_port with $PORTSERVER_ADDRESS set; Bazel,
// TensorFlow and gRPC test suites use it): a client connects to a Unix
// stream socket (an abstract one when the address starts with '@'),
// writes a process id in decimal and a newline, and reads back a port
// number and a newline, 0 on failure. The port stays the process's until
// the process exits.
//
// portresd answers with a port free for both TCP and UDP: a delegated
// block of that one port in each protocol (kept out of the kernel's
// automatic assignment, as `portres run` ports are), owned by the
// process whose id was sent, and released when that process exits (the
// sweeper looks). The caller may ask only for its own processes (same
// uid) unless it is an admin; the blocks count against that uid's
// per-user limits.

// portserverTries bounds how many TCP ports are tried for one whose UDP
// twin is free too.
const portserverTries = 16

// DefaultPortserver is where the portserver listens: an abstract socket,
// per network namespace, for a root broker; "@portres-UID" for another.
func DefaultPortserver() string {
	if uid := os.Geteuid(); uid != 0 {
		return "@portres-" + strconv.Itoa(uid)
	}
	return "@portres"
}

// listenPortserver opens the portserver socket (Config.Portserver) and
// returns nil if it is off.
func (b *Broker) listenPortserver() (*net.UnixListener, error) {
	addr := b.cfg.Portserver
	if addr == "-" {
		return nil, nil
	}
	if !strings.HasPrefix(addr, "@") {
		if err := removeStale(addr); err != nil {
			return nil, err
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("portresd: portserver socket %s: %w (--portserver - turns it off)", addr, err)
	}
	if !strings.HasPrefix(addr, "@") {
		os.Chmod(addr, 0o666)
	}
	return ln, nil
}

// servePortserver answers portserver requests until ln is closed.
func (b *Broker) servePortserver(ln *net.UnixListener) {
	defer b.wg.Done()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			b.rlog.Log(0, slog.LevelWarn, "portserver: accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		// A portserver client is admitted like a session: it counts
		// against its uid's connections and the descriptor budget, so
		// that no user can hold the broker's descriptors with idle
		// portserver connections.
		caller, err := peerOfConn(c)
		if err != nil {
			b.rlog.Log(0, slog.LevelWarn, "portserver: refusing a client without credentials", "err", err)
			fmt.Fprintf(c, "0\n")
			c.Close()
			continue
		}
		b.mu.Lock()
		u, resp := b.admitConnLocked(caller.uid, b.mayAdmin(caller), "a portserver connection")
		b.mu.Unlock()
		if resp != nil {
			b.rlog.Log(caller.uid, slog.LevelWarn, "portserver: connection refused", "pid", caller.pid, "why", resp.Msg)
			fmt.Fprintf(c, "0\n")
			c.Close()
			continue
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer func() {
				c.Close()
				b.mu.Lock()
				b.leaveConnLocked(u, caller.uid)
				b.mu.Unlock()
			}()
			b.portserverRequest(c, caller)
		}()
	}
}

// portserverRequest reads one request on c and answers it.
func (b *Broker) portserverRequest(c *net.UnixConn, caller *peer) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	answer := func(port uint16) { fmt.Fprintf(c, "%d\n", port) }
	line, err := bufio.NewReader(io.LimitReader(c, 32)).ReadString('\n')
	pid, perr := strconv.ParseInt(strings.TrimSpace(line), 10, 32)
	if err != nil || perr != nil || pid <= 0 {
		b.rlog.Log(caller.uid, slog.LevelWarn, "portserver: malformed request", "pid", caller.pid, "request", strconv.Quote(line))
		answer(0)
		return
	}
	owner, err := processPeer(int32(pid))
	if err != nil {
		b.rlog.Log(caller.uid, slog.LevelWarn, "portserver: no such process", "pid", pid, "caller", caller.pid, "err", err)
		answer(0)
		return
	}
	admin := b.mayAdmin(caller)
	if owner.uid != caller.uid && !admin {
		b.rlog.Log(caller.uid, slog.LevelWarn, "portserver: refused a port for another user's process", "pid", pid, "owner_uid", owner.uid, "caller", caller.pid, "caller_uid", caller.uid)
		answer(0)
		return
	}
	port, err := b.pickPort(context.Background(), owner, admin || b.mayAdmin(owner))
	if err != nil {
		b.rlog.Log(caller.uid, slog.LevelWarn, "portserver: no port", "pid", pid, "err", err)
		answer(0)
		return
	}
	if b.debug {
		b.log.Debug("portserver: port handed out", "port", port, "pid", pid, "uid", owner.uid)
	}
	answer(port)
}

// pickPort reserves a port free for both TCP and UDP for owner's
// process: a delegated one-port block in each protocol.
func (b *Broker) pickPort(ctx context.Context, owner *peer, admin bool) (uint16, error) {
	var last error
	for i := 0; i < portserverTries; i++ {
		tcp := b.acquireFor(ctx, nil, owner, admin, &wire.Request{Op: wire.OpAcquire, Proto: uint8(portres.TCP), Count: 1, Flags: wire.FlagDelegate})
		if tcp.Code != 0 {
			return 0, fmt.Errorf("%s: %s", portres.Errno(tcp.Code).Name(), tcp.Msg)
		}
		udp := b.acquireFor(ctx, nil, owner, admin, &wire.Request{Op: wire.OpAcquire, Proto: uint8(portres.UDP), Start: tcp.Start, Count: 1, Flags: wire.FlagDelegate})
		if udp.Code == 0 {
			return tcp.Start, nil
		}
		last = fmt.Errorf("udp twin of tcp port %d: %s: %s", tcp.Start, portres.Errno(udp.Code).Name(), udp.Msg)
		b.releasePidOwned(tcp.Token) // and try the next TCP port
	}
	return 0, last
}

// releasePidOwned ends the portserver's reservation token.
func (b *Broker) releasePidOwned(token uint64) {
	b.mu.Lock()
	rv := b.byToken[pool.Token(token)]
	if _, ok := b.pidOwned[rv]; !ok {
		b.mu.Unlock()
		return
	}
	b.removeLocked(rv)
	b.forgetLocked(rv)
	b.mu.Unlock()
	b.unlist(rv, "portserver")
}

// expirePidOwned releases the portserver's reservations whose owner
// exited. The sweeper calls it.
func (b *Broker) expirePidOwned() {
	b.mu.Lock()
	if len(b.pidOwned) == 0 {
		b.mu.Unlock()
		return
	}
	var gone []*resv
	for rv := range b.pidOwned {
		if st, err := readStartTime(rv.owner.pid); err != nil || st != rv.owner.id {
			b.removeLocked(rv)
			b.forgetLocked(rv)
			gone = append(gone, rv)
		}
	}
	b.mu.Unlock()
	for _, rv := range gone {
		if b.debug {
			b.log.Debug("portserver: released, its process exited", "proto", rv.proto, "block", rv.block().String(), "pid", rv.owner.pid)
		}
		b.unlist(rv, "portserver process exited")
	}
}

// processPeer describes the running process pid as the owner of
// reservations: its start time (which tells it from a later process with
// the same id), real uid and gid, groups and command line.
func processPeer(pid int32) (*peer, error) {
	st, err := readStartTime(pid)
	if err != nil {
		return nil, err
	}
	uid, gid, grps, err := readStatus(pid)
	if err != nil {
		return nil, err
	}
	p := &peer{pid: pid, uid: uid, gid: gid, id: st, cmd: command(pid), grps: grps}
	// Still the same process after all that was read?
	if again, err := readStartTime(pid); err != nil || again != st {
		return nil, fmt.Errorf("process %d exited", pid)
	}
	return p, nil
}

// peerOfConn reads the credentials of a stream connection's peer.
func peerOfConn(c *net.UnixConn) (*peer, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var p *peer
	var perr error
	if err := rc.Control(func(fd uintptr) { p, perr = peerOf(int(fd)) }); err != nil {
		return nil, err
	}
	return p, perr
}
