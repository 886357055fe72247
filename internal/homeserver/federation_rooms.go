package homeserver

import (
	"context"

	"praxis/clientapi"
	"praxis/federation"
)

// setupFederationRooms plugs federation into the room authority (remote
// joins, invites, leaves) and into E2EE (remote keys, to-device, device
// lists), registers the E2EE EDU handlers and mounts the membership,
// room-read, query, user-key and OpenID endpoints. It runs after
// setupFederation.
func (s *Server) setupFederationRooms(bgCtx context.Context, api *clientapi.API) {
	f := s.Fed
	s.Rooms.SetFederation(f.Client, f.Ring, f.Allow.Allowed)
	rooms := &federation.Rooms{API: f.API, Rooms: s.Rooms, Profiles: s.Users, Aliases: s.Rooms, Directory: s.Rooms}
	rooms.Routes(s.fedMux)
	(&federation.Hierarchy{API: f.API, Rooms: s.Rooms}).Routes(s.fedMux)

	openID := &federation.OpenID{DB: s.DB, ServerName: s.Config.ServerName}
	openID.Routes(s.fedMux)
	api.OpenID = openID

	e2ee := &federation.E2EE{API: f.API, Keys: s.E2EE.Keys, Inbox: s.E2EE.Inbox, Queue: f.Sender, DB: s.DB, Notifier: s.Notifier}
	e2ee.Routes(s.fedMux)
	s.E2EE.Keys.SetRemote(e2ee)
	s.E2EE.Inbox.SetRemote(e2ee)
	f.Txn.HandleEDU("m.direct_to_device", e2ee.DirectToDevice)
	f.Txn.HandleEDU("m.device_list_update", e2ee.DeviceListUpdate)
	f.Txn.HandleEDU("m.signing_key_update", e2ee.SigningKeyUpdate)
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		e2ee.RunDeviceLists(bgCtx)
	}()
}
