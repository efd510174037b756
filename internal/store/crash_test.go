//go:build linux

package store

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// envCrashStore names the store TestHelperProcess writes to.
const envCrashStore = "PORTRES_STORE_CRASH_TEST"

// TestHelperProcess is not a test: TestCrashDurability runs the test
// binary with envCrashStore set, and this adds persistent reservations
// in a loop, printing each one AddPersistent acknowledged, until killed.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(envCrashStore)
	if path == "" {
		t.Skip("helper process of TestCrashDurability")
	}
	s, err := Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i := 0; ; i++ {
		p := Persistent{Proto: []uint8{6, 17}[i/65535%2], Start: uint16(1 + i%65535), Count: 1,
			Token: uint64(i + 1), Created: time.Now(), UID: uint32(os.Getuid())}
		if err := s.AddPersistent(p); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Printf("%d %d %d %d\n", p.Proto, p.Start, p.Count, p.Token) // one write per line, unbuffered
	}
}

// TestCrashDurability kills a process that is adding reservations with
// SIGKILL and checks that every one it saw acknowledged is in the store.
func TestCrashDurability(t *testing.T) {
	path := filepath.Join(t.TempDir(), "portres.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashStore+"="+path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var acked []string
	first, ok := <-lines // the store is open and writing
	if !ok {
		cmd.Wait()
		t.Fatalf("helper wrote nothing: %s", stderr.String())
	}
	acked = append(acked, first)
	kill := time.After(100 * time.Millisecond)
	for killed := false; ; {
		select {
		case <-kill:
			cmd.Process.Kill() // SIGKILL
			killed, kill = true, nil
		case l, more := <-lines:
			if !more {
				err := cmd.Wait()
				if !killed || !strings.Contains(fmt.Sprint(err), "killed") {
					t.Fatalf("helper ended on its own (%v): %s", err, stderr.String())
				}
				s := openTest(t, path)
				for _, l := range acked {
					var proto uint8
					var start, count uint16
					var token uint64
					// Each line is one write() under PIPE_BUF: atomic, never cut.
					if _, err := fmt.Sscanf(l, "%d %d %d %d", &proto, &start, &count, &token); err != nil {
						t.Fatalf("helper printed %q: %v", l, err)
					}
					p, err := s.LookupPersistent(proto, start, count)
					if err != nil || p.Token != token {
						t.Fatalf("acknowledged %q lost after SIGKILL: %v, %v", l, p, err)
					}
				}
				t.Logf("%d acknowledged reservations all survived SIGKILL", len(acked))
				return
			}
			acked = append(acked, l)
		}
	}
}
