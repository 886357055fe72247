// Command praxisbench measures a real praxis binary: it starts the server on
// a fresh SQLite data directory (rate limits off), drives it over HTTP with
// mautrix clients, and prints one JSON line per measurement plus a table.
//
//	praxisbench --binary bin/praxis [--senders 16] [--messages 500]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

type result struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	// Target is the goal from the issue, for the table.
	Target string `json:"target,omitempty"`
}

type bench struct {
	url     string
	pid     int
	results []result
	out     io.Writer
	// quiet clients skip mautrix's own logging
	seq int
	mu  sync.Mutex
}

func main() {
	binary := flag.String("binary", "bin/praxis", "praxis binary to benchmark")
	senders := flag.Int("senders", 16, "concurrent senders")
	messages := flag.Int("messages", 500, "messages per sender")
	members := flag.Int("members", 50, "members long-polling the fan-out room")
	fanoutMsgs := flag.Int("fanout-messages", 100, "messages sent into the fan-out room")
	rooms := flag.Int("rooms", 100, "rooms for the initial sync measurement")
	perRoom := flag.Int("room-messages", 20, "messages per room for the initial sync measurement")
	var fed fedOpts
	flag.IntVar(&fed.messages, "fed-messages", 200, "paced messages for the federation latency")
	flag.DurationVar(&fed.pace, "fed-pace", 20*time.Millisecond, "gap between the paced federation messages")
	flag.IntVar(&fed.senders, "fed-senders", 4, "parallel senders of the federation burst")
	flag.IntVar(&fed.perSender, "fed-burst", 500, "messages per sender of the federation burst")
	only := flag.String("only", "", "run only this phase: send, fanout, sync or federation (cold start and RSS are always measured)")
	flag.Parse()
	if err := run(*binary, *only, *senders, *messages, *members, *fanoutMsgs, *rooms, *perRoom, fed); err != nil {
		fmt.Fprintln(os.Stderr, "praxisbench:", err)
		os.Exit(1)
	}
}

func run(binary, only string, senders, messages, members, fanoutMsgs, rooms, perRoom int, fed fedOpts) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "praxisbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(binary, "--data-dir", dir, "--listen-client", addr, "--server-name", "bench.test")
	cmd.Env = append(os.Environ(),
		"PRAXIS_REGISTRATION_OPEN=true",
		"PRAXIS_RATELIMIT_ENABLED=false",
		// plain Matrix: benchmark users are ordinary accounts, not patients
		"PRAXIS_CARE_POLICY=off",
		"PRAXIS_LOG_LEVEL=warn",
	)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", binary, err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	b := &bench{url: "http://" + addr, pid: cmd.Process.Pid, out: os.Stdout}
	if err := b.waitReady(ctx, 30*time.Second); err != nil {
		return err
	}
	b.record("cold_start", float64(time.Since(start).Microseconds())/1000, "ms", "≤ 200")
	time.Sleep(500 * time.Millisecond)
	b.record("rss_idle", b.rssMiB("VmRSS"), "MiB", "≤ 30")

	if only == "" || only == "send" {
		if err := b.sendThroughput(ctx, senders, messages); err != nil {
			return fmt.Errorf("send throughput: %w", err)
		}
	}
	if only == "" || only == "fanout" {
		if err := b.fanout(ctx, members, fanoutMsgs); err != nil {
			return fmt.Errorf("fan-out: %w", err)
		}
	}
	if only == "" || only == "sync" {
		if err := b.initialSync(ctx, rooms, perRoom); err != nil {
			return fmt.Errorf("initial sync: %w", err)
		}
	}
	b.record("rss_peak", b.rssMiB("VmHWM"), "MiB", "")
	// two processes of their own, after the single-server phases
	if only == "" || only == "federation" {
		if err := b.federationBench(ctx, binary, fed); err != nil {
			return fmt.Errorf("federation: %w", err)
		}
	}
	b.table()
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (b *bench) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		resp, err := http.Get(b.url + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return errors.New("server did not answer /versions in time")
}

func (b *bench) record(name string, v float64, unit, target string) {
	r := result{Name: name, Value: v, Unit: unit, Target: target}
	b.results = append(b.results, r)
	line, _ := json.Marshal(r)
	fmt.Fprintln(b.out, string(line))
}

func (b *bench) table() {
	fmt.Fprintln(b.out)
	fmt.Fprintf(b.out, "%-28s %12s  %-6s %s\n", "measurement", "value", "unit", "target")
	for _, r := range b.results {
		fmt.Fprintf(b.out, "%-28s %12.2f  %-6s %s\n", r.Name, r.Value, r.Unit, r.Target)
	}
}

func (b *bench) rssMiB(field string) float64 {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(b.pid), "status"))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return -1
}

// serverCPU is the CPU time the server's threads have used so far, from
// /proc/<pid>/task/*/schedstat (nanoseconds). On a machine shared with other
// work, CPU per operation is the number to compare between builds: wall
// clock rates depend on what else runs.
func (b *bench) serverCPU() time.Duration {
	tasks, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(b.pid), "task", "*", "schedstat"))
	var total time.Duration
	for _, t := range tasks {
		raw, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(raw))
		if len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += time.Duration(ns)
		}
	}
	return total
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// client registers a fresh user through the real /register endpoint.
func (b *bench) client(ctx context.Context, prefix string) (*mautrix.Client, error) {
	b.mu.Lock()
	b.seq++
	name := fmt.Sprintf("%s%d", prefix, b.seq)
	b.mu.Unlock()
	c, err := mautrix.NewClient(b.url, "", "")
	if err != nil {
		return nil, err
	}
	c.Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	resp, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: name, Password: "bench-password-" + name})
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", name, err)
	}
	c.SetCredentials(resp.UserID, resp.AccessToken)
	c.DeviceID = resp.DeviceID
	return c, nil
}

func text(body string) *event.MessageEventContent {
	return &event.MessageEventContent{MsgType: event.MsgText, Body: body}
}

// sendThroughput: every sender sends into its own room, concurrently.
func (b *bench) sendThroughput(ctx context.Context, senders, messages int) error {
	type job struct {
		c    *mautrix.Client
		room id.RoomID
	}
	jobs := make([]job, senders)
	for i := range jobs {
		c, err := b.client(ctx, "sender")
		if err != nil {
			return err
		}
		r, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			return err
		}
		jobs[i] = job{c, r.RoomID}
	}
	var wg sync.WaitGroup
	errc := make(chan error, senders)
	cpu0 := b.serverCPU()
	start := time.Now()
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range messages {
				if _, err := j.c.SendMessageEvent(ctx, j.room, event.EventMessage, text("m"+strconv.Itoa(m))); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	b.record("send_events_per_s", float64(senders*messages)/elapsed.Seconds(), "ev/s", "≥ 2000")
	b.record("send_server_cpu_per_event", ms(b.serverCPU()-cpu0)/float64(senders*messages), "ms", "")
	return nil
}

// fanout: members long-poll one room; one sender sends, and each
// member's delivery latency is measured from the send's start.
func (b *bench) fanout(ctx context.Context, members, msgs int) error {
	owner, err := b.client(ctx, "owner")
	if err != nil {
		return err
	}
	room, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		return err
	}
	clients := make([]*mautrix.Client, members)
	for i := range clients {
		c, err := b.client(ctx, "member")
		if err != nil {
			return err
		}
		if _, err := c.JoinRoomByID(ctx, room.RoomID); err != nil {
			return err
		}
		clients[i] = c
	}
	var sentMu sync.Mutex
	sent := map[string]time.Time{}
	var latMu sync.Mutex
	var lats []time.Duration
	pollCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	ready := make(chan struct{}, members)
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.SyncRequest(pollCtx, 0, "", "", false, event.PresenceOnline)
			if err != nil {
				return
			}
			since := resp.NextBatch
			ready <- struct{}{}
			for pollCtx.Err() == nil {
				resp, err := c.SyncRequest(pollCtx, 30000, since, "", false, event.PresenceOnline)
				if err != nil {
					return
				}
				now := time.Now()
				since = resp.NextBatch
				if jr, ok := resp.Rooms.Join[room.RoomID]; ok {
					for _, ev := range jr.Timeline.Events {
						body, _ := ev.Content.Raw["body"].(string)
						sentMu.Lock()
						t0, ok := sent[body]
						sentMu.Unlock()
						if ok {
							latMu.Lock()
							lats = append(lats, now.Sub(t0))
							latMu.Unlock()
						}
					}
				}
			}
		}()
	}
	for range members {
		<-ready
	}
	time.Sleep(200 * time.Millisecond) // let every member enter its long-poll
	cpu0 := b.serverCPU()
	for m := range msgs {
		body := "fan" + strconv.Itoa(m)
		sentMu.Lock()
		sent[body] = time.Now()
		sentMu.Unlock()
		if _, err := owner.SendMessageEvent(ctx, room.RoomID, event.EventMessage, text(body)); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	cpu := b.serverCPU() - cpu0
	cancel()
	wg.Wait()
	if len(lats) == 0 {
		return errors.New("no message was delivered through /sync")
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	pct := func(p float64) float64 {
		return float64(lats[min(len(lats)-1, int(p*float64(len(lats))))].Microseconds()) / 1000
	}
	b.record("fanout_deliveries", float64(len(lats)), "count", fmt.Sprintf("= %d", members*msgs))
	b.record("fanout_latency_p50", pct(0.50), "ms", "")
	b.record("fanout_latency_p99", pct(0.99), "ms", "≤ 50")
	// the send and the woken long-polls, per message
	b.record("fanout_server_cpu_per_message", ms(cpu)/float64(msgs), "ms", "")
	return nil
}

// initialSync: one user in many rooms with some history each.
func (b *bench) initialSync(ctx context.Context, rooms, perRoom int) error {
	c, err := b.client(ctx, "reader")
	if err != nil {
		return err
	}
	for r := range rooms {
		room, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "room " + strconv.Itoa(r)})
		if err != nil {
			return err
		}
		for m := range perRoom {
			if _, err := c.SendMessageEvent(ctx, room.RoomID, event.EventMessage, text("h"+strconv.Itoa(m))); err != nil {
				return err
			}
		}
	}
	const runs = 5
	var best, total time.Duration
	cpu0 := b.serverCPU()
	var next string
	for i := range runs {
		t0 := time.Now()
		resp, err := c.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			return err
		}
		d := time.Since(t0)
		if len(resp.Rooms.Join) != rooms {
			return fmt.Errorf("initial sync returned %d rooms, want %d", len(resp.Rooms.Join), rooms)
		}
		next = resp.NextBatch
		total += d
		if i == 0 || d < best {
			best = d
		}
	}
	b.record("initial_sync_100_rooms_mean", float64(total.Microseconds())/runs/1000, "ms", "≤ 100")
	b.record("initial_sync_server_cpu", ms(b.serverCPU()-cpu0)/runs, "ms", "")
	b.record("initial_sync_100_rooms_best", float64(best.Microseconds())/1000, "ms", "")
	const inc = 50
	cpu0 = b.serverCPU()
	t0 := time.Now()
	for range inc {
		if _, err := c.SyncRequest(ctx, 0, next, "", false, event.PresenceOnline); err != nil {
			return err
		}
	}
	b.record("incremental_sync_empty", float64(time.Since(t0).Microseconds())/inc/1000, "ms", "≤ 2")
	b.record("incremental_sync_server_cpu", ms(b.serverCPU()-cpu0)/inc, "ms", "")
	return nil
}
