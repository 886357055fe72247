package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/federation"
)

// fedNode is one praxis process of the federation phase. Its server name
// is its federation listener (host:port), so server discovery finds it
// without .well-known or SRV.
type fedNode struct {
	dir, client, fed, name string
	cmd                    *exec.Cmd
	users                  int
}

// fedOpts sizes the federation phase.
type fedOpts struct {
	messages  int           // paced messages for the latency measurement
	pace      time.Duration // gap between them
	senders   int           // parallel senders of the burst
	perSender int           // messages each burst sender sends
}

// federationBench starts two praxis processes federating over TLS on
// loopback (SQLite each, self-signed certificates trusted through
// federation.trusted_ca_file), joins a user of node B into a room of node
// A, and measures what B's user sees through /sync: the delivery latency
// of paced messages sent on A, and how fast a burst from several senders
// on A arrives (inbound PDUs/s on B).
func (b *bench) federationBench(ctx context.Context, binary string, o fedOpts) error {
	dir, err := os.MkdirTemp("", "praxisbench-fed-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	nodes := []*fedNode{{}, {}}
	var ca []byte
	for i, n := range nodes {
		n.dir = filepath.Join(dir, fmt.Sprintf("node%d", i))
		if err := os.Mkdir(n.dir, 0o700); err != nil {
			return err
		}
		cp, err := freePort()
		if err != nil {
			return err
		}
		fp, err := freePort()
		if err != nil {
			return err
		}
		n.client, n.fed = fmt.Sprintf("127.0.0.1:%d", cp), fmt.Sprintf("127.0.0.1:%d", fp)
		n.name = n.fed
		crt := filepath.Join(n.dir, "federation-tls.crt")
		if err := federation.WriteSelfSigned(crt, filepath.Join(n.dir, "federation-tls.key"), n.name); err != nil {
			return fmt.Errorf("certificate: %w", err)
		}
		pem, err := os.ReadFile(crt)
		if err != nil {
			return err
		}
		ca = append(ca, pem...)
	}
	caFile := filepath.Join(dir, "partners.pem")
	if err := os.WriteFile(caFile, ca, 0o600); err != nil {
		return err
	}
	for i, n := range nodes {
		n.cmd = exec.Command(binary, "--data-dir", n.dir, "--listen-client", n.client,
			"--listen-federation", n.fed, "--server-name", n.name)
		n.cmd.Env = append(os.Environ(),
			"PRAXIS_REGISTRATION_OPEN=true",
			"PRAXIS_RATELIMIT_ENABLED=false",
			"PRAXIS_CARE_POLICY=off",
			"PRAXIS_LOG_LEVEL=warn",
			"PRAXIS_FEDERATION_ALLOWED_SERVERS="+nodes[1-i].name,
			"PRAXIS_FEDERATION_TRUSTED_CA_FILE="+caFile,
		)
		// PRAXIS_CPUPROFILE would make both processes write the same file.
		n.cmd.Env = append(n.cmd.Env, "PRAXIS_CPUPROFILE=")
		if p := os.Getenv("PRAXISBENCH_FED_CPUPROFILE"); p != "" {
			n.cmd.Env = append(n.cmd.Env, "PRAXIS_CPUPROFILE="+p+"."+[]string{"a", "b"}[i])
		}
		n.cmd.Stdout, n.cmd.Stderr = os.Stderr, os.Stderr
		if err := n.cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", binary, err)
		}
		defer func() {
			n.cmd.Process.Signal(syscall.SIGCONT) // in case the catch-up phase failed while B was paused
			n.cmd.Process.Signal(syscall.SIGTERM)
			n.cmd.Wait()
		}()
	}
	for _, n := range nodes {
		if err := (&bench{url: "http://" + n.client}).waitReady(ctx, 30*time.Second); err != nil {
			return fmt.Errorf("node %s: %w", n.name, err)
		}
	}
	a, nb := nodes[0], nodes[1]
	progress("federation: two nodes up (%s, %s); joining over federation", a.name, nb.name)

	alice, err := a.register(ctx, "alice")
	if err != nil {
		return err
	}
	bob, err := nb.register(ctx, "bob")
	if err != nil {
		return err
	}
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		return fmt.Errorf("create room: %w", err)
	}
	room := created.RoomID
	t0 := time.Now()
	if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{a.name}}); err != nil {
		return fmt.Errorf("remote join: %w", err)
	}
	b.record("fed_remote_join", ms(time.Since(t0)), "ms", "")
	senders := []*mautrix.Client{alice}
	for len(senders) < o.senders {
		c, err := a.register(ctx, "sender")
		if err != nil {
			return err
		}
		if _, err := c.JoinRoomByID(ctx, room); err != nil {
			return fmt.Errorf("local join: %w", err)
		}
		senders = append(senders, c)
	}

	w, err := watchSync(ctx, bob, room)
	if err != nil {
		return err
	}
	defer w.stop()
	// the senders' joins must have reached B before anything is timed
	if err := w.waitMembers(len(senders)+1, 20*time.Second); err != nil {
		return err
	}

	// Latency: paced messages, each timed from its send's start to the
	// moment B's /sync long-poll returns it.
	progress("federation: latency, %d messages %v apart", o.messages, o.pace)
	lats := make([]time.Duration, 0, o.messages)
	var latMu sync.Mutex
	w.onMessage(func(body string, sent, now time.Time) {
		latMu.Lock()
		lats = append(lats, now.Sub(sent))
		latMu.Unlock()
	})
	for m := range o.messages {
		body := "lat" + strconv.Itoa(m)
		w.sending(body)
		if _, err := alice.SendMessageEvent(ctx, room, event.EventMessage, text(body)); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		time.Sleep(o.pace)
	}
	if err := w.waitCount(o.messages, 20*time.Second); err != nil {
		return err
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	pct := func(p float64) float64 { return ms(lats[min(len(lats)-1, int(p*float64(len(lats))))]) }
	b.record("fed_latency_p50", pct(0.50), "ms", "")
	b.record("fed_latency_p99", pct(0.99), "ms", "≤ 100")

	// Live throughput: every sender sends its share as fast as it can; B's
	// inbound rate is the burst's size over the time from the first send
	// until B's /sync has the last message. Here A's send rate into one
	// room is the limit (it is reported next to it).
	total := o.senders * o.perSender
	bPID := nb.cmd.Process.Pid
	progress("federation: live burst, %d senders × %d messages", o.senders, o.perSender)
	w.onMessage(nil)
	w.reset()
	cpuB0 := (&bench{pid: bPID}).serverCPU()
	start := time.Now()
	sendDone, err := burst(ctx, senders, room, w, "live", o.perSender)
	if err != nil {
		return err
	}
	progress("federation: A accepted %d messages in %v; waiting for B", total, sendDone.Round(time.Millisecond))
	if err := w.waitCount(total, 120*time.Second); err != nil {
		return err
	}
	last := w.lastAt().Sub(start)
	cpuB := (&bench{pid: bPID}).serverCPU() - cpuB0
	b.record("fed_live_pdus_per_s", float64(total)/last.Seconds(), "PDU/s", "")
	b.record("fed_live_send_per_s", float64(total)/sendDone.Seconds(), "ev/s", "")
	b.record("fed_live_lag_after_send", ms(last-sendDone), "ms", "")
	b.record("fed_live_cpu_per_pdu", ms(cpuB)/float64(total), "ms", "")

	// Catch-up throughput: B is paused (SIGSTOP) while A's users send the
	// same burst, then resumed; A's sender drains its queue to B in
	// transactions of 50 PDUs. The rate is the burst over the time from
	// the resume until B's /sync has the last message: B's inbound
	// transaction throughput, no longer capped by A's send rate.
	progress("federation: catch-up, B paused while A's senders send %d messages", total)
	w.reset()
	if err := nb.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	if _, err := burst(ctx, senders, room, w, "catchup", o.perSender); err != nil {
		nb.cmd.Process.Signal(syscall.SIGCONT)
		return err
	}
	time.Sleep(200 * time.Millisecond) // A settles: B gets the CPUs to itself
	cpuB0 = (&bench{pid: bPID}).serverCPU()
	resumed := time.Now()
	if err := nb.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return err
	}
	if err := w.waitCount(total, 120*time.Second); err != nil {
		return err
	}
	last = w.lastAt().Sub(resumed)
	cpuB = (&bench{pid: bPID}).serverCPU() - cpuB0
	b.record("fed_inbound_pdus_per_s", float64(total)/last.Seconds(), "PDU/s", "≥ 1000")
	b.record("fed_inbound_cpu_per_pdu", ms(cpuB)/float64(total), "ms", "")
	return nil
}

// burst has every sender send perSender messages as fast as it can, in
// parallel, announcing each to w; it returns when A has accepted all.
func burst(ctx context.Context, senders []*mautrix.Client, room id.RoomID, w *syncWatch, tag string, perSender int) (time.Duration, error) {
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, len(senders))
	for s, c := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range perSender {
				body := fmt.Sprintf("%s%d-%d", tag, s, m)
				w.sending(body)
				if _, err := c.SendMessageEvent(ctx, room, event.EventMessage, text(body)); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return 0, fmt.Errorf("burst send: %w", err)
	}
	return time.Since(start), nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "praxisbench: "+format+"\n", args...)
}

func (n *fedNode) register(ctx context.Context, prefix string) (*mautrix.Client, error) {
	n.users++
	name := fmt.Sprintf("%s%d", prefix, n.users)
	c, err := mautrix.NewClient("http://"+n.client, "", "")
	if err != nil {
		return nil, err
	}
	c.Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	resp, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: name, Password: "bench-password-" + name})
	if err != nil {
		return nil, fmt.Errorf("register %s on %s: %w", name, n.name, err)
	}
	c.SetCredentials(resp.UserID, resp.AccessToken)
	c.DeviceID = resp.DeviceID
	return c, nil
}

// syncWatch long-polls /sync for one user and notes, for every message
// body announced through sending, when it arrived.
type syncWatch struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every arrival
	sent    map[string]time.Time
	seen    int
	last    time.Time
	members map[string]bool // joined users of the room
	handler func(body string, sent, now time.Time)
	err     error
}

// A filter with a timeline large enough that a burst is never cut
// (limited) between two long-polls.
const watchFilter = `{"room":{"timeline":{"limit":1000}},"presence":{"not_types":["*"]}}`

func watchSync(ctx context.Context, c *mautrix.Client, room id.RoomID) (*syncWatch, error) {
	resp, err := c.SyncRequest(ctx, 0, "", watchFilter, false, event.PresenceOnline)
	if err != nil {
		return nil, fmt.Errorf("initial sync: %w", err)
	}
	pollCtx, cancel := context.WithCancel(ctx)
	w := &syncWatch{cancel: cancel, done: make(chan struct{}), changed: make(chan struct{}), sent: map[string]time.Time{}, members: map[string]bool{}}
	w.countMembers(resp, room)
	since := resp.NextBatch
	go func() {
		defer close(w.done)
		for pollCtx.Err() == nil {
			resp, err := c.SyncRequest(pollCtx, 30000, since, watchFilter, false, event.PresenceOnline)
			if err != nil {
				if pollCtx.Err() == nil {
					w.mu.Lock()
					w.err = err
					w.mu.Unlock()
				}
				return
			}
			now := time.Now()
			since = resp.NextBatch
			w.countMembers(resp, room)
			jr, ok := resp.Rooms.Join[room]
			if !ok {
				continue
			}
			w.mu.Lock()
			for _, ev := range jr.Timeline.Events {
				if ev.Type != event.EventMessage {
					continue
				}
				body, _ := ev.Content.Raw["body"].(string)
				t0, ok := w.sent[body]
				if !ok {
					continue
				}
				delete(w.sent, body)
				w.seen++
				w.last = now
				if w.handler != nil {
					w.handler(body, t0, now)
				}
			}
			close(w.changed)
			w.changed = make(chan struct{})
			w.mu.Unlock()
		}
	}()
	return w, nil
}

func (w *syncWatch) countMembers(resp *mautrix.RespSync, room id.RoomID) {
	jr, ok := resp.Rooms.Join[room]
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, list := range [][]*event.Event{jr.State.Events, jr.Timeline.Events} {
		for _, ev := range list {
			if ev.Type == event.StateMember && ev.StateKey != nil {
				w.members[*ev.StateKey] = ev.Content.Raw["membership"] == "join"
			}
		}
	}
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *syncWatch) sending(body string) {
	w.mu.Lock()
	w.sent[body] = time.Now()
	w.mu.Unlock()
}

func (w *syncWatch) onMessage(fn func(body string, sent, now time.Time)) {
	w.mu.Lock()
	w.handler = fn
	w.mu.Unlock()
}

func (w *syncWatch) reset() {
	w.mu.Lock()
	w.seen, w.last = 0, time.Time{}
	w.mu.Unlock()
}

func (w *syncWatch) lastAt() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// waitUntil waits for cond (checked under the lock), printing progress
// every two seconds.
func (w *syncWatch) waitUntil(what string, limit time.Duration, cond func() bool, status func() string) error {
	deadline := time.After(limit)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		w.mu.Lock()
		ok, err, ch, st := cond(), w.err, w.changed, status()
		w.mu.Unlock()
		if ok {
			return nil
		}
		if err != nil {
			return fmt.Errorf("remote /sync: %w", err)
		}
		select {
		case <-ch:
		case <-tick.C:
			progress("federation: waiting for %s: %s", what, st)
		case <-deadline:
			return fmt.Errorf("%s: not there after %v (%s)", what, limit, st)
		}
	}
}

// waitMembers waits until B's /sync shows n joined members in the room.
func (w *syncWatch) waitMembers(n int, limit time.Duration) error {
	joined := func() int {
		k := 0
		for _, j := range w.members {
			if j {
				k++
			}
		}
		return k
	}
	return w.waitUntil("joins on B", limit, func() bool { return joined() >= n },
		func() string { return fmt.Sprintf("%d of %d members", joined(), n) })
}

func (w *syncWatch) waitCount(n int, limit time.Duration) error {
	return w.waitUntil("messages on B", limit, func() bool { return w.seen >= n },
		func() string { return fmt.Sprintf("%d of %d", w.seen, n) })
}

func (w *syncWatch) stop() {
	w.cancel()
	<-w.done
}
