#!/usr/bin/env python3
"""Counts test cases from Bazel build-event files and prints "N passed, N failed".

usage: count_results.py NAME=BEP_JSON_FILE[:BAZEL_EXIT_CODE] [NAME=lines:RESULT_FILE[:EXIT_CODE]] [...]

Each test target's log is read for its own counts: Catch2's summary ("All tests passed (A
assertions in C test cases)" or "test cases: T | P passed | F failed"), or a plain
"N passed, N failed" line from a script test. A target that did not build, did not run, crashed,
timed out, or failed without a readable summary counts as one failed case, so no failure can
hide. So does a target whose loading or analysis was aborted, and a Bazel run that failed (exit
code other than 0 or 3, "tests failed") without any failure counted. Exits 1 when anything failed
or nothing ran.

A test that the run's --test_tag_filters left out (tools/test's plain clang configuration skips
the tests tagged "slow") is not counted, only listed, when it built; when it did not build it
counts as one failed case.

A "lines:" file is a suite outside Bazel (tests/vm/run writes one): one line per test case,
"PASS NAME ..." or "FAIL NAME ...", optionally prefixed by a word and ": " ("vm: PASS uname_7_3
(0s)"); other lines (a closing "vm: N passed, N failed") are ignored. Each PASS line counts one
passed case, each FAIL line one failed case. A missing file, a file without any PASS/FAIL line, or
an exit code other than 0 with no FAIL line counts as one failed case.
"""
import json
import re
import sys
from urllib.parse import unquote, urlparse

CATCH_ALL = re.compile(r"All tests passed \((\d+) assertions? in (\d+) test cases?\)")
CATCH_ROW = re.compile(r"^test cases:\s*(\d+)(.*)$", re.M)
PLAIN = re.compile(r"^(?:\w+: )?(\d+) passed, (\d+) failed(?:, \d+ skipped)?$", re.M)


def read_log(uri):
    if not uri.startswith("file://"):
        return None
    try:
        with open(unquote(urlparse(uri).path), encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def counts_from_log(text):
    """(passed, failed) from a test log, or None when it has no summary."""
    m = None
    for m in CATCH_ALL.finditer(text):
        pass
    if m:
        return int(m.group(2)), 0
    rows = list(CATCH_ROW.finditer(text))
    if rows:
        total = int(rows[-1].group(1))
        rest = rows[-1].group(2)
        failed = sum(int(x) for x in re.findall(r"(\d+) failed(?! as expected)", rest))
        return total - failed, failed
    plain = list(PLAIN.finditer(text))
    if plain:
        return int(plain[-1].group(1)), int(plain[-1].group(2))
    if "No tests ran" in text:
        return 0, 1
    return None


def tag_filter(cmdline):
    """(required, excluded) tag sets from the last --test_tag_filters on a Bazel command line."""
    required, excluded = set(), set()
    for arg in cmdline:
        if arg.startswith("--test_tag_filters="):
            required, excluded = set(), set()
            for t in filter(None, arg.split("=", 1)[1].split(",")):
                (excluded if t.startswith("-") else required).add(t.lstrip("-+"))
    return required, excluded


def filtered_out(tags, required, excluded):
    return bool(tags & excluded) or bool(required and not tags & required)


def summarize(name, path, bazel_rc=None):
    tests, results, aborted = [], {}, []
    tags, built, cmdline = {}, {}, []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError as e:
        print(f"[{name}] no build event file ({e}): the build did not start")
        return 0, 1
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        eid = ev.get("id", {})
        if "targetConfigured" in eid:
            kind = ev.get("configured", {}).get("targetKind", "")
            if kind.endswith("_test rule"):
                label = eid["targetConfigured"]["label"]
                tests.append(label)
                tags[label] = set(ev.get("configured", {}).get("tag", []))
        elif "targetCompleted" in eid:
            built[eid["targetCompleted"]["label"]] = ev.get("completed", {}).get("success", False)
        elif "optionsParsed" in eid:
            cmdline = ev.get("optionsParsed", {}).get("cmdLine", [])
        elif "testResult" in eid:
            label = eid["testResult"]["label"]
            results[label] = ev.get("testResult", {})
        if "aborted" in ev:
            label = next((v.get("label") for v in eid.values() if isinstance(v, dict) and v.get("label")), None)
            reason = ev["aborted"].get("reason", "ABORTED")
            if label and reason != "SKIPPED":
                aborted.append((label, reason, ev["aborted"].get("description", "")))
    passed = failed = 0
    required, excluded = tag_filter(cmdline)
    for label in sorted(set(tests)):
        res = results.get(label)
        if res is None and filtered_out(tags.get(label, set()), required, excluded):
            if built.get(label):
                print(f"[{name}] {label}: built, not run in this configuration (--test_tag_filters)")
            else:
                print(f"[{name}] {label}: left out by --test_tag_filters and did not build -> 1 failed")
                failed += 1
            continue
        if res is None:
            print(f"[{name}] {label}: did not build or did not run -> 1 failed")
            failed += 1
            continue
        status = res.get("status", "NO_STATUS")
        log = None
        for out in res.get("testActionOutput", []):
            if out.get("name") == "test.log":
                log = read_log(out.get("uri", ""))
        got = counts_from_log(log) if log is not None else None
        if got is None:
            p, f = (1, 0) if status == "PASSED" else (0, 1)
            how = "no summary in log"
        else:
            p, f = got
            how = "cases"
            if status != "PASSED" and f == 0:
                f = 1  # crashed, leaked or timed out after its summary
                how = "cases, then the binary failed"
        print(f"[{name}] {label}: {status}: {p} passed, {f} failed ({how})")
        passed += p
        failed += f
    seen = set(tests)
    for label, reason, why in sorted(set(aborted)):
        if label not in seen:  # a configured test that did not run is counted above already
            seen.add(label)
            print(f"[{name}] {label}: {reason} {why[:200]} -> 1 failed")
            failed += 1
    if not tests:
        print(f"[{name}] no test targets were configured")
        failed += 1
    if bazel_rc not in (None, 0, 3) and failed == 0:
        print(f"[{name}] bazel exited with code {bazel_rc} -> 1 failed")
        failed += 1
    return passed, failed


RESULT_LINE = re.compile(r"^(?:\w+: )?(PASS|FAIL) (\S+)(.*)$")


def summarize_lines(name, path, rc=None):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        print(f"[{name}] no result file ({e}): the suite did not run -> 1 failed")
        return 0, 1
    passed = failed = 0
    for line in lines:
        m = RESULT_LINE.match(line.strip())
        if not m:
            continue
        if m.group(1) == "PASS":
            passed += 1
        else:
            failed += 1
            print(f"[{name}] {m.group(2)}: FAILED{m.group(3)}")
    if passed + failed == 0:
        print(f"[{name}] {path}: no PASS/FAIL lines -> 1 failed")
        return 0, 1
    if rc not in (None, 0) and failed == 0:
        print(f"[{name}] the suite exited with code {rc} -> 1 failed")
        failed += 1
    print(f"[{name}] {passed} passed, {failed} failed")
    return passed, failed


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    total_p = total_f = 0
    for arg in argv:
        name, _, spec = arg.partition("=")
        lines = spec.startswith("lines:")
        if lines:
            spec = spec[len("lines:"):]
        path, sep, rc = spec.rpartition(":")
        if not sep or not rc.lstrip("-").isdigit():
            path, rc = spec, None
        rc = None if rc is None else int(rc)
        p, f = summarize_lines(name, path, rc) if lines else summarize(name, path, rc)
        total_p += p
        total_f += f
    print(f"{total_p} passed, {total_f} failed")
    return 0 if total_f == 0 and total_p > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
