"""Secret scan with a sentinel key (issue 12, DECISIONS 18).

A dedicated simulator accepts a random sentinel key; a kernel gets it in its environment and
executes a notebook that runs a transformation, fails under ``%xmode Verbose`` (one of our
errors, and a foreign error raised inside our frames), prints the reprs of Session, Settings and
Job, and logs goenhance_nb/httpx/httpcore at DEBUG. Then every surface is scanned for the key in
plain, base64 and URL-encoded forms: the saved notebook (outputs, metadata, widget state), every
IOPub message, the DEBUG log, and every file of the cache dir (SQLite index and ledger
included). The saved notebook must also hold no signed query string of a result URL.

One control cell prints the key on purpose: the scanner must find it there (so it provably
works) and nowhere else. The browser-level scan lives in tests/browser (not repeated here).
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from simctl import start_sim

from reliability.conftest import files_under, find_secrets

pytestmark = pytest.mark.slow

# "+", "/" and "=" make the URL-encoded form differ from the plain one
SENTINEL = f"sk-SENTINEL-{secrets.token_hex(16)}+Zk/{secrets.token_hex(4)}="

CELLS = [
    "import logging\n"
    "logging.basicConfig(filename='debug.log', level=logging.DEBUG, force=True)\n"
    "for name in ('goenhance_nb', 'httpx', 'httpcore'):\n"
    "    logging.getLogger(name).setLevel(logging.DEBUG)",
    "%load_ext goenhance_nb",
    "job = %goenhance run clip.mp4 --style 2000 -d 3 -r 540p --wait\njob",
    "%goenhance jobs",
    "%goenhance config",
    "import goenhance_nb\n"
    "s = goenhance_nb.get_session()\n"
    "print(repr(s)); print(repr(s.settings)); print(repr(s.settings.api_key)); print(repr(job))\n"
    "print(job.record)\n"
    "s.settings",
    "%xmode Verbose",
    # one of our errors (one line) and a foreign error raised inside our frames (full
    # Verbose traceback with the locals of each frame)
    "goenhance_nb.transform('clip.mp4', 'No Such Style', duration=3)",
    "goenhance_nb.Session(settings=s.settings, transport=object()).credits()",
    "goenhance_nb.get_session().client.generate(None, None).send(None)",
]
ERROR_CELLS = {7, 8, 9}
# The control: prints the key (plain, base64, URL-encoded). Must be caught, and only here.
LEAK = (
    "import os, base64, urllib.parse\n"
    "k = os.environ['GOENHANCE_API_KEY']\n"
    "print('leak:', k)\n"
    "print('leak-b64:', base64.b64encode(k.encode()).decode())\n"
    "print('leak-url:', urllib.parse.quote(k, safe=''))"
)


class RecordingClient(NotebookClient):
    """nbclient that keeps every IOPub message with the index of the cell it belongs to."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.messages: list[tuple[int, dict[str, Any]]] = []

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        self.messages.append((cell_index, msg))
        return super().process_message(msg, cell, cell_index)


def test_sentinel_key_leaves_no_trace(tmp_path: Path, clip: Path) -> None:
    sim = start_sim(tmp_path / "sentinel-sim", keys=[SENTINEL])
    try:
        work = tmp_path / "work"
        work.mkdir()
        shutil.copy(clip, work / "clip.mp4")
        cache = tmp_path / "cache"
        nb = nbformat.v4.new_notebook()
        for i, src in enumerate(CELLS):
            cell = nbformat.v4.new_code_cell(src)
            if i in ERROR_CELLS:
                cell.metadata["tags"] = ["raises-exception"]
            nb.cells.append(cell)
        nb.cells.append(nbformat.v4.new_code_cell(LEAK))
        leak_index = len(nb.cells) - 1
        env = {
            "GOENHANCE_API_KEY": SENTINEL,
            "GOENHANCE_BASE_URL": sim.base_url,
            "GOENHANCE_CACHE_DIR": str(cache),
            "GOENHANCE_POLL_INTERVAL": "0.1",
        }
        client = RecordingClient(
            nb,
            timeout=180,
            kernel_name="python3",
            allow_errors=False,
            resources={"metadata": {"path": str(work)}},
        )
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            client.execute(env={**__import__("os").environ, **env})
        saved = work / "scan.ipynb"
        nbformat.write(nb, saved)

        # the run really happened and the failing cells really failed
        text = json.dumps(nb.cells[2].outputs)
        assert "goenhance-video" in text, text
        for i in ERROR_CELLS:
            assert any(o.output_type == "error" for o in nb.cells[i].outputs), i
        assert sim.generate_calls() == 1

        # control: the scanner finds the leaking cell, in the notebook and on IOPub
        leak_nb = json.dumps(nb.cells[leak_index].outputs)
        leak_msgs = json.dumps([m for i, m in client.messages if i == leak_index], default=str)
        for blob in (leak_nb, leak_msgs):
            hits = find_secrets([("leak", blob)], SENTINEL)
            assert len(hits) >= 3, hits  # plain, base64 and URL-encoded

        # everything else: zero occurrences
        clean = nbformat.from_dict(json.loads(json.dumps(nb)))
        clean.cells[leak_index].outputs = []
        clean_text = json.dumps(clean)
        blobs: list[tuple[str, bytes | str]] = [
            ("notebook", clean_text),
            *[
                (f"iopub[{i}] {m['msg_type']}", json.dumps(m, default=str))
                for i, m in client.messages
                if i != leak_index
            ],
            *[(f"cache/{n}", b) for n, b in files_under(cache)],
            *[(f"work/{n}", b) for n, b in files_under(work) if n != "scan.ipynb"],
        ]
        assert (work / "debug.log").stat().st_size > 0
        assert (
            "httpx" in (work / "debug.log").read_text()
            or "httpcore" in (work / "debug.log").read_text()
        )
        assert find_secrets(blobs, SENTINEL) == []
        assert "sig=" not in clean_text and "exp=" not in clean_text, "signed URL in notebook"
    finally:
        sim.stop()
