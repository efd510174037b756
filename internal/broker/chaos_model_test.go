//go:build linux

package broker_test

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/portres/portres"
)

// The reservation semantics as a sequential specification, for checking
// the chaos test's history of operations with porcupine. The history is
// partitioned per port (chaosPartition): an operation on a block takes
// part in the partition of each of its ports, so each partition is small
// and the check stays tractable for tens of thousands of operations. The
// state of one port is the live runtime block holding it, if any: its
// token and owner, and whether the port is bound.
//
//   - acquire → ok(token, block): each port of the block is free; it
//     becomes held by the token, for the caller. A failed acquire changes
//     nothing; one whose answer was never seen (the caller was killed)
//     may have made a block nobody learns of, which the model cannot see
//     and need not: such acquires are left out.
//   - bind(token) → ok(port): the port is held by the caller's token and
//     not bound; it becomes bound. An error is possible at any time (the
//     block is full, the broker has not yet seen a closed socket go),
//     except "no such reservation" (WSAEINVAL, or a loss reported by the
//     client) while the caller's token holds its block: that is a lost
//     reservation (checked on the block's first port).
//   - close(token, port): the caller closed a socket it bound; the port
//     is no longer bound.
//   - release(token) → ok: each port of the block is held by the token; it
//     becomes free. → WSAEINVAL: the token holds nothing. Any other error
//     leaves it unknown whether the release happened: both states follow.
//   - kill(client): the client's process died, or it closed its
//     connection; its blocks end at some point after (the op never
//     returns: porcupine places it anywhere after its call).
//
// The broker's own restarts are not operations: across them every live
// block must stay live, every token valid.

// chaosIn is an operation's input. At is the port of the partition the
// copy of the operation belongs to (set by chaosPartition).
type chaosIn struct {
	Op     string // acquire, bind, close, release, kill
	Client int
	Proto  portres.Proto
	Token  uint64
	Port   uint16 // close: the socket's port
	At     uint16
}

// chaosOut is an operation's output; Known is false when the caller died
// before it.
type chaosOut struct {
	Known        bool
	Code         uint32
	Token        uint64
	Start, Count uint16
	Port         uint16
}

// chaosPort is the state of one port: the token holding it (0: free),
// its owner, whether it is bound.
type chaosPort struct {
	token  uint64
	client int
	bound  bool
}

const lostCode = 1 // a chaos client's code for ErrReservationLost

func chaosStep(st interface{}, in interface{}, out interface{}) []interface{} {
	s, i, o := st.(chaosPort), in.(chaosIn), out.(chaosOut)
	mine := s.token != 0 && s.token == i.Token && s.client == i.Client
	same, free := []interface{}{s}, []interface{}{chaosPort{}}
	switch i.Op {
	case "acquire":
		if !o.Known || o.Code != 0 {
			return same
		}
		if s.token != 0 {
			return nil // held by a live block
		}
		return []interface{}{chaosPort{token: o.Token, client: i.Client}}
	case "bind":
		switch {
		case !o.Known:
			return same
		case o.Code == lostCode, o.Code == uint32(portres.WSAEINVAL):
			if mine {
				return nil // the caller's live reservation was lost
			}
			return same
		case o.Code != 0:
			return same
		case !mine || s.bound:
			return nil // not the caller's block, or bound twice
		}
		s.bound = true
		return []interface{}{s}
	case "close":
		if mine {
			s.bound = false
		}
		return []interface{}{s}
	case "release":
		switch {
		case !o.Known:
			if mine {
				return append(free, s)
			}
			return same
		case o.Code == 0:
			if !mine {
				return nil
			}
			return free
		case o.Code == uint32(portres.WSAEINVAL) || o.Code == lostCode:
			if mine {
				return nil // the caller's live reservation was lost
			}
			return same
		case mine:
			return append(free, s) // the outcome is not known
		}
		return same
	case "kill":
		if s.token != 0 && s.client == i.Client {
			return free
		}
		return same
	}
	return nil
}

// chaosPartition splits a history per protocol and port: an acquire, a
// release and a kill go to every port of the blocks they concern, a
// successful bind to the port it got, a close to its port, a failed bind
// to its block's first port. Acquires that failed or whose answer is
// unknown constrain nothing and are left out.
func chaosPartition(h []porcupine.Operation) [][]porcupine.Operation {
	type block struct {
		proto        portres.Proto
		start, count uint16
	}
	blocks := map[uint64]block{}
	byClient := map[int][]block{}
	for _, op := range h {
		in, out := op.Input.(chaosIn), op.Output.(chaosOut)
		if in.Op == "acquire" && out.Known && out.Code == 0 {
			b := block{in.Proto, out.Start, out.Count}
			blocks[out.Token] = b
			byClient[in.Client] = append(byClient[in.Client], b)
		}
	}
	type key struct {
		proto portres.Proto
		port  uint16
	}
	parts := map[key][]porcupine.Operation{}
	add := func(op porcupine.Operation, proto portres.Proto, port uint16) {
		in := op.Input.(chaosIn)
		in.At = port
		op.Input = in
		k := key{proto, port}
		parts[k] = append(parts[k], op)
	}
	addBlock := func(op porcupine.Operation, b block) {
		for p := int(b.start); p < int(b.start)+int(b.count); p++ {
			add(op, b.proto, uint16(p))
		}
	}
	for _, op := range h {
		in, out := op.Input.(chaosIn), op.Output.(chaosOut)
		switch in.Op {
		case "acquire":
			if out.Known && out.Code == 0 {
				addBlock(op, blocks[out.Token])
			}
		case "bind":
			switch b, ok := blocks[in.Token]; {
			case out.Known && out.Code == 0:
				add(op, in.Proto, out.Port)
			case ok:
				add(op, b.proto, b.start)
			}
		case "close":
			add(op, in.Proto, in.Port)
		case "release":
			if b, ok := blocks[in.Token]; ok {
				addBlock(op, b)
			}
		case "kill":
			for _, b := range byClient[in.Client] {
				addBlock(op, b)
			}
		}
	}
	out := make([][]porcupine.Operation, 0, len(parts))
	for _, p := range parts {
		out = append(out, p)
	}
	return out
}

// chaosModel is the specification, partitioned per port.
var chaosModel = (&porcupine.NondeterministicModel{
	Partition: chaosPartition,
	Init:      func() []interface{} { return []interface{}{chaosPort{}} },
	Step:      chaosStep,
	Equal:     func(a, b interface{}) bool { return a.(chaosPort) == b.(chaosPort) },
	DescribeOperation: func(in, out interface{}) string {
		i, o := in.(chaosIn), out.(chaosOut)
		if !o.Known {
			return fmt.Sprintf("c%d %s %s %#x → ?", i.Client, i.Op, i.Proto, i.Token)
		}
		return fmt.Sprintf("c%d %s %s %#x port %d → code %d token %#x %d+%d port %d", i.Client, i.Op, i.Proto, i.Token, i.Port, o.Code, o.Token, o.Start, o.Count, o.Port)
	},
	DescribeState: func(st interface{}) string {
		s := st.(chaosPort)
		if s.token == 0 {
			return "free"
		}
		return fmt.Sprintf("%#x of c%d, bound %v", s.token, s.client, s.bound)
	},
}).ToModel()

// never is the return time of an operation that never returned.
const never = math.MaxInt64 / 2

// TestChaosModel: the specification accepts what the broker may do and
// rejects each kind of violation the chaos test looks for, so that an Ok
// from the checker means something.
func TestChaosModel(t *testing.T) {
	type op = porcupine.Operation
	acq := func(c int, call, ret int64, tok uint64, start, count uint16) op {
		return op{ClientId: c, Input: chaosIn{Op: "acquire", Client: c, Proto: portres.TCP}, Call: call, Return: ret,
			Output: chaosOut{Known: true, Token: tok, Start: start, Count: count}}
	}
	bind := func(c int, call, ret int64, tok uint64, port uint16, code uint32) op {
		return op{ClientId: c, Input: chaosIn{Op: "bind", Client: c, Proto: portres.TCP, Token: tok}, Call: call, Return: ret,
			Output: chaosOut{Known: true, Code: code, Port: port}}
	}
	rel := func(c int, call, ret int64, tok uint64, code uint32) op {
		return op{ClientId: c, Input: chaosIn{Op: "release", Client: c, Proto: portres.TCP, Token: tok}, Call: call, Return: ret,
			Output: chaosOut{Known: true, Code: code}}
	}
	kill := func(c int, at int64) op {
		return op{ClientId: c, Input: chaosIn{Op: "kill", Client: c}, Call: at, Return: never, Output: chaosOut{}}
	}
	cases := []struct {
		name string
		want porcupine.CheckResult
		h    []op
	}{
		{"reuse after release", porcupine.Ok, []op{acq(0, 0, 1, 1, 100, 2), rel(0, 2, 3, 1, 0), acq(1, 4, 5, 2, 101, 2)}},
		{"concurrent release and acquire", porcupine.Ok, []op{acq(0, 0, 1, 1, 100, 2), rel(0, 2, 6, 1, 0), acq(1, 3, 5, 2, 100, 1)}},
		{"overlap while live", porcupine.Illegal, []op{acq(0, 0, 1, 1, 100, 2), acq(1, 2, 3, 2, 101, 2)}},
		{"reuse after kill", porcupine.Ok, []op{acq(0, 0, 1, 1, 100, 2), kill(0, 2), acq(1, 3, 4, 2, 100, 2)}},
		{"overlap before kill", porcupine.Illegal, []op{acq(0, 0, 1, 1, 100, 2), acq(1, 2, 3, 2, 100, 2), kill(0, 4)}},
		{"bind in block", porcupine.Ok, []op{acq(0, 0, 1, 1, 100, 2), bind(0, 2, 3, 1, 101, 0), bind(0, 4, 5, 1, 100, 0)}},
		{"bind twice", porcupine.Illegal, []op{acq(0, 0, 1, 1, 100, 2), bind(0, 2, 3, 1, 101, 0), bind(0, 4, 5, 1, 101, 0)}},
		{"bind outside", porcupine.Illegal, []op{acq(0, 0, 1, 1, 100, 2), bind(0, 2, 3, 1, 102, 0)}},
		{"bind another's", porcupine.Illegal, []op{acq(0, 0, 1, 1, 100, 2), bind(1, 2, 3, 1, 100, 0)}},
		{"token lost", porcupine.Illegal, []op{acq(0, 0, 1, 1, 100, 2), bind(0, 2, 3, 1, 0, uint32(portres.WSAEINVAL))}},
		{"release unknown token", porcupine.Ok, []op{rel(0, 0, 1, 9, uint32(portres.WSAEINVAL))}},
		{"release lost token", porcupine.Illegal, []op{acq(0, 0, 1, 1, 100, 2), rel(0, 2, 3, 1, uint32(portres.WSAEINVAL))}},
		{"full block", porcupine.Ok, []op{acq(0, 0, 1, 1, 100, 1), bind(0, 2, 3, 1, 100, 0), bind(0, 4, 5, 1, 0, uint32(portres.WSAENOBUFS))}},
	}
	for _, c := range cases {
		if got := porcupine.CheckOperationsTimeout(chaosModel, c.h, 10*time.Second); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}
