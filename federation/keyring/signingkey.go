// Package keyring holds this server's signing key and, later, the cache of
// other servers' keys.
package keyring

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SigningKey is the server's ed25519 key in the Synapse file format
// ("ed25519 <key id> <unpadded base64 seed>"), so keys move between
// implementations.
type SigningKey struct {
	KeyID      string // e.g. "ed25519:a_Xyz1"
	PrivateKey ed25519.PrivateKey
}

// PublicKey returns the verify key.
func (k *SigningKey) PublicKey() ed25519.PublicKey {
	return k.PrivateKey.Public().(ed25519.PublicKey)
}

// Generate makes a new key with a random ID.
func Generate() (*SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	idBytes := make([]byte, 4)
	if _, err := rand.Read(idBytes); err != nil {
		return nil, err
	}
	id := "ed25519:a_" + strings.NewReplacer("-", "A", "_", "B").Replace(base64.RawURLEncoding.EncodeToString(idBytes))
	return &SigningKey{KeyID: id, PrivateKey: priv}, nil
}

// Marshal renders the key file line.
func (k *SigningKey) Marshal() []byte {
	alg, ver, _ := strings.Cut(k.KeyID, ":")
	return []byte(fmt.Sprintf("%s %s %s\n", alg, ver, base64.RawStdEncoding.EncodeToString(k.PrivateKey.Seed())))
}

// Parse reads a key file.
func Parse(data []byte) (*SigningKey, error) {
	fields := strings.Fields(string(data))
	if len(fields) != 3 || fields[0] != "ed25519" {
		return nil, errors.New("signing key file: want \"ed25519 <version> <base64 seed>\"")
	}
	seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(fields[2], "="))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, errors.New("signing key file: seed is not 32 bytes of base64")
	}
	return &SigningKey{KeyID: "ed25519:" + fields[1], PrivateKey: ed25519.NewKeyFromSeed(seed)}, nil
}

// LoadOrGenerate reads the key at path, creating it (mode 0600) on first
// start. created reports whether a new key was written.
func LoadOrGenerate(path string) (key *SigningKey, created bool, err error) {
	data, err := os.ReadFile(path)
	if err == nil {
		k, err := Parse(data)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", path, err)
		}
		return k, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("read signing key: %w", err)
	}
	k, err := Generate()
	if err != nil {
		return nil, false, err
	}
	if err := WriteFile(path, k); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// WriteFile writes k to path atomically with mode 0600.
func WriteFile(path string, k *SigningKey) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, k.Marshal(), 0o600); err != nil {
		return fmt.Errorf("write signing key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write signing key: %w", err)
	}
	return nil
}
