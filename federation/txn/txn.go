// Package txn processes inbound federation transactions (PUT
// /_matrix/federation/v1/send/{txnId}): limits, deduplication on (origin,
// txnId) in the database, per-room ordered PDU processing with bounded
// parallelism across rooms, and EDU dispatch.
package txn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/roomserver"
)

// Spec limits of one transaction.
const (
	MaxPDUs = 50
	MaxEDUs = 100
)

// roomParallelism bounds how many rooms of one transaction are processed
// at once; events of one room are always processed in order.
const roomParallelism = 4

// processTimeout bounds a transaction's processing, which runs detached
// from the request: a sender that gives up does not abort half a room.
const processTimeout = 2 * time.Minute

// Rooms is the room authority as the processor needs it.
type Rooms interface {
	RoomVersion(ctx context.Context, roomID string) (string, error)
	InputPDUs(ctx context.Context, pdus []gomatrixserverlib.PDU, remote roomserver.RemoteEvents) ([]roomserver.InputOutcome, []error)
	ServerAllowedByACL(ctx context.Context, roomID, server string) (bool, error)
}

// Allowlist is the partner allowlist.
type Allowlist interface {
	Allowed(server string) bool
	AllowedServerOfID(id string) bool
}

// EDUHandler handles one EDU from origin. The processor has checked
// nothing about its content: the handler must check that every user it
// names belongs to origin (a forged EDU about another server's user is
// dropped). An error is logged; EDUs have no per-item result.
type EDUHandler func(ctx context.Context, origin spec.ServerName, content json.RawMessage) error

// Processor runs inbound transactions.
type Processor struct {
	db         *storage.DB
	rooms      Rooms
	verifier   gomatrixserverlib.JSONVerifier
	client     fclient.FederationClient
	allow      Allowlist
	serverName spec.ServerName
	now        func() time.Time

	mu   sync.RWMutex
	edus map[string]EDUHandler

	// lastPurge is when old transaction records were last deleted.
	lastPurge time.Time

	// running dedups a retry that arrives while the first attempt is
	// still being processed in this process.
	runMu   sync.Mutex
	running map[[2]string]*call
}

type call struct {
	done chan struct{}
	resp *Response
	err  error
}

// New returns a processor.
func New(db *storage.DB, rooms Rooms, verifier gomatrixserverlib.JSONVerifier, client fclient.FederationClient, allow Allowlist, serverName string) *Processor {
	return &Processor{
		db: db, rooms: rooms, verifier: verifier, client: client, allow: allow,
		serverName: spec.ServerName(serverName), now: time.Now,
		edus: map[string]EDUHandler{}, running: map[[2]string]*call{},
	}
}

// HandleEDU registers the handler of one EDU type (m.typing, m.receipt,
// m.direct_to_device, m.device_list_update, m.signing_key_update, …).
// EDUs of types without a handler are ignored, as the spec asks.
func (p *Processor) HandleEDU(eduType string, h EDUHandler) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.edus[eduType] = h
}

// Response is the /send response: one result per PDU.
type Response struct {
	PDUs map[string]PDUResult `json:"pdus"`
}

// PDUResult is empty for a processed PDU, else carries the error.
type PDUResult struct {
	Error string `json:"error,omitempty"`
}

type request struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []struct {
		Type    string          `json:"edu_type"`
		Content json.RawMessage `json:"content"`
	} `json:"edus"`
}

// Process implements federation.TxnProcessor.
func (p *Processor) Process(ctx context.Context, origin spec.ServerName, txnID string, body []byte) (any, error) {
	var req request
	if err := httputil.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	if txnID == "" {
		return nil, httputil.InvalidParam("empty transaction ID")
	}
	if req.Origin != "" && req.Origin != string(origin) {
		return nil, httputil.Errorf(http.StatusBadRequest, "M_BAD_JSON", "transaction origin %q does not match the signing server", req.Origin)
	}
	if len(req.PDUs) > MaxPDUs || len(req.EDUs) > MaxEDUs {
		return nil, httputil.Errorf(http.StatusBadRequest, "M_BAD_JSON", "a transaction carries at most %d PDUs and %d EDUs", MaxPDUs, MaxEDUs)
	}
	var stored string
	err := p.db.QueryRow(ctx, `SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2`, string(origin), txnID).Scan(&stored)
	if err == nil {
		return json.RawMessage(stored), nil
	}
	key := [2]string{string(origin), txnID}
	p.runMu.Lock()
	c, dup := p.running[key]
	if !dup {
		c = &call{done: make(chan struct{})}
		p.running[key] = c
	}
	p.runMu.Unlock()
	if !dup {
		go func() {
			defer close(c.done)
			defer func() {
				p.runMu.Lock()
				delete(p.running, key)
				p.runMu.Unlock()
			}()
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), processTimeout)
			defer cancel()
			c.resp, c.err = p.run(pctx, origin, txnID, &req)
		}()
	}
	select {
	case <-c.done:
		return c.resp, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *Processor) run(ctx context.Context, origin spec.ServerName, txnID string, req *request) (*Response, error) {
	resp := &Response{PDUs: map[string]PDUResult{}}
	byRoom := map[string][]gomatrixserverlib.PDU{}
	var roomOrder []string
	// A room's ACL is read once per transaction: every check happens
	// before any of the transaction's PDUs is input, so the answer cannot
	// change in between (a failed read is not remembered and refuses).
	aclOK := map[string]bool{}
	for _, raw := range req.PDUs {
		pdu, id, err := p.parsePDU(ctx, origin, raw)
		if err != nil {
			if id != "" {
				resp.PDUs[id] = PDUResult{Error: err.Error()}
			}
			slog.InfoContext(ctx, "inbound PDU refused", "origin", origin, "event_id", id, "reason", err.Error())
			continue
		}
		room := pdu.RoomID().String()
		ok, seen := aclOK[room]
		if !seen {
			var err error
			if ok, err = p.rooms.ServerAllowedByACL(ctx, room, string(origin)); err == nil {
				aclOK[room] = ok
			}
		}
		if !ok {
			resp.PDUs[id] = PDUResult{Error: "the room's server ACL denies " + string(origin)}
			slog.InfoContext(ctx, "inbound PDU refused by server ACL", "origin", origin, "event_id", id, "room_id", room)
			continue
		}
		if _, ok := byRoom[room]; !ok {
			roomOrder = append(roomOrder, room)
		}
		byRoom[room] = append(byRoom[room], pdu)
	}

	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, roomParallelism)
	remote := &Remote{Client: p.client, Verifier: p.verifier, Origin: p.serverName, Destination: origin}
	for _, room := range roomOrder {
		wg.Add(1)
		sem <- struct{}{}
		go func(pdus []gomatrixserverlib.PDU) {
			defer wg.Done()
			defer func() { <-sem }()
			outcomes, errs := p.rooms.InputPDUs(ctx, pdus, remote)
			for i, pdu := range pdus {
				outcome, err := outcomes[i], errs[i]
				res := PDUResult{}
				switch {
				case err != nil:
					res.Error = publicError(err)
					slog.WarnContext(ctx, "inbound PDU failed", "origin", origin, "event_id", pdu.EventID(), "err", err)
				case outcome == roomserver.InputRejected:
					res.Error = "event rejected by the auth rules"
				}
				mu.Lock()
				resp.PDUs[pdu.EventID()] = res
				mu.Unlock()
			}
		}(byRoom[room])
	}
	wg.Wait()

	for _, edu := range req.EDUs {
		p.mu.RLock()
		h := p.edus[edu.Type]
		p.mu.RUnlock()
		if h == nil {
			continue
		}
		if err := h(ctx, origin, edu.Content); err != nil {
			slog.InfoContext(ctx, "inbound EDU refused", "origin", origin, "edu_type", edu.Type, "reason", err.Error())
		}
	}

	out, err := json.Marshal(resp)
	if err != nil {
		return nil, err
	}
	p.purge(ctx)
	if _, err := p.db.Exec(ctx, `INSERT INTO federation_inbound_txns (origin, txn_id, received_ts, response) VALUES ($1, $2, $3, $4)
		ON CONFLICT (origin, txn_id) DO NOTHING`, string(origin), txnID, p.now().UnixMilli(), string(out)); err != nil {
		return nil, fmt.Errorf("record transaction %s from %s: %w", txnID, origin, err)
	}
	return resp, nil
}

// publicError is what the sending server is told about a failed PDU: the
// Matrix error message, or a generic text for internal errors.
func publicError(err error) string {
	var me *httputil.Error
	if errors.As(err, &me) {
		return me.Message
	}
	if errors.Is(err, roomserver.ErrMissingPrevEvents) {
		return "missing prev events"
	}
	return "could not process event"
}

// parsePDU checks one PDU before any room is locked: the room is known
// to us, hashes (a mismatch redacts), signatures of the sending servers,
// and that every server it names is ours or a partner.
func (p *Processor) parsePDU(ctx context.Context, origin spec.ServerName, raw json.RawMessage) (gomatrixserverlib.PDU, string, error) {
	roomID := gjson.GetBytes(raw, "room_id").String()
	ver, err := p.rooms.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, "", fmt.Errorf("room %q is not known here", roomID)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(ver))
	if err != nil {
		return nil, "", err
	}
	pdu, err := verImpl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, "", fmt.Errorf("invalid event: %w", err)
	}
	id := pdu.EventID()
	if err := p.checkServers(pdu); err != nil {
		return nil, id, err
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, p.verifier, userIDForSender); err != nil {
		return nil, id, fmt.Errorf("bad signature: %w", err)
	}
	return pdu, id, nil
}

// checkServers refuses an event that names a server outside the
// allowlist: its sender, and the user a membership event is about.
func (p *Processor) checkServers(pdu gomatrixserverlib.PDU) error {
	if !p.allow.AllowedServerOfID(string(pdu.SenderID())) {
		return fmt.Errorf("sender %s is not on a partner server", pdu.SenderID())
	}
	if pdu.Type() == spec.MRoomMember && pdu.StateKey() != nil && !p.allow.AllowedServerOfID(*pdu.StateKey()) {
		return fmt.Errorf("member %s is not on a partner server", *pdu.StateKey())
	}
	return nil
}

func userIDForSender(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(s), true)
}

// Remote fetches events from one server for the input pipeline, checking
// each as strictly as a PDU in a transaction.
type Remote struct {
	Client      fclient.FederationClient
	Verifier    gomatrixserverlib.JSONVerifier
	Origin      spec.ServerName // us
	Destination spec.ServerName
}

func (r *Remote) verify(ctx context.Context, ver gomatrixserverlib.RoomVersion, raw []byte) (gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, err
	}
	pdu, err := verImpl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, err
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, r.Verifier, userIDForSender); err != nil {
		return nil, fmt.Errorf("event %s: bad signature: %w", pdu.EventID(), err)
	}
	return pdu, nil
}

// Event implements roomserver.RemoteEvents.
func (r *Remote) Event(ctx context.Context, ver gomatrixserverlib.RoomVersion, eventID string) (gomatrixserverlib.PDU, error) {
	txn, err := r.Client.GetEvent(ctx, r.Origin, r.Destination, eventID)
	if err != nil {
		return nil, fmt.Errorf("fetch %s from %s: %w", eventID, r.Destination, err)
	}
	for _, raw := range txn.PDUs {
		pdu, err := r.verify(ctx, ver, raw)
		if err != nil {
			return nil, err
		}
		if pdu.EventID() == eventID {
			return pdu, nil
		}
	}
	return nil, fmt.Errorf("%s did not return %s", r.Destination, eventID)
}

// MissingEvents implements roomserver.RemoteEvents.
func (r *Remote) MissingEvents(ctx context.Context, ver gomatrixserverlib.RoomVersion, roomID string, earliest, latest []string, limit int, minDepth int64) ([]gomatrixserverlib.PDU, error) {
	res, err := r.Client.LookupMissingEvents(ctx, r.Origin, r.Destination, roomID, fclient.MissingEvents{
		Limit: limit, MinDepth: int(minDepth), EarliestEvents: earliest, LatestEvents: latest,
	}, ver)
	if err != nil {
		return nil, fmt.Errorf("get_missing_events from %s: %w", r.Destination, err)
	}
	out := make([]gomatrixserverlib.PDU, 0, len(res.Events))
	for _, raw := range res.Events {
		pdu, err := r.verify(ctx, ver, raw)
		if err != nil {
			slog.InfoContext(ctx, "missing event refused", "origin", r.Destination, "reason", err.Error())
			continue
		}
		if pdu.RoomID().String() == roomID {
			out = append(out, pdu)
		}
	}
	return out, nil
}

// StateIDs implements roomserver.RemoteState (/state_ids).
func (r *Remote) StateIDs(ctx context.Context, roomID, eventID string) (state, authChain []string, err error) {
	res, err := r.Client.LookupStateIDs(ctx, r.Origin, r.Destination, roomID, eventID)
	if err != nil {
		return nil, nil, fmt.Errorf("state_ids at %s from %s: %w", eventID, r.Destination, err)
	}
	return res.StateEventIDs, res.AuthEventIDs, nil
}

// State implements roomserver.RemoteState (/state). Events with a bad
// signature or of another room are left out (and logged): the caller
// notices what is missing.
func (r *Remote) State(ctx context.Context, ver gomatrixserverlib.RoomVersion, roomID, eventID string) (state, authChain []gomatrixserverlib.PDU, err error) {
	res, err := r.Client.LookupState(ctx, r.Origin, r.Destination, roomID, eventID, ver)
	if err != nil {
		return nil, nil, fmt.Errorf("state at %s from %s: %w", eventID, r.Destination, err)
	}
	check := func(raws gomatrixserverlib.EventJSONs) []gomatrixserverlib.PDU {
		out := make([]gomatrixserverlib.PDU, 0, len(raws))
		for _, raw := range raws {
			pdu, err := r.verify(ctx, ver, raw)
			if err != nil {
				slog.InfoContext(ctx, "state event refused", "origin", r.Destination, "reason", err.Error())
				continue
			}
			if pdu.RoomID().String() == roomID {
				out = append(out, pdu)
			}
		}
		return out
	}
	return check(res.StateEvents), check(res.AuthEvents), nil
}

// serverOf returns the server part of a Matrix ID.
func serverOf(id string) string {
	_, s, _ := strings.Cut(id, ":")
	return s
}

// keepTxns is how long a processed transaction ID is remembered: far
// longer than any sender retries the same transaction.
const keepTxns = 7 * 24 * time.Hour

// purge forgets old transaction records, at most once an hour.
func (p *Processor) purge(ctx context.Context) {
	p.runMu.Lock()
	due := p.now().Sub(p.lastPurge) > time.Hour
	if due {
		p.lastPurge = p.now()
	}
	p.runMu.Unlock()
	if !due {
		return
	}
	if _, err := p.db.Exec(ctx, `DELETE FROM federation_inbound_txns WHERE received_ts < $1`, p.now().Add(-keepTxns).UnixMilli()); err != nil {
		slog.WarnContext(ctx, "purge inbound transactions", "err", err)
	}
}
