// Package keyserver stores and serves the public half of end-to-end
// encryption: device identity keys, one-time and fallback keys,
// cross-signing keys with their signatures, and the device-list stream that
// tells clients whose devices changed. Every signed object is kept as the
// exact bytes the client uploaded: re-encoding through a struct would drop
// unknown fields and break the client's signature check.
package keyserver

import (
	"time"

	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/streams"
)

// Service owns device_keys, one_time_keys, fallback_keys,
// cross_signing_keys, key_signatures and device_list_changes.
type Service struct {
	db         *storage.DB
	notifier   *streams.Notifier
	serverName string
	// remote answers /keys/query and /keys/claim for users on other
	// servers. Nil until federation provides it: such users are then
	// reported under "failures".
	remote Remote
	// dropHooks delete other services' state of a dropped dehydrated device.
	dropHooks []DeviceDropper
}

// Remote fetches keys of users on other servers (implemented by federation).
type Remote interface {
	QueryKeys(ctx context.Context, server string, deviceKeys map[string][]string) (*QueryResponse, error)
	ClaimKeys(ctx context.Context, server string, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
}

// New returns the key server for serverName's users.
func New(db *storage.DB, notifier *streams.Notifier, serverName string) *Service {
	return &Service{db: db, notifier: notifier, serverName: serverName}
}

// SetRemote plugs in federation for keys of remote users.
func (s *Service) SetRemote(r Remote) { s.remote = r }

func (s *Service) isLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+s.serverName)
}

func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}

// UploadRequest is the body of POST /keys/upload. The raw messages keep
// the client's bytes.
type UploadRequest struct {
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
}

func present(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && !bytes.Equal(raw, []byte("null"))
}

// decodeKey decodes an unpadded (or padded) base64 ed25519 public key.
func decodeKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("key is not base64: %w", err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("key has %d bytes, want %d", len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// verify checks signer's signature with keyID (e.g. "ed25519:ABC") over obj.
func verify(obj []byte, signer, keyID, publicKey string) error {
	pub, err := decodeKey(publicKey)
	if err != nil {
		return err
	}
	return gomatrixserverlib.VerifyJSON(signer, gomatrixserverlib.KeyID(keyID), pub, obj)
}

// deviceIdentity validates uploaded device keys for userID's deviceID and
// returns their ed25519 and curve25519 identity keys.
func deviceIdentity(raw json.RawMessage, userID, deviceID string) (ed, curve string, err error) {
	if !json.Valid(raw) || !gjson.ParseBytes(raw).IsObject() {
		return "", "", httputil.BadJSON("device_keys must be an object")
	}
	k := gjson.ParseBytes(raw)
	if k.Get("user_id").String() != userID {
		return "", "", httputil.InvalidParam("device_keys.user_id does not match the logged-in user")
	}
	if k.Get("device_id").String() != deviceID {
		return "", "", httputil.InvalidParam("device_keys.device_id does not match the logged-in device")
	}
	if !k.Get("algorithms").IsArray() {
		return "", "", httputil.BadJSON("device_keys.algorithms must be a list")
	}
	keys := k.Get("keys")
	ed = keys.Get(gjson.Escape("ed25519:" + deviceID)).String()
	curve = keys.Get(gjson.Escape("curve25519:" + deviceID)).String()
	if ed == "" || curve == "" {
		return "", "", httputil.BadJSON("device_keys.keys must hold ed25519:" + deviceID + " and curve25519:" + deviceID)
	}
	if !k.Get("signatures." + gjson.Escape(userID) + "." + gjson.Escape("ed25519:"+deviceID)).Exists() {
		return "", "", httputil.BadJSON("device_keys must be signed by the device's ed25519 key")
	}
	if err := verify(raw, userID, "ed25519:"+deviceID, ed); err != nil {
		return "", "", httputil.Errorf(400, "M_INVALID_SIGNATURE", "device_keys signature does not verify")
	}
	return ed, curve, nil
}

// splitKeyID splits "signed_curve25519:AAAAHQ" into algorithm and key ID.
func splitKeyID(id string) (alg, key string, ok bool) {
	alg, key, ok = strings.Cut(id, ":")
	return alg, key, ok && alg != "" && key != ""
}

// sameJSON compares two JSON values ignoring formatting.
func sameJSON(a, b []byte) bool {
	ca, err1 := gomatrixserverlib.CanonicalJSON(a)
	cb, err2 := gomatrixserverlib.CanonicalJSON(b)
	return err1 == nil && err2 == nil && bytes.Equal(ca, cb)
}

func validKey(raw json.RawMessage) bool {
	if !json.Valid(raw) {
		return false
	}
	v := gjson.ParseBytes(raw)
	return (v.Type == gjson.String && v.String() != "") || (v.IsObject() && v.Get("key").String() != "")
}

// Upload stores device keys, one-time keys and fallback keys for the
// caller's device and returns the remaining one-time key counts.
func (s *Service) Upload(ctx context.Context, userID, deviceID string, req UploadRequest) (map[string]int, error) {
	var ed, curve string
	if present(req.DeviceKeys) {
		var err error
		if ed, curve, err = deviceIdentity(req.DeviceKeys, userID, deviceID); err != nil {
			return nil, err
		}
	}
	for _, set := range []map[string]json.RawMessage{req.OneTimeKeys, req.FallbackKeys} {
		for id, raw := range set {
			if _, _, ok := splitKeyID(id); !ok {
				return nil, httputil.InvalidParam(fmt.Sprintf("key ID %q must be algorithm:id", id))
			}
			if !validKey(raw) {
				return nil, httputil.BadJSON(fmt.Sprintf("key %q must be a string or an object with a key", id))
			}
		}
	}
	var pos int64
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		changed := false
		if ed != "" {
			var oldJSON, oldEd, oldCurve string
			err := tx.QueryRow(ctx, `SELECT key_json, ed25519, curve25519 FROM device_keys WHERE user_id = $1 AND device_id = $2`, userID, deviceID).
				Scan(&oldJSON, &oldEd, &oldCurve)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				// ON CONFLICT: a concurrent first upload of the same device
				// (a client retrying on a second connection) must not turn
				// into a unique violation on Postgres.
				res, err := tx.Exec(ctx, `INSERT INTO device_keys (user_id, device_id, key_json, ed25519, curve25519) VALUES ($1, $2, $3, $4, $5)
					ON CONFLICT (user_id, device_id) DO NOTHING`,
					userID, deviceID, string(req.DeviceKeys), ed, curve)
				if err != nil {
					return fmt.Errorf("store device keys of %s: %w", deviceID, err)
				}
				if n, _ := res.RowsAffected(); n == 0 {
					if err := tx.QueryRow(ctx, `SELECT ed25519, curve25519 FROM device_keys WHERE user_id = $1 AND device_id = $2`, userID, deviceID).
						Scan(&oldEd, &oldCurve); err != nil {
						return fmt.Errorf("read device keys of %s: %w", deviceID, err)
					}
					if oldEd != ed || oldCurve != curve {
						return httputil.InvalidParam("the identity keys of an existing device cannot change; log in as a new device")
					}
					break
				}
				changed = true
			case err != nil:
				return fmt.Errorf("read device keys of %s: %w", deviceID, err)
			case oldEd != ed || oldCurve != curve:
				// A device's identity keys are what others verified; a
				// new identity must come with a new device ID.
				return httputil.InvalidParam("the identity keys of an existing device cannot change; log in as a new device")
			case oldJSON != string(req.DeviceKeys):
				if _, err := tx.Exec(ctx, `UPDATE device_keys SET key_json = $1 WHERE user_id = $2 AND device_id = $3`,
					string(req.DeviceKeys), userID, deviceID); err != nil {
					return fmt.Errorf("update device keys of %s: %w", deviceID, err)
				}
				changed = true
			}
		}
		if err := storeOneTimeKeys(ctx, tx, userID, deviceID, req.OneTimeKeys, time.Now().UnixMicro()); err != nil {
			return err
		}
		if err := storeFallbackKeys(ctx, tx, userID, deviceID, req.FallbackKeys); err != nil {
			return err
		}
		if changed {
			var err error
			pos, err = markChanged(ctx, tx, change{userID: userID, deviceID: deviceID})
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.publish(pos)
	return s.OneTimeKeyCounts(ctx, userID, deviceID)
}

// storeOneTimeKeys inserts keys in multi-row statements, stamped with the
// upload time (µs) that orders claims; a key ID that already exists must
// come with the same key (a client retrying an upload whose response it
// lost), anything else is refused.
func storeOneTimeKeys(ctx context.Context, tx *storage.DB, userID, deviceID string, keys map[string]json.RawMessage, uploadedTS int64) error {
	if len(keys) == 0 {
		return nil
	}
	ids := make([]string, 0, len(keys))
	for id := range keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	const chunk = 200
	for start := 0; start < len(ids); start += chunk {
		batch := ids[start:min(start+chunk, len(ids))]
		var q strings.Builder
		q.WriteString(`INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json, uploaded_ts) VALUES `)
		args := []any{userID, deviceID, uploadedTS}
		for i, full := range batch {
			alg, id, _ := splitKeyID(full)
			if i > 0 {
				q.WriteByte(',')
			}
			n := len(args)
			fmt.Fprintf(&q, "($1, $2, $%d, $%d, $%d, $3)", n+1, n+2, n+3)
			args = append(args, alg, id, string(keys[full]))
		}
		q.WriteString(` ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING RETURNING algorithm, key_id`)
		rows, err := tx.Query(ctx, q.String(), args...)
		if err != nil {
			return fmt.Errorf("store one-time keys of %s: %w", deviceID, err)
		}
		inserted := map[string]bool{}
		for rows.Next() {
			var alg, id string
			if err := rows.Scan(&alg, &id); err != nil {
				rows.Close()
				return err
			}
			inserted[alg+":"+id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, full := range batch {
			if inserted[full] {
				continue
			}
			alg, id, _ := splitKeyID(full)
			var old string
			if err := tx.QueryRow(ctx, `SELECT key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
				userID, deviceID, alg, id).Scan(&old); err != nil {
				return fmt.Errorf("read one-time key of %s: %w", deviceID, err)
			}
			if !sameJSON([]byte(old), keys[full]) {
				return httputil.InvalidParam(fmt.Sprintf("one-time key %s already exists with different content", full))
			}
		}
	}
	return nil
}

func storeFallbackKeys(ctx context.Context, tx *storage.DB, userID, deviceID string, keys map[string]json.RawMessage) error {
	for full, raw := range keys {
		alg, id, _ := splitKeyID(full)
		var oldID, oldJSON string
		err := tx.QueryRow(ctx, `SELECT key_id, key_json FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3`, userID, deviceID, alg).
			Scan(&oldID, &oldJSON)
		if err == nil && oldID == id && sameJSON([]byte(oldJSON), raw) {
			continue // the same key again keeps its used flag
		}
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read fallback key of %s: %w", deviceID, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3`, userID, deviceID, alg); err != nil {
			return fmt.Errorf("replace fallback key of %s: %w", deviceID, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, FALSE)`,
			userID, deviceID, alg, id, string(raw)); err != nil {
			return fmt.Errorf("store fallback key of %s: %w", deviceID, err)
		}
	}
	return nil
}

// OneTimeKeyCounts returns how many unclaimed one-time keys deviceID has
// per algorithm. signed_curve25519 is always present so that clients see
// a zero and upload more.
func (s *Service) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error) {
	rows, err := s.db.Query(ctx, `SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("count one-time keys of %s: %w", deviceID, err)
	}
	defer rows.Close()
	out := map[string]int{"signed_curve25519": 0}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, err
		}
		out[alg] = n
	}
	return out, rows.Err()
}

// UnusedFallbackKeyTypes lists the algorithms for which deviceID has a
// fallback key that has not been handed out.
func (s *Service) UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = FALSE ORDER BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("read fallback keys of %s: %w", deviceID, err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var alg string
		if err := rows.Scan(&alg); err != nil {
			return nil, err
		}
		out = append(out, alg)
	}
	return out, rows.Err()
}

// DeleteDevices removes every key of deleted devices and announces the
// change on the device-list stream. It runs inside the transaction that
// deletes the devices (a users.DeviceHook). When that transaction is an
// account deactivation, the user's cross-signing keys and dehydrated
// device go too: nobody can use them again.
func (s *Service) DeleteDevices(ctx context.Context, tx *storage.DB, userID string, deviceIDs []string) error {
	if err := deleteDeviceKeys(ctx, tx, userID, deviceIDs); err != nil {
		return err
	}
	gone, err := Deactivated(ctx, tx, userID)
	if err != nil {
		return err
	}
	changes := make([]change, 0, len(deviceIDs)+1)
	if gone {
		dehydrated, err := s.forgetUser(ctx, tx, userID)
		if err != nil {
			return err
		}
		if dehydrated != "" {
			changes = append(changes, change{userID: userID, deviceID: dehydrated, deleted: true})
		}
	}
	for _, d := range deviceIDs {
		changes = append(changes, change{userID: userID, deviceID: d, deleted: true})
	}
	pos, err := markChanged(ctx, tx, changes...)
	if err != nil {
		return err
	}
	tx.AfterCommit(func() { s.publish(pos) })
	return nil
}

func deleteDeviceKeys(ctx context.Context, tx *storage.DB, userID string, deviceIDs []string) error {
	for _, table := range []string{"device_keys", "one_time_keys", "fallback_keys"} {
		q, args := storage.In(`DELETE FROM `+table+` WHERE user_id = $1 AND device_id IN ($IN)`, 1, deviceIDs)
		if _, err := tx.Exec(ctx, q, append([]any{userID}, args...)...); err != nil {
			return fmt.Errorf("delete %s of %s: %w", table, userID, err)
		}
	}
	q, args := storage.In(`DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key IN ($IN)`, 1, deviceIDs)
	if _, err := tx.Exec(ctx, q, append([]any{userID}, args...)...); err != nil {
		return fmt.Errorf("delete signatures of %s's devices: %w", userID, err)
	}
	return nil
}

// Deactivated reports whether userID's account is deactivated, as seen by
// the transaction that runs the device hooks.
func Deactivated(ctx context.Context, tx *storage.DB, userID string) (bool, error) {
	var d bool
	err := tx.QueryRow(ctx, `SELECT deactivated FROM accounts WHERE user_id = $1`, userID).Scan(&d)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read account state of %s: %w", userID, err)
	}
	return d, nil
}

// forgetUser deletes the keys a deactivated account leaves behind and
// returns the ID of the dehydrated device it dropped ("" if none).
func (s *Service) forgetUser(ctx context.Context, tx *storage.DB, userID string) (string, error) {
	var dehydrated string
	err := tx.QueryRow(ctx, `SELECT device_id FROM dehydrated_devices WHERE user_id = $1`, userID).Scan(&dehydrated)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("read dehydrated device of %s: %w", userID, err)
	}
	if dehydrated != "" {
		if err := s.dropDehydratedKeys(ctx, tx, userID, dehydrated); err != nil {
			return "", err
		}
	}
	for _, q := range []string{
		`DELETE FROM cross_signing_keys WHERE user_id = $1`,
		`DELETE FROM key_signatures WHERE target_user_id = $1 OR signer_user_id = $1`,
		`DELETE FROM device_keys WHERE user_id = $1`,
		`DELETE FROM one_time_keys WHERE user_id = $1`,
		`DELETE FROM fallback_keys WHERE user_id = $1`,
	} {
		if _, err := tx.Exec(ctx, q, userID); err != nil {
			return "", fmt.Errorf("forget keys of %s: %w", userID, err)
		}
	}
	return dehydrated, nil
}

// change is one row of the device-list stream: a device of userID that
// changed or was deleted, or (deviceID "") the user as a whole.
type change struct {
	userID, deviceID string
	deleted          bool
}

// usersChanged is the change of each user as a whole.
func usersChanged(userIDs ...string) []change {
	out := make([]change, len(userIDs))
	for i, u := range userIDs {
		out[i] = change{userID: u}
	}
	return out
}

// markChanged records changes of users' devices or cross-signing keys.
// Each change gets a stream position of its own: a position is the
// stream_id of the m.device_list_update EDU that federation sends for it,
// and the spec wants that unique per update of a user. It takes the
// positions, so it must be the last thing a transaction does; it returns
// the last one.
func markChanged(ctx context.Context, tx *storage.DB, changes ...change) (int64, error) {
	if len(changes) == 0 {
		return 0, nil
	}
	pos, err := tx.NextStreamPos(ctx, int64(len(changes)))
	if err != nil {
		return 0, err
	}
	first := pos - int64(len(changes)) + 1
	for i, c := range changes {
		if _, err := tx.Exec(ctx, `INSERT INTO device_list_changes (user_id, stream_pos, device_id, deleted) VALUES ($1, $2, $3, $4)`,
			c.userID, first+int64(i), c.deviceID, c.deleted); err != nil {
			return 0, fmt.Errorf("record device list change of %s: %w", c.userID, err)
		}
	}
	return pos, nil
}

func (s *Service) publish(pos int64) {
	if pos > 0 && s.notifier != nil {
		s.notifier.Publish(pos)
	}
}
