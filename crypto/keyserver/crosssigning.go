package keyserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/tidwall/gjson"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// Cross-signing key types, as stored in cross_signing_keys.key_type.
const (
	Master      = "master"
	SelfSigning = "self_signing"
	UserSigning = "user_signing"
)

// CrossSigningKeys is the body of POST /keys/device_signing/upload.
type CrossSigningKeys struct {
	Master      json.RawMessage `json:"master_key"`
	SelfSigning json.RawMessage `json:"self_signing_key"`
	UserSigning json.RawMessage `json:"user_signing_key"`
}

func (k CrossSigningKeys) byType() map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	if present(k.Master) {
		out[Master] = k.Master
	}
	if present(k.SelfSigning) {
		out[SelfSigning] = k.SelfSigning
	}
	if present(k.UserSigning) {
		out[UserSigning] = k.UserSigning
	}
	return out
}

type storedKey struct{ pub, json string }

func (s *Service) crossSigningKeys(ctx context.Context, db *storage.DB, userID string) (map[string]storedKey, error) {
	rows, err := db.Query(ctx, `SELECT key_type, public_key, key_json FROM cross_signing_keys WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("read cross-signing keys of %s: %w", userID, err)
	}
	defer rows.Close()
	out := map[string]storedKey{}
	for rows.Next() {
		var typ string
		var k storedKey
		if err := rows.Scan(&typ, &k.pub, &k.json); err != nil {
			return nil, err
		}
		out[typ] = k
	}
	return out, rows.Err()
}

// CrossSigningNeedsAuth reports whether uploading keys needs
// user-interactive auth: not for a user's first master key (MSC3967) and
// not for re-uploading exactly the keys already stored (a client retrying
// after a lost response).
func (s *Service) CrossSigningNeedsAuth(ctx context.Context, userID string, keys CrossSigningKeys) (bool, error) {
	stored, err := s.crossSigningKeys(ctx, s.db, userID)
	if err != nil {
		return false, err
	}
	if _, ok := stored[Master]; !ok {
		return false, nil
	}
	for typ, raw := range keys.byType() {
		old, ok := stored[typ]
		if !ok || !sameJSON([]byte(old.json), raw) {
			return true, nil
		}
	}
	return false, nil
}

// crossSigningKey validates one cross-signing key and returns its public key.
func crossSigningKey(raw json.RawMessage, userID, typ string) (string, error) {
	field := typ + "_key"
	if !json.Valid(raw) || !gjson.ParseBytes(raw).IsObject() {
		return "", httputil.BadJSON(field + " must be an object")
	}
	k := gjson.ParseBytes(raw)
	if k.Get("user_id").String() != userID {
		return "", httputil.InvalidParam(field + ".user_id does not match the logged-in user")
	}
	usage := false
	for _, u := range k.Get("usage").Array() {
		if u.String() == typ {
			usage = true
		}
	}
	if !usage {
		return "", httputil.InvalidParam(field + ".usage must contain " + typ)
	}
	var id, pub string
	n := 0
	k.Get("keys").ForEach(func(key, value gjson.Result) bool {
		id, pub = key.String(), value.String()
		n++
		return true
	})
	if n != 1 || id != "ed25519:"+pub {
		return "", httputil.InvalidParam(field + ".keys must hold exactly one ed25519 key")
	}
	if _, err := decodeKey(pub); err != nil {
		return "", httputil.InvalidParam(field + ": " + err.Error())
	}
	return pub, nil
}

// UploadCrossSigning stores the user's cross-signing keys. The
// self-signing and user-signing keys must be signed by the master key (the
// uploaded one, or the stored one when no master key is uploaded).
func (s *Service) UploadCrossSigning(ctx context.Context, userID string, keys CrossSigningKeys) error {
	byType := keys.byType()
	if len(byType) == 0 {
		return nil
	}
	pubs := map[string]string{}
	for typ, raw := range byType {
		pub, err := crossSigningKey(raw, userID, typ)
		if err != nil {
			return err
		}
		pubs[typ] = pub
	}
	var pos int64
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		stored, err := s.crossSigningKeys(ctx, tx, userID)
		if err != nil {
			return err
		}
		masterPub := pubs[Master]
		if masterPub == "" {
			masterPub = stored[Master].pub
		}
		for _, typ := range []string{SelfSigning, UserSigning} {
			raw, ok := byType[typ]
			if !ok {
				continue
			}
			if masterPub == "" {
				return httputil.InvalidParam(typ + "_key needs a master key")
			}
			if err := verify(raw, userID, "ed25519:"+masterPub, masterPub); err != nil {
				return httputil.Errorf(400, "M_INVALID_SIGNATURE", "%s_key is not signed by the master key", typ)
			}
		}
		changed := false
		for typ, raw := range byType {
			if old, ok := stored[typ]; ok && old.json == string(raw) {
				continue
			}
			changed = true
			if _, replaced := stored[typ]; replaced {
				// A replaced key is a security key reset: worth a line in
				// the log when a user later asks why old messages are gone.
				tx.AfterCommit(func() { slog.InfoContext(ctx, "cross-signing key replaced", "user_id", userID, "key_type", typ) })
			}
			if _, err := tx.Exec(ctx, `DELETE FROM cross_signing_keys WHERE user_id = $1 AND key_type = $2`, userID, typ); err != nil {
				return fmt.Errorf("replace %s key of %s: %w", typ, userID, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO cross_signing_keys (user_id, key_type, public_key, key_json) VALUES ($1, $2, $3, $4)`,
				userID, typ, pubs[typ], string(raw)); err != nil {
				return fmt.Errorf("store %s key of %s: %w", typ, userID, err)
			}
		}
		if !changed {
			return nil
		}
		pos, err = markChanged(ctx, tx, change{userID: userID})
		return err
	})
	if err != nil {
		return err
	}
	s.publish(pos)
	return nil
}

// SignatureFailure is one entry of the failures map of
// /keys/signatures/upload.
type SignatureFailure struct {
	ErrCode string `json:"errcode"`
	Error   string `json:"error"`
}

// UploadSignatures stores signatures the caller made on keys: its own
// devices (with its self-signing key), its own master key (with a device
// key) and other users' master keys (with its user-signing key). Each
// signature is verified; bad ones are reported per key and the good ones
// are stored.
func (s *Service) UploadSignatures(ctx context.Context, caller string, req map[string]map[string]json.RawMessage) (map[string]map[string]SignatureFailure, error) {
	failures := map[string]map[string]SignatureFailure{}
	fail := func(user, key, code, msg string) {
		if failures[user] == nil {
			failures[user] = map[string]SignatureFailure{}
		}
		failures[user][key] = SignatureFailure{ErrCode: code, Error: msg}
	}
	var pos int64
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		own, err := s.crossSigningKeys(ctx, tx, caller)
		if err != nil {
			return err
		}
		// A signed device is a change of that device (its keys as served
		// now carry the signature); a signed cross-signing key is a change
		// of the user as a whole.
		var changes []change
		userLevel := map[string]bool{}
		for targetUser, objs := range req {
			for keyID, obj := range objs {
				if !json.Valid(obj) || !gjson.ParseBytes(obj).IsObject() {
					fail(targetUser, keyID, "M_BAD_JSON", "signed object must be a JSON object")
					continue
				}
				sigs, err := s.checkSignatures(ctx, tx, caller, own, targetUser, keyID, obj)
				if err != nil {
					var me *httputil.Error
					if errors.As(err, &me) {
						fail(targetUser, keyID, me.ErrCode, me.Message)
						continue
					}
					return err
				}
				for _, sg := range sigs {
					if _, err := tx.Exec(ctx, `DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key = $2 AND signer_user_id = $3 AND signer_key_id = $4`,
						targetUser, keyID, caller, sg.keyID); err != nil {
						return fmt.Errorf("replace signature: %w", err)
					}
					if _, err := tx.Exec(ctx, `INSERT INTO key_signatures (target_user_id, target_key, signer_user_id, signer_key_id, signature) VALUES ($1, $2, $3, $4, $5)`,
						targetUser, keyID, caller, sg.keyID, sg.sig); err != nil {
						return fmt.Errorf("store signature: %w", err)
					}
				}
				if len(sigs) == 0 {
					continue
				}
				var isDevice bool
				if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM device_keys WHERE user_id = $1 AND device_id = $2)`, targetUser, keyID).Scan(&isDevice); err != nil {
					return fmt.Errorf("read device keys of %s: %w", targetUser, err)
				}
				switch {
				case isDevice:
					changes = append(changes, change{userID: targetUser, deviceID: keyID})
				case !userLevel[targetUser]:
					userLevel[targetUser] = true
					changes = append(changes, change{userID: targetUser})
				}
			}
		}
		if len(changes) == 0 {
			return nil
		}
		pos, err = markChanged(ctx, tx, changes...)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.publish(pos)
	return failures, nil
}

// checkSignatures finds the stored object obj claims to be, checks that obj
// is that object, and verifies each of the caller's signatures on it that
// is not stored yet. It returns the signatures to store.
func (s *Service) checkSignatures(ctx context.Context, tx *storage.DB, caller string, own map[string]storedKey, targetUser, keyID string, obj json.RawMessage) ([]signature, error) {
	var stored string
	var targetType string // "device" or a cross-signing key type
	if targetUser == caller {
		err := tx.QueryRow(ctx, `SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2`, targetUser, keyID).Scan(&stored)
		switch {
		case err == nil:
			targetType = "device"
		case errors.Is(err, sql.ErrNoRows):
			for typ, k := range own {
				if k.pub == keyID {
					stored, targetType = k.json, typ
				}
			}
		default:
			return nil, fmt.Errorf("read device keys of %s: %w", keyID, err)
		}
	} else {
		var pub string
		err := tx.QueryRow(ctx, `SELECT public_key, key_json FROM cross_signing_keys WHERE user_id = $1 AND key_type = $2`, targetUser, Master).Scan(&pub, &stored)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("read master key of %s: %w", targetUser, err)
		}
		if pub == keyID {
			targetType = Master
		}
	}
	if targetType == "" {
		return nil, httputil.NotFound("no such key")
	}
	if !sameJSON(stripSigned([]byte(stored)), stripSigned(obj)) {
		return nil, httputil.Errorf(400, "M_INVALID_SIGNATURE", "signed object does not match the stored key")
	}
	var out []signature
	var bad error
	gjson.GetBytes(obj, "signatures."+gjson.Escape(caller)).ForEach(func(k, v gjson.Result) bool {
		signerKeyID := k.String()
		if gjson.Get(stored, "signatures."+gjson.Escape(caller)+"."+gjson.Escape(signerKeyID)).Exists() {
			return true // already part of the uploaded object
		}
		pub, ok := s.signerKey(ctx, tx, caller, own, targetUser, targetType, signerKeyID)
		if !ok {
			bad = httputil.Errorf(400, "M_INVALID_SIGNATURE", "%s may not sign this key", signerKeyID)
			return false
		}
		if err := verify(obj, caller, signerKeyID, pub); err != nil {
			bad = httputil.Errorf(400, "M_INVALID_SIGNATURE", "signature %s does not verify", signerKeyID)
			return false
		}
		out = append(out, signature{signer: caller, keyID: signerKeyID, sig: v.String()})
		return true
	})
	if bad != nil {
		return nil, bad
	}
	return out, nil
}

// signerKey resolves which of the caller's keys may sign a target of
// targetType, and returns its public key.
func (s *Service) signerKey(ctx context.Context, tx *storage.DB, caller string, own map[string]storedKey, targetUser, targetType, signerKeyID string) (string, bool) {
	id, ok := strings.CutPrefix(signerKeyID, "ed25519:")
	if !ok {
		return "", false
	}
	var allowed string
	switch {
	case targetUser != caller:
		allowed = UserSigning
	case targetType == "device":
		allowed = SelfSigning
	case targetType == Master:
		// The master key is signed by one of the user's own devices.
		var ed string
		if err := tx.QueryRow(ctx, `SELECT ed25519 FROM device_keys WHERE user_id = $1 AND device_id = $2`, caller, id).Scan(&ed); err != nil {
			return "", false
		}
		return ed, true
	default:
		allowed = Master
	}
	if k, ok := own[allowed]; ok && k.pub == id {
		return k.pub, true
	}
	return "", false
}

// stripSigned removes the parts of a signed object a signature does not
// cover.
func stripSigned(obj []byte) []byte {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil
	}
	delete(m, "signatures")
	delete(m, "unsigned")
	b, _ := json.Marshal(m)
	return b
}
