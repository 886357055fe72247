package main

import (
	"context"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestCareCommands(t *testing.T) {
	srv, tok := bootstrap(t)
	ctx := context.Background()
	admin := []string{"--server", srv.URL, "--token", tok}
	mustA := func(args ...string) string { return mustCtl(t, append(admin, args...)...) }
	ctlA := func(args ...string) (int, string, string) { return ctl(t, append(admin, args...)...) }

	out := mustA("practice", "create", "mueller", "--name", "Praxis Müller", "--hours", "mon-fri 08:00-12:00; mon,thu 14:00-18:00", "--emergency-phone", "0800 1")
	if !strings.Contains(out, "created practice mueller (service account @praxis-mueller:hs1.test)") {
		t.Errorf("practice create printed %q", out)
	}
	out = mustA("practice", "show", "mueller")
	for _, want := range []string{"Praxis Müller", "mon 08:00-12:00,14:00-18:00", "thu 08:00-12:00,14:00-18:00", "fri 08:00-12:00", "0800 1", "!"} {
		if !strings.Contains(out, want) {
			t.Errorf("practice show lacks %q:\n%s", want, out)
		}
	}
	mustA("practice", "set", "mueller", "--phone", "030 123")
	if p, _ := srv.Care.Practice(ctx, "mueller"); p.Phone != "030 123" || p.Name != "Praxis Müller" {
		t.Errorf("after practice set: %+v", p)
	}
	if code, _, _ := ctlA("practice", "set", "mueller"); code != 2 {
		t.Errorf("practice set without flags: exit %d, want 2", code)
	}
	if code, _, errOut := ctlA("practice", "create", "Bad ID", "--name", "x"); code != 1 || !strings.Contains(errOut, "M_INVALID_PARAM") {
		t.Errorf("bad practice ID: exit %d, %q", code, errOut)
	}
	mustA("practice", "absence", "mueller", "--from", "2099-07-01", "--until", "2099-07-15", "--note", "Urlaub")
	out = mustA("practice", "absences", "mueller")
	row := regexp.MustCompile(`(?m)^(\d+)\s+2099-07-01.*Urlaub$`).FindStringSubmatch(out)
	if row == nil {
		t.Fatalf("practice absences:\n%s", out)
	}
	mustA("practice", "absences", "mueller", "--delete", row[1])
	if out = mustA("practice", "absences", "mueller"); strings.Contains(out, "Urlaub") {
		t.Errorf("after --delete:\n%s", out)
	}

	// staff
	mustA("user", "create", "drx", "--password", "pw-drx")
	out = mustA("staff", "add", "drx", "--practice", "mueller", "--role", "doctor")
	if !strings.Contains(out, "added @drx:hs1.test as doctor of practice mueller") {
		t.Errorf("staff add printed %q", out)
	}
	mustA("staff", "set-role", "drx", "--practice", "mueller", "--role", "admin")
	out = mustA("staff", "list", "--practice", "mueller")
	if !strings.Contains(out, "@drx:hs1.test") || !strings.Contains(out, "admin") || !strings.Contains(out, "1 staff") {
		t.Errorf("staff list:\n%s", out)
	}
	mustA("staff", "duty", "drx", "--practice", "mueller", "--off")
	if st, _ := srv.Care.StaffOf(ctx, "@drx:hs1.test"); st == nil || st.OnDuty {
		t.Errorf("after staff duty --off: %+v", st)
	}
	mustA("staff", "duty", "drx", "--practice", "mueller")
	srv.Login(t, "drx")
	if out = mustA("staff", "devices", "drx"); !strings.Contains(out, "1 devices") {
		t.Errorf("staff devices:\n%s", out)
	}
	mustA("staff", "logout", "drx", "--all")
	if out = mustA("staff", "devices", "drx"); !strings.Contains(out, "0 devices") {
		t.Errorf("after staff logout --all:\n%s", out)
	}
	if code, _, errOut := ctlA("staff", "devices", "boss"); code != 1 || !strings.Contains(errOut, "not staff") {
		t.Errorf("staff devices of a non-staff account: exit %d, %q", code, errOut)
	}

	// a coupling code: printed, linked, drawn, written; a stock client redeems it
	dir := t.TempDir()
	pngPath := filepath.Join(dir, "qr.png")
	out = mustA("couple", "code", "--practice", "mueller", "--kind", "patient", "--expires", "2d", "--png", pngPath)
	code := regexp.MustCompile(`(?m)^code:\s+(\S+)$`).FindStringSubmatch(out)
	if code == nil || !strings.Contains(out, "https://matrix.to/#/%23couple-"+code[1]+":hs1.test") || !strings.Contains(out, "█") {
		t.Fatalf("couple code printed:\n%s", out)
	}
	f, err := os.Open(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil || img.Bounds().Dx() < 100 {
		t.Errorf("QR PNG: %v, bounds %v", err, img.Bounds())
	}
	patient := srv.Register(t, "anna")
	if _, err := patient.JoinRoom(ctx, "#couple-"+code[1]+":hs1.test", nil); err != nil {
		t.Fatalf("redeem the printed code: %v", err)
	}
	if out = mustA("couple", "list", "--practice", "mueller"); !strings.Contains(out, "@anna:hs1.test") || !strings.Contains(out, "patient_code") {
		t.Errorf("couple list:\n%s", out)
	}
	out = mustA("couple", "codes", "--practice", "mueller")
	id := regexp.MustCompile(`(?m)^(\S+)\s+patient\s+1\s`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("couple codes does not show the used code:\n%s", out)
	}
	mustA("couple", "revoke", id[1], "--practice", "mueller")

	// a practice admin manages their practice only
	mustA("practice", "create", "other", "--name", "Andere Praxis")
	drx := srv.Login(t, "drx")
	mine := []string{"--server", srv.URL, "--token", drx.AccessToken}
	mustCtl(t, append(mine, "practice", "show", "mueller")...)
	if code, _, errOut := ctl(t, append(mine, "practice", "show", "other")...); code != 1 || !strings.Contains(errOut, "M_FORBIDDEN") {
		t.Errorf("practice admin reads another practice: exit %d, %q", code, errOut)
	}
	out = mustCtl(t, append(mine, "--json", "audit", "list")...)
	if strings.Contains(out, `"practice": "other"`) || !strings.Contains(out, "staff.add") {
		t.Errorf("practice admin's audit view:\n%s", out)
	}

	// the audit log has every step, scoped to the practice
	out = mustA("audit", "list", "--practice", "mueller")
	var actions []string
	for _, a := range []string{"practice.create", "practice.update", "practice.absence.add", "practice.absence.delete", "staff.add", "staff.set", "coupling.code.create", "coupling.redeem", "coupling.code.revoke"} {
		if strings.Contains(out, a) {
			actions = append(actions, a)
		}
	}
	if want := []string{"practice.create", "practice.update", "practice.absence.add", "practice.absence.delete", "staff.add", "staff.set", "coupling.code.create", "coupling.redeem", "coupling.code.revoke"}; !reflect.DeepEqual(actions, want) {
		t.Errorf("audit list --practice mueller has %v, want %v:\n%s", actions, want, out)
	}
	if strings.Contains(out, code[1]) {
		t.Error("the audit log shows a coupling code")
	}

	mustA("staff", "remove", "drx", "--practice", "mueller")
	if st, _ := srv.Care.StaffOf(ctx, "@drx:hs1.test"); st != nil {
		t.Errorf("after staff remove: %+v", st)
	}
}

func TestParseHours(t *testing.T) {
	got, err := parseHours("mon-wed 08:00-12:00; fri 08:00-12:00,13:00-15:00")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][][2]string{
		"mon": {{"08:00", "12:00"}}, "tue": {{"08:00", "12:00"}}, "wed": {{"08:00", "12:00"}},
		"fri": {{"08:00", "12:00"}, {"13:00", "15:00"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseHours = %v, want %v", got, want)
	}
	for _, bad := range []string{"monday 08:00-12:00", "mon 08:00", "fri-mon 08:00-12:00"} {
		if _, err := parseHours(bad); err == nil {
			t.Errorf("parseHours(%q) accepted", bad)
		}
	}
}
