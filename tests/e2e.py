"""What the end-to-end tests share: commands, and one template repository for every test.

The template is the working tree's files with tiny params, committed, after one
`dvc repro`. It is made once per test session, whichever pytest-xdist worker
asks first (the others wait for it), and each test module copies it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.conftest import TINY_PARAMS

ROOT = Path(__file__).resolve().parents[1]


def sh(*args, cwd, check=True):
    """Run a command with this interpreter's environment first on PATH; return stdout.

    With `check=False`, return `(exit status, stdout + stderr)` instead of failing.
    """
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if not check:
        return done.returncode, done.stdout + done.stderr
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def dvc(*args, cwd, check=True):
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd, check=check)


def commit(repo, message):
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, cwd=repo)


def reset(repo):
    """Back to the last commit: params, lock, metrics and the DVC-tracked outputs."""
    sh("git", "checkout", "-q", "--", ".", cwd=repo)
    dvc("checkout", "-q", cwd=repo)


def experiments(repo) -> dict:
    """name -> data of each experiment in `dvc exp show --json`."""
    rows = json.loads(dvc("exp", "show", "--json", cwd=repo))
    return {
        exp["name"]: exp["revs"][0]["data"]
        for row in rows
        for exp in row.get("experiments") or []
        if exp.get("name")
    }


def build_template(repo: Path) -> None:
    """The working tree's files, tiny params, one commit, one `dvc repro`, committed."""
    files = sh("git", "ls-files", "-co", "--exclude-standard", "-z", cwd=ROOT).split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in TINY_PARAMS.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    commit(repo, "tiny params")  # DVCLive needs a commit to read
    status, output = dvc("repro", cwd=repo, check=False)
    assert status == 0, output[-3000:]
    (repo.parent / "repro.log").write_text(output)
    commit(repo, "reproduced")


def template(shared_root: Path, timeout_s: float = 900) -> Path:
    """The session's template repository under `shared_root`, made by the first who asks.

    A folder made with `mkdir` (atomic) claims the work; `ready` marks it done.
    """
    base = shared_root / "e2e-template"
    repo, ready, failed = base / "repo", base / "ready", base / "failed"
    try:
        repo.mkdir(parents=True)
    except FileExistsError:  # another worker builds it
        deadline = time.monotonic() + timeout_s
        while not (ready.exists() or failed.exists()):
            assert time.monotonic() < deadline, "the template repository took too long"
            time.sleep(1)
        assert ready.exists(), failed.read_text()
        return repo
    try:
        build_template(repo)
    except BaseException as error:
        failed.write_text(str(error)[-3000:])
        raise
    ready.touch()
    return repo


def copy_of(source: Path, target: Path) -> Path:
    """A copy of a repository, its git history and DVC cache included."""
    shutil.copytree(source, target, symlinks=True)
    shutil.copy2(source.parent / "repro.log", target.parent / "repro.log")
    return target
