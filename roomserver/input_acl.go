package roomserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"path"
	"strings"

	"github.com/tidwall/gjson"
)

// ServerAllowedByACL reports whether the room's m.room.server_acl (if any)
// lets server take part: inbound PDUs and EDUs from a denied server are
// dropped, and nothing is sent to it. A room without an ACL allows all.
func (s *Service) ServerAllowedByACL(ctx context.Context, roomID, server string) (bool, error) {
	var js string
	err := s.db.QueryRow(ctx, `SELECT e.json FROM current_state cs JOIN rooms r ON r.room_nid = cs.room_nid
		JOIN events e ON e.event_nid = cs.event_nid
		WHERE r.room_id = $1 AND cs.type = 'm.room.server_acl' AND cs.state_key = ''`, roomID).Scan(&js)
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read server ACL of %s: %w", roomID, err)
	}
	return ACLAllows(gjson.Get(js, "content").Raw, server), nil
}

// ACLAllows applies m.room.server_acl content to a server name, per the
// spec: the port is ignored; an IP literal is denied unless
// allow_ip_literals (default true); deny globs win over allow globs; a
// server matching no allow glob is denied.
func ACLAllows(content string, server string) bool {
	host := strings.ToLower(server)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	c := gjson.Parse(content)
	if ip := c.Get("allow_ip_literals"); ip.Exists() && ip.Type == gjson.False && net.ParseIP(host) != nil {
		return false
	}
	for _, g := range c.Get("deny").Array() {
		if g.Type == gjson.String && aclGlobMatch(strings.ToLower(g.String()), host) {
			return false
		}
	}
	for _, g := range c.Get("allow").Array() {
		if g.Type == gjson.String && aclGlobMatch(strings.ToLower(g.String()), host) {
			return true
		}
	}
	return false
}

// aclGlobMatch matches Matrix globs: * any run of characters, ? one.
func aclGlobMatch(glob, name string) bool {
	// path.Match treats [ and \ specially and * does not cross "/";
	// server names have neither, so escape only the brackets.
	glob = strings.NewReplacer(`[`, `\[`, `]`, `\]`, `\`, `\\`).Replace(glob)
	ok, err := path.Match(glob, name)
	return err == nil && ok
}
