"""What both benchmark scripts share: a hermetic environment for git and pushmirror, and a
description of the machine. Standard library only."""

import os
import platform
import subprocess
from pathlib import Path

DATE = 1_700_000_000  # fixed epoch for every commit


def hermetic_env(home, drop=("RUST_LOG", "PUSHMIRROR_CONFIG", "PUSHMIRROR_BIN")):
    """The environment for every git and pushmirror command: nothing from the user."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("GIT_") and name not in drop
    }
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_CONFIG_SYSTEM": "/dev/null",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "init.defaultBranch",
            "GIT_CONFIG_VALUE_0": "main",
            "GIT_AUTHOR_NAME": "Bench",
            "GIT_AUTHOR_EMAIL": "bench@example.com",
            "GIT_COMMITTER_NAME": "Bench",
            "GIT_COMMITTER_EMAIL": "bench@example.com",
            "GIT_AUTHOR_DATE": f"{DATE} +0000",
            "GIT_COMMITTER_DATE": f"{DATE} +0000",
            "LC_ALL": "C",
            "LANG": "C",
        }
    )
    return env


def first_line(argv):
    """The first line a command prints, or "?"."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        return out.strip().splitlines()[0] if out.strip() else "?"
    except OSError:
        return "?"


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _proc_value(path, prefix):
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine():
    """CPU, memory, kernel, tool versions and load: what a reader needs to weigh the numbers."""
    mem_kib = _proc_value("/proc/meminfo", "MemTotal:")
    return {
        "nproc": str(os.cpu_count()),
        "memory": f"{int(mem_kib.split()[0]) / 1024 / 1024:.1f} GiB" if mem_kib else "?",
        "cpu": _proc_value("/proc/cpuinfo", "model name") or "?",
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "git": first_line(["git", "--version"]),
        "rustc": first_line(["rustc", "--version"]),
        "python": platform.python_version(),
        "load": loadavg(),
    }


def history_stream(commits):
    """git fast-import commands for a linear history on main: commit i changes src/fNN.txt
    (one of 50 files) to "i"; a list of strings, marks :1 to :commits."""
    parts = []
    for i in range(commits):
        message = f"commit {i}\n"
        content = f"{i}\n"
        parts.append(
            f"commit refs/heads/main\nmark :{i + 1}\n"
            f"author Bench <bench@example.com> {DATE + i} +0000\n"
            f"committer Bench <bench@example.com> {DATE + i} +0000\n"
            f"data {len(message)}\n{message}"
        )
        if i > 0:
            parts.append(f"from :{i}\n")
        parts.append(f"M 100644 inline src/f{i % 50:02d}.txt\ndata {len(content)}\n{content}\n")
    return parts
