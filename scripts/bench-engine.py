#!/usr/bin/env python3
"""Engine benchmark (issue point 7): pushmirror against the git CLI at 10,000 branches.

Run it as `scripts/bench-engine.sh` from anywhere. Standard library only (Python >= 3.9).

What it does, all in one temporary directory removed at the end (unless --keep):

1. Builds `target/release/pushmirror` (`cargo build --release --quiet`) unless
   PUSHMIRROR_BIN names a binary.
2. Makes a bare fixture repository with `git fast-import`: a linear history of N commits
   (default 10,000), commit i changing one of 50 small files, branch `bNNNNN` on commit i and
   `main` at the tip; then `git pack-refs --all` and `git repack -ad`, the shape of a server
   repository after gc. Hermetic: HOME in the temporary directory, no global or system git
   config, fixed dates, init.defaultBranch=main.
3. First update to an empty `file://` remote, each run from a fresh `git init --bare` (and, for
   pushmirror, an empty state directory): `pushmirror update` (A) against the issue's baseline
   `git --git-dir=<local> push --porcelain file://<remote> <ref>:<ref>...` with the same N+1
   refs given explicitly (B), and, for reference, the same push with the pattern refspecs
   `refs/heads/*:refs/heads/*` `refs/tags/*:refs/tags/*` (C; --no-pattern leaves it out).
   Interleaved A, B, C, A, B, C... The remote's refs are compared with the local ones after
   the first run of each command, and pushmirror's status must say finished, N+1 created.
4. No-op update against a remote already in sync: the same commands, interleaved; pushmirror
   must report 0 created, 0 updated, 0 deleted.
5. Diagnostics (not part of the targets): `git ls-remote`, `git for-each-ref` and pushmirror's
   start-up alone; one run of each pushmirror case with debug logs in JSON, broken down into
   the git processes it ran and the time spent in pushmirror itself, with pushmirror's own
   peak RSS; and two by-hand variants of the engine's pushes from a scratch repository that
   borrows the local objects (objects/info/alternates), to show where git push spends its
   time and what a fix could gain. `--diagnostics-only` runs just these (about 8 minutes).

Wall time is measured around fork/exec/wait of the command; max RSS is `ru_maxrss` of
os.wait4() (the number GNU time prints as %M: the largest single process of the waited tree,
git children included). `sync` is called before each timed run so the previous run's dirty
pages are not written back during the next one.

Exit status: 0 whether or not the targets are met (it is a measurement); 1 if something fails
(a command exits non-zero, or the remote's refs after the first pushmirror update differ from
the local ones).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchlib import hermetic_env, history_stream, machine

CRATE = Path(__file__).resolve().parent.parent
TARGET_FIRST = 1.2
TARGET_NOOP = 1.5


class BenchError(Exception):
    pass


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Environment and machine








# ---------------------------------------------------------------------------------------------
# Running and timing


def run(argv, env, cwd=None, check=True, stdin=None, capture=True):
    result = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=capture,
        check=False,
    )
    if check and result.returncode != 0:
        raise BenchError(
            f"command failed ({result.returncode}): {' '.join(map(str, argv))[:300]}\n"
            + (result.stderr.decode(errors="replace")[-2000:] if capture else "")
        )
    return result


GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def timed(argv, env, out_path, cwd=None):
    """Runs argv with stdout/stderr to out_path(.err).

    Returns (wall seconds, max RSS KiB, rc, CPU seconds user+sys). Wall time is taken here
    around the whole run. Max RSS and CPU come from GNU time (`-f "%M %U %S"`), whose small
    process is the one that forks the command; without it, from os.wait4(), where the child
    is forked from this Python process and so reports at least Python's own RSS.
    """
    os.sync()
    usage_path = str(out_path) + ".time"
    command = [GNU_TIME, "-q", "-f", "%M %U %S", "-o", usage_path, *argv] if GNU_TIME else argv
    with open(out_path, "wb") as out, open(str(out_path) + ".err", "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        rc = os.waitstatus_to_exitcode(status)
        proc.returncode = rc
    if GNU_TIME:
        try:
            fields = Path(usage_path).read_text().split()[-3:]
            rss, cpu = int(fields[0]), float(fields[1]) + float(fields[2])
        except (OSError, ValueError, IndexError):
            raise BenchError(f"cannot read GNU time output {usage_path}")
    else:
        rss, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    return elapsed, rss, rc, cpu


def poll_hwm(argv, env, out_path, cwd=None):
    """Runs argv once, polling its own VmHWM; returns (seconds, own peak RSS KiB, rc)."""
    os.sync()
    hwm = 0
    with open(out_path, "wb") as out, open(str(out_path) + ".err", "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        status_file = f"/proc/{proc.pid}/status"
        while proc.poll() is None:
            try:
                with open(status_file) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            hwm = max(hwm, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.002)
        elapsed = time.perf_counter() - start
    return elapsed, hwm, proc.returncode


def stats(samples):
    times = [s[0] for s in samples]
    rss = [s[1] for s in samples]
    cpu = [s[3] for s in samples]
    return {
        "cpu_median": statistics.median(cpu),
        "n": len(times),
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "rss_max": max(rss),
        "rss_median": statistics.median(rss),
        "times": times,
    }


# ---------------------------------------------------------------------------------------------
# Fixture


def fast_import_stream(commits):
    """A linear history: commit i changes src/fNN.txt (one of 50 files) to "i"; branch
    b{i:05d} on commit i, main at the tip."""
    parts = history_stream(commits)
    for i in range(commits):
        parts.append(f"reset refs/heads/b{i:05d}\nfrom :{i + 1}\n\n")
    return "".join(parts).encode()


def git(env, git_dir, *args, **kwargs):
    return run(["git", f"--git-dir={git_dir}", *args], env, **kwargs)


def refs_of(env, git_dir):
    out = git(env, git_dir, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads", "refs/tags")
    return out.stdout.decode()


def make_fixture(env, root, commits):
    local = root / "local.git"
    run(["git", "-c", "init.defaultBranch=main", "init", "-q", "--bare", str(local)], env)
    started = time.perf_counter()
    git(env, local, "fast-import", "--quiet", stdin=fast_import_stream(commits))
    git(env, local, "pack-refs", "--all")
    git(env, local, "repack", "-adq")
    elapsed = time.perf_counter() - started
    refs = refs_of(env, local).splitlines()
    if len(refs) != commits + 1:
        raise BenchError(f"fixture has {len(refs)} refs, expected {commits + 1}")
    head = git(env, local, "symbolic-ref", "HEAD").stdout.decode().strip()
    if head != "refs/heads/main":
        raise BenchError(f"fixture HEAD is {head}")
    counts = dict(
        line.split(": ", 1)
        for line in git(env, local, "count-objects", "-v").stdout.decode().splitlines()
    )
    return local, {
        "commits": commits,
        "refs": len(refs),
        "objects": int(counts.get("in-pack", 0)) + int(counts.get("count", 0)),
        "pack_kib": int(counts.get("size-pack", 0)),
        "seconds": elapsed,
    }


def fresh_remote(env, remote):
    if remote.exists():
        shutil.rmtree(remote)
    run(["git", "-c", "init.defaultBranch=main", "init", "-q", "--bare", str(remote)], env)


def write_config(path, local, remote, log_format="text"):
    path.write_text(
        "[daemon]\n"
        'state_dir = "state"\n'
        f'log_format = "{log_format}"\n'
        "[[mirror]]\n"
        'name = "bench"\n'
        f"repo = {json.dumps(str(local))}\n"
        f"url = {json.dumps('file://' + str(remote))}\n"
    )


# ---------------------------------------------------------------------------------------------
# Diagnostics: where pushmirror's time goes


def parse_json_log(stderr_text):
    events = []
    for line in stderr_text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def breakdown(events, total_seconds):
    """Returns the git processes pushmirror ran (operation, ms, refs in argv) and the rest."""
    gits = []
    for event in events:
        fields = event.get("fields", {})
        if fields.get("message") == "git finished":
            gits.append({"operation": fields.get("operation"), "ms": int(fields.get("elapsed_ms", 0))})
    planned = [e["fields"] for e in events if e.get("fields", {}).get("message") == "planned"]
    stamps = []
    for event in events:
        try:
            stamps.append(datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")))
        except (KeyError, ValueError):
            pass
    logged_span = (max(stamps) - min(stamps)).total_seconds() * 1000 if len(stamps) >= 2 else None
    git_ms = sum(g["ms"] for g in gits)
    return {
        "gits": gits,
        "git_ms": git_ms,
        "total_ms": total_seconds * 1000,
        "outside_git_ms": total_seconds * 1000 - git_ms,
        "logged_span_ms": logged_span,
        "planned": planned,
    }


def describe_breakdown(b):
    parts = ", ".join(f"{g['operation']} {g['ms']} ms" for g in b["gits"])
    return (
        f"{b['total_ms']:.0f} ms wall = git children {b['git_ms']} ms ({parts}) "
        f"+ {b['outside_git_ms']:.0f} ms in pushmirror (start-up, config, lock, libgit2 ref read "
        f"and planning, status file)"
    )


# ---------------------------------------------------------------------------------------------
# Report

COMMANDS = (
    ("pm", "`pushmirror update`"),
    ("git", "`git push --porcelain` + explicit `<ref>:<ref>` list (baseline)"),
    ("pat", "`git push --porcelain` + `refs/heads/*:refs/heads/*` `refs/tags/*:refs/tags/*` (reference)"),
)


def fmt_s(seconds):
    return f"{seconds:.3f}"


def fmt_mib(kib):
    return f"{kib / 1024:.1f}"


def fmt_ratio(ratio):
    return f"{ratio:.2f}x" if ratio >= 0.01 else f"{ratio:.5f}x"


def verdict(ratio, target):
    return "PASS" if ratio <= target else "FAIL"


def markdown(info, fixture, argv_note, first, noop, diag, args, total_seconds):
    ratio_first = first["pm"]["median"] / first["git"]["median"]
    ratio_noop = noop["pm"]["median"] / noop["git"]["median"]
    lines = []
    lines.append(
        f"Run {datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')} with "
        f"`scripts/bench-engine.sh` ({args.first_runs} first-update runs and {args.noop_runs} "
        f"no-op runs of each command, interleaved; {total_seconds / 60:.0f} min in all)."
    )
    lines.append("")
    lines.append(f"- Machine: {info['cpu']}, nproc {info['nproc']}, {info['memory']} RAM; "
                 f"{info['kernel']}; load average at start {info['load']} (shared machine)")
    lines.append(f"- Tools: {info['git']}; {info['rustc']}; Python {info['python']}")
    lines.append(
        f"- Fixture: {fixture['commits']} commits in a line, {fixture['refs']} refs "
        f"(`main` + `b00000`..`b{fixture['commits'] - 1:05d}`, branch i on commit i), "
        f"{fixture['objects']} objects, one pack of {fixture['pack_kib'] / 1024:.1f} MiB, refs "
        f"packed; built in {fixture['seconds']:.1f} s"
    )
    lines.append(f"- Baseline argv: {argv_note}")
    lines.append("")
    lines.append("| case | command | runs | median s | min s | max s | median CPU s | max RSS MiB |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for case, data in (("first update, empty remote", first), ("no-op, remote in sync", noop)):
        for key, label in COMMANDS:
            if key not in data:
                continue
            s = data[key]
            lines.append(
                f"| {case} | {label} | {s['n']} | {fmt_s(s['median'])} | {fmt_s(s['min'])} | "
                f"{fmt_s(s['max'])} | {fmt_s(s['cpu_median'])} | {fmt_mib(s['rss_max'])} |"
            )
    lines.append("")
    lines.append("| target (issue point 7) | pushmirror / baseline, medians | limit | result |")
    lines.append("|---|---:|---:|---|")
    lines.append(f"| first update | {fmt_ratio(ratio_first)} | {TARGET_FIRST}x | {verdict(ratio_first, TARGET_FIRST)} |")
    lines.append(f"| no-op update | {fmt_ratio(ratio_noop)} | {TARGET_NOOP}x | {verdict(ratio_noop, TARGET_NOOP)} |")
    if "pat" in first and "pat" in noop:
        rf = first["pm"]["median"] / first["pat"]["median"]
        rn = noop["pm"]["median"] / noop["pat"]["median"]
        lines.append(
            f"| first update, against the pattern-refspec push | {fmt_ratio(rf)} | {TARGET_FIRST}x | "
            f"{verdict(rf, TARGET_FIRST)} (reference, not the issue's baseline) |"
        )
        lines.append(
            f"| no-op update, against the pattern-refspec push | {fmt_ratio(rn)} | {TARGET_NOOP}x | "
            f"{verdict(rn, TARGET_NOOP)} (reference, not the issue's baseline) |"
        )
    lines.append("")
    if diag:
        lines.append("Diagnostics (outside the interleaved runs):")
        lines.append("")
        for key, text in diag.items():
            lines.append(f"- {key}: {text}")
        lines.append("")
    lines.append("All wall-time samples, in run order (seconds):")
    lines.append("")
    for case, data in (("first", first), ("no-op", noop)):
        for key, _ in COMMANDS:
            if key in data:
                lines.append(f"- {case} {key}: " + " ".join(fmt_s(t) for t in data[key]["times"]))
    lines.append("")
    lines.append(
        "Wall time is measured around each command; CPU (user+sys) and max RSS come from "
        + ("GNU time (`%U %S %M`)" if GNU_TIME else "os.wait4()")
        + ". Max RSS is the largest single process of the command's tree, git children "
        "(pack-objects, receive-pack, index-pack) included. `pm` = pushmirror, `git` = the "
        "baseline, `pat` = the pattern-refspec reference."
    )
    return "\n".join(lines) + "\n", ratio_first, ratio_noop


# ---------------------------------------------------------------------------------------------
# Main


def build_binary():
    configured = os.environ.get("PUSHMIRROR_BIN")
    if configured:
        path = Path(configured).resolve()
        if not os.access(path, os.X_OK):
            raise BenchError(f"PUSHMIRROR_BIN={configured} is not executable")
        return path
    log("building: cargo build --release --quiet (may wait for a cargo lock)")
    result = subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=CRATE, check=False)
    if result.returncode != 0:
        raise BenchError("cargo build --release failed")
    return CRATE / "target" / "release" / "pushmirror"


def check_finished(out_path, what):
    text = Path(out_path).read_text(errors="replace")
    if "finished" not in text:
        err = Path(str(out_path) + ".err").read_text(errors="replace")
        raise BenchError(f"{what}: pushmirror did not report finished:\n{text}\n{err[-2000:]}")
    return text.strip()


def check_rc(sample, out, what):
    if sample[2] != 0:
        err = Path(str(out) + ".err").read_text(errors="replace")
        raise BenchError(f"{what} exited {sample[2]}:\n{err[-3000:]}")


def compare_refs(expected, actual, what):
    if actual == expected:
        return
    missing = set(expected.splitlines()) - set(actual.splitlines())
    extra = set(actual.splitlines()) - set(expected.splitlines())
    raise BenchError(
        f"{what}: remote refs differ from the local ones: {len(missing)} missing or different, "
        f"{len(extra)} extra; e.g. {sorted(missing)[:3]} {sorted(extra)[:3]}"
    )


def median_ms(samples):
    return f"{statistics.median(s[0] for s in samples) * 1000:.0f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--markdown", metavar="FILE", help="also write the markdown block to FILE")
    parser.add_argument("--branches", type=int, default=10_000, help="branches (commits) in the fixture")
    parser.add_argument("--first-runs", type=int, default=5, help="runs of each first-update command")
    parser.add_argument("--noop-runs", type=int, default=10, help="runs of each no-op command")
    parser.add_argument("--no-pattern", action="store_true", help="skip the pattern-refspec reference")
    parser.add_argument("--no-diagnostics", action="store_true", help="skip the diagnostic runs")
    parser.add_argument("--diagnostics-only", action="store_true",
                        help="only the fixture, one pushmirror first update and the diagnostics")
    args = parser.parse_args()
    if args.first_runs < 1 or args.noop_runs < 1 or args.branches < 2:
        parser.error("--first-runs and --noop-runs must be at least 1, --branches at least 2")
    bench_started = time.perf_counter()

    info = machine()
    log("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    binary = build_binary()
    log(f"pushmirror: {binary}; max RSS via {GNU_TIME or 'os.wait4 (no /usr/bin/time)'}")

    root = Path(tempfile.mkdtemp(prefix="pushmirror-bench-"))
    log(f"work directory: {root}")
    try:
        home = root / "home"
        home.mkdir()
        env = hermetic_env(home)
        logs = root / "logs"
        logs.mkdir()

        log(f"fixture: {args.branches} commits and branches with git fast-import")
        local, fixture = make_fixture(env, root, args.branches)
        log(f"fixture: {fixture}")
        local_refs = refs_of(env, local)

        remote = root / "remote.git"
        url = f"file://{remote}"
        config = root / "pushmirror.toml"
        write_config(config, local, remote)
        state = root / "state"
        pm_update = [str(binary), "--config", str(config), "update", "bench"]
        pm_status = [str(binary), "--config", str(config), "status", "--json", "bench"]

        refnames = [line.split(" ", 1)[1] for line in local_refs.splitlines()]
        refspecs = [f"{r}:{r}" for r in refnames]
        patterns = ["refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*"]
        git_push = ["git", f"--git-dir={local}", "push", "--porcelain", url, *refspecs]
        pat_push = ["git", f"--git-dir={local}", "push", "--porcelain", url, *patterns]
        argv_bytes = sum(len(a.encode()) + 1 + 8 for a in git_push)
        env_bytes = sum(len(k) + len(v) + 2 + 8 for k, v in env.items())
        arg_max = os.sysconf("SC_ARG_MAX")
        if argv_bytes + env_bytes > arg_max * 0.9:
            git_push = pat_push
            argv_note = (f"the explicit list ({argv_bytes} bytes) does not fit ARG_MAX {arg_max}; "
                         "the pattern refspecs are used instead")
        else:
            argv_note = (f"{len(refspecs)} explicit `<ref>:<ref>` arguments, "
                         f"~{argv_bytes // 1024} KiB of argv (ARG_MAX {arg_max // 1024} KiB)")
        log(f"baseline: {argv_note}")
        commands = {"pm": pm_update, "git": git_push}
        if not args.no_pattern:
            commands["pat"] = pat_push

        # -- First update ---------------------------------------------------------------------
        first = {key: [] for key in commands}
        for i in range(0 if args.diagnostics_only else args.first_runs):
            for key, argv in commands.items():
                fresh_remote(env, remote)
                if key == "pm":
                    shutil.rmtree(state, ignore_errors=True)
                out = logs / f"first-{key}-{i}.out"
                sample = timed(argv, env, out, cwd=root)
                check_rc(sample, out, f"first update ({key}, run {i + 1})")
                if i == 0:
                    compare_refs(local_refs, refs_of(env, remote), f"after the first update ({key})")
                    if key == "pm":
                        summary = check_finished(out, "first update")
                        status = json.loads(run(pm_status, env, cwd=root).stdout)
                        entry = status["mirrors"][0] if "mirrors" in status else status
                        if entry.get("update_status") != "finished" or entry.get("refs_created") != len(refnames):
                            raise BenchError(f"unexpected status after the first update: {json.dumps(entry)[:1000]}")
                        log(f"verified: remote refs equal the {len(refnames)} local refs; "
                            f"status finished, refs_created {entry.get('refs_created')}; {summary}")
                first[key].append(sample)
                log(f"first {key} run {i + 1}/{args.first_runs}: {sample[0]:.3f} s, "
                    f"CPU {sample[3]:.2f} s, max RSS {fmt_mib(sample[1])} MiB")

        # -- No-op update ---------------------------------------------------------------------
        fresh_remote(env, remote)
        shutil.rmtree(state, ignore_errors=True)
        run(pm_update, env, cwd=root)
        compare_refs(local_refs, refs_of(env, remote), "before the no-op runs")
        noop = {key: [] for key in commands}
        for i in range(0 if args.diagnostics_only else args.noop_runs):
            for key, argv in commands.items():
                out = logs / f"noop-{key}-{i}.out"
                sample = timed(argv, env, out, cwd=root)
                check_rc(sample, out, f"no-op update ({key}, run {i + 1})")
                if key == "pm":
                    summary = check_finished(out, "no-op update")
                    if "0 created, 0 updated, 0 deleted" not in summary:
                        raise BenchError(f"the no-op update changed something: {summary}")
                noop[key].append(sample)
                log(f"no-op {key} run {i + 1}/{args.noop_runs}: {sample[0]:.3f} s, "
                    f"CPU {sample[3]:.2f} s, max RSS {fmt_mib(sample[1])} MiB")
        compare_refs(local_refs, refs_of(env, remote), "after the no-op runs")

        # -- Diagnostics ----------------------------------------------------------------------
        diag = {}
        if args.diagnostics_only or not args.no_diagnostics:
            diag.update(diagnostics(env, root, logs, local, remote, url, binary, state, refnames, local_refs))

        total = time.perf_counter() - bench_started
        if args.diagnostics_only:
            text = "Diagnostics only (`--diagnostics-only`):\n\n" + "".join(
                f"- {key}: {value}\n" for key, value in diag.items())
            print(text)
            if args.markdown:
                Path(args.markdown).write_text(text)
            return 0
        text, _, _ = markdown(
            info, fixture, argv_note, {k: stats(v) for k, v in first.items()},
            {k: stats(v) for k, v in noop.items()}, diag, args, total,
        )
        print(text)
        if args.markdown:
            Path(args.markdown).write_text(text)
            log(f"markdown written to {args.markdown}")
        if args.keep:
            log(f"kept: {root}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def diagnostics(env, root, logs, local, remote, url, binary, state, refnames, local_refs):
    """Single or few runs that show where the time goes; the remote is in sync on entry."""
    diag = {}
    log("diagnostics")
    ls_remote = ["git", f"--git-dir={local}", "ls-remote", "--symref", url, "refs/heads/*", "refs/tags/*"]
    samples = [timed(ls_remote, env, logs / f"ls-remote-{i}.out") for i in range(5)]
    diag["`git ls-remote --symref` of the synced remote alone (median of 5)"] = median_ms(samples)
    for_each_ref = ["git", f"--git-dir={local}", "for-each-ref", "--format=%(objectname) %(refname)",
                    "refs/heads", "refs/tags"]
    samples = [timed(for_each_ref, env, logs / f"for-each-ref-{i}.out") for i in range(5)]
    diag["`git for-each-ref` of the local refs (median of 5; the work of the libgit2 read)"] = median_ms(samples)
    samples = [timed([str(binary), "--version"], env, logs / f"version-{i}.out") for i in range(5)]
    diag["`pushmirror --version`, process start-up (median of 5)"] = median_ms(samples)

    # pushmirror with debug logs in JSON: the git processes it ran and its own time.
    debug_config = root / "pushmirror-debug.toml"
    write_config(debug_config, local, remote, log_format="json")
    debug_env = dict(env, RUST_LOG="pushmirror=debug")
    pm_debug = [str(binary), "--config", str(debug_config), "update", "bench"]
    noop_runs = []
    for i in range(3):
        out = logs / f"debug-noop-{i}.out"
        seconds, hwm, rc = poll_hwm(pm_debug, debug_env, out, cwd=root)
        if rc != 0:
            raise BenchError("the diagnostic no-op update failed")
        events = parse_json_log(Path(str(out) + ".err").read_text(errors="replace"))
        noop_runs.append((seconds, breakdown(events, seconds), hwm))
    noop_runs.sort(key=lambda x: x[0])
    _, b, hwm = noop_runs[1]
    diag["pushmirror no-op with RUST_LOG=pushmirror=debug (median of 3)"] = (
        describe_breakdown(b) + f"; pushmirror's own peak RSS (VmHWM) {fmt_mib(hwm)} MiB"
    )

    fresh_remote(env, remote)
    shutil.rmtree(state, ignore_errors=True)
    out = logs / "debug-first.out"
    seconds, hwm, rc = poll_hwm(pm_debug, debug_env, out, cwd=root)
    if rc != 0:
        raise BenchError("the diagnostic first update failed")
    events = parse_json_log(Path(str(out) + ".err").read_text(errors="replace"))
    b = breakdown(events, seconds)
    pushes = [e["fields"] for e in events
              if e.get("fields", {}).get("message") == "running git"
              and e["fields"].get("operation") == "push"]
    diag["pushmirror first update with RUST_LOG=pushmirror=debug (1 run)"] = (
        describe_breakdown(b) + f"; {len(pushes)} `git push` processes; "
        f"pushmirror's own peak RSS (VmHWM) {fmt_mib(hwm)} MiB"
    )

    # Where the git push time goes. git matches every explicit refspec against every local ref
    # (twice) and, once the remote has any ref, against every remote ref; patterns go through
    # a sorted index. Two by-hand variants of the engine's first update (`main` alone, then the
    # rest), each from a scratch repository that borrows the local objects through
    # objects/info/alternates:
    oid_of = dict(reversed(line.split(" ", 1)) for line in local_refs.splitlines())
    main_ref = "refs/heads/main"
    rest = [f"{oid_of[r]}:{r}" for r in refnames if r != main_ref]
    first_push = f"{oid_of[main_ref]}:{main_ref}"

    def scratch_repo(name, with_refs):
        path = root / name
        run(["git", "init", "-q", "--bare", str(path)], env)
        (path / "objects" / "info" / "alternates").write_text(str(local / "objects") + "\n")
        if with_refs:
            (path / "packed-refs").write_text("# pack-refs with: peeled fully-peeled sorted \n" + local_refs)
        return path

    def two_pushes(git_dir, second_args, runs, tag):
        base = ["git", f"--git-dir={git_dir}", "push", "--porcelain", "--no-verify", "--no-follow-tags", url]
        samples = []
        for i in range(runs):
            fresh_remote(env, remote)
            a_out, b_out = logs / f"{tag}-a-{i}.out", logs / f"{tag}-b-{i}.out"
            a = timed([*base, first_push], env, a_out)
            check_rc(a, a_out, f"{tag}: the default-branch push")
            b = timed([*base, *second_args], env, b_out)
            check_rc(b, b_out, f"{tag}: the second push")
            if i == 0:
                compare_refs(local_refs, refs_of(env, remote), f"after {tag}")
            samples.append((a[0] + b[0], a[0], b[0]))
        samples.sort()
        mid = samples[len(samples) // 2]
        return f"{mid[0] * 1000:.0f} ms ({mid[1] * 1000:.0f} + {mid[2] * 1000:.0f})"

    # (1) The engine's explicit `<oid>:<ref>` argv, from a scratch repository without refs:
    # removes the local-ref term, keeps the remote-ref one (the remote has `main` by then).
    log("diagnostics: explicit refspecs from a ref-less scratch repository (about a minute)")
    diag["by hand, the engine's explicit `<oid>:<ref>` argv (`main` alone, then the other "
         f"{len(rest)} refs in one push) from a scratch repository with no refs (1 run)"] = (
        two_pushes(scratch_repo("scratch-norefs.git", False), rest, 1, "scratch-norefs")
    )
    # (2) A possible fix: the scratch repository's refs are exactly the planned `<oid> <ref>`
    # (a packed-refs file), pushed with pattern refspecs.
    log("diagnostics: pattern refspecs from a scratch repository holding the planned refs")
    diag["by hand, a possible fix: scratch repository whose packed-refs holds exactly the "
         "planned refs, `main` alone then `refs/heads/*:refs/heads/*` `refs/tags/*:refs/tags/*` "
         "(median of 3; writing packed-refs not timed)"] = (
        two_pushes(scratch_repo("scratch-planned.git", True),
                   ["refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*"], 3, "scratch-planned")
    )
    return diag


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        log(f"bench-engine: error: {error}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
