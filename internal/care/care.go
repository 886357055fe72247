// Package care is the health domain: practices and their staff, patients
// coupling with practices by code, the request board where staff pick up
// new requests, the contact policy the server enforces on every local
// membership change, and opening hours with absence notices.
//
// The server never reads messages: everything here is routing data (who
// is coupled with which practice, who claimed which request), never
// content or health data.
package care

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/users"
	"praxis/roomserver"
)

// Account kinds (accounts.kind).
const (
	KindUser    = "user"
	KindStaff   = "staff"
	KindPatient = "patient"
	KindService = "service"
)

// Staff roles.
const (
	RoleAdmin     = "admin"
	RoleDoctor    = "doctor"
	RoleAssistant = "assistant"
)

// Event types of the product's own namespace: unencrypted state, routing
// data only.
const (
	// CouplingEvent sits in a coupling room (state key ""): verified,
	// method, practice, timestamps.
	CouplingEvent = "de.praxis.coupling"
	// RequestEvent sits in the board room, one per coupling room (state
	// key = the coupling room's ID): status, claimed_by, timestamps.
	RequestEvent = "de.praxis.request"
)

// ErrCodeClaimed is the product errcode of a request someone else claimed
// first (409).
const ErrCodeClaimed = "DE.PRAXIS.ALREADY_CLAIMED"

// Rooms is what the care domain needs of the room authority
// (roomserver.Service).
type Rooms interface {
	CreateRoom(ctx context.Context, req roomserver.CreateRoomRequest) (*roomserver.CreateRoomResult, error)
	Join(ctx context.Context, userID, roomIDOrAlias, reason string) (string, error)
	Invite(ctx context.Context, req roomserver.MembershipRequest) (string, error)
	Kick(ctx context.Context, req roomserver.MembershipRequest) error
	Send(ctx context.Context, req roomserver.SendRequest) (string, error)
	JoinedRooms(ctx context.Context, userID string) ([]string, error)
	Membership(ctx context.Context, roomID, userID string) (string, error)
	PropagateProfile(ctx context.Context, userID, displayName, avatarURL string) error
}

// AuditRecord is one administrative action for the audit log.
type AuditRecord struct {
	Actor, Action, Target, Practice string
	Params                          map[string]any
}

// Auditor appends to the audit log inside tx (internal/admin's AuditLog).
type Auditor func(ctx context.Context, tx *storage.DB, r AuditRecord) error

// Service is the care domain of one node.
type Service struct {
	db         *storage.DB
	users      *users.Service
	rooms      Rooms
	audit      Auditor
	serverName string
	// enforce turns the health rules on (care.policy: enforce).
	enforce bool
	now     func() time.Time
	// bg runs the reaction to committed events (board updates, notices
	// after a patient's message). By default inline, right after the
	// commit: one indexed read for an ordinary message, and no goroutine
	// outliving the request (or the database at shutdown).
	bg func(func())
}

// New returns the care domain. enforce is care.policy == "enforce".
func New(db *storage.DB, u *users.Service, rooms Rooms, enforce bool) *Service {
	return &Service{
		db: db, users: u, rooms: rooms, serverName: u.ServerName(), enforce: enforce, now: time.Now,
		audit: func(context.Context, *storage.DB, AuditRecord) error { return nil },
		bg:    func(fn func()) { fn() },
	}
}

// SetAudit installs the audit log.
func (s *Service) SetAudit(a Auditor) { s.audit = a }

// SetClock replaces the time source (tests).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// SetBackground replaces how after-commit work runs (tests run it inline).
func (s *Service) SetBackground(run func(func())) { s.bg = run }

// Enforced reports whether the health rules are on.
func (s *Service) Enforced() bool { return s.enforce }

// orchestrated marks a context in which the server itself acts for the
// care domain (creating a coupling room and joining the patient to it):
// the contact policy lets those events through. Clients cannot set
// context values, so this is no way around the policy.
type orchestrated struct{}

func serverActs(ctx context.Context) context.Context {
	return context.WithValue(ctx, orchestrated{}, true)
}

func isServerAct(ctx context.Context) bool {
	v, _ := ctx.Value(orchestrated{}).(bool)
	return v
}

func errClaimed(by string) error {
	return httputil.Errorf(http.StatusConflict, ErrCodeClaimed, "the request was already claimed by %s", by)
}

func (s *Service) userID(localpart string) string { return "@" + localpart + ":" + s.serverName }

// wrap adds context to an error unless it is already a Matrix error.
func wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*httputil.Error); ok {
		return err
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}
