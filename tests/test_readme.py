"""The README's commands and API examples, run in order as a newcomer would run them, so they cannot rot.

Every ```bash and ```python block in README.md runs, unless the line before it says otherwise:

    <!-- doctest: service -->          started in the background as the service (replacing an earlier
                                        one); the next block waits for /readyz
    <!-- doctest: background -->       started in the background and left running (a webhook receiver)
    <!-- doctest: file PATH -->        not run: its text is written to PATH (a routing file, a CSV)
    <!-- doctest: needs-shared-data --> run where ../shared/data exists, else skipped with a note
    <!-- doctest: skip REASON -->      not run, for the reason given (which is required)

Blocks of any other language (text, json, yaml, csv) are synopses and are not run. Each block runs in a
fresh shell (`set -euo pipefail`), in a working folder laid out like a clone: Makefile, pyproject.toml,
.venv and the packages are links to this checkout, `data/demo/demo_corpus.csv` is a 600-row sample of
the demo corpus (so training and cross-validation take seconds), and the registry starts empty, as in a
clone (`make run` trains the default model). Four substitutions, always the same, are all
that differs from a reader's machine: the service's port 8000 and the receiver's port 9000 become free ones,
`models/encoder_e5` (the real e5, `make encoder`) becomes the tiny test encoder, and `../shared/data` is
the checkout's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.conftest import ROOT, SHARED_DATA

README = ROOT / "README.md"
LINKED = ("Makefile", "pyproject.toml", ".venv", "models", "training", "service", "xiaobao", "notebooks")
RUNNABLE = {"bash", "sh", "python"}
MARK = re.compile(r"<!--\s*doctest:\s*(?P<kind>[\w-]+)\s*(?P<arg>.*?)\s*-->")
BLOCK_TIMEOUT = 300


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    kind: str = "run"  # run | service | background | file | needs-shared-data | skip | synopsis
    arg: str = ""


def readme_blocks(path: Path = README) -> list[Block]:
    """The fenced blocks of the README with their doctest marks."""
    blocks, lines, i, mark = [], path.read_text(encoding="utf-8").splitlines(), 0, None
    while i < len(lines):
        line = lines[i]
        found = MARK.fullmatch(line.strip())
        if found:
            mark = found
            i += 1
            continue
        if line.startswith("```"):
            lang, start, body = line[3:].strip(), i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            block = Block(start, lang, "\n".join(body) + "\n")
            if mark:
                block.kind, block.arg = mark.group("kind"), mark.group("arg")
            elif lang not in RUNNABLE:
                block.kind = "synopsis"
            blocks.append(block)
            mark = None
        elif line.strip():
            mark = None  # a mark belongs to the block right after it
        i += 1
    return blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_mark_is_understood_and_every_skip_says_why():
    blocks = readme_blocks()
    assert sum(b.kind == "run" for b in blocks) >= 20, "the README should show runnable commands"
    for b in blocks:
        assert b.kind in {"run", "service", "background", "file", "needs-shared-data", "skip", "synopsis"}, \
            f"README.md:{b.line}: unknown doctest mark {b.kind!r}"
        if b.kind == "skip":
            assert len(b.arg) > 10, f"README.md:{b.line}: a skipped block must say why"
        if b.kind == "file":
            assert b.arg and not Path(b.arg).is_absolute(), f"README.md:{b.line}: file needs a relative path"


class Terminal:
    """The reader's terminals: foreground commands, the service and background helpers."""

    def __init__(self, cwd: Path, env: dict[str, str], substitutions: dict[str, str], log: Path) -> None:
        self.cwd, self.env, self.subs, self.log = cwd, env, substitutions, log
        self.service: subprocess.Popen | None = None
        self.background: list[subprocess.Popen] = []
        self.port = int(env["PORT"])
        self.seconds: dict[int, float] = {}  # README line → wall time, printed at the end

    def text(self, block: Block) -> str:
        text = block.text
        for old, new in self.subs.items():
            text = text.replace(old, new)
        return text

    def _start(self, block: Block, name: str) -> subprocess.Popen:
        out = open(self.log / f"{name}-line{block.line}.log", "w", encoding="utf-8")  # noqa: SIM115 (closed with the process)
        return subprocess.Popen(["bash", "-c", "set -euo pipefail\n" + self.text(block)], cwd=self.cwd, env=self.env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, block: Block) -> None:
        if block.lang == "python":
            argv = [str(self.cwd / ".venv" / "bin" / "python"), "-c", self.text(block)]
        else:
            argv = ["bash", "-c", "set -euo pipefail\n" + self.text(block)]
        started = time.monotonic()
        try:
            done = subprocess.run(argv, cwd=self.cwd, env=self.env, capture_output=True, text=True,
                                  timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"README.md:{block.line}: still running after {BLOCK_TIMEOUT} s:\n{block.text}")
        self.seconds[block.line] = time.monotonic() - started
        (self.log / f"block-line{block.line}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
        if done.returncode != 0:
            pytest.fail(f"README.md:{block.line}: exit {done.returncode}\n--- block ---\n{block.text}"
                        f"--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}")

    def start_service(self, block: Block) -> None:
        self.stop(self.service)
        started = time.monotonic()
        self.service = self._start(block, "service")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if self.service.poll() is not None:
                pytest.fail(f"README.md:{block.line}: the service exited ({self.service.returncode}):\n"
                            + self.tail(block, "service"))
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    self.seconds[block.line] = time.monotonic() - started
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"README.md:{block.line}: /readyz not 200 after 240 s:\n" + self.tail(block, "service"))

    def start_background(self, block: Block) -> None:
        process = self._start(block, "background")
        self.background.append(process)
        port = re.search(r"--port (\d+)", self.text(block))
        deadline = time.monotonic() + 30
        while port and time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"README.md:{block.line}: exited ({process.returncode}):\n" + self.tail(block, "background"))
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", int(port.group(1)))) == 0:
                    return
            time.sleep(0.2)

    def tail(self, block: Block, name: str) -> str:
        return (self.log / f"{name}-line{block.line}.log").read_text(encoding="utf-8")[-3000:]

    @staticmethod
    def stop(process: subprocess.Popen | None) -> None:
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def close(self) -> None:
        for process in [self.service, *self.background]:
            self.stop(process)


@pytest.fixture
def clone(tmp_path, demo_corpus) -> Path:
    """A folder laid out like a fresh clone after `make install`, with a small corpus and no model yet
    (`make run` trains it)."""
    folder = tmp_path / "clone"
    folder.mkdir()
    for name in LINKED:
        (folder / name).symlink_to(ROOT / name)
    corpus = pd.read_csv(demo_corpus, dtype=str, keep_default_na=False)
    sample = corpus.groupby("category", group_keys=False).sample(frac=600 / len(corpus), random_state=0)
    (folder / "data" / "demo").mkdir(parents=True)
    sample.sort_values("received_at").to_csv(folder / "data" / "demo" / "demo_corpus.csv", index=False)
    return folder


def test_the_readme_runs_from_a_fresh_clone_to_a_letter_in_the_inbox(clone, tmp_path, tiny_encoder):
    port, receiver_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XIAOBAO_", "PYTEST_"))}
    env.update(PORT=str(port), XIAOBAO_REGISTRY=str(tmp_path / "registry"),
               XIAOBAO_CACHE=str(tmp_path / "embedding-cache"), XIAOBAO_RATE_LIMIT_PER_SECOND="0")
    subs = {"127.0.0.1:8000": f"127.0.0.1:{port}", "127.0.0.1:9000": f"127.0.0.1:{receiver_port}",
            "--port 9000": f"--port {receiver_port}", "models/encoder_e5": str(tiny_encoder),
            "../shared/data": str(SHARED_DATA)}
    log = tmp_path / "logs"
    log.mkdir()
    terminal = Terminal(clone, env, subs, log)
    skipped = []
    try:
        for block in readme_blocks():
            if block.kind == "file":
                target = clone / block.arg
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(terminal.text(block), encoding="utf-8")
            elif block.kind == "service":
                terminal.start_service(block)
            elif block.kind == "background":
                terminal.start_background(block)
            elif block.kind == "run" or (block.kind == "needs-shared-data" and SHARED_DATA.is_dir()):
                terminal.run(block)
            elif block.kind == "needs-shared-data":
                skipped.append(f"README.md:{block.line}: {SHARED_DATA} is absent")

        # Where the quick start leads: a letter in the inbox, in the API and in the console.
        key = (clone / "var" / "demo-key.txt").read_text().strip()
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            letters = client.get("/v1/letters", headers={"Authorization": f"Bearer {key}"}).json()
            assert letters["total"] >= 1 and letters["items"][0]["number"].startswith("〔")
            from tests.service.web.conftest import sign_in

            sign_in(client, key)
            inbox = client.get("/console/")
            assert inbox.status_code == 200 and letters["items"][0]["number"] in inbox.text
        # The integrators' webhook: delivered, its signature verified by the reference receiver, acted on once.
        deliveries = [json.loads(line) for line in (clone / "var" / "webhooks.jsonl").read_text().splitlines()]
        verified = [d for d in deliveries if d["status"] == 200 and d["event"] == "letter.issued"]
        assert verified and not any(d["duplicate"] for d in verified)
    finally:
        terminal.close()
    print("\n".join(skipped + [f"README.md:{line}: {sec:.1f} s" for line, sec in terminal.seconds.items()]))
