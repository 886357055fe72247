package config

import (
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"
)

// TestExampleConfigsLoad keeps configs/*.yaml loadable: an example that a
// renamed key or a tightened check broke would be refused on first use.
func TestExampleConfigsLoad(t *testing.T) {
	files, err := filepath.Glob("../../configs/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"praxis.yaml", "postgres.yaml", "turn.yaml"} {
		if !slices.ContainsFunc(files, func(f string) bool { return filepath.Base(f) == want }) {
			t.Errorf("configs/%s is missing", want)
		}
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := Load(Flags{ConfigFile: f}, nil); err != nil {
				t.Fatalf("example does not load: %v", err)
			}
		})
	}
}

// TestTemplateListsEveryKey: the README promises that the generated config
// names every key, so a field added to Config without a template line
// fails here.
func TestTemplateListsEveryKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "praxis.yaml")
	if _, err := WriteDefaultFile(p, ""); err != nil {
		t.Fatal(err)
	}
	v := viper.New()
	v.SetConfigFile(p)
	if err := v.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	inFile := map[string]bool{}
	for _, k := range v.AllKeys() {
		inFile[k] = true
	}
	known := map[string]bool{}
	collectKeys("", reflect.TypeOf(Config{}), known)
	if len(known) < 20 {
		t.Fatalf("collectKeys found only %d keys", len(known))
	}
	for k := range known {
		if !inFile[k] {
			t.Errorf("config key %s is missing from the generated config", k)
		}
	}
}

// TestEveryKeyHasAnEnvironmentVariable sets each key through its PRAXIS_
// variable and checks that the value arrives: scripts set any key this way.
func TestEveryKeyHasAnEnvironmentVariable(t *testing.T) {
	known := map[string]bool{}
	collectKeys("", reflect.TypeOf(Config{}), known)
	v := viper.New()
	setDefaults(v, "", reflect.ValueOf(Defaults()))
	for key := range known {
		t.Run(key, func(t *testing.T) {
			name := "PRAXIS_" + envName(key)
			def := v.Get(key)
			// A value unlike the default, written the way the environment
			// carries it (lists space-separated).
			var val, want string
			switch d := def.(type) {
			case bool:
				val = fmt.Sprint(!d)
			case string:
				val = "x" // may fail validation; then the error must name the key
			case int:
				val = fmt.Sprint(d + 1)
			case int64:
				val = fmt.Sprint(d + 1)
			case float64:
				val = fmt.Sprint(d + 1)
			case time.Duration:
				val, want = "2h", (2 * time.Hour).String()
			case []string:
				val, want = "a.example b.example", "[a.example b.example]"
			default:
				t.Fatalf("no test value for a %T key", def)
			}
			if want == "" {
				want = val
			}
			c, err := Load(Flags{}, []string{name + "=" + val})
			if err != nil {
				if !containsKey(err.Error(), key) && !containsKey(err.Error(), topSection(key)) {
					t.Fatalf("%s=%s refused without naming the key: %v", name, val, err)
				}
				return
			}
			got := lookup(reflect.ValueOf(*c), key)
			if got := fmt.Sprint(got); got != want {
				t.Fatalf("%s=%s: config has %v", name, val, got)
			}
		})
	}
}

func envName(key string) string {
	out := []byte(key)
	for i, c := range out {
		switch {
		case c == '.':
			out[i] = '_'
		case c >= 'a' && c <= 'z':
			out[i] = c - 'a' + 'A'
		}
	}
	return string(out)
}

func containsKey(msg, key string) bool { return key != "" && strings.Contains(msg, key) }

func topSection(key string) string {
	section, _, _ := strings.Cut(key, ".")
	return section
}

// lookup returns the field of c that the dotted mapstructure key names.
func lookup(v reflect.Value, key string) any {
	head, rest, _ := strings.Cut(key, ".")
	for i := range v.NumField() {
		if v.Type().Field(i).Tag.Get("mapstructure") != head {
			continue
		}
		if rest == "" {
			return v.Field(i).Interface()
		}
		return lookup(v.Field(i), rest)
	}
	return nil
}

// TestUndecodableValuesNameTheirKeys: a value of the wrong type (from the
// file or the environment) is reported like any other problem, one
// "config key K:" line per key, every key at once.
func TestUndecodableValuesNameTheirKeys(t *testing.T) {
	_, err := Load(Flags{ConfigFile: writeFile(t, "limits:\n  max_body_bytes: lots\n")}, []string{"PRAXIS_REGISTRATION_OPEN=maybe", "PRAXIS_TURN_TTL=forever"})
	if err == nil {
		t.Fatal("Load accepted undecodable values")
	}
	msg := err.Error()
	for _, want := range []string{"config key registration.open:", "config key turn.ttl:", "config key limits.max_body_bytes:"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n\n") || strings.Contains(msg, "decoding failed") {
		t.Errorf("error keeps the decoder's header: %q", msg)
	}
}
