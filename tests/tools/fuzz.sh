#!/usr/bin/env bash
# make fuzz: runs every fuzz target of the module (every `func FuzzX(f *testing.F)` under agent/ and nft/), one
# after the other, for FUZZTIME each (default 1m), on the committed corpora (testdata/fuzz) and what Go's cache
# has kept. It prints a table (target, CPU seconds, executions, new corpus entries) and writes it to
# FUZZ_REPORT (default fuzz-report.md in the repository's root). A target that finds a crasher leaves it in its
# testdata/fuzz/<target> (commit it with the fix: it becomes a regression test) and makes the run fail after the
# others ran. FUZZ_ONLY=<regexp> keeps the targets whose name matches.
set -euo pipefail
cd "$(dirname "$0")/../.."
FUZZTIME=${FUZZTIME:-1m}
FUZZ_REPORT=${FUZZ_REPORT:-fuzz-report.md}
GO=${GO:-go}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

targets=()
while IFS= read -r line; do
	file=${line%%:*}
	fn=${line#*:func }
	fn=${fn%%(*}
	targets+=("./$(dirname "$file"):$fn")
done < <(grep -rH --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' agent nft | sort)
if [ -n "${FUZZ_ONLY:-}" ]; then
	kept=()
	for t in "${targets[@]}"; do [[ ${t##*:} =~ $FUZZ_ONLY ]] && kept+=("$t"); done
	targets=("${kept[@]}")
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no target" >&2; exit 1; }

{
	echo "| target | package | CPU s | executions | new corpus entries | result |"
	echo "|---|---|---|---|---|---|"
} >"$FUZZ_REPORT"
failed=0 total_cpu=0
for t in "${targets[@]}"; do
	pkg=${t%%:*} fn=${t##*:}
	log=$logs/$fn.log
	echo "fuzz $fn ($pkg) for $FUZZTIME" >&2
	# The CPU time of the go command and of everything it waited for: the build, the test binary, its workers.
	before=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
	set +e
	$GO test -run='^$' -fuzz="^$fn\$" -fuzztime="$FUZZTIME" "$pkg" >"$log" 2>&1
	rc=$?
	set -e
	after=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
	cpu=$(awk -v a="$before" -v b="$after" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.0f", (b-a)/hz}')
	total_cpu=$((total_cpu + cpu))
	last=$(grep -E '^fuzz: elapsed: .*execs: ' "$log" | tail -1 || true)
	execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")
	newc=$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")
	result=ok
	if [ $rc -ne 0 ]; then
		if grep -qx '    context deadline exceeded' "$log" && [ -z "$(git status --porcelain "$pkg/testdata/fuzz/$fn")" ]; then
			result="ok (Go's -fuzztime race, golang/go#75804: no crasher)"
		else
			result="FAILED: $(grep -m1 -E 'Failing input written to|panic:|--- FAIL' "$log" || echo "exit $rc")"
			failed=1
			cat "$log" >&2
		fi
	fi
	echo "| $fn | ${pkg#./} | $cpu | ${execs:-?} | ${newc:-?} | $result |" >>"$FUZZ_REPORT"
done
echo "| all ${#targets[@]} targets | | $total_cpu | | | |" >>"$FUZZ_REPORT"
cat "$FUZZ_REPORT"
exit $failed
