package keyring

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// OldKey is a retired verify key, published as old_verify_keys so that
// events signed with it stay verifiable.
type OldKey struct {
	KeyID     string
	PublicKey []byte
	ExpiredTS int64
}

// OldKeysPath is where the retired keys of the key file at path live:
// one line per key, "ed25519 <version> <unpadded base64 public key>
// <expired_ts ms>". Only public keys: a retired private key is useless
// and dangerous.
func OldKeysPath(path string) string { return path + ".old" }

// LoadOldKeys reads the retired keys of the key file at path (none if the
// file does not exist).
func LoadOldKeys(path string) ([]OldKey, error) {
	f, err := os.Open(OldKeysPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read old keys: %w", err)
	}
	defer f.Close()
	var out []OldKey
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 4 || fields[0] != "ed25519" {
			return nil, fmt.Errorf("%s line %d: want \"ed25519 <version> <public key> <expired_ts>\"", OldKeysPath(path), line)
		}
		pub, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(fields[2], "="))
		if err != nil || len(pub) != 32 {
			return nil, fmt.Errorf("%s line %d: public key is not 32 bytes of base64", OldKeysPath(path), line)
		}
		ts, err := strconv.ParseInt(fields[3], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: bad expired_ts", OldKeysPath(path), line)
		}
		out = append(out, OldKey{KeyID: "ed25519:" + fields[1], PublicKey: pub, ExpiredTS: ts})
	}
	return out, sc.Err()
}

// Rotate replaces the key at path with a new one and appends the old
// one's public key, expired now, to the old keys file. The server must be
// restarted to sign with the new key.
func Rotate(path string, now time.Time) (newKey *SigningKey, old *SigningKey, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read signing key: %w", err)
	}
	if old, err = Parse(data); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if newKey, err = Generate(); err != nil {
		return nil, nil, err
	}
	_, ver, _ := strings.Cut(old.KeyID, ":")
	f, err := os.OpenFile(OldKeysPath(path), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("write old keys: %w", err)
	}
	_, err = fmt.Fprintf(f, "ed25519 %s %s %d\n", ver, base64.RawStdEncoding.EncodeToString(old.PublicKey()), now.UnixMilli())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, nil, fmt.Errorf("write old keys: %w", err)
	}
	if err := WriteFile(path, newKey); err != nil {
		return nil, nil, err
	}
	return newKey, old, nil
}
