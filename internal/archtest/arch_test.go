// Package archtest enforces the dependency rules of docs/architecture.md:
// a forbidden import fails the build's tests rather than a code review.
package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "praxis"

type file struct {
	pkg     string // import path of the file's package
	path    string
	test    bool
	imports []string
}

func loadFiles(t *testing.T) []file {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	var out []file
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if p != root && (strings.HasPrefix(name, ".") || name == "data" || name == "bin" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		fl := file{pkg: module + "/" + filepath.ToSlash(rel), path: p, test: strings.HasSuffix(p, "_test.go")}
		if rel == "." {
			fl.pkg = module
		}
		for _, imp := range f.Imports {
			s, _ := strconv.Unquote(imp.Path.Value)
			fl.imports = append(fl.imports, s)
		}
		out = append(out, fl)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no Go files found: the test is not looking at the repository")
	}
	return out
}

func under(pkg, prefix string) bool {
	return pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
}

// rule reports a violation message for one import of one file, or "".
type rule struct {
	name  string
	check func(f file, imp string) bool // true = violation
}

var rules = []rule{
	{"roomserver never imports clientapi or federation (keyring excepted: it is our signing key)", func(f file, imp string) bool {
		return under(f.pkg, module+"/roomserver") &&
			(under(imp, module+"/clientapi") || (under(imp, module+"/federation") && !under(imp, module+"/federation/keyring")))
	}},
	{"only internal/config imports viper", func(f file, imp string) bool {
		return under(imp, "github.com/spf13/viper") && !under(f.pkg, module+"/internal/config")
	}},
	{"only tests import hstest", func(f file, imp string) bool {
		return under(imp, module+"/internal/hstest") && !f.test && !under(f.pkg, module+"/internal/hstest")
	}},
	{"only cmd/ and hstest import the composition root", func(f file, imp string) bool {
		return under(imp, module+"/internal/homeserver") && !under(f.pkg, module+"/cmd") && !under(f.pkg, module+"/internal/hstest") && !f.test
	}},
	{"the server never holds Megolm keys: no mautrix/crypto outside tests, hstest and CLI tools", func(f file, imp string) bool {
		return under(imp, "maunium.net/go/mautrix/crypto") && !f.test &&
			!under(f.pkg, module+"/internal/hstest") && !under(f.pkg, module+"/cmd")
	}},
	{"platform packages do not import service or edge packages", func(f file, imp string) bool {
		platform := under(f.pkg, module+"/internal/storage") || under(f.pkg, module+"/internal/streams") ||
			under(f.pkg, module+"/internal/httputil") || under(f.pkg, module+"/internal/config") || under(f.pkg, module+"/internal/logging")
		if !platform || f.test {
			return false
		}
		for _, p := range []string{"/roomserver", "/clientapi", "/federation", "/crypto", "/internal/users", "/internal/media", "/internal/admin", "/internal/care"} {
			if under(imp, module+p) {
				return true
			}
		}
		return false
	}},
	{"domain services do not import HTTP edges", func(f file, imp string) bool {
		service := under(f.pkg, module+"/internal/users") || under(f.pkg, module+"/crypto") || under(f.pkg, module+"/internal/care")
		return service && !f.test && under(imp, module+"/clientapi")
	}},
}

func TestDependencyRules(t *testing.T) {
	files := loadFiles(t)
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			for _, f := range files {
				for _, imp := range f.imports {
					if r.check(f, imp) {
						rel, _ := filepath.Rel(mustWd(t), f.path)
						t.Errorf("%s imports %s", rel, imp)
					}
				}
			}
		})
	}
}

// TestRulesCanFail guards against a rule set that never fires.
func TestRulesCanFail(t *testing.T) {
	bad := file{pkg: module + "/roomserver", imports: []string{module + "/clientapi"}}
	if !rules[0].check(bad, bad.imports[0]) {
		t.Fatal("roomserver → clientapi was not flagged")
	}
	viperUser := file{pkg: module + "/clientapi"}
	if !rules[1].check(viperUser, "github.com/spf13/viper") {
		t.Fatal("viper outside config was not flagged")
	}
}

func mustWd(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}
