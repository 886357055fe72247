package roomserver

import (
	"context"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
)

// Client-side questions about other servers' users and aliases, asked
// over federation (/query/profile, /query/directory). Only partners on
// the allowlist are asked; anything else is simply not found.

// remoteQueryTimeout bounds one query: a client waits on it.
const remoteQueryTimeout = 10 * time.Second

// RemoteProfile returns the profile of a user of another server.
func (s *Service) RemoteProfile(ctx context.Context, userID string) (displayName, avatarURL string, err error) {
	server := serverOfID(userID)
	if s.fed == nil || server == "" || !s.fed.allowed(server) {
		return "", "", httputil.NotFound("profile not found")
	}
	ctx, cancel := context.WithTimeout(ctx, remoteQueryTimeout)
	defer cancel()
	p, err := s.fed.client.LookupProfile(ctx, spec.ServerName(s.serverName), spec.ServerName(server), userID, "")
	if err != nil {
		return "", "", remoteNotFound("profile of "+userID, err)
	}
	return p.DisplayName, p.AvatarURL, nil
}

// ResolveAliasAny resolves a local alias, or another server's over
// federation.
func (s *Service) ResolveAliasAny(ctx context.Context, alias string) (string, []string, error) {
	server := serverOfID(alias)
	if !strings.HasPrefix(alias, "#") || server == s.serverName || server == "" || s.fed == nil {
		return s.ResolveAlias(ctx, alias)
	}
	if !s.fed.allowed(server) {
		return "", nil, httputil.NotFound("room alias " + alias + " not found")
	}
	ctx, cancel := context.WithTimeout(ctx, remoteQueryTimeout)
	defer cancel()
	dir, err := s.fed.client.LookupRoomAlias(ctx, spec.ServerName(s.serverName), spec.ServerName(server), alias)
	if err != nil {
		return "", nil, remoteNotFound("room alias "+alias, err)
	}
	servers := make([]string, 0, len(dir.Servers))
	for _, srv := range dir.Servers {
		servers = append(servers, string(srv))
	}
	return dir.RoomID, servers, nil
}

// remoteNotFound maps a failed lookup: the remote server's own Matrix
// error when it sent one (e.g. 404 M_NOT_FOUND), else 404 — an
// unreachable partner does not know the thing either, as far as the
// client can tell, and the detail goes to the log.
func remoteNotFound(what string, err error) error {
	e := remoteError(what, err)
	if he, ok := e.(*httputil.Error); ok {
		return he
	}
	return httputil.NotFound(what + " could not be looked up")
}
