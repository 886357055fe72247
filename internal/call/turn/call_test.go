package turn_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/config"
	"praxis/internal/hstest"
)

// TestVideoConsultationThroughPraxis is the acceptance test: a
// practice and a patient set up a call through Praxis alone. Each fetches
// TURN credentials from /voip/turnServer; the offer, answer and ICE
// candidates travel as m.call.* room events received via /sync; ICE is
// relay-only, so every packet crosses the embedded TURN relay; a data
// channel round-trips and a VP8 video track arrives; the practice hangs up.
// The "tcp" variant hands the peers only the TURN-over-TCP URI, as for a
// practice whose firewall blocks outgoing UDP.
func TestVideoConsultationThroughPraxis(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) { videoConsultation(t, transport) })
	}
}

func videoConsultation(t *testing.T, transport string) {
	srv := hstest.New(t, hstest.WithConfig(func(c *config.Config) {
		c.TURN.Enabled = true
		c.TURN.SharedSecret = "call-test-secret-0123456789"
		c.TURN.ListenUDP = "127.0.0.1:0"
		c.TURN.ListenTCP = "127.0.0.1:0"
		c.TURN.RelayPorts = ""
		// The call events go in plaintext: these test peers hold no Megolm
		// session. Real clients encrypt them; the server relays either way.
		c.Rooms.EncryptByDefault = false
	}))
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for localpart, kind := range map[string]string{"drsmith": "staff", "patient": "patient"} {
		if _, err := srv.Users.CreateAccount(ctx, localpart, "password-"+localpart, false, kind); err != nil {
			t.Fatal(err)
		}
	}
	practiceCli, patientCli := srv.Login(t, "drsmith"), srv.Login(t, "patient")
	room, err := practiceCli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{patientCli.UserID}, IsDirect: true})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	if _, err := patientCli.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatalf("join: %v", err)
	}

	practice := newParty(ctx, t, practiceCli, room.RoomID, "practice-party", transport)
	patient := newParty(ctx, t, patientCli, room.RoomID, "patient-party", transport)
	const callID = "consultation-1"

	// The practice calls: a data channel for chat and a synthetic VP8 track.
	dc, err := practice.pc.CreateDataChannel("consultation", nil)
	if err != nil {
		t.Fatal(err)
	}
	video, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video", "practice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := practice.pc.AddTrack(video); err != nil {
		t.Fatal(err)
	}
	pong := make(chan string, 1)
	dc.OnOpen(func() {
		if err := dc.SendText("ping"); err != nil {
			practice.fail(fmt.Errorf("send on data channel: %w", err))
		}
	})
	dc.OnMessage(func(m webrtc.DataChannelMessage) {
		select {
		case pong <- string(m.Data):
		default:
		}
	})
	// The patient echoes chat messages and reports the first video packet.
	gotVideo := make(chan string, 1)
	patient.pc.OnDataChannel(func(d *webrtc.DataChannel) {
		d.OnMessage(func(m webrtc.DataChannelMessage) {
			if err := d.SendText("pong:" + string(m.Data)); err != nil {
				patient.fail(fmt.Errorf("echo on data channel: %w", err))
			}
		})
	})
	patient.pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if _, _, err := tr.ReadRTP(); err != nil {
			patient.fail(fmt.Errorf("read video RTP: %w", err))
			return
		}
		select {
		case gotVideo <- tr.Codec().MimeType:
		default:
		}
	})

	practice.trickle(callID)
	patient.trickle(callID)
	practice.run(callID)
	patient.run(callID)

	offer, err := practice.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := practice.pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	practice.send(event.CallInvite, map[string]any{
		"call_id": callID, "party_id": practice.partyID, "version": "1", "lifetime": 60000,
		"offer": map[string]any{"type": "offer", "sdp": offer.SDP}, "invitee": patientCli.UserID,
	})

	// Video frames flow until the patient has one.
	go func() {
		frame := append([]byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a}, make([]byte, 400)...)
		tick := time.NewTicker(33 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = video.WriteSample(media.Sample{Data: frame, Duration: 33 * time.Millisecond})
			}
		}
	}()

	select {
	case msg := <-pong:
		if msg != "pong:ping" {
			t.Fatalf("data channel answer %q, want %q", msg, "pong:ping")
		}
	case err := <-practice.errc:
		t.Fatalf("practice: %v", err)
	case err := <-patient.errc:
		t.Fatalf("patient: %v", err)
	case <-ctx.Done():
		t.Fatalf("no data channel round trip (practice ICE %s, patient ICE %s)", practice.pc.ICEConnectionState(), patient.pc.ICEConnectionState())
	}
	select {
	case mime := <-gotVideo:
		if mime != webrtc.MimeTypeVP8 {
			t.Errorf("video codec %s, want %s", mime, webrtc.MimeTypeVP8)
		}
	case err := <-patient.errc:
		t.Fatalf("patient: %v", err)
	case <-ctx.Done():
		t.Fatal("no video packet reached the patient")
	}

	// Relay-only means both ends of the selected pair are relay candidates.
	for name, p := range map[string]*party{"practice": practice, "patient": patient} {
		pair, err := p.pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
		if err != nil || pair == nil {
			t.Fatalf("%s: no selected candidate pair: %v", name, err)
		}
		if pair.Local.Typ != webrtc.ICECandidateTypeRelay || pair.Remote.Typ != webrtc.ICECandidateTypeRelay {
			t.Errorf("%s: selected pair %s → %s, want relay → relay", name, pair.Local.Typ, pair.Remote.Typ)
		}
	}
	// The offer and answer were created before gathering, so ICE could only
	// connect with candidates that came as m.call.candidates through /sync.
	for name, p := range map[string]*party{"practice": practice, "patient": patient} {
		p.mu.Lock()
		n := p.candidatesIn
		p.mu.Unlock()
		if n == 0 {
			t.Errorf("%s received no m.call.candidates", name)
		}
	}
	if s := srv.TURN.Relay().Stats(); s.ActiveAllocations < 2 || s.RelayedBytes == 0 {
		t.Errorf("relay stats %+v: want ≥ 2 allocations and relayed bytes", s)
	}

	practice.send(event.CallHangup, map[string]any{"call_id": callID, "party_id": practice.partyID, "version": "1", "reason": "user_hangup"})
	select {
	case <-patient.hungUp:
	case err := <-patient.errc:
		t.Fatalf("patient: %v", err)
	case <-ctx.Done():
		t.Fatal("the patient never saw m.call.hangup")
	}
	if st := patient.pc.ConnectionState(); st != webrtc.PeerConnectionStateClosed {
		t.Errorf("patient connection %s after hangup, want closed", st)
	}
}

// party is one side of the call: a Matrix client, a pion peer configured
// with the TURN credentials from /voip/turnServer, and a /sync loop that
// feeds the other side's m.call.* events into the peer.
type party struct {
	t       *testing.T
	ctx     context.Context
	cli     *mautrix.Client
	room    id.RoomID
	partyID string
	pc      *webrtc.PeerConnection
	since   string

	errc   chan error
	hungUp chan struct{}

	mu            sync.Mutex
	remoteSet     bool
	pending       []webrtc.ICECandidateInit
	otherPartyID  string
	answered      bool
	candidatesIn  int
	hangupHandled bool
}

func newParty(ctx context.Context, t *testing.T, cli *mautrix.Client, room id.RoomID, partyID, transport string) *party {
	t.Helper()
	creds, err := cli.TurnServer(ctx)
	if err != nil {
		t.Fatalf("%s: /voip/turnServer: %v", cli.UserID, err)
	}
	var uris []string
	for _, u := range creds.URIs {
		if strings.HasSuffix(u, "?transport="+transport) {
			uris = append(uris, u)
		}
	}
	if len(uris) != 1 {
		t.Fatalf("/voip/turnServer URIs %v: want one for transport %s", creds.URIs, transport)
	}
	se := webrtc.SettingEngine{}
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(me))
	pc, err := api.NewPeerConnection(webrtc.Configuration{
		ICEServers:         []webrtc.ICEServer{{URLs: uris, Username: creds.Username, Credential: creds.Password}},
		ICETransportPolicy: webrtc.ICETransportPolicyRelay,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	p := &party{t: t, ctx: ctx, cli: cli, room: room, partyID: partyID, pc: pc, errc: make(chan error, 8), hungUp: make(chan struct{})}
	// The first sync marks where the call starts; later ones only see news.
	resp, err := cli.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatalf("%s: initial sync: %v", cli.UserID, err)
	}
	p.since = resp.NextBatch
	return p
}

func (p *party) fail(err error) {
	select {
	case p.errc <- err:
	default:
	}
}

func (p *party) send(typ event.Type, content map[string]any) {
	if _, err := p.cli.SendMessageEvent(p.ctx, p.room, typ, content); err != nil {
		p.fail(fmt.Errorf("send %s: %w", typ.Type, err))
	}
}

// trickle sends each gathered candidate as its own m.call.candidates event,
// then the end-of-candidates marker.
func (p *party) trickle(callID string) {
	p.pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		cand := map[string]any{"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}
		if c != nil {
			init := c.ToJSON()
			cand["candidate"] = init.Candidate
			if init.SDPMid != nil {
				cand["sdpMid"] = *init.SDPMid
			}
			if init.SDPMLineIndex != nil {
				cand["sdpMLineIndex"] = *init.SDPMLineIndex
			}
		}
		p.send(event.CallCandidates, map[string]any{
			"call_id": callID, "party_id": p.partyID, "version": "1", "candidates": []any{cand},
		})
	})
}

// run long-polls /sync and dispatches the other party's call events.
func (p *party) run(callID string) {
	go func() {
		for p.ctx.Err() == nil {
			resp, err := p.cli.SyncRequest(p.ctx, 5000, p.since, "", false, "")
			if err != nil {
				if p.ctx.Err() == nil {
					p.fail(fmt.Errorf("sync: %w", err))
				}
				return
			}
			p.since = resp.NextBatch
			joined, ok := resp.Rooms.Join[p.room]
			if !ok || joined.Timeline.Events == nil {
				continue
			}
			for _, evt := range joined.Timeline.Events {
				if evt.Sender == p.cli.UserID {
					continue // our own echo
				}
				if err := p.handle(callID, evt); err != nil {
					p.fail(fmt.Errorf("%s: %w", evt.Type.Type, err))
					return
				}
			}
		}
	}()
}

type callContent struct {
	CallID     string                     `json:"call_id"`
	PartyID    string                     `json:"party_id"`
	Offer      *webrtc.SessionDescription `json:"offer"`
	Answer     *webrtc.SessionDescription `json:"answer"`
	Candidates []struct {
		Candidate     string `json:"candidate"`
		SDPMid        string `json:"sdpMid"`
		SDPMLineIndex uint16 `json:"sdpMLineIndex"`
	} `json:"candidates"`
	SelectedPartyID string `json:"selected_party_id"`
}

func (p *party) handle(callID string, evt *event.Event) error {
	var c callContent
	if err := json.Unmarshal(evt.Content.VeryRaw, &c); err != nil {
		return err
	}
	if c.CallID != callID {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch evt.Type.Type {
	case event.CallInvite.Type:
		if c.Offer == nil {
			return errors.New("invite without offer")
		}
		p.otherPartyID = c.PartyID
		if err := p.setRemoteLocked(*c.Offer); err != nil {
			return err
		}
		answer, err := p.pc.CreateAnswer(nil)
		if err != nil {
			return err
		}
		if err := p.pc.SetLocalDescription(answer); err != nil {
			return err
		}
		go p.send(event.CallAnswer, map[string]any{
			"call_id": callID, "party_id": p.partyID, "version": "1",
			"answer": map[string]any{"type": "answer", "sdp": answer.SDP},
		})
	case event.CallAnswer.Type:
		if c.Answer == nil || p.answered {
			return nil
		}
		p.answered, p.otherPartyID = true, c.PartyID
		if err := p.setRemoteLocked(*c.Answer); err != nil {
			return err
		}
		go p.send(event.CallSelectAnswer, map[string]any{
			"call_id": callID, "party_id": p.partyID, "version": "1", "selected_party_id": c.PartyID,
		})
	case event.CallCandidates.Type:
		for _, cand := range c.Candidates {
			if cand.Candidate == "" {
				continue // end of candidates
			}
			p.candidatesIn++
			mid, idx := cand.SDPMid, cand.SDPMLineIndex
			init := webrtc.ICECandidateInit{Candidate: cand.Candidate, SDPMid: &mid, SDPMLineIndex: &idx}
			if !p.remoteSet {
				p.pending = append(p.pending, init) // candidates may overtake the invite
				continue
			}
			if err := p.pc.AddICECandidate(init); err != nil {
				return err
			}
		}
	case event.CallSelectAnswer.Type:
		if c.SelectedPartyID != p.partyID {
			return fmt.Errorf("caller selected party %q, not us", c.SelectedPartyID)
		}
	case event.CallHangup.Type:
		if !p.hangupHandled {
			p.hangupHandled = true
			p.pc.Close()
			close(p.hungUp)
		}
	}
	return nil
}

func (p *party) setRemoteLocked(sd webrtc.SessionDescription) error {
	if err := p.pc.SetRemoteDescription(sd); err != nil {
		return err
	}
	p.remoteSet = true
	for _, c := range p.pending {
		if err := p.pc.AddICECandidate(c); err != nil {
			return err
		}
	}
	p.pending = nil
	return nil
}
