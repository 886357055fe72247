package sync

import (
	"errors"
	"strconv"
	"strings"
)

// Token is a /sync position: everything on the global stream up to Pos has
// been delivered, except to-device messages, which a response may have
// truncated and which are then delivered only up to ToDevice.
type Token struct {
	Pos int64
	// ToDevice is the to-device position when it lags Pos; 0 when it
	// does not.
	ToDevice int64
}

var errBadToken = errors.New("malformed sync token")

// ParseToken reads "s<pos>" or "s<pos>_<todevice>" (todevice < pos).
// Numbers are canonical decimal (no sign, no leading zeros), so every
// accepted token formats back to exactly itself.
func ParseToken(s string) (Token, error) {
	rest, ok := strings.CutPrefix(s, "s")
	if !ok {
		return Token{}, errBadToken
	}
	posStr, tdStr, hasTD := strings.Cut(rest, "_")
	pos, err := parseCanonical(posStr)
	if err != nil {
		return Token{}, err
	}
	t := Token{Pos: pos}
	if hasTD {
		td, err := parseCanonical(tdStr)
		if err != nil || td == 0 || td >= pos {
			return Token{}, errBadToken
		}
		t.ToDevice = td
	}
	return t, nil
}

func parseCanonical(s string) (int64, error) {
	if s == "" || len(s) > 19 || (len(s) > 1 && s[0] == '0') {
		return 0, errBadToken
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errBadToken
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errBadToken
	}
	return n, nil
}

// String formats t; ParseToken(t.String()) == t for every valid t.
func (t Token) String() string {
	s := "s" + strconv.FormatInt(t.Pos, 10)
	if t.ToDevice > 0 && t.ToDevice < t.Pos {
		s += "_" + strconv.FormatInt(t.ToDevice, 10)
	}
	return s
}

// toDeviceSince is where to-device delivery resumes.
func (t Token) toDeviceSince() int64 {
	if t.ToDevice > 0 {
		return t.ToDevice
	}
	return t.Pos
}
