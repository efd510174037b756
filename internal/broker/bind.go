//go:build linux

package broker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/pool"
	"github.com/portres/portres/internal/wire"
	"golang.org/x/sys/unix"
)

// sockInfo is what the broker learns about a socket a client passed.
type sockInfo struct {
	family int
	proto  portres.Proto
	netns  uint64 // the socket's network namespace: cookie (or inode, before 5.14); 0 unknown
	cookie bool   // netns is a cookie, not an inode
}

// inspect checks that fd is an unbound TCP or UDP socket and says which,
// in three system calls: getsockname (which also fails with ENOTSOCK on
// anything but a socket, and gives the family and whether it is bound),
// SO_PROTOCOL (IPPROTO_TCP only on stream sockets, IPPROTO_UDP only on
// datagram ones) and SO_NETNS_COOKIE (the socket's network namespace;
// kernels before 5.14 lack it, and the namespace's inode is read through
// SIOCGSKNS instead).
func inspect(fd int) (*sockInfo, *wire.Response) {
	sa, err := unix.Getsockname(fd)
	switch {
	case errors.Is(err, unix.ENOTSOCK):
		return nil, errf(portres.WSAENOTSOCK, "the passed descriptor is not a socket")
	case err != nil:
		return nil, errf(portres.WSAEOPNOTSUPP, "getsockname: %v", err)
	}
	info := &sockInfo{}
	var port int
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		info.family, port = unix.AF_INET, a.Port
	case *unix.SockaddrInet6:
		info.family, port = unix.AF_INET6, a.Port
	default:
		return nil, errf(portres.WSAEOPNOTSUPP, "the socket is not an IPv4 or IPv6 socket")
	}
	proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	switch {
	case err != nil:
		return nil, errf(portres.WSAEOPNOTSUPP, "socket protocol: %v", err)
	case proto == unix.IPPROTO_TCP:
		info.proto = portres.TCP
	case proto == unix.IPPROTO_UDP:
		info.proto = portres.UDP
	default:
		typ, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		return nil, errf(portres.WSAEOPNOTSUPP, "the socket is neither TCP nor UDP (type %d, protocol %d)", typ, proto)
	}
	if port != 0 {
		r := errf(portres.WSAEINVAL, "the socket is already bound to port %d", port)
		r.Port = uint16(port)
		return nil, r
	}
	if cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE); err == nil {
		info.netns, info.cookie = cookie, true
	} else if nsfd, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS); err == nil {
		var ns unix.Stat_t
		if unix.Fstat(nsfd, &ns) == nil {
			info.netns = ns.Ino
		}
		unix.Close(nsfd)
	}
	return info, nil
}

// bind binds the passed socket to a port of the reservation: the wanted
// port, or any free one for port 0. With several sockets (up to
// fdpass.MaxFDs), see bindMany.
func (b *Broker) bind(ctx context.Context, s *session, req *wire.Request, fds []int) []*wire.Response {
	if len(fds) > 1 {
		return b.bindMany(ctx, s, req, fds)
	}
	info, sa, bad := passedSocket(req, fds)
	if bad != nil {
		return one(bad)
	}
	return one(b.bindSocket(ctx, s, req.Token, req.Port, fds[0], info, sa))
}

// bindMany binds the sockets of one request in order: to ports Port,
// Port+1, ... of the reservation, or each to any free port for Port 0.
// Every socket, and the run of ports, is checked before any is bound
// (one unfit binds none).
// The answer is one response per socket bound, with More on all but the
// last; if a bind fails, the last response is its error and the sockets
// after it stay unbound.
func (b *Broker) bindMany(ctx context.Context, s *session, req *wire.Request, fds []int) []*wire.Response {
	if req.Port != 0 && int(req.Port)+len(fds)-1 > 65535 {
		r := errf(portres.WSAEINVAL, "%d sockets from port %d run past port 65535", len(fds), req.Port)
		r.Port = req.Port
		return one(r)
	}
	infos := make([]*sockInfo, len(fds))
	addrs := make([]unix.Sockaddr, len(fds))
	for i, fd := range fds {
		var bad *wire.Response
		if infos[i], addrs[i], bad = checkPassed(fd, req.Addr); bad != nil {
			bad.Msg = fmt.Sprintf("socket %d of %d: %s", i+1, len(fds), bad.Msg)
			return one(bad)
		}
	}
	b.mu.Lock()
	rv, bad := b.ownedLocked(s, req.Token, "bind")
	if bad == nil && req.Port != 0 {
		if last := int(req.Port) + len(fds) - 1; !rv.block().Contains(req.Port) || last > rv.block().End() {
			bad = rv.errf(portres.WSAEINVAL, "ports %d-%d for %d sockets are not all in %s", req.Port, last, len(fds), rv.describe())
			bad.Port = req.Port
		}
	}
	for i := 0; bad == nil && i < len(fds); i++ {
		if bad = b.checkSocket(rv, infos[i]); bad != nil {
			bad.Msg = fmt.Sprintf("socket %d of %d: %s", i+1, len(fds), bad.Msg)
		}
	}
	b.mu.Unlock()
	if bad != nil {
		return one(bad)
	}
	out := make([]*wire.Response, 0, len(fds))
	for i, fd := range fds {
		want := uint16(0)
		if req.Port != 0 {
			want = req.Port + uint16(i)
		}
		var r *wire.Response
		if ctx.Err() != nil {
			r = errf(portres.WSA_OPERATION_ABORTED, "cancelled after %d of %d sockets were bound", i, len(fds))
		} else {
			r = b.bindSocket(ctx, s, req.Token, want, fd, infos[i], addrs[i])
		}
		out = append(out, r)
		if r.Code != 0 {
			break
		}
	}
	for _, r := range out[:len(out)-1] {
		r.Flags |= wire.More
	}
	return out
}

// passedSocket checks the one socket a bind request carries and builds
// the address to bind it to.
func passedSocket(req *wire.Request, fds []int) (*sockInfo, unix.Sockaddr, *wire.Response) {
	if len(fds) != 1 {
		return nil, nil, errf(portres.WSAEINVAL, "%s needs exactly one socket descriptor, got %d", req.Op, len(fds))
	}
	return checkPassed(fds[0], req.Addr)
}

// checkPassed checks a passed socket (inspect) and builds the address
// addr to bind it to.
func checkPassed(fd int, addr netip.Addr) (*sockInfo, unix.Sockaddr, *wire.Response) {
	info, bad := inspect(fd)
	if bad != nil {
		return nil, nil, bad
	}
	sa, bad := sockaddr(info.family, addr)
	if bad != nil {
		return nil, nil, bad
	}
	return info, sa, nil
}

// acquireBind acquires a block and binds the passed socket to a port of
// it in one request (OpAcquire with FlagBind: the common "a listener on
// a reserved port"): all or nothing, a failed bind releases the block.
func (b *Broker) acquireBind(ctx context.Context, s *session, req *wire.Request, fds []int) *wire.Response {
	info, sa, bad := passedSocket(req, fds)
	if bad != nil {
		return bad
	}
	if info.proto != portres.Proto(req.Proto) {
		return errf(portres.WSAEINVAL, "a %s socket cannot be bound from a %s reservation", info.proto, portres.Proto(req.Proto))
	}
	if bad := b.checkNetns(info); bad != nil {
		return bad
	}
	if req.Port != 0 && (req.Start == 0 || !(pool.Block{Start: req.Start, Count: req.Count}).Contains(req.Port)) {
		r := errf(portres.WSAEINVAL, "port %d is outside the requested block (start %d, count %d)", req.Port, req.Start, req.Count)
		r.Port = req.Port
		return r
	}
	// The socket is bound in place of its port's placeholder or probe:
	// a port in use fails the placement like a placeholder would.
	to := &bindTarget{fd: fds[0], sa: sa, want: req.Port, holds: b.guard == nil && req.Count == 1 && placeholderLike(fds[0], sa)}
	return b.acquireBlock(ctx, s, s.peer, s.admin, req, to)
}

// bindSocket binds fd, a socket inspect described, to port wantPort of
// the reservation token (0: any free one), on the local address sa.
func (b *Broker) bindSocket(ctx context.Context, s *session, token uint64, wantPort uint16, fd int, info *sockInfo, sa unix.Sockaddr) *wire.Response {
	for retried, rebind := false, false; ; retried = true {
		b.mu.Lock()
		rv, resp := b.ownedLocked(s, token, "bind")
		if resp == nil {
			resp = b.checkSocket(rv, info)
		}
		if resp != nil {
			b.mu.Unlock()
			return resp
		}
		if rebind && rv.r.IsBound(wantPort) {
			// The port's last socket is gone, its connections only
			// lingering in TIME_WAIT (checked below, without the lock):
			// that stops a placeholder but not a socket with
			// SO_REUSEADDR, so the port may be bound again. Only then:
			// the kernel alone would let two SO_REUSEADDR or SO_REUSEPORT
			// sockets share it.
			cookie, err := b.bindAllowed(rv, fd, sa, wantPort)
			if err == nil {
				b.boundSocketLocked(rv, wantPort, cookie)
			}
			b.mu.Unlock()
			if err == nil {
				return &wire.Response{Token: uint64(rv.r.Token), Proto: uint8(rv.proto), Port: wantPort}
			}
			return rv.bindError(wantPort, pool.ErrBound)
		}
		port, err := b.takeLocked(rv, wantPort)
		if err != nil {
			b.mu.Unlock()
			switch {
			case !retried && (errors.Is(err, pool.ErrExhausted) || errors.Is(err, pool.ErrBound)):
				// Sockets may have been closed since the last sweep: look
				// again at the wanted port, or at every port for port 0.
				var ports []uint16
				if wantPort != 0 {
					ports = []uint16{wantPort}
				}
				b.recheck(rv, ports)
				continue
			case errors.Is(err, pool.ErrBound) && wantPort != 0 && rv.proto == portres.TCP && !rebind:
				if tw, _ := enforce.OnlyTimeWait(wantPort); tw {
					rebind = true
					continue
				}
			}
			return rv.bindError(wantPort, err)
		}
		resp = b.bindPortLocked(rv, fd, sa, port)
		b.mu.Unlock()
		if resp != nil && resp.Code == uint32(portres.WSAEADDRINUSE) && wantPort == 0 && !rv.holds() && ctx.Err() == nil {
			// A persistent or delegated port taken by a foreign socket
			// stays marked bound until a sweep finds it free; try another
			// (the block runs out, WSAENOBUFS, if none is left).
			continue
		}
		return resp
	}
}

// checkSocket refuses sockets that cannot be bound from rv.
func (b *Broker) checkSocket(rv *resv, info *sockInfo) *wire.Response {
	if info.proto != rv.proto {
		return rv.errf(portres.WSAEINVAL, "a %s socket cannot be bound from %s", info.proto, rv.describe())
	}
	if r := b.checkNetns(info); r != nil {
		return rv.errf(portres.Errno(r.Code), "%s", r.Msg)
	}
	return nil
}

// checkNetns refuses a socket of another network namespace than the
// broker's, where its reservations are not enforced.
func (b *Broker) checkNetns(info *sockInfo) *wire.Response {
	own := b.netns
	if info.cookie {
		own = b.netnsCookie
	}
	if info.netns != 0 && own != 0 && info.netns != own {
		return errf(portres.WSAEINVAL, "the socket belongs to another network namespace than the broker's; reservations are enforced in the broker's (netns inode %d)", b.netns)
	}
	return nil
}

// bindPortLocked swaps port's placeholder for the client's socket. On
// failure the port is freed and its placeholder restored. Caller holds
// b.mu and has taken port in rv.
func (b *Broker) bindPortLocked(rv *resv, fd int, sa unix.Sockaddr, port uint16) *wire.Response {
	off := int(port - rv.block().Start)
	rv.letGoLocked(port)
	cookie, err := b.bindAllowed(rv, fd, sa, port)
	if err == nil {
		b.boundSocketLocked(rv, port, cookie)
		return &wire.Response{Token: uint64(rv.r.Token), Proto: uint8(rv.proto), Port: port}
	}
	if errors.Is(err, unix.EADDRINUSE) && !rv.holds() {
		// Someone outside portres has it: keep it marked bound.
		r := rv.errf(portres.WSAEADDRINUSE, "%s port %d is in use by a socket outside portres", rv.proto, port)
		r.Port = port
		return r
	}
	if !rv.holds() {
		rv.r.Put(port)
	} else if hfd, herr := enforce.Hold(uint8(rv.proto), port); herr == nil {
		rv.holders[off] = int32(hfd)
		rv.r.Put(port)
	} else {
		// Someone took the port in the window: it stays marked bound, so
		// nobody is handed it, until a sweep gets the placeholder back.
		b.log.Warn("placeholder lost to a foreign socket", "proto", rv.proto, "port", port, "err", herr)
	}
	r := rv.errf(bindErrno(err), "bind %s port %d: %v", rv.proto, port, err)
	r.Port = port
	return r
}

// guardError is a failure of the bind guard to let a socket through (a
// broker-side failure, not the bind's).
type guardError struct{ err error }

func (e *guardError) Error() string { return e.err.Error() }
func (e *guardError) Unwrap() error { return e.err }

// bindErrno is the answer's code for a failed bind(2) of a client's
// socket.
func bindErrno(err error) portres.Errno {
	switch {
	case errors.Is(err, unix.EADDRINUSE):
		return portres.WSAEADDRINUSE
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return portres.WSAEACCES
	}
	return portres.WSAEINVAL
}

// bindAllowed binds the client's socket fd to sa with port, a port of
// rv, letting it through the bind guard (to that port only) if the guard
// keeps rv: only the sockets the broker binds get past it. It returns the socket's cookie (0 if not
// known), which names the port's socket in announcements of destroyed
// sockets.
func (b *Broker) bindAllowed(rv *resv, fd int, sa unix.Sockaddr, port uint16) (uint64, error) {
	setPort(sa, port)
	if g := b.guardOf(rv); g != nil {
		cookie, done, err := g.Allow(fd, uint8(rv.proto), port)
		if err != nil {
			return 0, &guardError{err}
		}
		err = unix.Bind(fd, sa)
		// Unbound, the socket goes back to its client: its allowance
		// must end now.
		done(err == nil)
		return cookie, err
	}
	if err := unix.Bind(fd, sa); err != nil {
		return 0, err
	}
	if b.watchers[protoIndex(rv.proto)] == nil || rv.kind != wire.KindRuntime || rv.delegated {
		return 0, nil // no destroy announcement will need it
	}
	cookie, _ := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	return cookie, nil
}

// bindError maps a pool.Take failure.
func (rv *resv) bindError(port uint16, err error) *wire.Response {
	var r *wire.Response
	switch {
	case errors.Is(err, pool.ErrExhausted):
		r = rv.errf(portres.WSAENOBUFS, "every port of %s is bound", rv.describe())
	case errors.Is(err, pool.ErrOutside):
		r = rv.errf(portres.WSAEINVAL, "port %d is outside %s", port, rv.describe())
	case errors.Is(err, pool.ErrBound):
		r = rv.errf(portres.WSAEADDRINUSE, "port %d of %s is already bound", port, rv.describe())
	default:
		r = rv.errf(portres.WSAEINVAL, "port %d of %s: %v", port, rv.describe(), err)
	}
	r.Port = port
	return r
}

// sockaddr builds the local address for a socket of family; an invalid
// addr means the family's unspecified address.
func sockaddr(family int, addr netip.Addr) (unix.Sockaddr, *wire.Response) {
	if family == unix.AF_INET {
		if !addr.IsValid() {
			return &unix.SockaddrInet4{}, nil
		}
		if a := addr.Unmap(); a.Is4() {
			return &unix.SockaddrInet4{Addr: a.As4()}, nil
		}
		return nil, errf(portres.WSAEINVAL, "IPv6 address %s for an IPv4 socket", addr)
	}
	if !addr.IsValid() {
		return &unix.SockaddrInet6{}, nil
	}
	sa := &unix.SockaddrInet6{Addr: addr.As16()}
	if z := addr.Zone(); z != "" {
		return nil, errf(portres.WSAEINVAL, "zoned address %s is not supported", addr)
	}
	return sa, nil
}

func setPort(sa unix.Sockaddr, port uint16) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		a.Port = int(port)
	case *unix.SockaddrInet6:
		a.Port = int(port)
	}
}
