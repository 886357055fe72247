package federation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"praxis/crypto/keyserver"
	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/streams"
)

// End-to-end encryption across servers. Inbound: /user/devices,
// /user/keys/query, /user/keys/claim and the m.direct_to_device,
// m.device_list_update and m.signing_key_update EDUs. Outbound: keys of
// remote users are queried and claimed live over federation (keyserver.Remote),
// to-device messages to remote users leave as m.direct_to_device EDUs
// (todevice.Remote), and changes of our users' devices go to every server
// sharing a room with them as m.device_list_update EDUs.
//
// Remote users' keys are cached (e2ee_cache.go) and kept current by the
// device-list and signing-key EDUs; each EDU also marks the user changed
// so local clients re-query.

// KeyService is the key server as federation needs it.
type KeyService interface {
	Query(ctx context.Context, caller string, req map[string][]string) (*keyserver.QueryResponse, error)
	Claim(ctx context.Context, req map[string]map[string]string) (*keyserver.ClaimResponse, error)
	LocalUserDevices(ctx context.Context, userID string) (*keyserver.UserDevices, error)
	LocalDeviceListChanges(ctx context.Context, since, upto int64, limit int) ([]keyserver.DeviceListChange, error)
	MarkDeviceListChanged(ctx context.Context, userIDs ...string) error
}

// Inbox delivers to-device messages to local devices.
type Inbox interface {
	Send(ctx context.Context, sender, senderDevice, eventType, txnID string, messages map[string]map[string]json.RawMessage) error
}

// EDUQueue queues an EDU for a destination inside a transaction
// (federation/sender).
type EDUQueue interface {
	QueueEDU(ctx context.Context, tx *storage.DB, dest, eduType string, content []byte) error
}

// E2EE is the federation side of end-to-end encryption.
type E2EE struct {
	API      *API
	Keys     KeyService
	Inbox    Inbox
	Queue    EDUQueue
	DB       *storage.DB
	Notifier *streams.Notifier
	// Timeout bounds one remote key query or claim.
	Timeout time.Duration

	// tailerReady: the tailer's row exists (RunDeviceLists' goroutine only).
	tailerReady bool
}

// Routes mounts /user/devices, /user/keys/query and /user/keys/claim.
func (e *E2EE) Routes(mux *http.ServeMux) {
	const v1 = "/_matrix/federation/v1"
	mux.Handle("GET "+v1+"/user/devices/{userId}", Authed(e.API, e.userDevices))
	mux.Handle("POST "+v1+"/user/keys/query", Authed(e.API, e.queryKeys))
	mux.Handle("POST "+v1+"/user/keys/claim", Authed(e.API, e.claimKeys))
}

func (e *E2EE) isLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+e.API.ServerName)
}

// userDevices serves GET /_matrix/federation/v1/user/devices/{userId}.
func (e *E2EE) userDevices(r *http.Request, _ spec.ServerName) (*keyserver.UserDevices, error) {
	userID := r.PathValue("userId")
	if _, err := spec.NewUserID(userID, true); err != nil {
		return nil, httputil.InvalidParam("invalid user ID " + userID)
	}
	if !e.isLocal(userID) {
		return nil, httputil.InvalidParam(userID + " is not a user of this server")
	}
	return e.Keys.LocalUserDevices(r.Context(), userID)
}

// queryKeys serves POST /_matrix/federation/v1/user/keys/query. Only our
// users are answered; user-signing keys never leave the server.
func (e *E2EE) queryKeys(r *http.Request, _ spec.ServerName) (map[string]any, error) {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	local := map[string][]string{}
	for u, devs := range req.DeviceKeys {
		if e.isLocal(u) {
			local[u] = devs
		}
	}
	out := map[string]any{
		"device_keys": map[string]map[string]json.RawMessage{}, "master_keys": map[string]json.RawMessage{},
		"self_signing_keys": map[string]json.RawMessage{},
	}
	if len(local) == 0 {
		return out, nil
	}
	res, err := e.Keys.Query(r.Context(), "", local)
	if err != nil {
		return nil, err
	}
	out["device_keys"], out["master_keys"], out["self_signing_keys"] = res.DeviceKeys, res.MasterKeys, res.SelfSigningKeys
	return out, nil
}

// claimKeys serves POST /_matrix/federation/v1/user/keys/claim.
func (e *E2EE) claimKeys(r *http.Request, _ spec.ServerName) (map[string]any, error) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	local := map[string]map[string]string{}
	for u, devs := range req.OneTimeKeys {
		if e.isLocal(u) {
			local[u] = devs
		}
	}
	if len(local) == 0 {
		return map[string]any{"one_time_keys": map[string]any{}}, nil
	}
	res, err := e.Keys.Claim(r.Context(), local)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_keys": res.OneTimeKeys}, nil
}

// ---- Outbound: keyserver.Remote and todevice.Remote ----

// do sends a signed federation request and decodes the JSON answer.
func (e *E2EE) do(ctx context.Context, method, dest, path string, body, out any) error {
	timeout := e.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req := fclient.NewFederationRequest(method, spec.ServerName(e.API.ServerName), spec.ServerName(dest), path)
	if body != nil {
		if err := req.SetContent(body); err != nil {
			return err
		}
	}
	if err := req.Sign(spec.ServerName(e.API.ServerName), gomatrixserverlib.KeyID(e.API.Key.KeyID), e.API.Key.PrivateKey); err != nil {
		return err
	}
	hreq, err := req.HTTPRequest()
	if err != nil {
		return err
	}
	return e.API.Client.DoRequestAndParseResponse(ctx, hreq, out)
}

// queryLive asks server for its users' keys: the signed objects are kept
// as the bytes the remote server sent, and only its own users' keys are
// taken.
func (e *E2EE) queryLive(ctx context.Context, server string, deviceKeys map[string][]string) (*keyserver.QueryResponse, error) {
	var res struct {
		DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
		MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
		SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	}
	if err := e.do(ctx, "POST", server, "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": deviceKeys}, &res); err != nil {
		return nil, fmt.Errorf("query keys on %s: %w", server, err)
	}
	out := &keyserver.QueryResponse{
		DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
	}
	for u, devs := range res.DeviceKeys {
		if _, asked := deviceKeys[u]; !asked || serverOfID(u) != server {
			continue
		}
		out.DeviceKeys[u] = map[string]json.RawMessage{}
		for d, k := range devs {
			// a key object must be about the user and device it is filed under
			if gjson.GetBytes(k, "user_id").String() == u && gjson.GetBytes(k, "device_id").String() == d {
				out.DeviceKeys[u][d] = k
			}
		}
	}
	for u, k := range res.MasterKeys {
		if _, asked := deviceKeys[u]; asked && gjson.GetBytes(k, "user_id").String() == u {
			out.MasterKeys[u] = k
		}
	}
	for u, k := range res.SelfSigningKeys {
		if _, asked := deviceKeys[u]; asked && gjson.GetBytes(k, "user_id").String() == u {
			out.SelfSigningKeys[u] = k
		}
	}
	return out, nil
}

// ClaimKeys implements keyserver.Remote.
func (e *E2EE) ClaimKeys(ctx context.Context, server string, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	var res struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	if err := e.do(ctx, "POST", server, "/_matrix/federation/v1/user/keys/claim", map[string]any{"one_time_keys": oneTimeKeys}, &res); err != nil {
		return nil, fmt.Errorf("claim keys on %s: %w", server, err)
	}
	out := map[string]map[string]map[string]json.RawMessage{}
	for u, devs := range res.OneTimeKeys {
		asked, ok := oneTimeKeys[u]
		if !ok {
			continue
		}
		for d, keys := range devs {
			if _, ok := asked[d]; !ok {
				continue
			}
			if out[u] == nil {
				out[u] = map[string]map[string]json.RawMessage{}
			}
			out[u][d] = keys
		}
	}
	return out, nil
}

// SendToDevice implements todevice.Remote: the messages for one server
// leave as one m.direct_to_device EDU through the sender's queue.
func (e *E2EE) SendToDevice(ctx context.Context, sender, eventType string, messages map[string]map[string]json.RawMessage) error {
	byServer := map[string]map[string]map[string]json.RawMessage{}
	for u, devs := range messages {
		srv := serverOfID(u)
		if byServer[srv] == nil {
			byServer[srv] = map[string]map[string]json.RawMessage{}
		}
		byServer[srv][u] = devs
	}
	return e.DB.Transact(ctx, func(tx *storage.DB) error {
		for srv, msgs := range byServer {
			content, err := json.Marshal(map[string]any{
				"sender": sender, "type": eventType, "message_id": randomHex(16), "messages": msgs,
			})
			if err != nil {
				return err
			}
			if err := e.Queue.QueueEDU(ctx, tx, srv, "m.direct_to_device", content); err != nil {
				return err
			}
		}
		return nil
	})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func serverOfID(id string) string {
	_, s, _ := strings.Cut(id, ":")
	return s
}

// ---- Inbound EDUs ----

// DirectToDevice handles m.direct_to_device: messages from a user of
// origin to our users' devices. The message_id deduplicates retries.
func (e *E2EE) DirectToDevice(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		Sender    string                                `json:"sender"`
		Type      string                                `json:"type"`
		MessageID string                                `json:"message_id"`
		Messages  map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return fmt.Errorf("m.direct_to_device: %w", err)
	}
	if serverOfID(c.Sender) != string(origin) {
		return fmt.Errorf("m.direct_to_device from %s about %s (another server's user)", origin, c.Sender)
	}
	if c.Type == "" || c.MessageID == "" {
		return fmt.Errorf("m.direct_to_device without type or message_id")
	}
	local := map[string]map[string]json.RawMessage{}
	for u, devs := range c.Messages {
		if e.isLocal(u) {
			local[u] = devs
		}
	}
	if len(local) == 0 {
		return nil
	}
	return e.Inbox.Send(ctx, c.Sender, "", c.Type, "fed:"+c.MessageID, local)
}

// DeviceListUpdate handles m.device_list_update: the user's devices
// changed on origin; the cache follows and local room-mates re-query.
func (e *E2EE) DeviceListUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	userID := gjson.GetBytes(content, "user_id").String()
	if serverOfID(userID) != string(origin) {
		return fmt.Errorf("m.device_list_update from %s about %s (another server's user)", origin, userID)
	}
	if e.DB != nil {
		if err := e.applyDeviceListUpdate(ctx, userID, content); err != nil {
			slog.WarnContext(ctx, "device-list update not applied to the cache", "user_id", userID, "err", err)
		}
	}
	return e.Keys.MarkDeviceListChanged(ctx, userID)
}

// SigningKeyUpdate handles m.signing_key_update (cross-signing keys of a
// user of origin changed).
func (e *E2EE) SigningKeyUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	userID := gjson.GetBytes(content, "user_id").String()
	if serverOfID(userID) != string(origin) {
		return fmt.Errorf("m.signing_key_update from %s about %s (another server's user)", origin, userID)
	}
	if e.DB != nil {
		if err := e.applySigningKeyUpdate(ctx, userID, content); err != nil {
			slog.WarnContext(ctx, "signing-key update not applied to the cache", "user_id", userID, "err", err)
		}
	}
	return e.Keys.MarkDeviceListChanged(ctx, userID)
}

// ---- Outbound device-list updates ----

// idleAdvance is how far the stream may move past the device-list
// tailer's position without local changes before the position is written.
const idleAdvance = 10000

// tailBatch bounds the changes one pass of the device-list tailer reads.
const tailBatch = 200

// deviceListTailer names the row of federation_device_list_outbound that
// holds how far our users' device-list changes have been queued.
const deviceListTailer = "device_lists"

// RunDeviceLists queues an m.device_list_update EDU for every change of a
// local user's devices or cross-signing keys, to every server sharing a
// room with the user, until ctx ends. Several processes may run it: the
// position advances with a compare-and-set in the same transaction as
// the queued EDUs, so a change is queued once.
func (e *E2EE) RunDeviceLists(ctx context.Context) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		changed := e.Notifier.Changed()
		if err := e.tailDeviceLists(ctx); err != nil && ctx.Err() == nil {
			slog.WarnContext(ctx, "device-list updates to federation", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

func (e *E2EE) tailDeviceLists(ctx context.Context) error {
	head := e.Notifier.Position()
	if !e.tailerReady {
		if _, err := e.DB.Exec(ctx, `INSERT INTO federation_device_list_outbound (name, pos) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`,
			deviceListTailer, head); err != nil {
			return fmt.Errorf("create device-list tailer: %w", err)
		}
		e.tailerReady = true
	}
	var from int64
	if err := e.DB.QueryRow(ctx, `SELECT pos FROM federation_device_list_outbound WHERE name = $1`, deviceListTailer).Scan(&from); err != nil {
		return fmt.Errorf("read device-list tailer: %w", err)
	}
	if from >= head {
		return nil
	}
	changes, err := e.Keys.LocalDeviceListChanges(ctx, from, head, tailBatch)
	if err != nil {
		return err
	}
	if len(changes) == 0 && head-from < idleAdvance {
		// Nothing to send: leave the position where it is rather than
		// write on every stream advance; the next scan covers the range
		// again through the stream_pos index.
		return nil
	}
	upto := head
	if len(changes) == tailBatch {
		upto = changes[len(changes)-1].StreamPos
		// A position is queued whole. Each change has a position of its
		// own, but rows from before migration 0099 may share one.
		cut := len(changes)
		for cut > 0 && changes[cut-1].StreamPos == upto {
			cut--
		}
		if cut > 0 {
			changes, upto = changes[:cut], upto-1
		}
	}
	type edu struct {
		dests   []string
		typ     string
		content []byte
	}
	var edus []edu
	for _, c := range changes {
		dests, err := e.sharingServers(ctx, c.UserID, c.StreamPos)
		if err != nil {
			return err
		}
		if len(dests) == 0 {
			continue
		}
		typ, content, err := e.deviceListEDU(ctx, c)
		if err != nil {
			return err
		}
		if content != nil {
			edus = append(edus, edu{dests, typ, content})
		}
	}
	return e.DB.Transact(ctx, func(tx *storage.DB) error {
		res, err := tx.Exec(ctx, `UPDATE federation_device_list_outbound SET pos = $1 WHERE name = $2 AND pos = $3`, upto, deviceListTailer, from)
		if err != nil {
			return fmt.Errorf("advance device-list tailer: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // another process queued this range
		}
		for _, u := range edus {
			for _, d := range u.dests {
				if err := e.Queue.QueueEDU(ctx, tx, d, u.typ, u.content); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// deviceListEDU builds the EDU for one change of a local user: an
// m.device_list_update naming the device, with its keys as they are now,
// or deleted when it is gone (partners drop it from their caches, so
// their clients stop encrypting to it); stream_id is the change's
// position and prev_id the user's previous device change, for the
// partner's gap detection. A change of the user as a whole (cross-signing
// keys) is an m.signing_key_update instead; nil content: nothing to send.
func (e *E2EE) deviceListEDU(ctx context.Context, c keyserver.DeviceListChange) (string, []byte, error) {
	var q *keyserver.QueryResponse
	if c.DeviceID == "" || !c.Deleted {
		devices := []string{c.DeviceID}
		if c.DeviceID == "" {
			devices = nil
		}
		var err error
		if q, err = e.Keys.Query(ctx, "", map[string][]string{c.UserID: devices}); err != nil {
			return "", nil, fmt.Errorf("keys of %s for a device-list update: %w", c.UserID, err)
		}
	}
	if c.DeviceID == "" {
		if len(q.MasterKeys[c.UserID]) == 0 {
			return "", nil, nil
		}
		sk := map[string]any{"user_id": c.UserID, "master_key": q.MasterKeys[c.UserID]}
		if k := q.SelfSigningKeys[c.UserID]; len(k) > 0 {
			sk["self_signing_key"] = k
		}
		b, err := json.Marshal(sk)
		return "m.signing_key_update", b, err
	}
	prev := []int64{}
	if c.PrevPos > 0 {
		prev = append(prev, c.PrevPos)
	}
	content := map[string]any{"user_id": c.UserID, "device_id": c.DeviceID, "stream_id": c.StreamPos, "prev_id": prev}
	var keys json.RawMessage
	if q != nil {
		keys = q.DeviceKeys[c.UserID][c.DeviceID]
	}
	if c.Deleted || len(keys) == 0 {
		// a device changed and then deleted before we got here is gone
		// all the same (its deletion follows under a later stream_id)
		content["deleted"] = true
	} else {
		content["keys"] = keys
		if name := gjson.GetBytes(keys, "unsigned.device_display_name").String(); name != "" {
			content["device_display_name"] = name
		}
	}
	b, err := json.Marshal(content)
	return "m.device_list_update", b, err
}

// sharingServers lists the other servers with a user joined to a room
// userID is joined to, or was joined to at stream position at: a
// deactivated account leaves its rooms right after its devices go, and
// the partners must still hear of the deletions.
func (e *E2EE) sharingServers(ctx context.Context, userID string, at int64) ([]string, error) {
	rows, err := e.DB.Query(ctx, `SELECT DISTINCT o.user_id FROM room_members me JOIN room_members o ON o.room_nid = me.room_nid
		WHERE me.user_id = $1 AND (me.membership = 'join' OR (me.membership IN ('leave', 'ban') AND me.stream_pos > $3))
		AND o.membership = 'join' AND o.user_id NOT LIKE $2`,
		userID, "%:"+e.API.ServerName, at)
	if err != nil {
		return nil, fmt.Errorf("servers sharing a room with %s: %w", userID, err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		if srv := serverOfID(u); srv != "" && !seen[srv] {
			seen[srv] = true
			out = append(out, srv)
		}
	}
	sort.Strings(out)
	return out, rows.Err()
}
