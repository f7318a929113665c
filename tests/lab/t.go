package lab

// T is the part of testing.TB the lab uses. *testing.T satisfies it; so does the
// demo's own implementation, which is why the lab does not take testing.TB.
type T interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Failed() bool
	Cleanup(func())
	TempDir() string
}
