package keyring_test

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"praxis/federation/keyring"
)

func TestRotateKeepsOldPublicKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.key")
	first, _, err := keyring.LoadOrGenerate(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1_700_000_000_000)
	second, old, err := keyring.Rotate(path, now)
	if err != nil {
		t.Fatal(err)
	}
	if old.KeyID != first.KeyID || second.KeyID == first.KeyID {
		t.Fatalf("rotate: old %s new %s, first was %s", old.KeyID, second.KeyID, first.KeyID)
	}
	if _, _, err := keyring.Rotate(path, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	olds, err := keyring.LoadOldKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(olds) != 2 || olds[0].KeyID != first.KeyID || !bytes.Equal(olds[0].PublicKey, first.PublicKey()) ||
		olds[0].ExpiredTS != now.UnixMilli() || olds[1].KeyID != second.KeyID {
		t.Fatalf("old keys %+v", olds)
	}
	current, created, err := keyring.LoadOrGenerate(path)
	if err != nil || created || current.KeyID == second.KeyID || current.KeyID == first.KeyID {
		t.Fatalf("current key after two rotations: %v created=%v err=%v", current.KeyID, created, err)
	}
}
