#!/usr/bin/env python3
"""Daemon and hook benchmarks (issue point 10): what `pushmirror daemon` and its post-receive
hook cost, each beside a baseline measured in the same run.

Run it as `scripts/bench-daemon.sh` from anywhere (it builds the release binary unless
PUSHMIRROR_BIN names one). Standard library only (Python >= 3.11).

Everything happens in one temporary directory, removed at the end unless --keep: HOME there,
no global or system git configuration, fixed author/committer and dates,
init.defaultBranch=main. The binary is copied there first, so a rebuild of target/ during the
run changes nothing.

1. Hook overhead. Four bare repositories, each with a work clone pushing one small new commit
   per `git push` through file://: no hook; a trivial `#!/bin/sh` hook (`cat >/dev/null`);
   the pushmirror hook with the daemon up (its mirror has delay = "1h", so after the start-up
   sync every push is only queued and no mirroring runs in the background); the pushmirror
   hook with the daemon down (a configuration whose state_dir has no daemon: the hook
   spools; the spool is emptied after each push). Interleaved, --pushes of each. Then
   `pushmirror notify` alone, split into its parts.
2. Push-to-mirror latency on a file:// remote, delay = "0s": from `git push` returning to the
   downstream ref equal to the pushed commit (the ref file / packed-refs read every 2 ms).
   Baseline: a hand-written post-receive hook running `git push --mirror` synchronously.
3. Burst: 100 repositories with one mirror each (delay = "2s"); one new commit in each, then
   1,000 notifications (10 per repository, round robin), 16 at a time: as `pushmirror notify`
   processes (the hook), then again (new commits) as requests on 16 socket connections (the
   daemon alone). Counts acknowledged notifications, updates per mirror (status `history`),
   redundant updates, and checks every downstream has the final commit.
4. Idle daemon with 10,000 mirrors (100 repositories x 100 mirrors, each to its own file://
   downstream that already holds the same refs: the downstreams are hard-linked copies of
   the upstream). First start (10,000 first syncs, each an ls-remote that finds nothing to
   push), stop, then the measured second start, with `metrics_listen` set: the daemon's
   `GET /metrics` for 10,000 mirrors' series is timed there too (issue 10).
5. Fleet (issue 11): one [[mirror_template]] over 10,000 bare repositories (100 directories x
   100, each with the pushmirror hook, each to its own file:// downstream holding the same
   refs). First start (10,000 first syncs), stop, then the measured second start: the walk,
   the expansion and validation of 10,000 mirrors, `status --json`, memory once idle; and
   `check-config` (load plus the forgotten-hook check of every repository).

Exit status 0 whether or not targets are met (it is a measurement); 1 when something fails
(a command errors, a push is not mirrored, a notification is lost, the daemon dies).
"""

import argparse
import concurrent.futures
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from benchlib import DATE, first_line, hermetic_env, loadavg
from benchlib import machine as base_machine

CRATE = Path(__file__).resolve().parent.parent
ZERO = "0" * 40

TARGET_HOOK_UP_MS = 10
TARGET_HOOK_DOWN_MS = 50
TARGET_LATENCY_MS = 300
TARGET_UPDATES_PER_MIRROR = 2
TARGET_START_S = 3
TARGET_RSS_MIB = 100
TARGET_STATUS_S = 1
# Fleet (issue 11, point 6): a template over 10,000 repositories.
TARGET_TEMPLATE_START_S = 2
TARGET_TEMPLATE_RSS_MIB = 150
TARGET_SCRAPE_MS = 100


class BenchError(Exception):
    pass


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Environment, machine, statistics










def machine():
    fs = first_line(["findmnt", "-no", "FSTYPE", "-T", tempfile.gettempdir()])
    info = base_machine()
    info["tmpdir"] = f"{tempfile.gettempdir()} ({fs})"
    info["crate"] = first_line(["git", "-C", str(CRATE), "describe", "--always", "--dirty"])
    return info


def pct(values, p):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values):
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p90": pct(values, 90),
        "min": min(values),
        "max": max(values),
    }


def ms(seconds):
    return seconds * 1000


# ---------------------------------------------------------------------------------------------
# Running things


class Bench:
    def __init__(self, root, binary):
        self.root = root
        self.bin = str(binary)
        self.env = hermetic_env(root / "home")
        self.daemons = []

    def run(self, argv, cwd=None, stdin=None, check=True, env=None):
        result = subprocess.run(
            argv, cwd=cwd, input=stdin, capture_output=True, env=env or self.env, check=False
        )
        if check and result.returncode != 0:
            raise BenchError(
                f"command failed ({result.returncode}): {' '.join(map(str, argv))[:300]}\n"
                + result.stderr.decode(errors="replace")[-2000:]
            )
        return result

    def git(self, *args, **kwargs):
        return self.run(["git", *map(str, args)], **kwargs)

    def out(self, *args, **kwargs):
        return self.git(*args, **kwargs).stdout.decode().strip()

    def pm(self, config, *args, **kwargs):
        return self.run([self.bin, "--config", str(config), *map(str, args)], **kwargs)

    # -- repositories -------------------------------------------------------------------------

    def bare(self, path):
        self.git("init", "-q", "--bare", path)
        return path

    def served(self, name):
        """A bare repository with one commit on main and a work clone to push from (before
        any hook is installed)."""
        repo = self.bare(self.root / "srv" / f"{name}.git")
        work = self.root / "work" / name
        self.git("clone", "-q", f"file://{repo}", work)
        (work / "f.txt").write_text("0\n")
        self.git("-C", work, "add", "f.txt")
        self.git("-C", work, "commit", "-qm", "seed")
        self.git("-C", work, "push", "-q", "origin", "main")
        return repo, work

    def commit(self, work, counter):
        (work / "f.txt").write_text(f"{counter}\n")
        self.git("-C", work, "commit", "-qam", f"commit {counter}")
        return self.out("-C", work, "rev-parse", "HEAD")

    def downstream(self, path, log_hook=False):
        self.bare(path)
        if log_hook:
            hook = path / "hooks" / "post-receive"
            hook.write_text('#!/bin/sh\ncat >> "$GIT_DIR/updates.log"\necho -- >> "$GIT_DIR/updates.log"\n')
            hook.chmod(0o755)
        return path

    # -- the daemon ---------------------------------------------------------------------------

    def start_daemon(self, config, name):
        log_path = self.root / f"daemon-{name}.log"
        log_file = open(log_path, "ab")
        spawn_wall = time.time()
        started = time.perf_counter()
        proc = subprocess.Popen(
            [self.bin, "--config", str(config), "daemon"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=self.env,
            cwd=self.root,
        )
        log_file.close()
        daemon = Daemon(proc, config, log_path, started)
        daemon.spawn_wall = spawn_wall
        self.daemons.append(daemon)
        return daemon

    def stop_all(self):
        for daemon in self.daemons:
            if daemon.proc.poll() is None:
                daemon.proc.send_signal(signal.SIGTERM)
                try:
                    daemon.proc.wait(30)
                except subprocess.TimeoutExpired:
                    daemon.proc.kill()
                    daemon.proc.wait()


class Daemon:
    def __init__(self, proc, config, log_path, started):
        self.proc = proc
        self.config = config
        self.log_path = log_path
        self.started = started
        self.socket = config.parent / "state" / "control.sock"

    def alive(self):
        if self.proc.poll() is not None:
            raise BenchError(f"the daemon exited with {self.proc.returncode}\n--- log ---\n{self.log_tail()}")

    def log_tail(self, lines=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def ask(self, request, timeout=60):
        request = {"v": 1, **request}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.socket))
            s.sendall((json.dumps(request) + "\n").encode())
            buf = bytearray()
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
        return json.loads(buf)

    def wait_ping(self, timeout=60):
        deadline = time.perf_counter() + timeout
        while True:
            self.alive()
            try:
                answer = self.ask({"op": "ping"}, timeout=timeout)
                if answer.get("result") == "pong":
                    return time.perf_counter()
            except (OSError, ValueError):
                pass
            if time.perf_counter() > deadline:
                raise BenchError(f"the daemon did not answer a ping within {timeout} s\n{self.log_tail()}")
            time.sleep(0.005)

    def status(self, name=None):
        answer = self.ask({"op": "status", "name": name})
        if answer.get("result") != "status":
            raise BenchError(f"status answered {answer}")
        return answer["mirrors"]

    def wait_settled(self, predicate=lambda mirrors: True, timeout=600, interval=0.2):
        """Polls status until no mirror is scheduled, started or to_retry and `predicate`
        holds, twice in a row. Fails on a `failed` mirror."""
        deadline = time.perf_counter() + timeout
        calm = 0
        while True:
            self.alive()
            mirrors = self.status()
            failed = [m for m in mirrors if m["update_status"] == "failed"]
            if failed:
                raise BenchError(
                    f"{len(failed)} mirror(s) failed, e.g. {failed[0]['name']}: {failed[0]['last_error']}"
                )
            busy = [m for m in mirrors if m["update_status"] in ("scheduled", "started", "to_retry")]
            if not busy and predicate(mirrors):
                calm += 1
                if calm >= 2:
                    return mirrors
            else:
                calm = 0
            if time.perf_counter() > deadline:
                raise BenchError(
                    f"not settled after {timeout} s: {len(busy)} busy, e.g. "
                    f"{busy[0]['name'] + ' ' + busy[0]['update_status'] if busy else '(predicate)'}"
                )
            time.sleep(interval)

    def cpu_ticks(self):
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    def wait_cpu_idle(self, quiet=1.0, timeout=120):
        """Waits until the daemon used at most one clock tick of CPU during `quiet` seconds."""
        deadline = time.perf_counter() + timeout
        before = self.cpu_ticks()
        while True:
            time.sleep(quiet)
            self.alive()
            now = self.cpu_ticks()
            if now - before <= 1:
                return
            before = now
            if time.perf_counter() > deadline:
                raise BenchError(f"the daemon kept using CPU for {timeout} s")

    def memory(self):
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                values[key] = int(value.split()[0])
        return values

    def stop(self, timeout=60):
        self.alive()
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise BenchError(f"the daemon did not stop within {timeout} s of SIGTERM")
        if code != 0:
            raise BenchError(f"the daemon exited with {code} after SIGTERM\n{self.log_tail()}")
        return time.perf_counter() - started

    def event_after_spawn(self, message):
        """Seconds from spawn to the first log line containing `message` (log timestamps)."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            line = re.sub(r"\x1b\[[0-9;]*m", "", line)
            if message in line:
                stamp = datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
                return stamp.timestamp() - self.spawn_wall
        return None

    def problems(self):
        """WARN and ERROR lines of the log."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if re.search(r"\b(WARN|ERROR)\b", line)]


def write_config(path, mirrors, defaults=None, extra_daemon=""):
    parts = ["[daemon]", 'state_dir = "state"', extra_daemon, ""]
    if defaults:
        parts += ["[defaults]", *defaults, ""]
    for m in mirrors:
        parts.append("[[mirror]]")
        for key, value in m.items():
            parts.append(f"{key} = {json.dumps(value)}")
        parts.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "state").mkdir(exist_ok=True)
    path.write_text("\n".join(parts))
    return path


def read_ref(git_dir, refname="refs/heads/main"):
    """The ref's value, read from the files directly (cheap enough to poll every 2 ms)."""
    try:
        return (git_dir / refname).read_text().strip()
    except (FileNotFoundError, IsADirectoryError):
        pass
    try:
        for line in (git_dir / "packed-refs").read_text().splitlines():
            if line.endswith(" " + refname):
                return line.split()[0]
    except FileNotFoundError:
        pass
    return None


def timed_push(b, work):
    os.sync()  # no writeback of earlier work during the timed push
    started = time.perf_counter()
    result = b.run(["git", "push", "-q", "origin", "main"], cwd=work)
    ended = time.perf_counter()
    return ended - started, ended, result.stderr.decode(errors="replace")


def spool_files(state_dir):
    spool = state_dir / "spool"
    return sorted(p for p in spool.iterdir() if p.suffix == ".json") if spool.is_dir() else []


# ---------------------------------------------------------------------------------------------
# 1 and 2: hook overhead, notify alone, push-to-mirror latency


def bench_hook_and_latency(b, args):
    log("== 1/2: hook overhead and push-to-mirror latency")
    repos = {}
    for name in ("none", "sh", "up", "down", "lat", "plain"):
        repos[name] = b.served(name)
    d_hook = b.downstream(b.root / "down" / "hook.git")
    d_lat = b.downstream(b.root / "down" / "lat.git")
    d_plain = b.downstream(b.root / "down" / "plain.git")

    cfg = write_config(
        b.root / "main" / "pushmirror.toml",
        [
            {"name": "hook", "repo": str(repos["up"][0]), "url": f"file://{d_hook}", "delay": "1h"},
            {"name": "lat", "repo": str(repos["lat"][0]), "url": f"file://{d_lat}", "delay": "0s"},
        ],
    )
    cfg_down = write_config(
        b.root / "down-daemon" / "pushmirror.toml",
        [{"name": "down", "repo": str(repos["down"][0]), "url": f"file://{b.root / 'down' / 'never.git'}"}],
    )
    state_down = cfg_down.parent / "state"
    b.pm(cfg, "install-hook", repos["up"][0], repos["lat"][0])
    b.pm(cfg_down, "install-hook", repos["down"][0])
    sh_hook = repos["sh"][0] / "hooks" / "post-receive"
    sh_hook.write_text("#!/bin/sh\ncat >/dev/null\n")
    sh_hook.chmod(0o755)
    plain_hook = repos["plain"][0] / "hooks" / "post-receive"
    plain_hook.write_text(f"#!/bin/sh\ncat >/dev/null\nexec git push -q --mirror 'file://{d_plain}'\n")
    plain_hook.chmod(0o755)
    b.git(f"--git-dir={repos['plain'][0]}", "push", "-q", "--mirror", f"file://{d_plain}")

    daemon = b.start_daemon(cfg, "main")
    ready = daemon.wait_ping() - daemon.started
    # The start-up scan syncs both mirrors once; wait for it.
    daemon.wait_settled(lambda ms_: all(m["last_successful_update_at"] for m in ms_), timeout=60)
    log(f"   daemon ready in {ms(ready):.0f} ms; first syncs done")

    # -- 1. pushes, interleaved ---------------------------------------------------------------
    variants = ["none", "sh", "up", "down"]
    times = {v: [] for v in variants}
    counter = 0
    for i in range(args.pushes):
        order = variants[i % len(variants):] + variants[: i % len(variants)]
        for v in order:
            counter += 1
            b.commit(repos[v][1], counter)
            elapsed, _, stderr = timed_push(b, repos[v][1])
            times[v].append(elapsed)
            if v == "down":
                spooled = spool_files(state_down)
                if len(spooled) != 1:
                    raise BenchError(f"daemon down: expected one spool file, got {spooled} {stderr!r}")
                for p in spooled:
                    p.unlink()
            elif v == "up" and "pushmirror" in stderr:
                raise BenchError(f"daemon up: the hook printed {stderr!r}")
    if spool_files(cfg.parent / "state"):
        raise BenchError("the daemon-up hook spooled notifications")
    st = daemon.status("hook")[0]
    if st["update_status"] != "scheduled":
        raise BenchError(f"the notified mirror is {st['update_status']}, expected scheduled")
    log("   pushes: " + ", ".join(f"{v} {ms(statistics.median(t)):.1f} ms" for v, t in times.items()))

    # -- 1b. notify alone ---------------------------------------------------------------------
    head_up = b.out(f"--git-dir={repos['up'][0]}", "rev-parse", "main")
    head_none = b.out(f"--git-dir={repos['none'][0]}", "rev-parse", "main")
    head_down = b.out(f"--git-dir={repos['down'][0]}", "rev-parse", "main")
    calls = {
        "version": ([b.bin, "--version"], None, b""),
        "empty": ([b.bin, "--config", str(cfg), "notify"], repos["up"][0], b""),
        "unmirrored": ([b.bin, "--config", str(cfg), "notify"], repos["none"][0],
                       f"{ZERO} {head_none} refs/heads/main\n".encode()),
        "up": ([b.bin, "--config", str(cfg), "notify"], repos["up"][0],
               f"{ZERO} {head_up} refs/heads/main\n".encode()),
        "down": ([b.bin, "--config", str(cfg_down), "notify"], repos["down"][0],
                 f"{ZERO} {head_down} refs/heads/main\n".encode()),
    }
    notify_times = {k: [] for k in calls}
    keys = list(calls)
    for i in range(args.pushes):
        for k in keys[i % len(keys):] + keys[: i % len(keys)]:
            argv, git_dir, stdin = calls[k]
            env = dict(b.env)
            if git_dir:
                env["GIT_DIR"] = str(git_dir)
            os.sync()
            started = time.perf_counter()
            result = subprocess.run(argv, input=stdin, capture_output=True, env=env, check=False)
            notify_times[k].append(time.perf_counter() - started)
            if result.returncode != 0:
                raise BenchError(f"{k}: exit {result.returncode}")
            if k == "down":
                spooled = spool_files(state_down)
                if len(spooled) != 1:
                    raise BenchError(f"notify, daemon down: expected one spool file, got {spooled}")
                spooled[0].unlink()
            elif k != "version" and result.stderr:
                raise BenchError(f"notify {k} printed {result.stderr!r}")
    log("   notify: " + ", ".join(f"{k} {ms(statistics.median(t)):.1f} ms" for k, t in notify_times.items()))

    # -- 2. push-to-mirror latency ------------------------------------------------------------
    lat_variants = ["lat", "plain", "none"]
    push_times = {v: [] for v in lat_variants}
    latencies = []
    for i in range(args.latency_samples):
        for v in lat_variants[i % 3:] + lat_variants[: i % 3]:
            counter += 1
            oid = b.commit(repos[v][1], counter)
            elapsed, ended, _ = timed_push(b, repos[v][1])
            push_times[v].append(elapsed)
            if v == "lat":
                deadline = ended + 30
                while read_ref(d_lat) != oid:
                    if time.perf_counter() > deadline:
                        raise BenchError(f"push {oid} not mirrored within 30 s\n{daemon.log_tail()}")
                    time.sleep(0.002)
                latencies.append(time.perf_counter() - ended)
                # Wait for the update to end (status written) before the next push.
                t_end = time.perf_counter() + 30
                while daemon.status("lat")[0]["update_status"] != "finished":
                    if time.perf_counter() > t_end:
                        raise BenchError(f"mirror lat did not finish: {daemon.status('lat')[0]}")
                    time.sleep(0.005)
            elif v == "plain" and read_ref(d_plain) != oid:
                raise BenchError("the plain mirroring hook did not mirror synchronously")
    lat_hist = daemon.status("lat")[0]["history"]
    log(f"   latency: median {ms(statistics.median(latencies)):.0f} ms")

    problems = daemon.problems()
    stop_s = daemon.stop()
    leftover = spool_files(cfg.parent / "state")
    return {
        "ready_ms": ms(ready),
        "push": {v: summary(t) for v, t in times.items()},
        "paired": {v: summary([a - n for a, n in zip(times[v], times["none"])]) for v in ("sh", "up", "down")},
        "notify": {k: summary(t) for k, t in notify_times.items()},
        "lat_push": {v: summary(t) for v, t in push_times.items()},
        "latency": summary(latencies),
        "lat_update_ms": statistics.median([h["duration_ms"] for h in lat_hist[-args.latency_samples:]]),
        "problems": problems,
        "stop_s": stop_s,
        "leftover_spool": len(leftover),
    }


# ---------------------------------------------------------------------------------------------
# Fixture for 3 and 4: a template repository with one commit, copied


def template_repo(b):
    tpl = b.root / "template.git"
    if tpl.exists():
        return tpl
    b.bare(tpl)
    stream = (
        "commit refs/heads/main\n"
        f"author Bench <bench@example.com> {DATE} +0000\n"
        f"committer Bench <bench@example.com> {DATE} +0000\n"
        "data 5\nseed\n"
        "M 100644 inline README\ndata 6\nhello\n\n"
    )
    b.git(f"--git-dir={tpl}", "fast-import", "--quiet", stdin=stream.encode())
    b.git(f"--git-dir={tpl}", "pack-refs", "--all")
    b.git(f"--git-dir={tpl}", "repack", "-adq")
    b.git(f"--git-dir={tpl}", "prune")
    for sample in (tpl / "hooks").glob("*.sample"):
        sample.unlink()
    return tpl


def copy_repo(src, dst, link=False):
    """A copy of a bare repository; with `link`, files are hard links (git replaces refs and
    packs by rename, never in place, so copies stay independent)."""
    if link:
        shutil.copytree(src, dst, copy_function=os.link, ignore=shutil.ignore_patterns("hooks", "description", "info", "logs"))
        (dst / "refs" / "heads").mkdir(parents=True, exist_ok=True)
        (dst / "refs" / "tags").mkdir(parents=True, exist_ok=True)
    else:
        shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------------------------------
# 3. Burst


def bench_burst(b, args):
    log(f"== 3: burst of {args.burst_notifications} notifications over {args.burst_mirrors} mirrors")
    tpl = template_repo(b)
    base = b.root / "burst"
    ups, downs, mirrors = [], [], []
    for i in range(args.burst_mirrors):
        up = copy_repo(tpl, base / "up" / f"r{i:03d}.git")
        down = b.downstream(base / "down" / f"r{i:03d}.git", log_hook=True)
        ups.append(up)
        downs.append(down)
        mirrors.append({"name": f"b{i:03d}", "repo": str(up), "url": f"file://{down}", "delay": "2s"})
    cfg = write_config(base / "pushmirror.toml", mirrors)
    daemon = b.start_daemon(cfg, "burst")
    daemon.wait_ping()
    t0 = time.perf_counter()
    daemon.wait_settled(lambda ms_: all(m["last_successful_update_at"] for m in ms_), timeout=300)
    first_sync_s = time.perf_counter() - t0
    log(f"   {args.burst_mirrors} first syncs settled in {first_sync_s:.1f} s")

    def by_process(i, line):
        env = dict(b.env)
        env["GIT_DIR"] = str(ups[i])
        result = subprocess.run(
            [b.bin, "--config", str(cfg), "notify"], input=line, capture_output=True, env=env, check=False
        )
        text = (result.stdout + result.stderr).decode(errors="replace").strip()
        return result.returncode == 0, text

    local = threading.local()

    def by_socket(i, line):
        if not hasattr(local, "conn"):
            local.conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            local.conn.settimeout(30)
            local.conn.connect(str(daemon.socket))
            local.reader = local.conn.makefile("rb")
        old, new, name = line.decode().split()
        request = {"v": 1, "op": "notify", "repo": str(ups[i]), "refs": [{"old": old, "new": new, "ref": name}]}
        local.conn.sendall((json.dumps(request) + "\n").encode())
        answer = json.loads(local.reader.readline())
        ok = answer.get("result") == "notified" and answer.get("mirrors") == [f"b{i:03d}"]
        return True, "" if ok else json.dumps(answer)

    results = {}
    for kind, send in (("process", by_process), ("socket", by_socket)):
        results[kind] = one_burst(b, args, daemon, ups, downs, kind, send)
    problems = daemon.problems()
    leftover = spool_files(cfg.parent / "state")
    daemon.stop()
    return {
        "mirrors": args.burst_mirrors,
        "concurrency": args.burst_concurrency,
        "first_sync_s": first_sync_s,
        "leftover_spool": len(leftover),
        "problems": problems,
        **results,
    }


def one_burst(b, args, daemon, ups, downs, kind, send):
    """One new commit in each repository (behind the daemon's back), then the notifications,
    round robin over the repositories, `concurrency` at a time."""
    lines, finals = [], []
    for i, up in enumerate(ups):
        old = b.out(f"--git-dir={up}", "rev-parse", "main")
        new = b.out(f"--git-dir={up}", "commit-tree", "-p", old, "-m", f"burst {kind} {i}", f"{old}^{{tree}}")
        b.git(f"--git-dir={up}", "update-ref", "refs/heads/main", new, old)
        finals.append(new)
        lines.append(f"{old} {new} refs/heads/main\n".encode())
    # Every mirror's window (2 s) must have passed since its last update: a quiet start.
    time.sleep(2.5)
    log_blocks_before = [len(pushes_logged(d)) for d in downs]
    per = args.burst_notifications // len(ups)
    jobs = [i for _ in range(per) for i in range(len(ups))]

    def one(i):
        started = time.perf_counter()
        ok, text = send(i, lines[i])
        return i, started, time.perf_counter(), time.time(), ok, text

    burst_wall = datetime.now(timezone.utc)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.burst_concurrency) as pool:
        done = list(pool.map(one, jobs))
    wall = time.perf_counter() - started
    failed = [r for r in done if not r[4]]
    unacked = [r for r in done if r[5]]
    log(f"   {kind}: {len(done)} notifications in {wall:.2f} s; {len(unacked)} not acknowledged")

    t0 = time.perf_counter()
    daemon.wait_settled(lambda _: all(read_ref(d) == f for d, f in zip(downs, finals)), timeout=300, interval=0.25)
    settle_s = time.perf_counter() - t0
    daemon.wait_cpu_idle(quiet=0.5)
    mirrors_after = daemon.status()

    # Updates per mirror, and whether each update beyond the first is explained by a
    # notification acknowledged after the previous update had started (coalescing works).
    last_ack = {}
    for i, _, _, ack_wall, _, _ in done:
        last_ack[i] = max(last_ack.get(i, 0), ack_wall)
    acks = {}
    for i, _, _, ack_wall, _, _ in done:
        acks.setdefault(i, []).append(ack_wall)
    updates, unexplained, after_last, redundant_at = [], 0, [], {}
    for i, m in enumerate(mirrors_after):
        starts = sorted(
            datetime.fromisoformat(h["started_at"]).timestamp()
            for h in m["history"]
            if datetime.fromisoformat(h["started_at"]) >= burst_wall
        )
        updates.append(len(starts))
        for k in range(1, len(starts)):
            if not any(a > starts[k - 1] for a in acks[i]):
                unexplained += 1
                redundant_at[k + 1] = redundant_at.get(k + 1, 0) + 1
        after_last.append(sum(1 for s in starts if s > last_ack[i]))
    spans = [max(a) - min(a) for a in acks.values()]
    pushes = [len(pushes_logged(d)) - before for d, before in zip(downs, log_blocks_before)]
    lost = sum(1 for d, f in zip(downs, finals) if read_ref(d) != f)
    return {
        "notifications": len(done),
        "wall_s": wall,
        "rate": len(done) / wall,
        "call": summary([r[2] - r[1] for r in done]),
        "failed": len(failed),
        "unacked": len(unacked),
        "unacked_example": unacked[0][5][:300] if unacked else "",
        "settle_s": settle_s,
        "updates_max": max(updates),
        "updates_hist": {k: updates.count(k) for k in sorted(set(updates))},
        "unexplained": unexplained,
        "redundant_at": dict(sorted(redundant_at.items())),
        "after_last_max": max(after_last),
        "span_median_s": statistics.median(spans),
        "pushes_hist": {k: pushes.count(k) for k in sorted(set(pushes))},
        "lost": lost,
    }


def pushes_logged(down):
    try:
        text = (down / "updates.log").read_text()
    except FileNotFoundError:
        return []
    return [block for block in text.split("--\n") if block.strip()]


# ---------------------------------------------------------------------------------------------
# 4. Idle daemon with 10,000 mirrors


def bench_idle(b, args):
    total = args.big_repos * args.big_per_repo
    log(f"== 4: idle daemon with {total} mirrors ({args.big_repos} repositories x {args.big_per_repo})")
    tpl = template_repo(b)
    base = b.root / "big"
    t0 = time.perf_counter()
    mirrors = []
    for r in range(args.big_repos):
        up = copy_repo(tpl, base / "up" / f"r{r:03d}.git")
        for k in range(args.big_per_repo):
            n = r * args.big_per_repo + k
            down = copy_repo(tpl, base / "down" / f"m{n:05d}.git", link=True)
            mirrors.append({"name": f"m{n:05d}", "repo": str(up), "url": f"file://{down}"})
    # Metrics on a port free now (the daemon fails to start, loudly, if another took it).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_addr = f"127.0.0.1:{probe.getsockname()[1]}"
    cfg = write_config(base / "pushmirror.toml", mirrors, extra_daemon=f'metrics_listen = "{metrics_addr}"')
    b.git(f"--git-dir={base / 'down' / 'm00000.git'}", "rev-parse", "--verify", "refs/heads/main")
    log(f"   fixture: {total} downstreams in {time.perf_counter() - t0:.1f} s")

    # First start: every mirror is new, so each gets a first sync (ls-remote, nothing to push).
    daemon = b.start_daemon(cfg, "big-first")
    first_ping = daemon.wait_ping(timeout=120) - daemon.started
    daemon.wait_settled(
        lambda ms_: all(m["last_successful_update_at"] for m in ms_), timeout=args.big_timeout, interval=2
    )
    first_settled = time.perf_counter() - daemon.started
    first_mem = daemon.memory()
    history_before = sum(len(m["history"]) for m in daemon.status())
    first_problems = daemon.problems()
    daemon.stop(timeout=120)
    log(f"   first start settled in {first_settled:.1f} s (ping after {first_ping:.2f} s)")

    # Second start: all synced; the start-up scan must find nothing to do.
    daemon = b.start_daemon(cfg, "big-second")
    ping_s = daemon.wait_ping(timeout=60) - daemon.started
    answered = None
    while answered is None:
        daemon.alive()
        result = b.pm(cfg, "status", "--json", check=False)
        if result.returncode == 0 and b"not running" not in result.stderr:
            answered = time.perf_counter() - daemon.started
            if len(json.loads(result.stdout)["mirrors"]) != total:
                raise BenchError("status --json does not list every mirror")
        elif time.perf_counter() - daemon.started > 60:
            raise BenchError(f"status did not answer within 60 s: {result.stderr!r}")
    bound_s = daemon.event_after_spawn("control socket bound")
    ready_s = daemon.event_after_spawn("daemon ready")
    daemon.wait_settled(timeout=120, interval=1)
    daemon.wait_cpu_idle(quiet=1.0)
    settled_s = time.perf_counter() - daemon.started
    mem = daemon.memory()
    status_times = []
    status_bytes = 0
    for _ in range(args.status_runs):
        started = time.perf_counter()
        result = b.pm(cfg, "status", "--json")
        status_times.append(time.perf_counter() - started)
        status_bytes = len(result.stdout)
        if b"not running" in result.stderr:
            raise BenchError("status fell back to the state files")
    table_started = time.perf_counter()
    b.pm(cfg, "status")
    table_s = time.perf_counter() - table_started
    # The hook with this configuration: it parses the whole file to find [daemon]. For a
    # repository without mirrors, so that no update starts.
    tpl = b.root / "template.git"
    head = b.out(f"--git-dir={tpl}", "rev-parse", "main")
    env = dict(b.env, GIT_DIR=str(tpl))
    notify_times = []
    for _ in range(20):
        started = time.perf_counter()
        result = subprocess.run(
            [b.bin, "--config", str(cfg), "notify"], input=f"{ZERO} {head} refs/heads/main\n".encode(),
            capture_output=True, env=env, check=False,
        )
        notify_times.append(time.perf_counter() - started)
        if result.returncode != 0 or result.stderr:
            raise BenchError(f"notify with the large configuration: {result.stderr!r}")
    scrape = scrape_metrics(metrics_addr, args.scrape_runs, daemon)
    mem_after = daemon.memory()
    history_after = sum(len(m["history"]) for m in daemon.status())
    problems = daemon.problems()
    log_text = daemon.log_path.read_text(errors="replace")
    stop_s = daemon.stop(timeout=120)
    return {
        "mirrors": total,
        "repos": args.big_repos,
        "first_ping_s": first_ping,
        "first_settled_s": first_settled,
        "first_hwm_kib": first_mem.get("VmHWM", 0),
        "first_problems": first_problems,
        "ping_s": ping_s,
        "bound_s": bound_s,
        "ready_s": ready_s,
        "status_answered_s": answered,
        "settled_s": settled_s,
        "rss_kib": mem["VmRSS"],
        "hwm_kib": mem["VmHWM"],
        "threads": mem.get("Threads"),
        "rss_after_status_kib": mem_after["VmRSS"],
        "status": summary(status_times),
        "status_mib": status_bytes / 1024 / 1024,
        "config_mib": cfg.stat().st_size / 1024 / 1024,
        "notify": summary(notify_times),
        "table_s": table_s,
        "scrape": scrape,
        "updates_on_second_start": history_after - history_before,
        "changed_logged": "local refs changed" in log_text,
        "problems": problems,
        "stop_s": stop_s,
    }


def scrape_metrics(addr, runs, daemon):
    """Times `GET /metrics` (whole body read) and `GET /healthz`, each `runs` times, on one
    fresh connection each, as Prometheus' scraper does between its keep-alive timeouts."""
    import http.client

    def get(path):
        started = time.perf_counter()
        conn = http.client.HTTPConnection(addr, timeout=30)
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        if response.status != 200:
            raise BenchError(f"GET {path}: {response.status} {body[:200]!r}")
        return time.perf_counter() - started, body

    get("/metrics")  # the first one makes the buffers; measured: the steady state
    times, body = [], b""
    for _ in range(runs):
        daemon.alive()
        elapsed, body = get("/metrics")
        times.append(elapsed)
    health = [get("/healthz")[0] for _ in range(runs)]
    lines = body.decode().splitlines()
    return {
        "metrics": summary(times),
        "healthz": summary(health),
        "mib": len(body) / 1024 / 1024,
        "samples": sum(1 for line in lines if line and not line.startswith("#")),
    }


# ---------------------------------------------------------------------------------------------
# 5. Fleet: one template over 10,000 repositories


def bench_template(b, args):
    groups, per_group = args.template_groups, args.template_per_group
    total = groups * per_group
    log(f"== 5: one [[mirror_template]] over {total} repositories ({groups} directories x {per_group})")
    tpl = template_repo(b)
    base = b.root / "fleet"
    cfg = base / "pushmirror.toml"
    # Every repository has the hook (one file, hard-linked), as `install-hook --all` leaves it.
    hook = base / "post-receive"
    base.mkdir(parents=True, exist_ok=True)
    hook.write_text(f"#!/bin/sh\n# managed by pushmirror install-hook\nexec '{b.bin}' --config '{cfg}' notify\n")
    hook.chmod(0o755)
    t0 = time.perf_counter()
    for g in range(groups):
        for k in range(per_group):
            up = copy_repo(tpl, base / "srv" / f"g{g:02d}" / f"r{k:03d}.git", link=True)
            (up / "hooks").mkdir()
            os.link(hook, up / "hooks" / "post-receive")
            copy_repo(tpl, base / "down" / f"g{g:02d}" / f"r{k:03d}.git", link=True)
    (base / "state").mkdir(exist_ok=True)
    cfg.write_text(
        '[daemon]\nstate_dir = "state"\n\n'
        '[[mirror_template]]\nname = "t-${path}"\n'
        f'repos = "{base}/srv/**/*.git"\n'
        f'url = "file://{base}/down/${{path}}.git"\n'
        # Disabled: no first sync runs, so the start measured is the walk, the expansion, the
        # validation and `status` alone (10,000 first syncs take 10 minutes on a loaded
        # 2-core machine and would compete with them); the state files are absent.
        + ("enabled = false\n" if args.template_disabled else "")
    )
    log(f"   fixture: {total} repositories and downstreams in {time.perf_counter() - t0:.1f} s")

    check_times = []
    for _ in range(args.status_runs):
        started = time.perf_counter()
        result = b.pm(cfg, "check-config", check=False)
        check_times.append(time.perf_counter() - started)
        if result.returncode != 0 or result.stderr:
            raise BenchError(f"check-config: {result.returncode} {result.stderr[-500:]!r}")
    if f"ok, {total} mirrors".encode() not in result.stdout:
        raise BenchError(f"check-config does not count {total} mirrors: {result.stdout!r}")

    first_settled, first_mem, first_problems = None, {}, []
    if not args.template_disabled:
        daemon = b.start_daemon(cfg, "fleet-first")
        first_ping = daemon.wait_ping(timeout=120) - daemon.started
        daemon.wait_settled(
            lambda ms_: all(m["last_successful_update_at"] for m in ms_), timeout=args.big_timeout, interval=2
        )
        first_settled = time.perf_counter() - daemon.started
        first_mem = daemon.memory()
        first_problems = daemon.problems()
        daemon.stop(timeout=120)
        log(f"   first start settled in {first_settled:.1f} s (ping after {first_ping:.2f} s)")

    daemon = b.start_daemon(cfg, "fleet-second")
    ping_s = daemon.wait_ping(timeout=60) - daemon.started
    answered = None
    while answered is None:
        daemon.alive()
        result = b.pm(cfg, "status", "--json", check=False)
        if result.returncode == 0 and b"not running" not in result.stderr:
            answered = time.perf_counter() - daemon.started
            listed = json.loads(result.stdout)["mirrors"]
            if len(listed) != total:
                raise BenchError(f"status --json lists {len(listed)} mirrors, not {total}")
            if not all(m["hook_installed"] for m in listed):
                raise BenchError("status --json says a hook is missing")
        elif time.perf_counter() - daemon.started > 60:
            raise BenchError(f"status did not answer within 60 s: {result.stderr!r}")
    bound_s = daemon.event_after_spawn("control socket bound")
    ready_s = daemon.event_after_spawn("daemon ready")
    daemon.wait_settled(timeout=120, interval=1)
    daemon.wait_cpu_idle(quiet=1.0)
    mem = daemon.memory()
    status_times = []
    for _ in range(args.status_runs):
        started = time.perf_counter()
        result = b.pm(cfg, "status", "--json")
        status_times.append(time.perf_counter() - started)
    mem_after = daemon.memory()
    problems = daemon.problems()
    daemon.stop(timeout=120)
    return {
        "mirrors": total,
        "groups": groups,
        "disabled": args.template_disabled,
        "first_settled_s": first_settled,
        "first_hwm_kib": first_mem.get("VmHWM", 0),
        "first_problems": first_problems,
        "ping_s": ping_s,
        "bound_s": bound_s,
        "ready_s": ready_s,
        "status_answered_s": answered,
        "rss_kib": mem["VmRSS"],
        "hwm_kib": mem["VmHWM"],
        "rss_after_status_kib": mem_after["VmRSS"],
        "status": summary(status_times),
        "check_config": summary(check_times),
        "problems": problems,
    }


# ---------------------------------------------------------------------------------------------
# Report


def verdict(ok):
    return "PASS" if ok else "FAIL"


def results_rows(r):
    rows = []
    if "hook" in r:
        h = r["hook"]
        none = h["push"]["none"]
        for v, target, label in (
            ("up", TARGET_HOOK_UP_MS, "hook adds to `git push`, daemon up"),
            ("down", TARGET_HOOK_DOWN_MS, "hook adds to `git push`, daemon down (spools)"),
        ):
            add = ms(h["push"][v]["median"] - none["median"])
            add90 = ms(h["push"][v]["p90"] - none["p90"])
            rows.append((label, f"{add:+.1f} ms median ({add90:+.1f} ms at p90)", f"< {target} ms median", verdict(add < target)))
        lat = h["latency"]
        rows.append((
            "push-to-mirror latency after a quiet window (file://)",
            f"{ms(lat['median']):.0f} ms median, {ms(lat['p90']):.0f} ms p90",
            f"< {TARGET_LATENCY_MS} ms",
            verdict(ms(lat["median"]) < TARGET_LATENCY_MS),
        ))
    if "burst" in r:
        u, p = r["burst"], r["burst"]["process"]
        rows.append((
            f"burst: {p['notifications']} `pushmirror notify`, {u['mirrors']} mirrors: acknowledged",
            f"{p['notifications'] - p['unacked']}/{p['notifications']} in {p['wall_s']:.1f} s ({p['rate']:.0f}/s)",
            "all",
            verdict(p["unacked"] == 0 and p["failed"] == 0),
        ))
        rows.append((
            "burst: updates per mirror, nothing lost",
            f"max {p['updates_max']} ({fmt_hist(p['updates_hist'])}); "
            f"{u['mirrors'] - p['lost']}/{u['mirrors']} downstreams at the final commit",
            f"<= {TARGET_UPDATES_PER_MIRROR}, none lost",
            verdict(p["updates_max"] <= TARGET_UPDATES_PER_MIRROR and p["lost"] == 0),
        ))
    if "idle" in r:
        i = r["idle"]
        rows.append((
            f"{i['mirrors']} mirrors: spawn to `status --json` answered",
            f"{i['status_answered_s']:.2f} s (ping {i['ping_s']:.2f} s)",
            f"< {TARGET_START_S} s",
            verdict(i["status_answered_s"] < TARGET_START_S),
        ))
        rows.append((
            f"{i['mirrors']} mirrors: resident memory once settled",
            f"{i['rss_kib'] / 1024:.1f} MiB (peak {i['hwm_kib'] / 1024:.1f} MiB)",
            f"< {TARGET_RSS_MIB} MiB",
            verdict(i["rss_kib"] / 1024 < TARGET_RSS_MIB),
        ))
        rows.append((
            f"{i['mirrors']} mirrors: `status --json` wall time",
            f"{i['status']['median']:.2f} s median of {i['status']['n']}",
            f"< {TARGET_STATUS_S} s",
            verdict(i["status"]["median"] < TARGET_STATUS_S),
        ))
        s = i["scrape"]
        rows.append((
            f"{i['mirrors']} mirrors: `GET /metrics` wall time",
            f"{ms(s['metrics']['median']):.0f} ms median of {s['metrics']['n']} ({ms(s['metrics']['max']):.0f} ms max)",
            f"< {TARGET_SCRAPE_MS} ms",
            verdict(ms(s["metrics"]["median"]) < TARGET_SCRAPE_MS),
        ))
    if "template" in r:
        t = r["template"]
        rows.append((
            f"template over {t['mirrors']} repositories: spawn to `status --json` answered",
            f"{t['status_answered_s']:.2f} s (socket bound {fmt_opt(t['bound_s'])} s, ping {t['ping_s']:.2f} s)",
            f"< {TARGET_TEMPLATE_START_S} s",
            verdict(t["status_answered_s"] < TARGET_TEMPLATE_START_S),
        ))
        rows.append((
            f"template over {t['mirrors']} repositories: resident memory once idle",
            f"{t['rss_kib'] / 1024:.1f} MiB (peak {t['hwm_kib'] / 1024:.1f} MiB)",
            f"< {TARGET_TEMPLATE_RSS_MIB} MiB",
            verdict(t["rss_kib"] / 1024 < TARGET_TEMPLATE_RSS_MIB),
        ))
    return rows


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def fmt_summary(s):
    return f"{ms(s['median']):.1f}", f"{ms(s['p90']):.1f}", f"{ms(s['min']):.1f}", f"{ms(s['max']):.1f}"


def report(info, r, args, total_s):
    lines = []
    lines.append(
        f"Run {datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')} with `scripts/bench-daemon.sh` "
        f"({total_s / 60:.1f} min in all), crate at `{info['crate']}`."
    )
    lines.append("")
    lines.append(
        f"- Machine: {info['cpu']}, nproc {info['nproc']}, {info['memory']} RAM; {info['kernel']}; "
        f"temporary files on {info['tmpdir']}; load average {info['load']} at start, {loadavg()} at the end"
    )
    lines.append(f"- Tools: {info['git']}; {info['rustc']}; Python {info['python']}")
    lines.append("")
    lines += table(("measure", "measured", "target", "verdict"), results_rows(r))
    if "hook" in r:
        h = r["hook"]
        lines += ["", f"`git push` of one small commit through file:// ({h['push']['none']['n']} of each, interleaved), ms:", ""]
        labels = {
            "none": "no hook",
            "sh": "`#!/bin/sh` hook, `cat >/dev/null`",
            "up": "pushmirror hook, daemon up",
            "down": "pushmirror hook, daemon down (spools)",
        }
        rows = [
            (labels[v], *fmt_summary(h["push"][v]),
             "" if v == "none" else f"{ms(h['paired'][v]['median']):+.1f}")
            for v in labels
        ]
        lines += table(("push", "median", "p90", "min", "max", "median of per-round differences to no hook"), rows)
        lines += ["", f"`pushmirror notify` alone ({h['notify']['up']['n']} of each, interleaved), ms:", ""]
        labels = {
            "version": "`pushmirror --version` (process start)",
            "empty": "`notify`, empty input (+ tokio runtime; no config, no socket)",
            "unmirrored": "`notify`, daemon up, repository without mirrors (+ config, connect, round trip; no queue write)",
            "up": "`notify`, daemon up, mirrored repository (+ queue journal append and fsync)",
            "down": "`notify`, daemon down (+ spool file: write, fsync, rename, fsync dir)",
        }
        rows = [(labels[k], *fmt_summary(h["notify"][k])) for k in labels]
        lines += table(("command", "median", "p90", "min", "max"), rows)
        lines += ["", f"Push-to-mirror ({h['latency']['n']} of each, interleaved), ms:", ""]
        rows = [
            ("`git push`, pushmirror hook (mirror `delay = \"0s\"`)", *fmt_summary(h["lat_push"]["lat"])),
            ("then until the downstream ref is the pushed commit", *fmt_summary(h["latency"])),
            ("`git push`, hook running `git push --mirror` synchronously", *fmt_summary(h["lat_push"]["plain"])),
            ("`git push`, no hook", *fmt_summary(h["lat_push"]["none"])),
        ]
        lines += table(("", "median", "p90", "min", "max"), rows)
        lines.append("")
        lines.append(
            f"The synchronous `git push --mirror` hook adds "
            f"{ms(h['lat_push']['plain']['median'] - h['lat_push']['none']['median']):.0f} ms (median) to the push; "
            f"pushmirror's update itself took {h['lat_update_ms']:.0f} ms (median `duration_ms` in `history`)."
        )
    if "burst" in r:
        u = r["burst"]
        lines += [
            "",
            f"Burst: {u['mirrors']} repositories with one mirror each (`delay = \"2s\"`), first synced "
            f"({u['first_sync_s']:.1f} s for the {u['mirrors']}); then one new commit in each, and "
            f"{u['process']['notifications'] // u['mirrors']} notifications per repository sent round robin, "
            f"{u['concurrency']} at a time, once as `pushmirror notify` processes (the hook), once as requests on "
            f"{u['concurrency']} persistent socket connections (the daemon alone, no process per notification):",
            "",
        ]
        rows = []
        for kind, label in (("process", "`pushmirror notify`"), ("socket", "socket requests")):
            k = u[kind]
            rows.append((
                label,
                f"{k['wall_s']:.2f} s, {k['rate']:.0f}/s",
                f"{ms(k['call']['median']):.0f} / {ms(k['call']['p90']):.0f} / {ms(k['call']['max']):.0f}",
                f"{k['notifications'] - k['unacked'] - k['failed']}/{k['notifications']}",
                f"{k['span_median_s']:.1f} s",
                fmt_hist(k["updates_hist"]),
                f"{k['unexplained']}"
                + (" (" + ", ".join(f"{n} {ordinal(i)}" for i, n in k["redundant_at"].items()) + ")" if k["redundant_at"] else "")
                + f"; {k['after_last_max']}",
                fmt_hist(k["pushes_hist"]),
                f"{k['settle_s']:.1f} s",
                f"{u['mirrors'] - k['lost']}/{u['mirrors']}",
            ))
        lines += table(
            ("sent as", "wall, rate", "one call ms median / p90 / max", "acknowledged",
             "span of one repository's notifications (median)", "updates per mirror",
             "redundant updates (no notification acknowledged after the previous update started); max updates started after a mirror's last notification",
             "pushes that moved refs per downstream", "settled after", "final commit downstream"),
            rows,
        )
    if "idle" in r:
        i = r["idle"]
        lines += [
            "",
            f"{i['mirrors']} mirrors ({i['repos']} repositories x {i['mirrors'] // i['repos']}, each mirror to its own "
            f"file:// downstream already holding the same refs): first start (every mirror synced once: `ls-remote`, "
            f"nothing to push) settled in {i['first_settled_s']:.0f} s, peak RSS {i['first_hwm_kib'] / 1024:.0f} MiB. "
            f"Second start: socket bound after {fmt_opt(i['bound_s'])} s (configuration loaded), \"daemon ready\" logged after "
            f"{fmt_opt(i['ready_s'])} s (state of every mirror read), ping answered after {i['ping_s']:.2f} s, `status --json` "
            f"after {i['status_answered_s']:.2f} s, "
            f"CPU idle after {i['settled_s']:.1f} s, {i['updates_on_second_start']} updates run; RSS {i['rss_kib'] / 1024:.1f} MiB "
            f"({i['threads']} threads), {i['rss_after_status_kib'] / 1024:.1f} MiB after the `status` calls; "
            f"`status --json` {i['status']['median']:.2f} s median (min {i['status']['min']:.2f}, max {i['status']['max']:.2f}) "
            f"for {i['status_mib']:.1f} MiB of JSON; the `status` table {i['table_s']:.2f} s; SIGTERM to exit {i['stop_s']:.2f} s. "
            f"The hook (`notify`, repository without mirrors) with this {i['config_mib']:.1f} MiB configuration: "
            f"{ms(i['notify']['median']):.1f} ms median, {ms(i['notify']['p90']):.1f} ms p90"
            + (f" (vs {ms(r['hook']['notify']['unmirrored']['median']):.1f} ms with the two-mirror configuration above)." if "hook" in r else "."),
            "",
            f"Metrics of the {i['mirrors']} mirrors: `GET /metrics` {ms(i['scrape']['metrics']['median']):.0f} ms median "
            f"(p90 {ms(i['scrape']['metrics']['p90']):.0f}, min {ms(i['scrape']['metrics']['min']):.0f}, "
            f"max {ms(i['scrape']['metrics']['max']):.0f}; {i['scrape']['metrics']['n']} scrapes, each on a new connection, "
            f"body read whole) for {i['scrape']['mib']:.1f} MiB, {i['scrape']['samples']} samples; `GET /healthz` "
            f"{ms(i['scrape']['healthz']['median']):.1f} ms median. RSS {i['rss_after_status_kib'] / 1024:.1f} MiB after "
            f"the `status` calls and the scrapes.",
        ]
    if "template" in r:
        t = r["template"]
        lines += [
            "",
            f"One `[[mirror_template]]` over {t['mirrors']} repositories ({t['groups']} directories x "
            f"{t['mirrors'] // t['groups']}, each with the hook, each to its own file:// downstream holding the same "
            f"refs): `check-config` (walk, expansion, validation of every mirror, hook check of every repository) "
            f"{t['check_config']['median']:.2f} s median of {t['check_config']['n']} (min {t['check_config']['min']:.2f}, "
            + (f"max {t['check_config']['max']:.2f}); the mirrors disabled (`--template-disabled`: no first sync, no "
               f"state files). Start: socket bound after {fmt_opt(t['bound_s'])} s " if t["disabled"] else
               f"max {t['check_config']['max']:.2f}); first start settled in {t['first_settled_s']:.0f} s, peak RSS "
               f"{t['first_hwm_kib'] / 1024:.0f} MiB. Second start: socket bound after {fmt_opt(t['bound_s'])} s ")
            + f"(configuration loaded and expanded), \"daemon ready\" after {fmt_opt(t['ready_s'])} s, ping after "
            f"{t['ping_s']:.2f} s, `status --json` answered after {t['status_answered_s']:.2f} s; RSS "
            f"{t['rss_kib'] / 1024:.1f} MiB once idle, {t['rss_after_status_kib'] / 1024:.1f} MiB after the `status` calls; "
            f"`status --json` {t['status']['median']:.2f} s median (min {t['status']['min']:.2f}, max {t['status']['max']:.2f}).",
        ]
    problems = daemon_problems(r)
    lines += ["", "Daemon logs: " + ("no WARN or ERROR lines." if not problems else
              f"{len(problems)} WARN/ERROR lines, e.g. `{problems[0][:200]}`")]
    return "\n".join(lines) + "\n"


def daemon_problems(r):
    out = []
    for key in ("hook", "burst"):
        out += r.get(key, {}).get("problems", [])
    if "idle" in r:
        out += r["idle"]["first_problems"] + r["idle"]["problems"]
    if "template" in r:
        out += r["template"]["first_problems"] + r["template"]["problems"]
    return out


def ordinal(n):
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def fmt_opt(value):
    return "?" if value is None else f"{value:.2f}"


def fmt_hist(hist):
    return ", ".join(f"{count} mirrors x {k}" for k, count in hist.items())


# ---------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--markdown", metavar="FILE", help="write the results section (markdown) there")
    parser.add_argument("--pushes", type=int, default=50, help="timed pushes of each kind (1)")
    parser.add_argument("--latency-samples", type=int, default=20, help="push-to-mirror samples (2)")
    parser.add_argument("--burst-mirrors", type=int, default=100)
    parser.add_argument("--burst-notifications", type=int, default=1000)
    parser.add_argument("--burst-concurrency", type=int, default=16)
    parser.add_argument("--big-repos", type=int, default=100)
    parser.add_argument("--big-per-repo", type=int, default=100)
    parser.add_argument("--big-timeout", type=int, default=600, help="seconds for the first start to settle")
    parser.add_argument("--status-runs", type=int, default=5)
    parser.add_argument("--template-groups", type=int, default=100)
    parser.add_argument("--template-per-group", type=int, default=100)
    parser.add_argument("--template-disabled", action="store_true",
                        help="part 5 with the template's mirrors disabled: no first start of 10,000 first syncs")
    parser.add_argument("--scrape-runs", type=int, default=10, help="timed GET /metrics (4)")
    parser.add_argument("--only", choices=("hook", "burst", "idle", "template"), action="append",
                        help="run only these parts (repeatable)")
    args = parser.parse_args()

    binary = Path(os.environ.get("PUSHMIRROR_BIN") or CRATE / "target" / "release" / "pushmirror").resolve()
    if not os.access(binary, os.X_OK):
        log(f"error: no pushmirror binary at {binary} (run scripts/bench-daemon.sh, or set PUSHMIRROR_BIN)")
        return 1
    info = machine()
    log("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()))
    root = Path(tempfile.mkdtemp(prefix="pushmirror-bench-daemon-"))
    (root / "home").mkdir()
    (root / "bin").mkdir()
    shutil.copy2(binary, root / "bin" / "pushmirror")
    b = Bench(root, root / "bin" / "pushmirror")
    log(f"binary {binary} ({first_line([str(binary), '--version'])}), copied; work in {root}")
    parts = args.only or ["hook", "burst", "idle", "template"]
    started = time.perf_counter()
    results = {}
    code = 0
    try:
        if "hook" in parts:
            results["hook"] = bench_hook_and_latency(b, args)
        if "burst" in parts:
            results["burst"] = bench_burst(b, args)
        if "idle" in parts:
            results["idle"] = bench_idle(b, args)
        if "template" in parts:
            results["template"] = bench_template(b, args)
    except BenchError as e:
        log(f"error: {e}")
        code = 1
    except Exception:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        b.stop_all()
    total_s = time.perf_counter() - started
    text = report(info, results, args, total_s)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
        log(f"wrote {args.markdown}")
    if code == 0 and "burst" in results:
        for kind in ("process", "socket"):
            k = results["burst"][kind]
            if k["lost"] or k["failed"] or (kind == "socket" and k["unacked"]):
                log(f"error: burst ({kind}): {k['lost']} mirrors lost their last commit, {k['failed']} notify calls failed, {k['unacked']} not acknowledged {k['unacked_example']}")
                code = 1
    if args.keep or code != 0 and os.environ.get("BENCH_KEEP_ON_ERROR"):
        log(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    log(f"total {total_s:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
