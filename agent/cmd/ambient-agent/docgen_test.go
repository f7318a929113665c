package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var repoPackaging = filepath.Join("..", "..", "..", "packaging")

// The man page and the completions the packages install are what the command table generates now.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	for file, args := range map[string][]string{
		"ambient-agent.8":               {"help", "-man"},
		"completion/ambient-agent.bash": {"completion", "bash"},
		"completion/_ambient-agent":     {"completion", "zsh"},
		"completion/ambient-agent.fish": {"completion", "fish"},
	} {
		code, out, errOut := run(args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		got, err := os.ReadFile(filepath.Join(repoPackaging, file))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != out {
			t.Errorf("packaging/%s is not what `ambient-agent %s` prints: run make generate", file, strings.Join(args, " "))
		}
	}
}

// Every command and every flag of every command is in the man page and in each completion.
func TestGeneratedFilesNameEveryCommandAndFlag(t *testing.T) {
	ds := docs(commands(), nil)
	if len(ds) < 20 {
		t.Fatalf("%d commands documented, want every one", len(ds))
	}
	var man, bash, fish bytes.Buffer
	writeMan(&man, ds)
	writeBash(&bash, ds)
	writeFish(&fish, ds)
	for _, d := range ds {
		if !strings.Contains(man.String(), ".B "+roff("ambient-agent "+d.path[0])) {
			t.Errorf("the man page lacks %s", d.name())
		}
		for _, f := range d.flags {
			if !strings.Contains(man.String(), roff("-"+f.name)) || !strings.Contains(bash.String(), "-"+f.name) ||
				!strings.Contains(fish.String(), "-o "+f.name) {
				t.Errorf("-%s of %s is missing from the man page or a completion", f.name, d.name())
			}
		}
	}
	for _, want := range []string{"ambient-agent probe", "ambient-agent connections", "ambient-agent log-level", "ambient-agent services",
		"ambient-agent peers", "ambient-agent policies", "ambient-agent authz check", "ambient-agent export", "ambient-agent gossip keygen"} {
		if !strings.Contains(man.String(), roff(want)) {
			t.Errorf("the man page lacks %q", want)
		}
	}
}

// The bash completion, sourced in bash, completes commands, subcommands, flags and argument words.
func TestBashCompletionCompletes(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(repoPackaging, "completion", "ambient-agent.bash")
	for _, c := range []struct {
		words string
		want  []string
		not   string
	}{
		{"ambient-agent st", []string{"status"}, "run"},
		{"ambient-agent c", []string{"ca", "certs", "cleanup", "close", "completion", "connections"}, "status"},
		{"ambient-agent ca i", []string{"init", "issue"}, ""},
		{"ambient-agent ca issue -o", []string{"-out"}, ""},
		{"ambient-agent probe -e", []string{"-expect"}, "-config"},
		{"ambient-agent run -", []string{"-config", "-keep-capture", "-supervise", "-h"}, "-json"},
		{"ambient-agent log-level d", []string{"debug"}, ""},
		{"ambient-agent completion f", []string{"fish"}, ""},
	} {
		words := strings.Fields(c.words)
		prog := `source "$1"; COMP_WORDS=(` + strings.Join(words, " ") + `); COMP_CWORD=` + strconv.Itoa(len(words)-1) +
			`; _ambient_agent; printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command(bash, "-c", prog, "bash", script).CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", c.words, err, out)
		}
		got := strings.Fields(string(out))
		for _, w := range c.want {
			if !contains(got, w) {
				t.Errorf("%q completes to %v, want %s among them", c.words, got, w)
			}
		}
		if c.not != "" && contains(got, c.not) {
			t.Errorf("%q completes to %v, which should not hold %s", c.words, got, c.not)
		}
	}
	if out, err := exec.Command(bash, "-c", `source "$1"; complete -p ambient-agent`, "bash", script).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "-F _ambient_agent ambient-agent") {
		t.Errorf("sourcing does not register the completion: %v %s", err, out)
	}
}

func contains(words []string, w string) bool {
	for _, x := range words {
		if x == w {
			return true
		}
	}
	return false
}

// The zsh and fish completions parse in their shells (CI installs both; elsewhere a missing shell fails the test
// under CI=true and is skipped otherwise).
func TestZshAndFishCompletionsParse(t *testing.T) {
	for _, c := range []struct{ shell, file string }{{"zsh", "_ambient-agent"}, {"fish", "ambient-agent.fish"}} {
		sh, err := exec.LookPath(c.shell)
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed (.ci/run installs it)", c.shell)
			}
			t.Logf("%s not installed: not checked", c.shell)
			continue
		}
		flag := "-n"
		if c.shell == "fish" {
			flag = "--no-execute"
		}
		if out, err := exec.Command(sh, flag, filepath.Join(repoPackaging, "completion", c.file)).CombinedOutput(); err != nil {
			t.Errorf("%s %s %s: %v\n%s", c.shell, flag, c.file, err, out)
		}
		if c.shell == "fish" { // and completes, as fish would at a prompt
			out, err := exec.Command(sh, "-c", `source $argv[1]; complete -C "ambient-agent pro"; complete -C "ambient-agent ca issue -o"`,
				filepath.Join(repoPackaging, "completion", c.file)).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "probe\t") || !strings.Contains(string(out), "-out\t") {
				t.Errorf("fish completes \"ambient-agent pro\" and \"ca issue -o\" to: %v\n%s", err, out)
			}
		}
	}
}
