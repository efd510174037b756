//go:build linux

package broker_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
)

func init() {
	testutil.Helpers["portserver-idle"] = helperPortserverIdle
}

// helperPortserverIdle opens N connections to the portserver at ADDR and
// sends nothing on them; it prints "refused R" with how many the broker
// answered 0 and closed at once, then holds the others until killed.
func helperPortserverIdle(args []string) int {
	n, _ := strconv.Atoi(args[1])
	refused := 0
	var held []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.Dial("unix", args[0])
		if err != nil {
			fmt.Println("fail", err)
			return 1
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if l, err := bufio.NewReader(c).ReadString('\n'); err == nil && strings.TrimSpace(l) == "0" {
			refused++
			c.Close()
			continue
		}
		held = append(held, c)
	}
	fmt.Println("refused", refused)
	select {}
}

// TestPortserverConnectionLimit: portserver connections count against the
// per-user connection limit, so one local user cannot hold the broker's
// descriptors with idle ones; other users are still served.
func TestPortserverConnectionLimit(t *testing.T) {
	addr := "@portres-limit-" + strconv.Itoa(os.Getpid())
	testbroker.Start(t, func(c *broker.Config) { c.Portserver = addr; c.Limits.UserConnections = 4 })
	p := testutil.StartHelperAs(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "portserver-idle", nil, addr, "6")
	if l := p.Line(20 * time.Second); l != "refused 2" {
		t.Fatalf("uid 65534 opening 6 idle portserver connections with a limit of 4: %q, want refused 2", l)
	}
	c, err := net.Dial("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "%d\n", os.Getpid())
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, err := bufio.NewReader(c).ReadString('\n')
	if port, _ := strconv.Atoi(strings.TrimSpace(l)); err != nil || port == 0 {
		t.Errorf("root while uid 65534 holds its idle connections: %q %v, want a port", l, err)
	}
}
