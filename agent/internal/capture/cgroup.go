package capture

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ambient-agent/ambient-agent/nft"
)

// cgroupFS is where nft looks for cgroup paths. systemd mounts cgroup v2 there
// (unified hierarchy) or, on hybrid hosts, at its unified subdirectory.
const cgroupFS = "/sys/fs/cgroup"

var cgroup2Mounts = []string{cgroupFS, cgroupFS + "/unified"}

// Cgroup resolves a cgroup v2 path, as /proc/PID/cgroup shows it (e.g.
// "/system.slice/foo.service"), to the match of an nft.OutboundClass: sockets
// opened by processes in that cgroup or below it. It fails when the directory does
// not exist, which for a systemd unit means the unit is not running.
//
// The id is that of the directory now: when the unit restarts, systemd creates
// its cgroup anew, with a new id, and the match must be resolved again.
func Cgroup(unitPath string) (nft.CgroupMatch, error) {
	rel, level, err := cgroupRel(unitPath)
	if err != nil {
		return nft.CgroupMatch{}, fmt.Errorf("capture: cgroup %q: %w", unitPath, err)
	}
	root, err := cgroup2Root()
	if err != nil {
		return nft.CgroupMatch{}, fmt.Errorf("capture: cgroup %q: %w", unitPath, err)
	}
	dir := root + "/" + rel
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nft.CgroupMatch{}, fmt.Errorf("capture: cgroup %q: %s does not exist (is the unit running?)", unitPath, dir)
	case err != nil:
		return nft.CgroupMatch{}, fmt.Errorf("capture: cgroup %q: %w", unitPath, err)
	case !fi.IsDir():
		return nft.CgroupMatch{}, fmt.Errorf("capture: cgroup %q: %s is not a directory", unitPath, dir)
	}
	// The kernel compares cgroup ids, which are the inode numbers of the
	// directories in cgroupfs (on 64-bit hosts, the only ones we build for).
	return nft.CgroupMatch{
		Path:  strings.TrimPrefix(dir, cgroupFS+"/"),
		Level: level,
		ID:    fi.Sys().(*syscall.Stat_t).Ino,
	}, nil
}

// cgroupRel cleans a cgroup path to one relative to the hierarchy's root and
// counts its components: its level.
func cgroupRel(p string) (string, uint32, error) {
	if slices.Contains(strings.Split(p, "/"), "..") {
		return "", 0, errors.New("has a .. component")
	}
	rel := strings.TrimPrefix(path.Clean("/"+p), "/")
	if rel == "" {
		return "", 0, errors.New("the root cgroup holds every process")
	}
	level := strings.Count(rel, "/") + 1
	if level > 255 {
		return "", 0, fmt.Errorf("%d levels deep, nftables matches at most 255", level)
	}
	return rel, uint32(level), nil
}

// cgroup2Root is where cgroup v2 is mounted.
func cgroup2Root() (string, error) {
	for _, dir := range cgroup2Mounts {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return dir, nil
		}
	}
	return "", fmt.Errorf("cgroup v2 is not mounted at %s", strings.Join(cgroup2Mounts, " nor "))
}
