package homeserver

import (
	"praxis/federation"
)

// setupFederationRooms plugs federation into the room authority (remote
// joins, invites, leaves) and mounts the membership, room-read and query
// endpoints of the federation API. It runs after setupFederation.
func (s *Server) setupFederationRooms() {
	f := s.Fed
	s.Rooms.SetFederation(f.Client, f.Ring, f.Allow.Allowed)
	rooms := &federation.Rooms{API: f.API, Rooms: s.Rooms, Profiles: s.Users, Aliases: s.Rooms, Directory: s.Rooms}
	rooms.Routes(s.fedMux)
}
