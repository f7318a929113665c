// Package packaging tests the ways ambient-agent is installed, as a user installs it: the .deb from a
// local apt repository and the tarball's install.sh, each in a freshly booted Debian with systemd as
// PID 1 (systemd-nspawn, private network), through the whole life of the service: enable --now, reload
// with a broken file, stop, kill -9, upgrade, remove, purge. It also lints the .deb and .rpm of both
// architectures and checks that the copyright file names every module linked into the binary.
//
// The booted root is debootstrapped once into a cache outside the repository
// (tests/tools/build-nspawn-root.sh) and booted with --volatile=overlay, so every test starts clean.
// The packages are built by packaging/build.sh, the same builder `make deb rpm tarball` uses.
//
// Needs root, systemd-nspawn, nsenter, debootstrap, dpkg-scanpackages, lintian, rpmlint and rpm. Under CI
// a test that cannot run fails; elsewhere it skips. Nothing here imports the agent's packages: the
// tests drive the built artifacts only.
package packaging
