#!/usr/bin/env python3
"""Git LFS benchmark (issue 9): pushmirror against `git lfs push --all` to the same server.

Run it as `scripts/bench-lfs.sh` from anywhere. Standard library only, plus git-lfs and the
giftless of `target/ci-venv` (anonymous read-write, local storage, Flask's threaded server).

Fixture: a bare repository whose history (made with the real git-lfs client) holds N objects of
SIZE random bytes (default 200 x 1 MiB) in one commit, in its `lfs/objects` as git-lfs puts
them when pushing to a local path; then one more commit with one new object.

Cases, each interleaved A, B, A, B... with medians reported:
- first sync: (A) `pushmirror update` of a mirror to an empty file:// remote whose lfs_url is a
  repository new to the server (every object uploaded, then the refs pushed), against (B)
  `git lfs push --all` from the work clone to a repository new to the server (the objects
  only).
- incremental, one new object: the remote and the server hold everything but the last commit
  and its object (restored before each run, untimed). (A) `pushmirror update`, against (C)
  the same update with `lfs = "off"` (the push alone) plus (D) `git lfs push --object-id` of
  the one object: the issue's target is A <= 1.1 x (C + D). (B) `git lfs push --all` (which
  asks the server about every object) is shown too.

Exit 0 whatever the ratios; 1 if anything fails (an update that does not finish, objects that
do not reach the server).
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchlib import hermetic_env, machine

CRATE = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    pass


def log(message):
    print(message, file=sys.stderr, flush=True)


def run(argv, env, check=True, cwd=None):
    r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    if check and r.returncode != 0:
        raise BenchError(
            f"command failed ({r.returncode}): {' '.join(map(str, argv))[:300]}\n"
            + r.stderr.decode(errors="replace")[-2000:]
            + r.stdout.decode(errors="replace")[-1000:]
        )
    return r


def timed(argv, env, cwd=None):
    t0 = time.perf_counter()
    run(argv, env, cwd=cwd)
    return time.perf_counter() - t0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_giftless(venv, root, env):
    storage = root / "giftless-storage"
    storage.mkdir()
    config = root / "giftless.yaml"
    config.write_text(
        "AUTH_PROVIDERS:\n  - giftless.auth.allow_anon:read_write\n"
        "TRANSFER_ADAPTERS:\n  basic:\n    factory: giftless.transfer.basic_streaming:factory\n"
        "    options:\n      storage_class: giftless.storage.local_storage:LocalStorage\n"
        f"      storage_options: {{path: {storage}}}\nLEGACY_ENDPOINTS: false\n"
    )
    port = free_port()
    log_file = open(root / "giftless.log", "wb")
    proc = subprocess.Popen(
        [str(venv / "bin" / "flask"), "--app", "giftless.wsgi_entrypoint", "run",
         "--host", "127.0.0.1", "--port", str(port), "--with-threads"],
        env={**env, "GIFTLESS_CONFIG_FILE": str(config)}, stdout=log_file, stderr=log_file,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError("giftless exited:\n" + (root / "giftless.log").read_text())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port, storage
        except OSError:
            time.sleep(0.05)
    raise BenchError("giftless did not listen within 30 s")


def stored(storage, repo):
    d = storage / "org" / repo
    return sum(1 for p in d.rglob("*") if p.is_file()) if d.exists() else 0


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="interleaved runs per case")
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--size", type=int, default=1 << 20, help="bytes per object")
    parser.add_argument("--markdown", type=Path, help="also write the results block here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    venv = Path(os.environ.get("PUSHMIRROR_TEST_VENV", CRATE / "target" / "ci-venv"))
    if not (venv / "bin" / "flask").exists():
        log(f"giftless is not installed in {venv}: run .ci/run first")
        return 1
    binary = os.environ.get("PUSHMIRROR_BIN")
    if binary:
        binary = Path(binary).resolve()
    else:
        run(["cargo", "build", "--release", "--quiet"], dict(os.environ), cwd=CRATE)
        binary = CRATE / "target" / "release" / "pushmirror"
    commit = run(["git", "-C", str(CRATE), "rev-parse", "--short", "HEAD"], dict(os.environ),
                 check=False).stdout.decode().strip() or "?"
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t_start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="pushmirror-bench-lfs-"))
    giftless = None
    info = machine()
    try:
        home = root / "home"
        home.mkdir()
        env = hermetic_env(home)
        # git-lfs's filters live in a global configuration of the benchmark's own.
        gitconfig = home / "gitconfig"
        gitconfig.write_text("")
        env["GIT_CONFIG_GLOBAL"] = str(gitconfig)
        run(["git", "lfs", "install", "--skip-repo"], env)
        giftless, port, storage = start_giftless(venv, root, env)
        base = f"http://127.0.0.1:{port}/org"

        log(f"fixture: {args.objects} objects of {args.size} bytes")
        src, work = root / "src.git", root / "work"
        run(["git", "init", "-q", "--bare", str(src)], env)
        run(["git", "init", "-q", "-b", "main", str(work)], env)
        run(["git", "lfs", "install", "--local"], env, cwd=work)
        run(["git", "lfs", "track", "*.bin"], env, cwd=work)
        for i in range(args.objects):
            (work / f"o{i:04}.bin").write_bytes(os.urandom(args.size))
        run(["git", "add", "."], env, cwd=work)
        run(["git", "commit", "-q", "-m", "objects"], env, cwd=work)
        run(["git", "push", "-q", f"file://{src}", "main"], env, cwd=work)
        old_tip = run(["git", "rev-parse", "HEAD"], env, cwd=work).stdout.decode().strip()
        (work / "new.bin").write_bytes(os.urandom(args.size))
        run(["git", "add", "new.bin"], env, cwd=work)
        run(["git", "commit", "-q", "-m", "one more"], env, cwd=work)
        run(["git", "push", "-q", f"file://{src}", "main"], env, cwd=work)
        new_oid = run(["git", "lfs", "ls-files", "-l", "-I", "new.bin"], env, cwd=work) \
            .stdout.decode().split()[0]
        run(["git", "remote", "add", "origin", f"file://{src}"], env, cwd=work)
        log(f"fixture built in {time.perf_counter() - t_start:.1f} s")

        state = root / "state"

        def write_config(lfs_mode, remote, lfs_repo):
            (root / "pushmirror.toml").write_text(
                f'[daemon]\nstate_dir = "{state}"\n\n[[mirror]]\nname = "m"\nrepo = "{src}"\n'
                f'url = "file://{remote}"\nlfs = "{lfs_mode}"\nlfs_url = "{base}/{lfs_repo}.git/info/lfs"\n'
            )

        pm_env = {**env, "PUSHMIRROR_CONFIG": str(root / "pushmirror.toml")}

        def pushmirror_update():
            return timed([str(binary), "update", "m"], pm_env)

        def git_lfs_push(lfs_repo, *extra):
            run(["git", "config", "lfs.url", f"{base}/{lfs_repo}.git/info/lfs"], env, cwd=work)
            return timed(["git", "lfs", "push", *extra], env, cwd=work)

        results = {}
        # First sync.
        first_a, first_b = [], []
        for i in range(args.runs):
            remote = root / f"first-{i}.git"
            run(["git", "init", "-q", "--bare", str(remote)], env)
            shutil.rmtree(state, ignore_errors=True)
            write_config("auto", remote, f"pm-{i}")
            first_a.append(pushmirror_update())
            if stored(storage, f"pm-{i}") != args.objects + 1:
                raise BenchError(f"pushmirror stored {stored(storage, f'pm-{i}')} objects")
            first_b.append(git_lfs_push(f"gl-{i}", "--all", "origin"))
            if stored(storage, f"gl-{i}") != args.objects + 1:
                raise BenchError(f"git lfs push stored {stored(storage, f'gl-{i}')} objects")
            for repo in (f"pm-{i}", f"gl-{i}"):
                shutil.rmtree(storage / "org" / repo, ignore_errors=True)
            shutil.rmtree(remote)
            log(f"first sync {i + 1}: pushmirror {first_a[-1]:.2f} s, git lfs push --all {first_b[-1]:.2f} s")
        results["first"] = (first_a, first_b)

        # Incremental: remote and server hold all but the last commit and its object.
        remote = root / "incr.git"
        run(["git", "init", "-q", "--bare", str(remote)], env)
        shutil.rmtree(state, ignore_errors=True)
        write_config("auto", remote, "incr")
        run([str(binary), "update", "m"], pm_env)
        obj = storage / "org" / "incr" / new_oid[:2] / new_oid[2:4] / new_oid
        if not obj.exists():
            found = [p for p in (storage / "org" / "incr").rglob(new_oid)]
            if not found:
                raise BenchError("the new object is not on the server after the first update")
            obj = found[0]

        def restore():
            run(["git", "--git-dir", str(remote), "update-ref", "refs/heads/main", old_tip], env)
            if obj.exists():
                obj.unlink()

        incr_a, incr_b, incr_c, incr_d = [], [], [], []
        for i in range(args.runs):
            restore()
            write_config("auto", remote, "incr")
            incr_a.append(pushmirror_update())
            if not obj.exists():
                raise BenchError("pushmirror did not upload the new object")
            restore()
            incr_b.append(git_lfs_push("incr", "--all", "origin"))
            restore()
            write_config("off", remote, "incr")
            incr_c.append(pushmirror_update())
            incr_d.append(git_lfs_push("incr", "--object-id", "origin", new_oid))
            if not obj.exists():
                raise BenchError("git lfs push --object-id did not upload the new object")
            log(f"incremental {i + 1}: pushmirror {incr_a[-1]:.3f} s, lfs off {incr_c[-1]:.3f} s "
                f"+ one object {incr_d[-1]:.3f} s; git lfs push --all {incr_b[-1]:.3f} s")
        results["incr"] = (incr_a, incr_b, incr_c, incr_d)

        fa, fb = map(median, results["first"])
        ia, ib, ic, idd = map(median, results["incr"])
        mib = (args.objects + 1) * args.size / (1 << 20)
        text = (
            f"Run of {started}, binary {commit}, {args.runs} interleaved runs per case, "
            f"{args.objects} objects of {args.size} bytes (+1 for the incremental case), "
            f"{(time.perf_counter() - t_start) / 60:.1f} min in all.\n"
            f"Machine: {info['cpu']}, {info['nproc']} cores, {info['memory']}, {info['kernel']}, "
            f"{info['git']}, git-lfs {run(['git', 'lfs', 'version'], env).stdout.decode().split()[0]}, "
            f"giftless 0.6.2 (Flask's threaded server) on loopback; load average at the end "
            f"{machine()['load']}.\n\n"
            "| case | pushmirror s (median) | reference s (median) | ratio | target |\n"
            "|---|---:|---:|---:|---|\n"
            f"| first sync, {args.objects + 1} objects ({mib:.1f} MiB) | {fa:.3f} | "
            f"{fb:.3f} (`git lfs push --all`) | {fa / fb:.2f}x | <= 1.0x |\n"
            f"| incremental, one new object | {ia:.3f} | {ic + idd:.3f} (push with lfs off "
            f"{ic:.3f} + `git lfs push --object-id` {idd:.3f}) | {ia / (ic + idd):.2f}x | <= 1.1x |\n"
            f"| incremental, one new object, against `git lfs push --all` | {ia:.3f} | "
            f"{ib:.3f} | {ia / ib:.2f}x | (shown) |\n\n"
            "All runs (s):\n\n"
            f"- first sync, pushmirror: {', '.join(f'{x:.2f}' for x in results['first'][0])}\n"
            f"- first sync, git lfs push --all: {', '.join(f'{x:.2f}' for x in results['first'][1])}\n"
            f"- incremental, pushmirror: {', '.join(f'{x:.3f}' for x in incr_a)}\n"
            f"- incremental, pushmirror lfs off: {', '.join(f'{x:.3f}' for x in incr_c)}\n"
            f"- incremental, git lfs push --object-id: {', '.join(f'{x:.3f}' for x in incr_d)}\n"
            f"- incremental, git lfs push --all: {', '.join(f'{x:.3f}' for x in incr_b)}\n"
        )
        print(text)
        if args.markdown:
            args.markdown.write_text(text)
        return 0
    except BenchError as e:
        log(f"benchmark failed: {e}")
        return 1
    finally:
        if giftless is not None:
            os.killpg(giftless.pid, signal.SIGTERM)
            giftless.wait()
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
