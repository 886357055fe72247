package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

func syncOnce(c *mautrix.Client, since string, timeout time.Duration) (gjson.Result, error) {
	params := map[string]string{"timeout": fmt.Sprint(timeout.Milliseconds())}
	if since != "" {
		params["since"] = since
	}
	u := c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, params)
	var raw json.RawMessage
	_, err := c.MakeRequest(context.Background(), "GET", u, nil, &raw)
	return gjson.ParseBytes(raw), err
}

func send(t testing.TB, c *mautrix.Client, room id.RoomID, body string) {
	t.Helper()
	if _, err := c.SendMessageEvent(context.Background(), room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body}); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func createRoom(t testing.TB, c *mautrix.Client, preset string) id.RoomID {
	t.Helper()
	r, err := c.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Preset: preset})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	return r.RoomID
}

// A long-poll that the notifier's room descriptions keep asleep through
// other rooms' messages must still wake for what concerns its user: an
// invite into a room the user is not in, and a message in a joined room.
func TestLongPollSleepsThroughOtherRoomsButWakesForItsOwn(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		bobs := createRoom(t, bob, "private_chat")
		alices := createRoom(t, alice, "private_chat")
		send(t, alice, alices, "before")
		first, err := syncOnce(bob, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		since := first.Get("next_batch").String()

		for _, step := range []struct {
			name string
			act  func(t *testing.T)
			want func(r gjson.Result) bool
		}{
			{"invite into another room", func(t *testing.T) {
				if _, err := alice.InviteUser(context.Background(), alices, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
					t.Fatal(err)
				}
			}, func(r gjson.Result) bool { return r.Get("rooms.invite").Get(gjson.Escape(string(alices))).Exists() }},
			{"message in a joined room", func(t *testing.T) { send(t, bob, bobs, "mine") },
				func(r gjson.Result) bool {
					return r.Get("rooms.join").Get(gjson.Escape(string(bobs))).Get("timeline.events.#.content.body").String() == `["mine"]`
				}},
		} {
			t.Run(step.name, func(t *testing.T) {
				type result struct {
					r   gjson.Result
					err error
				}
				done := make(chan result, 1)
				go func() {
					r, err := syncOnce(bob, since, 20*time.Second)
					done <- result{r, err}
				}()
				time.Sleep(100 * time.Millisecond)
				// messages in a room bob is not in: no reason to answer
				for i := range 3 {
					send(t, alice, alices, fmt.Sprint("elsewhere ", i))
					time.Sleep(30 * time.Millisecond)
				}
				select {
				case r := <-done:
					t.Fatalf("long-poll answered for another room's messages: %s", r.r.Raw)
				case <-time.After(150 * time.Millisecond):
				}
				step.act(t)
				select {
				case r := <-done:
					if r.err != nil {
						t.Fatal(r.err)
					}
					if !step.want(r.r) {
						t.Fatalf("woken sync = %s, want the %s", r.r.Raw, step.name)
					}
					since = r.r.Get("next_batch").String()
				case <-time.After(5 * time.Second):
					t.Fatalf("long-poll not woken by the %s", step.name)
				}
			})
		}
	})
}

// BenchmarkIdleLongPolls measures what one message costs the server when
// 50 other users long-poll in rooms of their own: with the rooms described
// to the notifier their requests stay asleep.
func BenchmarkIdleLongPolls(b *testing.B) {
	srv := hstest.New(b)
	sender := srv.Register(b, "sender")
	room := createRoom(b, sender, "private_chat")
	send(b, sender, room, "first")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 50 {
		c := srv.Register(b, fmt.Sprintf("idle%d", i))
		createRoom(b, c, "private_chat")
		r, err := syncOnce(c, "", 0)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			since := r.Get("next_batch").String()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := syncOnce(c, since, 2*time.Second)
				if err != nil {
					return
				}
				since = r.Get("next_batch").String()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	n := 0
	for b.Loop() {
		send(b, sender, room, fmt.Sprint("m", n))
		n++
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(n), "cpu-ms/msg")
	close(stop)
	wg.Wait()
}
