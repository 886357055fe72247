package backup

import (
	"context"
	"encoding/json"
	"testing"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
)

const alice = "@alice:hs.test"

func key(first, fwd int64, verified bool, tag string) KeyData {
	return KeyData{FirstMessageIndex: first, ForwardedCount: fwd, IsVerified: verified, SessionData: json.RawMessage(`{"ciphertext":"` + tag + `"}`)}
}

func TestBetter(t *testing.T) {
	for _, tc := range []struct {
		name     string
		new, old KeyData
		want     bool
	}{
		{"verified beats unverified", key(5, 5, true, ""), key(0, 0, false, ""), true},
		{"unverified loses to verified", key(0, 0, false, ""), key(5, 5, true, ""), false},
		{"lower first index wins", key(1, 9, false, ""), key(2, 0, false, ""), true},
		{"higher first index loses", key(3, 0, false, ""), key(2, 9, false, ""), false},
		{"lower forwarded count wins", key(2, 0, false, ""), key(2, 1, false, ""), true},
		{"a tie keeps the old copy", key(2, 1, false, ""), key(2, 1, false, ""), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := better(tc.new, tc.old); got != tc.want {
				t.Fatalf("better = %v, want %v", got, tc.want)
			}
		})
	}
}

func code(err error) string {
	if err == nil {
		return ""
	}
	return httputil.ToError(err).ErrCode
}

func TestBackupLifecycle(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := New(db)
		if _, err := s.GetVersion(ctx, alice, ""); code(err) != "M_NOT_FOUND" {
			t.Fatalf("no backup: got %v", err)
		}
		if _, err := s.CreateVersion(ctx, alice, "m.megolm_backup.v1.curve25519-aes-sha2", json.RawMessage(`"x"`)); code(err) != "M_BAD_JSON" {
			t.Fatalf("bad auth_data: got %v", err)
		}
		v1, err := s.CreateVersion(ctx, alice, "m.megolm_backup.v1.curve25519-aes-sha2", json.RawMessage(`{"public_key":"abc"}`))
		if err != nil || v1 != "1" {
			t.Fatalf("create = %q, %v", v1, err)
		}
		c, err := s.PutKeys(ctx, alice, v1, Keys{"!r:hs.test": {"S1": key(3, 0, false, "a"), "S2": key(0, 0, false, "b")}})
		if err != nil || c.Count != 2 {
			t.Fatalf("put = %+v, %v", c, err)
		}
		etag1 := c.ETag
		// A worse copy changes nothing, not even the etag.
		c, _ = s.PutKeys(ctx, alice, v1, Keys{"!r:hs.test": {"S1": key(4, 0, false, "worse")}})
		if c.ETag != etag1 || c.Count != 2 {
			t.Fatalf("worse copy: %+v, want etag %s", c, etag1)
		}
		got, _ := s.GetKeys(ctx, alice, v1, "!r:hs.test", "S1")
		if string(got["!r:hs.test"]["S1"].SessionData) != `{"ciphertext":"a"}` {
			t.Fatalf("worse copy replaced the better: %s", got["!r:hs.test"]["S1"].SessionData)
		}
		// A better copy replaces it and moves the etag.
		c, _ = s.PutKeys(ctx, alice, v1, Keys{"!r:hs.test": {"S1": key(1, 0, false, "better")}})
		if c.ETag == etag1 {
			t.Fatal("better copy did not change the etag")
		}
		got, _ = s.GetKeys(ctx, alice, v1, "", "")
		if string(got["!r:hs.test"]["S1"].SessionData) != `{"ciphertext":"better"}` {
			t.Fatalf("better copy not stored: %s", got["!r:hs.test"]["S1"].SessionData)
		}
		// A new version makes the old one stale for uploads.
		v2, _ := s.CreateVersion(ctx, alice, "m.megolm_backup.v1.curve25519-aes-sha2", json.RawMessage(`{"public_key":"def"}`))
		_, err = s.PutKeys(ctx, alice, v1, Keys{"!r:hs.test": {"S3": key(0, 0, false, "c")}})
		e := httputil.ToError(err)
		if e.ErrCode != "M_WRONG_ROOM_KEYS_VERSION" || e.Status != 403 || e.Extra["current_version"] != v2 {
			t.Fatalf("stale version: %+v", e)
		}
		cur, err := s.GetVersion(ctx, alice, "")
		if err != nil || cur.Version != v2 || cur.Count != 0 {
			t.Fatalf("current = %+v, %v", cur, err)
		}
		if err := s.UpdateVersion(ctx, alice, v2, "", "other.algorithm", json.RawMessage(`{}`)); code(err) != "M_INVALID_PARAM" {
			t.Fatalf("algorithm change: %v", err)
		}
		if err := s.UpdateVersion(ctx, alice, v2, "1", "m.megolm_backup.v1.curve25519-aes-sha2", json.RawMessage(`{}`)); code(err) != "M_INVALID_PARAM" {
			t.Fatalf("version mismatch: %v", err)
		}
		// Deleting v2 makes v1 current again; a deleted number is never reused.
		if err := s.DeleteVersion(ctx, alice, v2); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetKeys(ctx, alice, v2, "", ""); code(err) != "M_NOT_FOUND" {
			t.Fatalf("keys of deleted version: %v", err)
		}
		v3, _ := s.CreateVersion(ctx, alice, "m.megolm_backup.v1.curve25519-aes-sha2", json.RawMessage(`{}`))
		if v3 != "3" {
			t.Fatalf("new version after deletion = %s, want 3", v3)
		}
		c, err = s.DeleteKeys(ctx, alice, v1, "!r:hs.test", "S2")
		if err != nil || c.Count != 1 {
			t.Fatalf("delete session: %+v, %v", c, err)
		}
	})
}
