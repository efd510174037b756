//go:build linux

package broker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/fdpass"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/wire"
	"golang.org/x/sys/unix"
)

// TestReleaseChecksProto: OpRelease with Proto 6 or 17 releases only a
// reservation of that protocol. A request naming the other protocol, or
// a protocol that is neither, is answered WSAEINVAL and leaves the
// reservation exactly as it was (listed, its ports still held); Proto 0
// releases either protocol, as before.
func TestReleaseChecksProto(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	ctx := context.Background()
	udp, err := c.Acquire(ctx, portres.UDP, 46500, 5)
	if err != nil {
		t.Fatal(err)
	}
	raw := rawConn(t, b) // another connection of the same process: it may release
	held := func(what string) {
		t.Helper()
		infos, err := c.Show(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(infos) != 1 || infos[0].Token != udp.Token() || infos[0].Proto != portres.UDP || infos[0].Start != 46500 || infos[0].Count != 5 {
			t.Fatalf("%s: the broker lists %+v, want the udp block 46500-46504 intact", what, infos)
		}
		// Its ports are still kept from a program outside portres.
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: 46502}); err == nil {
			t.Fatalf("%s: a foreign bind of udp 46502 succeeded: the block is no longer held", what)
		}
	}
	for i, tc := range []struct {
		proto uint8
		msg   string
	}{
		{6, "a tcp socket cannot release the udp reservation 46500-46504"},
		{5, "protocol 5 is neither 0 (any), tcp (6) nor udp (17)"},
		{255, "protocol 255 is neither"},
	} {
		req := wire.AppendRequest(nil, &wire.Request{ID: uint32(i + 1), Op: wire.OpRelease, Proto: tc.proto, Token: udp.Token()})
		if err := fdpass.Send(raw, req); err != nil {
			t.Fatal(err)
		}
		r := readResponse(t, raw)
		if r.Code != uint32(portres.WSAEINVAL) || !strings.Contains(r.Msg, tc.msg) {
			t.Errorf("release with proto %d: code %d %q, want WSAEINVAL saying %q", tc.proto, r.Code, r.Msg, tc.msg)
		}
		if tc.proto == 6 && (r.Proto != uint8(portres.UDP) || r.Start != 46500 || r.Count != 5) {
			t.Errorf("the answer does not name the reservation: %+v", r)
		}
		held(fmt.Sprintf("after a release with proto %d", tc.proto))
	}

	// Through the client: the same refusal, as a *portres.Error naming
	// the reservation.
	_, err = c.ReleaseProto(ctx, portres.TCP, udp.Token())
	var pe *portres.Error
	if !errors.As(err, &pe) || pe.Code != portres.WSAEINVAL || pe.Op != "release" || pe.Proto != portres.UDP || pe.Start != 46500 || pe.Token != udp.Token() {
		t.Fatalf("ReleaseProto(tcp) of a udp token: %v (%+v)", err, pe)
	}
	held("after ReleaseProto(tcp)")

	// The right protocol releases it.
	r, err := c.ReleaseProto(ctx, portres.UDP, udp.Token())
	if err != nil || r.Proto() != portres.UDP || r.Start() != 46500 || r.Count() != 5 {
		t.Fatalf("ReleaseProto(udp): %v, %v", r, err)
	}
	waitShow(t, c, func(i []portres.Info) bool { return len(i) == 0 })

	// Proto 0 (Release) releases either protocol, as before.
	for _, p := range []portres.Proto{portres.TCP, portres.UDP} {
		r, err := c.Acquire(ctx, p, 46600, 2)
		if err != nil {
			t.Fatal(err)
		}
		req := wire.AppendRequest(nil, &wire.Request{ID: 9, Op: wire.OpRelease, Proto: 0, Token: r.Token()})
		if err := fdpass.Send(raw, req); err != nil {
			t.Fatal(err)
		}
		if resp := readResponse(t, raw); resp.Code != 0 || resp.Proto != uint8(p) || resp.Start != 46600 || resp.Count != 2 {
			t.Errorf("release with proto 0 of a %s block: %+v", p, resp)
		}
		waitShow(t, c, func(i []portres.Info) bool { return len(i) == 0 })
	}
}
