package capture

// Kernel tests of outbound classes: connections of real processes, told apart by
// uid, gid or cgroup v2, land on their workload's port; the others on the default
// port, or nowhere with UnmatchedBypass.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambient-agent/ambient-agent/nft"
)

// The lab's classes: a by uid, b by gid, c by cgroup.
const (
	classAUID   = 4501
	classBGID   = 4502
	unmatchedID = 4503 // neither a class's nor excluded
	classAPort  = 15101
	classBPort  = 15102
	classCPort  = 15103
)

// cgroupPrefix starts the name of every cgroup these tests create, followed by the
// pid of the test process, as nsPrefix does for namespaces.
const cgroupPrefix = "aa-test-"

func classSpec(cg nft.CgroupMatch, unmatchedBypass bool) nft.Spec {
	s := labSpec()
	s.OutboundClasses = []nft.OutboundClass{
		{Name: "a", Port: classAPort, UIDs: []uint32{classAUID}},
		{Name: "b", Port: classBPort, GIDs: []uint32{classBGID}},
		{Name: "c", Port: classCPort, Cgroups: []nft.CgroupMatch{cg}},
	}
	s.UnmatchedBypass = unmatchedBypass
	return s
}

func TestOutboundClasses(t *testing.T) {
	l := newLab(t)
	requireClassTools(t)
	cgDir, cg := newCgroup(t)
	c := install(t, l.a, classSpec(cg, false))
	checkListedWithCgroups(t, l.a, c)

	agent := l.a.listen(t, ":15001")
	classA := l.a.listen(t, ":"+strconv.Itoa(classAPort))
	classB := l.a.listen(t, ":"+strconv.Itoa(classBPort))
	classC := l.a.listen(t, ":"+strconv.Itoa(classCPort))
	peer := l.b.listen(t, ":"+appPort)
	all := []*net.TCPListener{agent, classA, classB, classC, peer}

	for _, dst := range []string{join("10.77.0.2", appPort), join("fd77::2", appPort)} {
		for _, tc := range []struct {
			what   string
			id     *identity
			cgroup string
			want   *net.TCPListener
		}{
			{"class a's uid", &identity{uid: classAUID, gid: unmatchedID}, "", classA},
			{"class b's gid", &identity{uid: unmatchedID, gid: classBGID}, "", classB},
			{"class c's cgroup", nil, cgDir, classC},
			{"unmatched user", &identity{uid: unmatchedID, gid: unmatchedID}, "", agent},
			{"unmatched root", nil, "", agent},
			// Exclusions come first: an excluded user is not captured at all.
			{"excluded uid", &identity{uid: excludedUID, gid: classBGID}, "", peer},
		} {
			t.Run(tc.what+" to "+dst, func(t *testing.T) {
				p := l.a.startClient(t, dst, tc.id, tc.cgroup)
				conn := accepted(t, tc.want, tc.what)
				if tc.want != peer {
					if got := origDst(t, conn); got != netip.MustParseAddrPort(dst) {
						t.Errorf("original destination %s, want %s", got, dst)
					}
				}
				for _, ln := range all {
					if ln != tc.want {
						notAccepted(t, ln, tc.what)
					}
				}
				_ = conn.Close()
				p.wait(t)
			})
		}
	}
	removeAndCheck(t, l.a, c)
}

func TestOutboundClassesUnmatchedBypass(t *testing.T) {
	l := newLab(t)
	requireClassTools(t)
	cgDir, cg := newCgroup(t)
	c := install(t, l.a, classSpec(cg, true))
	checkListedWithCgroups(t, l.a, c)

	agent := l.a.listen(t, ":15001")
	classA := l.a.listen(t, ":"+strconv.Itoa(classAPort))
	classC := l.a.listen(t, ":"+strconv.Itoa(classCPort))
	peer := l.b.listen(t, ":"+appPort)
	all := []*net.TCPListener{agent, classA, classC, peer}

	for _, dst := range []string{join("10.77.0.2", appPort), join("fd77::2", appPort)} {
		for _, tc := range []struct {
			what   string
			id     *identity
			cgroup string
			want   *net.TCPListener
		}{
			{"class a's uid", &identity{uid: classAUID, gid: unmatchedID}, "", classA},
			{"class c's cgroup", nil, cgDir, classC},
			{"unmatched user", &identity{uid: unmatchedID, gid: unmatchedID}, "", peer},
			{"unmatched root", nil, "", peer},
		} {
			t.Run(tc.what+" to "+dst, func(t *testing.T) {
				p := l.a.startClient(t, dst, tc.id, tc.cgroup)
				conn := accepted(t, tc.want, tc.what)
				if tc.want == peer {
					if got := addrPort(conn.LocalAddr()); got != netip.MustParseAddrPort(dst) {
						t.Errorf("reached %s, want %s", got, dst)
					}
				}
				for _, ln := range all {
					if ln != tc.want {
						notAccepted(t, ln, tc.what)
					}
				}
				_ = conn.Close()
				p.wait(t)
			})
		}
	}
	removeAndCheck(t, l.a, c)
}

func TestCgroupPath(t *testing.T) {
	for _, tc := range []struct {
		in    string
		rel   string
		level uint32
		err   string
	}{
		{in: "/system.slice/foo.service", rel: "system.slice/foo.service", level: 2},
		{in: "system.slice/foo.service/", rel: "system.slice/foo.service", level: 2},
		{in: "//user.slice//user-1000.slice", rel: "user.slice/user-1000.slice", level: 2},
		{in: "/a", rel: "a", level: 1},
		{in: "/", err: "root cgroup"},
		{in: "", err: "root cgroup"},
		{in: "/system.slice/../foo", err: ".."},
		{in: strings.Repeat("/a", 256), err: "256 levels"},
	} {
		rel, level, err := cgroupRel(tc.in)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("cgroupRel(%q): error %v, want one about %q", tc.in, err, tc.err)
			}
		case err != nil:
			t.Errorf("cgroupRel(%q): %v", tc.in, err)
		case rel != tc.rel || level != tc.level:
			t.Errorf("cgroupRel(%q) = %q, %d; want %q, %d", tc.in, rel, level, tc.rel, tc.level)
		}
	}
}

func TestCgroupOfMissingUnit(t *testing.T) {
	if _, err := cgroup2Root(); err != nil {
		stopKernelTest(t, "no cgroup v2 to test against: %v", err)
	}
	_, err := Cgroup("/system.slice/aa-test-no-such-unit.service")
	if err == nil || !strings.Contains(err.Error(), "does not exist (is the unit running?)") {
		t.Errorf("Cgroup of a missing directory: %v, want a does-not-exist error", err)
	}
}

// requireClassTools stops the test, as requireKernel does, without the commands
// that run the client processes.
func requireClassTools(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"nsenter", "setpriv", "bash"} {
		if _, err := exec.LookPath(bin); err != nil {
			stopKernelTest(t, "kernel test: needs %s (Debian packages util-linux and bash): %v", bin, err)
		}
	}
}

func stopKernelTest(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// newCgroup creates a cgroup v2 directory below the root for the test, removed at
// its end, and resolves it with Cgroup. Its path is the path for the client
// processes to join.
func newCgroup(t *testing.T) (string, nft.CgroupMatch) {
	t.Helper()
	root, err := cgroup2Root()
	if err != nil {
		stopKernelTest(t, "kernel test: needs cgroup v2: %v", err)
	}
	sweepCgroups(t, root)
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := fmt.Sprintf("%s%d-%s", cgroupPrefix, os.Getpid(), hex.EncodeToString(suffix))
	dir := root + "/" + name
	if err := os.Mkdir(dir, 0o755); err != nil {
		stopKernelTest(t, "kernel test: cannot create cgroup v2 directory: %v", err)
	}
	t.Cleanup(func() { removeCgroup(t, dir) })
	cg, err := Cgroup("/" + name)
	if err != nil {
		t.Fatalf("Cgroup: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if cg.Level != 1 || cg.ID != st.Ino || !strings.HasSuffix(cg.Path, "/"+name) && cg.Path != name {
		t.Fatalf("Cgroup(/%s) = %+v, want level 1, id %d and a path ending in %s", name, cg, st.Ino, name)
	}
	return dir, cg
}

// removeCgroup removes a cgroup directory once the processes that were in it are
// gone; the kernel takes a moment after they are reaped to see it empty.
func removeCgroup(t *testing.T, dir string) {
	var err error
	for range 50 {
		if err = unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("remove cgroup %s: %v", dir, err)
}

// sweepCgroups removes cgroups left by test processes that died before their
// cleanup ran.
func sweepCgroups(t *testing.T, root string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), cgroupPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		if pid, err := strconv.Atoi(pidText); err == nil && unix.Kill(pid, 0) != unix.ESRCH {
			continue
		}
		if err := unix.Rmdir(root + "/" + e.Name()); err != nil {
			t.Logf("sweep: remove cgroup %s: %v", e.Name(), err)
		}
	}
}

// client is a process that connected from a namespace and waits for the other
// end to close.
type client struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

// startClient starts a bash that joins the cgroup directory cgroupDir, if not
// empty, drops to id, if not nil (its real and effective uid and gid, with no
// supplementary groups), and connects to dst from inside the namespace. nsenter,
// unlike `ip netns exec`, leaves /sys alone: the cgroup hierarchy stays visible.
func (ns *netNS) startClient(t *testing.T, dst string, id *identity, cgroupDir string) *client {
	t.Helper()
	host, port, err := net.SplitHostPort(dst)
	if err != nil {
		t.Fatal(err)
	}
	connect := fmt.Sprintf("exec 3<>/dev/tcp/%s/%s || exit 3; read -t 5 -u 3 _; exit 0", host, port)
	args := []string{"--net=" + netnsDir + "/" + ns.name, "--"}
	if id != nil {
		args = append(args, "setpriv", fmt.Sprintf("--reuid=%d", id.uid), fmt.Sprintf("--regid=%d", id.gid), "--clear-groups")
	}
	script := connect
	if cgroupDir != "" {
		// The socket takes the cgroup its process is in when it is created.
		script = fmt.Sprintf("echo $$ > %s/cgroup.procs || exit 4; %s", cgroupDir, connect)
	}
	c := &client{cmd: exec.Command("nsenter", append(args, "bash", "-c", script)...), stderr: &bytes.Buffer{}}
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start client: %v", err)
	}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
			t.Logf("client %s: %s", c.cmd, c.stderr)
		}
	})
	return c
}

// wait checks that the client connected and saw the connection closed.
func (c *client) wait(t *testing.T) {
	t.Helper()
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("client %s: %v: %s", c.cmd, err, c.stderr)
	}
}

// checkListedWithCgroups compares what nft lists with the rendering, running nft
// where it sees /sys/fs/cgroup, so that it prints cgroups as paths (under `ip
// netns exec`, which mounts a fresh /sys, it prints their ids).
func checkListedWithCgroups(t *testing.T, ns *netNS, c *Capture) {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+netnsDir+"/"+ns.name, "--",
		"nft", "list", "table", "inet", nft.TableName).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v: %s", err, out)
	}
	if got, want := oneLine(string(out)), oneLine(c.Installed().String()); got != want {
		t.Errorf("the kernel holds another ruleset than the one rendered\n--- nft list\n%s\n--- rendered\n%s", out, c.Installed())
	}
}

func removeAndCheck(t *testing.T, ns *netNS, c *Capture) {
	t.Helper()
	if err := c.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	checkNoTable(t, ns)
	if rs := ns.mustNft(t, "", "list", "ruleset"); strings.TrimSpace(rs) != "" {
		t.Errorf("Remove left something behind:\n%s", rs)
	}
}
