#!/usr/bin/env python3
"""Large-repository benchmark (issue 13): pushmirror against `git push` with pattern refspecs.

Run it as `scripts/bench-large.sh` from anywhere. Standard library only (Python >= 3.9). As
root it mounts a tmpfs under its temporary directory for every repository and unmounts it at
the end; otherwise it uses the temporary directory as it is.

Fixtures (made by `git fast-import`, refs packed, objects in one pack, hermetic env):
- `base10k`: a linear history of 10,000 commits (commit i changes one of 50 small files),
  `main` at the tip and branch bNNNNN on commit i: 10,001 refs, each branch on its own commit.
- `next10k`: base10k where 1,000 branches (every 10th) have one more commit of their own.
- `base100k`: the same 10,000 commits with 50,000 branches and 50,000 tags (five of each per
  commit) and `main`: 100,001 refs.
- `next100k`: base100k where one branch has one more commit.

Each case runs pushmirror (`pushmirror update`, A) and the pattern push (B) against the same
remote state, interleaved A, B, A, B..., the remote restored from a template before every run
(untimed). B is `git --git-dir=<local> push --porcelain file://<remote>
'+refs/heads/*:refs/heads/*' '+refs/tags/*:refs/tags/*'` (with `--prune` for the delete case),
which forces without leases.

Cases: first sync to an empty remote (10k, 100k; pushmirror's state emptied before each
run); no-op (10k, 100k); 1,000 fast-forwards among 10k (next10k onto base10k, which also
compares the bytes each side sends: the remote keeps every push as a pack,
`transfer.unpackLimit=1`, and the new packs' sizes are summed); 1,000 forced updates among
10k (the remote one commit ahead on them: each is a rewind); 1,000 deletes among 10k (1,000
merged branches only on the remote); one branch among 100k. After the first pushmirror run
of every case the remote's refs must equal the local ones, and the status must be finished.

pushmirror's own peak resident memory (VmHWM, polled) is recorded on every run; `max RSS` is
the largest single process of the command's tree (git children included), from wait4.

Exit status 0 whatever the ratios (a measurement); 1 if anything fails.
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
from datetime import datetime, timezone
from pathlib import Path

from benchlib import DATE, hermetic_env, history_stream, machine

CRATE = Path(__file__).resolve().parent.parent
PATTERNS = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]


class BenchError(Exception):
    pass


def log(message):
    print(message, file=sys.stderr, flush=True)


def run(argv, env, check=True, stdin=None):
    result = subprocess.run(argv, env=env, input=stdin, capture_output=True, check=False)
    if check and result.returncode != 0:
        raise BenchError(
            f"command failed ({result.returncode}): {' '.join(map(str, argv))[:300]}\n"
            + result.stderr.decode(errors="replace")[-2000:]
        )
    return result


def git(env, git_dir, *args, **kwargs):
    return run(["git", f"--git-dir={git_dir}", *args], env, **kwargs)


def timed(argv, env, out_path, poll_pid_hwm=False):
    """Runs argv; returns (wall s, largest process max RSS KiB, rc, own VmHWM KiB)."""
    os.sync()
    hwm = 0
    with open(out_path, "wb") as out, open(str(out_path) + ".err", "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        status_file = f"/proc/{proc.pid}/status"
        if poll_pid_hwm:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                try:
                    with open(status_file) as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                hwm = max(hwm, int(line.split()[1]))
                except OSError:
                    pass
                time.sleep(0.005)
        else:
            _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_maxrss, proc.returncode, hwm


# ---------------------------------------------------------------------------------------------
# Fixtures


def extra_commits(names_and_marks, first_mark):
    """One more commit on each named branch, whose parent is the given mark."""
    parts = []
    for n, (name, parent) in enumerate(names_and_marks):
        message = f"extra {name}\n"
        content = f"extra {name}\n"
        parts.append(
            f"commit {name}\nmark :{first_mark + n}\n"
            f"author Bench <bench@example.com> {DATE + 20_000_000 + n} +0000\n"
            f"committer Bench <bench@example.com> {DATE + 20_000_000 + n} +0000\n"
            f"data {len(message)}\n{message}from :{parent}\n"
            f"M 100644 inline extra/{name.rsplit('/', 1)[-1]}.txt\ndata {len(content)}\n{content}\n"
        )
    return parts


def make_repo(env, path, parts):
    run(["git", "init", "--bare", "-q", str(path)], env)
    git(env, path, "fast-import", "--quiet", stdin="".join(parts).encode())
    git(env, path, "pack-refs", "--all")
    git(env, path, "repack", "-adq")


COMMITS = 10_000


def refs_10k():
    return [f"reset refs/heads/b{i:05d}\nfrom :{i + 1}\n\n" for i in range(COMMITS)]


def refs_100k():
    parts = []
    for i in range(COMMITS):
        for k in range(5):
            parts.append(f"reset refs/heads/b{i:05d}-{k}\nfrom :{i + 1}\n\n")
            parts.append(f"reset refs/tags/t{i:05d}-{k}\nfrom :{i + 1}\n\n")
    return parts


FF_BRANCHES = [i for i in range(5, COMMITS, 10)]  # 1,000 branches


def build_fixtures(env, root):
    history = history_stream(COMMITS)
    fx = {}
    fx["base10k"] = root / "base10k.git"
    make_repo(env, fx["base10k"], history + refs_10k())
    fx["next10k"] = root / "next10k.git"
    extras = extra_commits([(f"refs/heads/b{i:05d}", i + 1) for i in FF_BRANCHES], COMMITS + 1)
    make_repo(env, fx["next10k"], history + refs_10k() + extras)
    fx["base100k"] = root / "base100k.git"
    make_repo(env, fx["base100k"], history + refs_100k())
    fx["next100k"] = root / "next100k.git"
    extras = extra_commits([("refs/heads/b05000-0", 5001)], COMMITS + 1)
    make_repo(env, fx["next100k"], history + refs_100k() + extras)
    return fx


def packed_refs(git_dir):
    refs = {}
    for line in (git_dir / "packed-refs").read_text().splitlines():
        if line.startswith("#") or line.startswith("^"):
            continue
        oid, name = line.split(" ", 1)
        refs[name] = oid
    return refs


def write_packed_refs(git_dir, refs):
    lines = ["# pack-refs with: peeled fully-peeled sorted "]
    lines += [f"{oid} {name}" for name, oid in sorted(refs.items())]
    (git_dir / "packed-refs").write_text("\n".join(lines) + "\n")


def make_template(env, source, path, refs=None):
    """A remote like a gc'd server: source's objects and packed refs (or `refs`), keeping each
    push it receives as a pack."""
    shutil.copytree(source, path, symlinks=True)
    if refs is not None:
        write_packed_refs(path, refs)
    git(env, path, "config", "transfer.unpackLimit", "1")
    return path


def empty_template(env, path):
    run(["git", "init", "--bare", "-q", str(path)], env)
    git(env, path, "config", "transfer.unpackLimit", "1")
    return path


def commit_of(env, git_dir, rev):
    return git(env, git_dir, "rev-parse", rev).stdout.decode().strip()


# ---------------------------------------------------------------------------------------------
# Running


def refs_text(env, git_dir):
    out = git(env, git_dir, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads", "refs/tags")
    return out.stdout.decode()


def pack_bytes(remote):
    return sum(p.stat().st_size for p in (remote / "objects" / "pack").glob("*.pack"))


def run_case(ctx, case):
    """Runs one case: `runs` interleaved pairs; returns its record."""
    env, root, binary = ctx["env"], ctx["root"], ctx["binary"]
    remote = root / "remote.git"
    state = root / "state"
    config = root / "pushmirror.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{state}"\n\n[[mirror]]\nname = "bench"\n'
        f'repo = "{case["local"]}"\nurl = "file://{remote}"\n'
        # The cases force and delete 1,000 refs on purpose: past the mass-change guard.
        f'max_deletes = 0\nmax_forced = 0\n{case.get("extra", "")}\n'
    )
    pm = [str(binary), "--config", str(config), "update", "bench"]
    pat = ["git", f"--git-dir={case['local']}", "push", "--porcelain", *case.get("git_flags", []),
           f"file://{remote}", *PATTERNS]
    samples = {"pm": [], "git": []}
    bytes_sent = {"pm": [], "git": []}
    hwm = []
    for n in range(case["runs"]):
        for who in ("pm", "git"):
            if who == "pm" and not case.get("fresh_state") and not state.exists():
                # A mirror that has synced before: one untimed update records that; the
                # remote is restored after it.
                if remote.exists():
                    shutil.rmtree(remote)
                shutil.copytree(case["template"], remote, symlinks=True)
                run(pm, env)
            if remote.exists():
                shutil.rmtree(remote)
            shutil.copytree(case["template"], remote, symlinks=True)
            before = pack_bytes(remote)
            if who == "pm":
                if case.get("fresh_state"):
                    shutil.rmtree(state, ignore_errors=True)
                wall, rss, rc, own = timed(pm, env, root / "out", poll_pid_hwm=True)
                hwm.append(own)
            else:
                wall, rss, rc, own = timed(pat, env, root / "out")
            if rc not in (0,):
                err = (root / "out.err").read_text(errors="replace")[-2000:]
                raise BenchError(f"{case['name']}: {who} exited {rc}\n{err}")
            bytes_sent[who].append(pack_bytes(remote) - before)
            samples[who].append((wall, rss))
            if n == 0 and refs_text(env, remote) != refs_text(env, case["local"]):
                raise BenchError(f"{case['name']}: after {who} the remote's refs differ from the local ones")
            if n == 0 and who == "pm":
                status = run([str(binary), "--config", str(config), "status", "--json", "bench"], env)
                doc = json.loads(status.stdout)["mirrors"][0]
                if doc.get("update_status") != "finished":
                    raise BenchError(f"{case['name']}: status {doc}")
                case["counts"] = (doc.get("refs_created"), doc.get("refs_updated"), doc.get("refs_deleted"))
        log(f"  {case['name']} run {n + 1}: pm {samples['pm'][-1][0]:.3f} s, git {samples['git'][-1][0]:.3f} s")
    med = {w: statistics.median(s[0] for s in samples[w]) for w in samples}
    return {
        "name": case["name"],
        "limit": case["limit"],
        "runs": case["runs"],
        "pm": med["pm"],
        "git": med["git"],
        "ratio": med["pm"] / med["git"] if med["git"] else float("nan"),
        "pm_times": [s[0] for s in samples["pm"]],
        "git_times": [s[0] for s in samples["git"]],
        "pm_rss": max(s[1] for s in samples["pm"]),
        "git_rss": max(s[1] for s in samples["git"]),
        "pm_hwm": max(hwm) if hwm else 0,
        "bytes": {w: statistics.median(b) for w, b in bytes_sent.items()},
        "counts": case.get("counts"),
    }


def cases(env, fx, root, runs, runs_100k):
    t = root / "templates"
    t.mkdir()
    base10k, next10k, base100k, next100k = fx["base10k"], fx["next10k"], fx["base100k"], fx["next100k"]
    empty = empty_template(env, t / "empty.git")
    synced10k = make_template(env, base10k, t / "synced10k.git")
    synced100k = make_template(env, base100k, t / "synced100k.git")
    # Forced: the remote one commit ahead on 1,000 branches (a rewind for each).
    refs = packed_refs(base10k)
    for i in FF_BRANCHES:
        refs[f"refs/heads/b{i:05d}"] = refs[f"refs/heads/b{i + 1:05d}"]
    ahead10k = make_template(env, base10k, t / "ahead10k.git", refs)
    # Deletes: 1,000 merged branches only on the remote.
    refs = packed_refs(base10k)
    for i in FF_BRANCHES:
        refs[f"refs/heads/gone{i:05d}"] = refs[f"refs/heads/b{i:05d}"]
    extra10k = make_template(env, base10k, t / "extra10k.git", refs)
    return [
        {"name": "first sync, 10,000 branches", "local": base10k, "template": empty,
         "fresh_state": True, "limit": 1.2, "runs": runs},
        {"name": "first sync, 100,000 refs", "local": base100k, "template": empty,
         "fresh_state": True, "limit": 1.2, "runs": runs_100k},
        {"name": "first sync, 100,000 refs, refs_per_push = 10000 (11 pushes)", "local": base100k,
         "template": empty, "fresh_state": True, "limit": None, "runs": runs_100k,
         "extra": "refs_per_push = 10000"},
        # 40 ms a run, where a few ms of noise move the ratio by a tenth: three times the runs.
        {"name": "no-op, 10,000 refs", "local": base10k, "template": synced10k, "limit": 1.1,
         "runs": 3 * runs},
        {"name": "no-op, 100,000 refs", "local": base100k, "template": synced100k, "limit": 1.1,
         "runs": runs_100k},
        {"name": "1,000 fast-forwards among 10,000", "local": next10k, "template": synced10k,
         "limit": 1.2, "runs": runs},
        {"name": "1,000 forced updates among 10,000 (pushmirror with leases)", "local": base10k,
         "template": ahead10k, "limit": 1.5, "runs": runs},
        {"name": "1,000 deletes among 10,000 (git: --prune)", "local": base10k,
         "template": extra10k, "limit": 2.0, "runs": runs, "git_flags": ["--prune"],
         "extra": 'prune = "all"'},
        {"name": "one branch among 100,000", "local": next100k, "template": synced100k,
         "limit": 1.2, "runs": runs_100k},
    ]


# ---------------------------------------------------------------------------------------------
# Report


def markdown(results, info, started, minutes):
    m = info
    out = [
        f"Run {started} with `scripts/bench-large.sh` ({minutes:.0f} min in all).",
        "",
        f"- Machine: {m['cpu']}, nproc {m['nproc']}, {m['memory']} RAM; {m['kernel']}; "
        f"load average at start {m['load']} (shared machine)",
        f"- Tools: {m['git']}; {m['rustc']}; Python {m['python']}",
        f"- Repositories on: {info['fs']}",
        "",
        "| case | runs | pushmirror median s | pattern push median s | ratio | limit | result "
        "| bytes sent pm / git | pm own peak RSS MiB | largest process MiB pm / git |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        # A case without a limit is shown for comparison only.
        ok = "-" if r["limit"] is None else "PASS" if r["ratio"] <= r["limit"] else "FAIL"
        b = r["bytes"]
        out.append(
            f"| {r['name']} | {r['runs']} | {r['pm']:.3f} | {r['git']:.3f} | {r['ratio']:.2f}x | "
            f"{'-' if r['limit'] is None else str(r['limit']) + 'x'} | {ok} | {b['pm']:,} / {b['git']:,} | {r['pm_hwm'] / 1024:.1f} | "
            f"{r['pm_rss'] / 1024:.0f} / {r['git_rss'] / 1024:.0f} |"
        )
    out += ["", "All wall-time samples, in run order (seconds):", ""]
    for r in results:
        pm = " ".join(f"{t:.3f}" for t in r["pm_times"])
        gt = " ".join(f"{t:.3f}" for t in r["git_times"])
        out.append(f"- {r['name']}: pm {pm}; git {gt}; pushmirror counts (created, updated, deleted) {r['counts']}")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="interleaved pairs per 10k case")
    parser.add_argument("--runs-100k", type=int, default=3, help="interleaved pairs per 100k case")
    parser.add_argument("--markdown", type=Path, help="also write the results block here")
    parser.add_argument("--only", help="run only the cases whose name contains one of these |-separated texts")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    binary = os.environ.get("PUSHMIRROR_BIN")
    if binary:
        binary = Path(binary).resolve()
    else:
        run(["cargo", "build", "--release", "--quiet"], dict(os.environ), check=True)
        binary = CRATE / "target" / "release" / "pushmirror"
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="pushmirror-bench-large-"))
    mounted = False
    info = machine()
    info["fs"] = "the temporary directory's file system"
    try:
        if os.geteuid() == 0:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4g", "tmpfs", str(root)],
                               capture_output=True, check=False)
            mounted = r.returncode == 0
            if mounted:
                info["fs"] = "a tmpfs (local, remote, state directory)"
        env = hermetic_env(root / "home")
        (root / "home").mkdir()
        log(f"pushmirror: {binary}; directory {root} ({info['fs']})")
        fx = build_fixtures(env, root)
        log(f"fixtures built in {time.perf_counter() - t0:.1f} s")
        ctx = {"env": env, "root": root, "binary": binary}
        results = []
        for case in cases(env, fx, root, args.runs, args.runs_100k):
            if args.only and not any(part in case["name"] for part in args.only.split("|")):
                continue
            log(f"case: {case['name']}")
            results.append(run_case(ctx, case))
        text = markdown(results, info, started, (time.perf_counter() - t0) / 60)
        print(text)
        if args.markdown:
            args.markdown.write_text(text)
        return 0
    except BenchError as e:
        log(f"benchmark failed: {e}")
        return 1
    finally:
        if args.keep:
            log(f"kept {root}")
        else:
            if mounted:
                subprocess.run(["umount", str(root)], check=False)
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
