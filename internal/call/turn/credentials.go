// Package turn hands out TURN credentials for video consultations and runs
// the embedded TURN relay (pion/turn), so a practice needs no coturn.
//
// Credentials follow the TURN REST scheme that coturn implements
// (draft-uberti-behave-turn-rest, "use-auth-secret"): the username is
// "<expiry unix seconds>:<user ID>" and the password is
// base64(HMAC-SHA1(shared secret, username)). The relay needs no database:
// it recomputes the password from the username.
package turn

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the TURN REST scheme is defined with HMAC-SHA1
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Credentials answer GET /_matrix/client/v3/voip/turnServer.
type Credentials struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	URIs     []string `json:"uris"`
	// TTL is the validity in seconds.
	TTL int64 `json:"ttl"`
}

// Password is the TURN REST password for username.
func Password(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Username is the TURN REST username for userID, valid until expiry.
func Username(userID string, expiry time.Time) string {
	return strconv.FormatInt(expiry.Unix(), 10) + ":" + userID
}

var errBadUsername = errors.New("not a TURN REST username")

// ParseUsername splits a TURN REST username into its expiry and user ID.
// Only the first colon separates: Matrix user IDs contain colons.
func ParseUsername(username string) (expiry time.Time, userID string, err error) {
	ts, userID, ok := strings.Cut(username, ":")
	if !ok || userID == "" {
		return time.Time{}, "", errBadUsername
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || secs <= 0 {
		return time.Time{}, "", errBadUsername
	}
	return time.Unix(secs, 0), userID, nil
}
