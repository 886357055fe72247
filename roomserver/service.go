// Package roomserver is the room authority: it builds, signs, auth-checks
// and persists every event, and answers questions about rooms, events and
// state. It never imports clientapi or federation.
package roomserver

import (
	"time"

	"praxis/federation/keyring"
	"praxis/internal/config"
	"praxis/internal/storage"
	"praxis/internal/streams"
)

// Service is the room authority of one node.
type Service struct {
	db         *storage.DB
	notifier   *streams.Notifier
	key        *keyring.SigningKey
	serverName string
	cfg        *config.Config
	now        func() time.Time
}

// New returns the room authority.
func New(db *storage.DB, notifier *streams.Notifier, key *keyring.SigningKey, cfg *config.Config) *Service {
	return &Service{db: db, notifier: notifier, key: key, serverName: cfg.ServerName, cfg: cfg, now: time.Now}
}

// ServerName is this node's name.
func (s *Service) ServerName() string { return s.serverName }
