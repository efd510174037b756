package portres

import (
	"fmt"
	"strings"
)

// Proto is a transport protocol with its own port pool: TCP or UDP. Its
// value is the IP protocol number.
type Proto uint8

// The two pools.
const (
	TCP Proto = 6
	UDP Proto = 17
)

// String returns "tcp" or "udp".
func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// ParseProto accepts "tcp" or "udp" (any case).
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	}
	return 0, fmt.Errorf("portres: unknown protocol %q (want tcp or udp)", s)
}
