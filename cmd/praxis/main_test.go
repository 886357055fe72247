package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/config"
	"praxis/internal/storage/storagetest"
)

// TestMain lets the test binary act as the praxis binary: the process
// tests re-execute it with PRAXIS_TEST_AS_MAIN=1, so they exercise the real
// main (flags, config, signals) without a separate build step.
func TestMain(m *testing.M) {
	if os.Getenv("PRAXIS_TEST_AS_MAIN") == "1" {
		os.Args = append([]string{"praxis"}, strings.Fields(os.Getenv("PRAXIS_TEST_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type proc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	url    string
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startPraxis(t *testing.T, args string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PRAXIS_TEST_AS_MAIN=1", "PRAXIS_TEST_ARGS="+args)
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stderr: &stderr}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return p
}

func (p *proc) waitReady(t *testing.T, addr string) {
	t.Helper()
	p.url = "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(p.url + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("praxis did not become ready; stderr:\n%s", p.stderr)
}

func TestFirstStartWritesConfigAndKey(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfgPath := filepath.Join(dir, "praxis.yaml")
	p := startPraxis(t, "--config "+cfgPath+" --listen-client "+addr)
	p.waitReady(t, addr)
	for _, f := range []string{"praxis.yaml", "signing.key", "praxis.db"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("first start did not create %s: %v", f, err)
		}
	}
	if _, err := config.Load(config.Flags{ConfigFile: cfgPath}, nil); err != nil {
		t.Errorf("generated config does not load: %v", err)
	}
	// SIGTERM: graceful exit with status 0.
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; stderr:\n%s", err, p.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("praxis did not stop after SIGTERM")
	}
}

func TestBadConfigIsRefused(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "praxis.yaml")
	if err := os.WriteFile(cfgPath, []byte("server_name: hs1\nregistation:\n  open: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startPraxis(t, "--config "+cfgPath)
	err := p.cmd.Wait()
	if err == nil {
		t.Fatal("praxis started with an unknown config key")
	}
	if !strings.Contains(p.stderr.String(), "registation.open") {
		t.Fatalf("error does not name the unknown key; stderr:\n%s", p.stderr)
	}
}

// TestAcknowledgedEventsSurviveKill9 sends messages from several clients,
// kills the server with SIGKILL in the middle, restarts it on the same
// data directory and checks that every event that got a 200 is there.
func TestAcknowledgedEventsSurviveKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	eachEngine(t, acknowledgedEventsSurviveKill9)
}

// eachEngine runs fn with the DSN of a fresh database on SQLite, and on
// PostgreSQL when PRAXIS_TEST_POSTGRES is set.
func eachEngine(t *testing.T, fn func(t *testing.T, dsn string)) {
	for name, dsn := range storagetest.Engines(t) {
		t.Run(name, func(t *testing.T) { fn(t, dsn(t)) })
	}
	if os.Getenv(storagetest.EnvPostgres) == "" {
		t.Logf("postgres variant skipped: %s not set", storagetest.EnvPostgres)
	}
}

func acknowledgedEventsSurviveKill9(t *testing.T, dsn string) {
	dir := t.TempDir()
	addr := freeAddr(t)
	args := fmt.Sprintf("--data-dir %s --listen-client %s --server-name hs1.test", dir, addr)
	env := []string{"PRAXIS_DATABASE=" + dsn, "PRAXIS_REGISTRATION_OPEN=true", "PRAXIS_RATELIMIT_ENABLED=false", "PRAXIS_LOG_LEVEL=warn"}
	p := startPraxis(t, args, env...)
	p.waitReady(t, addr)
	ctx := context.Background()

	c, err := mautrix.NewClient(p.url, "", "")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: "alice-password-1"})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	c.SetCredentials(reg.UserID, reg.AccessToken)
	room, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}

	var mu sync.Mutex
	var acked []id.EventID
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.SendMessageEvent(ctx, room.RoomID, event.EventMessage,
					&event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("w%d-%d", w, i)})
				if err != nil {
					return // the server died under us: not acknowledged
				}
				mu.Lock()
				acked = append(acked, resp.EventID)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
	close(stop)
	wg.Wait()
	if len(acked) < 10 {
		t.Fatalf("only %d sends acknowledged before the kill; the test did not exercise anything", len(acked))
	}

	p2 := startPraxis(t, args, env...)
	p2.waitReady(t, addr)
	for _, evID := range acked {
		if _, err := c.GetEvent(ctx, room.RoomID, evID); err != nil {
			t.Fatalf("acknowledged event %s lost after kill -9: %v", evID, err)
		}
	}
	t.Logf("%d acknowledged events survived kill -9", len(acked))
}
