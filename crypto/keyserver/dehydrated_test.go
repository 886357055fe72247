package keyserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"

	"praxis/internal/hstest"
)

// dehydratingTransport turns the Olm machine's first key upload into the
// MSC3814 PUT that creates a dehydrated device, the way a client that
// supports dehydration uploads the keys of the device it pickles. Later
// one-time key top-ups have no dehydrated equivalent and are answered
// locally.
type dehydratingTransport struct {
	base     http.RoundTripper
	deviceID string
}

func (d *dehydratingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/keys/upload") {
		return d.base.RoundTrip(r)
	}
	body, _ := io.ReadAll(r.Body)
	if !gjson.GetBytes(body, "device_keys").Exists() {
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{"one_time_key_counts":{}}`)), Request: r}, nil
	}
	body, _ = sjson.SetBytes(body, "device_id", d.deviceID)
	body, _ = sjson.SetRawBytes(body, "device_data", []byte(`{"algorithm":"org.example.test","pickle":"held by the client, encrypted"}`))
	u := *r.URL
	u.Path = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
	put, _ := http.NewRequestWithContext(r.Context(), http.MethodPut, u.String(), bytes.NewReader(body))
	put.Header = r.Header.Clone()
	return d.base.RoundTrip(put)
}

// TestE2EEDehydratedDeviceReceivesKeys: the patient's only phone is
// offline, but their dehydrated device gets the practice's room key; a new
// login rehydrates it and reads the message.
func TestE2EEDehydratedDeviceReceivesKeys(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		practice := hstest.NewCryptoClient(t, srv.Register(t, "praxis"))
		patient := hstest.NewCryptoClient(t, srv.Register(t, "patient"))
		room := pairingRoom(t, practice, patient)

		// The patient's client creates the dehydrated device: a real Olm
		// account whose keys reach the server through PUT dehydrated_device.
		const dehydratedID = "DEHYDRATED"
		dc, err := mautrix.NewClient(srv.URL, patient.UserID, patient.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		dc.DeviceID = dehydratedID
		dc.Client = &http.Client{Transport: &dehydratingTransport{base: http.DefaultTransport, deviceID: dehydratedID}}
		dstate := mautrix.NewMemoryStateStore()
		dc.StateStore = dstate
		dlog := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
		dehydrated := crypto.NewOlmMachine(dc, &dlog, crypto.NewMemoryStore(nil), dstate.(crypto.StateStore))
		if err := dehydrated.Load(ctx); err != nil {
			t.Fatal(err)
		}
		if err := dehydrated.ShareKeys(ctx, 0); err != nil {
			t.Fatalf("upload dehydrated device: %v", err)
		}
		q, err := srv.E2EE.Keys.Query(ctx, practice.UserID.String(), map[string][]string{patient.UserID.String(): {dehydratedID}})
		if err != nil || q.DeviceKeys[patient.UserID.String()][dehydratedID] == nil {
			t.Fatalf("dehydrated device keys not served: %v", err)
		}

		msg := practice.Send(t, room, "Termin am Montag")
		patient.WaitDecrypt(t, msg, "Termin am Montag")

		// Rehydration on a new login: read the dehydrated device's inbox
		// and hand it to the dehydrated Olm account.
		phone2 := srv.Login(t, "patient")
		info := struct {
			DeviceID string `json:"device_id"`
		}{}
		if _, err := phone2.MakeRequest(ctx, http.MethodGet, phone2.BuildClientURL("unstable", "org.matrix.msc3814.v1", "dehydrated_device"), nil, &info); err != nil || info.DeviceID != dehydratedID {
			t.Fatalf("get dehydrated device: %+v %v", info, err)
		}
		var page struct {
			Events    []json.RawMessage `json:"events"`
			NextBatch string            `json:"next_batch"`
		}
		if _, err := phone2.MakeRequest(ctx, http.MethodPost, phone2.BuildClientURL("unstable", "org.matrix.msc3814.v1", "dehydrated_device", dehydratedID, "events"), map[string]any{}, &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Events) == 0 {
			t.Fatal("the dehydrated device received no to-device messages")
		}
		for _, raw := range page.Events {
			var evt event.Event
			if err := json.Unmarshal(raw, &evt); err != nil {
				t.Fatal(err)
			}
			evt.Type.Class = event.ToDeviceEventType // as mautrix's syncer marks to-device events
			if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) {
				t.Fatalf("parse to-device event: %v", err)
			}
			dehydrated.HandleToDeviceEvent(ctx, &evt)
		}
		history, err := phone2.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		var decrypted string
		for _, evt := range history.Chunk {
			if evt.ID != msg {
				continue
			}
			_ = evt.Content.ParseRaw(evt.Type)
			evt.RoomID = room
			dec, err := dehydrated.DecryptMegolmEvent(ctx, evt)
			if err != nil {
				t.Fatalf("decrypt with the rehydrated device: %v", err)
			}
			decrypted = dec.Content.AsMessage().Body
		}
		if decrypted != "Termin am Montag" {
			t.Fatalf("rehydrated device decrypted %q", decrypted)
		}
	})
}
