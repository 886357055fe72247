package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
)

// inviteFailed tells the inviting client why the invitee's server did
// not co-sign an invite: a refusal (403) is passed on with the remote
// server's reason; a 400 or 404 keeps the remote server's Matrix error
// (an unknown invitee, an unsupported room version); anything else, and a
// server that cannot be reached, is 502 M_UNKNOWN naming the server, never
// a bare 500. Nothing has been stored when this runs: the invite enters
// the room only once it comes back signed.
func inviteFailed(ctx context.Context, server string, err error) error {
	slog.WarnContext(ctx, "remote invite failed", "server", server, "err", err)
	var he gomatrix.HTTPError
	if !errors.As(err, &he) {
		return httputil.Errorf(http.StatusBadGateway, "M_UNKNOWN", "%s could not be reached to deliver the invite", server)
	}
	var me struct {
		Code string `json:"errcode"`
		Msg  string `json:"error"`
	}
	_ = json.Unmarshal(he.Contents, &me)
	switch {
	case he.Code == http.StatusForbidden:
		if me.Msg == "" {
			me.Msg = "no reason given"
		}
		return httputil.Errorf(http.StatusForbidden, "M_FORBIDDEN", "%s refused the invite: %s", server, me.Msg)
	case (he.Code == http.StatusBadRequest || he.Code == http.StatusNotFound) && me.Code != "":
		// e.g. an unknown invitee or a room version the server lacks; a 401
		// is not passed on: the client would take it for its own token
		return httputil.Errorf(he.Code, me.Code, "%s refused the invite: %s", server, me.Msg)
	default:
		return httputil.Errorf(http.StatusBadGateway, "M_UNKNOWN", "%s failed to handle the invite (HTTP %d)", server, he.Code)
	}
}

// sendInvite is PUT /_matrix/federation/v2/invite/{roomId}/{eventId},
// built here rather than with fclient.SendInviteV2: that one answers a 404
// (an unknown invitee) by retrying the v1 endpoint, whose own 404 then
// hides the real reason.
func (s *Service) sendInvite(ctx context.Context, server string, invReq fclient.InviteV2Request) (*fclient.RespInviteV2, error) {
	us := spec.ServerName(s.serverName)
	ev := invReq.Event()
	req := fclient.NewFederationRequest("PUT", us, spec.ServerName(server),
		"/_matrix/federation/v2/invite/"+url.PathEscape(ev.RoomID().String())+"/"+url.PathEscape(ev.EventID()))
	if err := req.SetContent(invReq); err != nil {
		return nil, fmt.Errorf("invite request: %w", err)
	}
	if err := req.Sign(us, gomatrixserverlib.KeyID(s.key.KeyID), s.key.PrivateKey); err != nil {
		return nil, fmt.Errorf("sign invite request: %w", err)
	}
	hreq, err := req.HTTPRequest()
	if err != nil {
		return nil, err
	}
	var res fclient.RespInviteV2
	if err := s.fed.client.DoRequestAndParseResponse(ctx, hreq, &res); err != nil {
		return nil, err
	}
	return &res, nil
}
