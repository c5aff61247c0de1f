"""Reproducible notebooks: the lockfile, verify, bundle export and import (issue 14).

**Lockfile** ``goenhance.lock.json`` (DECISIONS 30) sits beside the notebook (the folder of
:func:`goenhance_nb._frontend.notebook_dir`: VS Code's notebook file, ``JPY_SESSION_NAME``, else
the kernel's working directory, which nbclient and papermill set to the notebook's folder), or
at the ``lockfile`` setting. It holds one entry per transformation a ``record``-mode session
used (new or cached), keyed by request key::

    {"format": 1, "results": {KEY: {"key", "input": {"name", "blake3"}, "params",
      "model": {"id", "label", "version"}, "backend", "job_id",
      "output": {"path", "sha256", "blake3", "size"}, "cost", "timestamps", "package"}}}

``output.path`` is relative to the lockfile's folder (the notebook's), with forward slashes.
The file is written as JSON with indent 2, sorted keys and a trailing newline (entries ordered
by key, so it diffs cleanly), through a temp file and ``os.replace`` under a file lock. It
never holds the API key or any URL (a record carries no URL at all).

**Bundles** are one zip (or tar, on import) archive: ``goenhance.lock.json`` at the root,
``results/<sha256>.mp4``, ``goenhance-bundle.json`` (the model list entries the results used,
so styles resolve offline) and, with ``inputs=True``, ``inputs/<sha256><ext>``. Import checks
every member before anything enters the cache: names (no absolute path, no ``..``, no
backslash, only the names above), types (regular files only: no symlink, hard link, device),
sizes (a cap per member, counted as the bytes arrive), hashes (sha256 from the lockfile; the
request key recomputed from the entry), and conflicts (a different result already cached under
the same key). Files are staged in the cache's ``tmp/`` and only then committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

import filelock

from goenhance_nb._cache import ResultRecord
from goenhance_nb._errors import BundleError, CacheError, ConfigError
from goenhance_nb._frontend import notebook_dir
from goenhance_nb._keys import hash_file, request_key, sha256_file
from goenhance_nb._outputs import output_file, outputs_path
from goenhance_nb._records import JobSpec
from goenhance_nb._store import OUTPUTS_DIRNAME, link_or_copy, slugify

if TYPE_CHECKING:  # annotations only
    from goenhance_nb._cache import ResultCache
    from goenhance_nb._ledger import Ledger
    from goenhance_nb._store import ResultStore

__all__ = [
    "BUNDLE_MANIFEST",
    "LOCKFILE_NAME",
    "OUTPUTS_DIRNAME",
    "ImportReport",
    "Lockfile",
    "VerifyReport",
    "export_bundle",
    "find_lockfile",
    "import_bundle",
    "lock_entry",
    "lockfile_location",
    "output_file",
    "sha256_file",
    "slugify",
    "verify",
]

LOCKFILE_NAME = "goenhance.lock.json"
BUNDLE_MANIFEST = "goenhance-bundle.json"
INPUTS_DIRNAME = "goenhance_inputs"
LOCK_FORMAT = 1
#: Largest lockfile / manifest member accepted from a bundle.
_MAX_JSON_MEMBER = 16 * 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RESULT_MEMBER = re.compile(r"^results/([0-9a-f]{64})\.mp4$")
_INPUT_MEMBER = re.compile(r"^inputs/([0-9a-f]{64})(\.[A-Za-z0-9]{1,8})?$")


# -- names and paths ---------------------------------------------------------------------------
def lockfile_location(setting: Path | str | None = None, *, nb_dir: Path | None = None) -> Path:
    """The lockfile path: the ``lockfile`` setting (relative to the notebook's folder when
    relative) or ``goenhance.lock.json`` in the notebook's folder."""
    base = nb_dir if nb_dir is not None else notebook_dir()
    if setting is None:
        return Path(base) / LOCKFILE_NAME
    p = Path(setting).expanduser()
    return p if p.is_absolute() else Path(base) / p


def find_lockfile(path: Path | str | None = None) -> Path:
    """The lockfile for ``path``: a lockfile itself, a notebook (``.ipynb``: the lockfile beside
    it), a folder (its ``goenhance.lock.json``), or None (the current notebook's).

    :raises ConfigError: no lockfile there.
    """
    if path is None:
        p = lockfile_location()
    else:
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / LOCKFILE_NAME
        elif p.suffix == ".ipynb":
            p = p.parent / LOCKFILE_NAME
    if not p.is_file():
        raise ConfigError(
            f"no lockfile at {p}: run the notebook in record mode first "
            "(GOENHANCE_MODE=record or %goenhance mode record)"
        )
    return p


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _package_version() -> str:
    from goenhance_nb import __version__

    return __version__


# -- the lockfile ------------------------------------------------------------------------------
class Lockfile:
    """``goenhance.lock.json``: read it, and add or replace entries atomically.

    :param path: the lockfile.
    :param lock_dir: folder for the write lock (default: beside the lockfile, a dot file).
    """

    def __init__(self, path: Path | str, *, lock_dir: Path | None = None) -> None:
        self.path = Path(path)
        lock_name = f".{self.path.name}.lock"
        if lock_dir is not None:
            digest = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:24]
            lock_name = f"lockfile-{digest}.lock"
        self._lock = filelock.FileLock(str((lock_dir or self.path.parent) / lock_name))

    @property
    def dir(self) -> Path:
        """The folder output paths are relative to (the notebook's)."""
        return self.path.parent

    def exists(self) -> bool:
        """Whether the lockfile exists."""
        return self.path.is_file()

    def entries(self) -> dict[str, dict[str, Any]]:
        """All entries by request key (empty when there is no lockfile).

        :raises CacheError: the file is not a lockfile (malformed JSON or shape).
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CacheError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        return parse_lockfile(text, str(self.path))

    def backends(self) -> set[str]:
        """The backends the entries were made on."""
        return {str(e.get("backend")) for e in self.entries().values() if e.get("backend")}

    def update(self, key: str, make: Callable[[dict[str, Any] | None], dict[str, Any]]) -> None:
        """Replace the entry for ``key`` with ``make(old_entry_or_None)`` and write the file
        atomically (temp file + ``os.replace``) under the file lock.

        :raises CacheError: the lockfile cannot be read or written.
        """
        try:
            with self._lock:
                entries = self.entries()
                entries[key] = make(entries.get(key))
                self._write(entries)
        except OSError as exc:
            raise CacheError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"format": LOCK_FORMAT, "results": entries}
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.dir)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(_dump(data))
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def parse_lockfile(text: str, where: str = "lockfile") -> dict[str, dict[str, Any]]:
    """The entries of a lockfile's text. :raises CacheError: not a lockfile."""
    try:
        data = json.loads(text)
    except ValueError:
        raise CacheError(f"{where} is not valid JSON") from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in results.items()
    ):
        raise CacheError(f"{where} is not a goenhance lockfile (no 'results' object)")
    return results


def lock_entry(
    record: ResultRecord,
    *,
    lock_dir: Path,
    output_dir: Path | str | None = None,
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The lockfile entry for a finished result; puts the result file beside the notebook
    (hard link or copy, as the display does) and records its path relative to ``lock_dir``.

    The sha256 is computed here, once: an ``old`` entry for the same output (same blake3) keeps
    its sha256. No URL and no key is ever part of an entry.

    :raises GoEnhanceError: the stored result file is gone or the output cannot be written.
    """
    dest = outputs_path(record, lock_dir, output_dir=output_dir)
    old_out = (old or {}).get("output") or {}
    if old_out.get("blake3") == record.sha and _HEX64.match(str(old_out.get("sha256", ""))):
        sha256 = str(old_out["sha256"])
    else:
        sha256 = sha256_file(dest)
    rel = Path(os.path.relpath(dest.resolve(), Path(lock_dir).resolve())).as_posix()
    timestamps = {"created": record.created, **record.timings}
    return {
        "key": record.key,
        "input": {"name": record.source_name, "blake3": record.input_hash},
        "params": dict(record.params),
        "model": {
            "id": record.model,
            "label": record.style_label,
            "version": record.model_version,
        },
        "backend": record.backend,
        "job_id": record.job_id,
        "output": {"path": rel, "sha256": sha256, "blake3": record.sha, "size": record.size},
        "cost": record.cost,
        "timestamps": {k: round(float(v), 3) for k, v in sorted(timestamps.items())},
        "package": {"name": "goenhance_nb", "version": _package_version()},
    }


# -- verify ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :func:`verify` found: ``missing``, ``changed`` and ``extra`` paths (relative to the
    lockfile's folder); ``ok`` when all three are empty."""

    lockfile: str
    checked: int
    missing: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No drift."""
        return not (self.missing or self.changed or self.extra)

    def lines(self) -> list[str]:
        """The report as text lines (a summary first)."""
        head = (
            f"{self.lockfile}: {self.checked} result(s) verified"
            if self.ok
            else f"{self.lockfile}: drift: {len(self.missing)} missing, "
            f"{len(self.changed)} changed, {len(self.extra)} extra"
        )
        out = [head]
        out += [f"  missing: {p}" for p in self.missing]
        out += [f"  changed: {p}" for p in self.changed]
        out += [f"  extra:   {p}" for p in self.extra]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def verify(path: Path | str | None = None) -> VerifyReport:
    """Re-hash (sha256) every result the lockfile lists and report drift.

    ``path``: a notebook, its folder, or the lockfile (default: the current notebook's).
    ``missing``: listed, not on disk; ``changed``: on disk with another sha256; ``extra``: files
    in ``goenhance_outputs/`` beside the lockfile that it does not list.

    :raises ConfigError: no lockfile there. :raises CacheError: the lockfile is malformed.
    """
    lock = Lockfile(find_lockfile(path))
    base = lock.dir.resolve()
    missing: list[str] = []
    changed: list[str] = []
    listed: set[Path] = set()
    entries = lock.entries()
    for key in sorted(entries):
        out = entries[key].get("output") or {}
        rel = str(out.get("path") or "")
        if not rel:
            missing.append(f"(no output path for {key[:12]})")
            continue
        p = (base / rel).resolve()
        listed.add(p)
        if not p.is_file():
            missing.append(rel)
        elif sha256_file(p) != out.get("sha256"):
            changed.append(rel)
    extra: list[str] = []
    outputs = base / OUTPUTS_DIRNAME
    if outputs.is_dir():
        for f in sorted(outputs.iterdir()):
            if f.name.startswith(".") or not f.is_file():
                continue
            if f.resolve() not in listed:
                extra.append(f"{OUTPUTS_DIRNAME}/{f.name}")
    return VerifyReport(
        lockfile=str(lock.path),
        checked=len(entries),
        missing=tuple(missing),
        changed=tuple(changed),
        extra=tuple(extra),
    )


# -- export ------------------------------------------------------------------------------------
def export_bundle(
    dest: Path | str,
    *,
    lockfile: Path,
    cache: ResultCache,
    ledger: Ledger | None = None,
    styles: Callable[[str], list[dict[str, Any]] | None] | None = None,
    inputs: bool = False,
) -> Path:
    """Write one zip archive: the lockfile at its root, every result as ``results/<sha256>.mp4``
    (from the cache, else the file beside the notebook; each checked against the lockfile's
    sha256), the model-list entries the results used, and with ``inputs`` the input files.

    :raises ConfigError: no lockfile. :raises BundleError: a result (or input) is missing or
        differs from what the lockfile recorded; nothing is written then.
    """
    lock = Lockfile(find_lockfile(lockfile))
    entries = lock.entries()
    members: dict[str, Path] = {}
    manifest: dict[str, Any] = {"format": LOCK_FORMAT, "styles": {}, "inputs": {}}
    used: dict[str, set[int]] = {}
    for key in sorted(entries):
        e = entries[key]
        label = _entry_label(e)
        sha = str((e.get("output") or {}).get("sha256") or "")
        members[f"results/{sha}.mp4"] = _result_source(key, e, lock, cache, label)
        model = (e.get("model") or {}).get("id")
        if isinstance(model, int):
            used.setdefault(str(e.get("backend") or ""), set()).add(model)
        if inputs:
            _add_input(e, key, ledger, members, manifest, label)
    if styles is not None:
        for backend, ids in sorted(used.items()):
            listed = styles(backend) or []
            manifest["styles"][backend] = [s for s in listed if s.get("id") in ids]
    return _write_bundle(Path(dest).expanduser(), lock, manifest, members)


def _result_source(
    key: str, e: dict[str, Any], lock: Lockfile, cache: ResultCache, label: str
) -> Path:
    """The file to export for lockfile entry ``e``: the cached result, else the file beside the
    notebook (inside the lockfile's folder), whichever has the recorded sha256.

    :raises BundleError: neither has it.
    """
    out = e.get("output") or {}
    sha = str(out.get("sha256") or "")
    candidates: list[Path] = []
    rec = cache.get(key)
    if rec is not None:
        candidates.append(rec.file)
    beside = (lock.dir / str(out.get("path") or "")).resolve()
    if out.get("path") and beside.is_relative_to(lock.dir.resolve()):
        candidates.append(beside)
    src = next((c for c in candidates if c.is_file() and sha256_file(c) == sha), None)
    if src is None:
        raise BundleError(
            f"cannot export {label}: no file with the recorded sha256 {sha[:12]} "
            "(run %goenhance verify)"
        )
    return src


def _write_bundle(
    dest: Path, lock: Lockfile, manifest: dict[str, Any], members: dict[str, Path]
) -> Path:
    """Write the zip at ``dest`` through a temp file and ``os.replace`` (nothing left behind on
    failure). :raises BundleError: it cannot be written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.write(lock.path, LOCKFILE_NAME)
            zf.writestr(BUNDLE_MANIFEST, _dump(manifest))
            for arc in sorted(members):
                zf.write(members[arc], arc)
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"cannot write {dest}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _add_input(
    e: dict[str, Any],
    key: str,
    ledger: Ledger | None,
    members: dict[str, Path],
    manifest: dict[str, Any],
    label: str,
) -> None:
    want = str((e.get("input") or {}).get("blake3") or "")
    path: Path | None = None
    entry = ledger.get(key) if ledger is not None else None
    raw = entry.extra.get("input") if entry is not None and isinstance(entry.extra, dict) else None
    if isinstance(raw, dict) and raw.get("path"):
        p = Path(str(raw["path"]))
        if p.is_file() and hash_file(p) == want:
            path = p
    if path is None:
        raise BundleError(
            f"cannot export the input of {label}: its file is not known on this machine "
            "(export without --inputs)"
        )
    sha = sha256_file(path)
    suffix = path.suffix if re.match(r"^\.[A-Za-z0-9]{1,8}$", path.suffix) else ""
    arc = f"inputs/{sha}{suffix}"
    members[arc] = path
    manifest["inputs"][sha] = {"member": arc, "name": path.name, "blake3": want}


def _entry_label(e: dict[str, Any]) -> str:
    """A transformation named for a person: ``clip.mp4 -> Anime Style (5 s, 720p, seed -1)``."""
    params = e.get("params") or {}
    model = e.get("model") or {}
    name = (e.get("input") or {}).get("name") or "input"
    return (
        f"{name} -> {model.get('label') or model.get('id')} "
        f"({params.get('duration')} s, {params.get('resolution')}, seed {params.get('seed')}"
        f"{', prompt' if params.get('prompt') else ''}; key {str(e.get('key', ''))[:12]})"
    )


# -- import ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ImportReport:
    """What :func:`import_bundle` did: keys ``added`` to the cache, keys ``present`` already
    (same result), input files written beside the notebook."""

    added: tuple[str, ...] = ()
    present: tuple[str, ...] = ()
    inputs: tuple[str, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        s = f"imported {len(self.added)} result(s), {len(self.present)} already cached"
        if self.inputs:
            s += f", {len(self.inputs)} input(s) in {INPUTS_DIRNAME}/"
        return s


@dataclass(slots=True)
class _Member:
    name: str
    size: int
    open: Callable[[], IO[bytes]]


def _check_name(name: str) -> str:
    """Refuse absolute names, ``..``, backslashes, drive letters and empty parts."""
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or re.match(r"^[A-Za-z]:", name)
    ):
        raise BundleError(f"bundle member {name!r} has an unsafe name; refused")
    parts = PurePosixPath(name).parts
    if any(p in ("..", ".", "") for p in parts) or name.startswith("./"):
        raise BundleError(f"bundle member {name!r} leaves the bundle (path traversal); refused")
    return name


@contextlib.contextmanager
def _members(src: Path) -> Iterator[list[_Member]]:
    """The regular-file members of a zip or tar archive, each name checked.

    :raises BundleError: not an archive, a link or special member, an unsafe or repeated name.
    """
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as zf:
            out: list[_Member] = []
            for info in zf.infolist():
                _check_name(info.filename.rstrip("/") if info.is_dir() else info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise BundleError(f"bundle member {info.filename!r} is a symlink; refused")
                if info.is_dir():
                    continue
                if stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # 0: no type bits (writestr)
                    raise BundleError(f"bundle member {info.filename!r} is not a file; refused")
                out.append(
                    _Member(info.filename, info.file_size, lambda i=info: zf.open(i))  # type: ignore[misc]
                )
            yield out
        return
    try:
        tf = tarfile.open(src)  # noqa: SIM115 - closed by the "with tf" below
    except (tarfile.TarError, OSError):
        raise BundleError(f"{src.name} is not a zip or tar archive") from None
    with tf:
        out = []
        for ti in tf.getmembers():
            _check_name(ti.name.rstrip("/") if ti.isdir() else ti.name)
            if ti.issym() or ti.islnk():
                raise BundleError(f"bundle member {ti.name!r} is a link; refused")
            if ti.isdir():
                continue
            if not ti.isfile():
                raise BundleError(f"bundle member {ti.name!r} is not a regular file; refused")

            def opener(t: tarfile.TarInfo = ti) -> IO[bytes]:
                fh = tf.extractfile(t)
                if fh is None:
                    raise BundleError(f"bundle member {t.name!r} cannot be read")
                return fh

            out.append(_Member(ti.name, ti.size, opener))
        yield out


def _read_capped(m: _Member, cap: int) -> bytes:
    if m.size > cap:
        raise BundleError(f"bundle member {m.name!r} is too large ({m.size} bytes); refused")
    with m.open() as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise BundleError(f"bundle member {m.name!r} is too large; refused")
    return data


def _stage(m: _Member, dest: Path, cap: int) -> str:
    """Copy a member to ``dest`` (at most ``cap`` bytes, counted as they arrive); return its
    sha256. :raises BundleError: oversize."""
    if m.size > cap:
        raise BundleError(f"bundle member {m.name!r} is over the {cap} byte cap; refused")
    h = hashlib.sha256()
    total = 0
    with m.open() as inp, open(dest, "xb") as out:
        while block := inp.read(1 << 20):
            total += len(block)
            if total > cap:
                raise BundleError(f"bundle member {m.name!r} is over the {cap} byte cap; refused")
            h.update(block)
            out.write(block)
    return h.hexdigest()


def import_bundle(
    src: Path | str,
    *,
    cache: ResultCache,
    store: ResultStore,
    staging_dir: Path,
    max_member_bytes: int,
    inputs_dir: Path | None = None,
) -> ImportReport:
    """Seed the cache from a bundle (see the module docstring for what is checked).

    Each result enters the result store and the cache index under the request key the
    lockfile names (recomputed from the entry, so a tampered entry cannot seed a wrong key);
    the model-list entries are merged into the cached model list of their backend. Input files
    (when the bundle has them) are written to ``inputs_dir`` under their recorded names,
    never over a different existing file.

    :raises BundleError: any refusal; the cache (and ``inputs_dir``) are untouched then.
    """
    src = Path(src).expanduser()
    if not src.is_file():
        raise BundleError(f"no bundle at {src}")
    staging_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="import-", dir=staging_dir))
    try:
        with _members(src) as members:
            by_name = _index_members(members, src.name)
            text = _read_capped(by_name[LOCKFILE_NAME], _MAX_JSON_MEMBER)
            entries = parse_lockfile(text.decode("utf-8", "replace"), "the bundle's lockfile")
            manifest = _read_manifest(by_name)
            # stage and check every result
            staged: dict[str, tuple[Path, ResultRecord]] = {}
            for key in sorted(entries):
                staged[key] = _stage_result(key, entries[key], by_name, stage, max_member_bytes)
            inputs = _stage_inputs(manifest, by_name, stage, max_member_bytes, inputs_dir)
        present = _already_present(staged, entries, cache, store)
        styles = _manifest_styles(manifest)
        # commit: only after every check passed
        added = _commit_results(staged, present, cache, store)
        _merge_styles(cache, styles)
        written = [str(link_or_copy(part, dest)) for part, dest in inputs]
        return ImportReport(tuple(added), tuple(present), tuple(written))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


#: The member names a bundle may hold: exact names, then patterns (see the module docstring).
_BUNDLE_NAMES: tuple[str, ...] = (LOCKFILE_NAME, BUNDLE_MANIFEST)
_BUNDLE_PATTERNS: tuple[re.Pattern[str], ...] = (_RESULT_MEMBER, _INPUT_MEMBER)


def _index_members(members: list[_Member], bundle: str) -> dict[str, _Member]:
    """The members by name. :raises BundleError: a repeated name, no lockfile at the root, or a
    name that is not part of a bundle (:data:`_BUNDLE_NAMES`, :data:`_BUNDLE_PATTERNS`)."""
    by_name: dict[str, _Member] = {}
    for m in members:
        if m.name in by_name:
            raise BundleError(f"bundle member {m.name!r} appears twice; refused")
        by_name[m.name] = m
    if LOCKFILE_NAME not in by_name:
        raise BundleError(f"{bundle} has no {LOCKFILE_NAME} at its root")
    for name in by_name:
        if name not in _BUNDLE_NAMES and not any(p.match(name) for p in _BUNDLE_PATTERNS):
            raise BundleError(f"bundle member {name!r} is not part of a bundle; refused")
    return by_name


def _read_manifest(by_name: dict[str, _Member]) -> dict[str, Any]:
    """The bundle's manifest (empty without one). :raises BundleError: oversize, not JSON, or
    not an object."""
    if BUNDLE_MANIFEST not in by_name:
        return {}
    raw = _read_capped(by_name[BUNDLE_MANIFEST], _MAX_JSON_MEMBER)
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise BundleError(f"{BUNDLE_MANIFEST} is not valid JSON") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{BUNDLE_MANIFEST} is not an object")
    return manifest


def _already_present(
    staged: dict[str, tuple[Path, ResultRecord]],
    entries: dict[str, dict[str, Any]],
    cache: ResultCache,
    store: ResultStore,
) -> list[str]:
    """The staged keys the cache already holds with the same result (and an intact file).

    :raises BundleError: a different result is cached under one of the keys (never overwritten).
    """
    present: list[str] = []
    for key, (_, rec) in staged.items():
        old = cache.get(key)
        if old is None:
            continue
        if old.sha != rec.sha:
            raise BundleError(
                f"a different result is already cached under key {key[:12]} "
                f"({_entry_label(entries[key])}); remove it first "
                f"(%goenhance cache remove {key[:12]}) to import this one"
            )
        if store.check(old.file, size=old.size) == "ok":
            present.append(key)
    return present


def _commit_results(
    staged: dict[str, tuple[Path, ResultRecord]],
    present: list[str],
    cache: ResultCache,
    store: ResultStore,
) -> list[str]:
    """Move each staged result not ``present`` into the store and index it; return its keys."""
    added: list[str] = []
    for key, (part, rec) in staged.items():
        if key in present:
            continue
        stored = store.commit(part, expected_size=rec.size)
        if stored.sha != rec.sha:  # pragma: no cover - checked when staged
            raise BundleError(f"result for {key[:12]} changed while importing")
        cache.put(_with_path(rec, stored.path))
        added.append(key)
    return added


def _merge_styles(cache: ResultCache, styles: dict[str, list[dict[str, Any]]]) -> None:
    """Merge the bundle's model-list entries into each backend's cached list (cached entries
    win on the same id)."""
    for backend, new in styles.items():
        name = f"styles:{backend}"
        old_list = cache.meta_get(name)
        merged = {int(s["id"]): s for s in new}
        if isinstance(old_list, list):
            merged.update({int(s["id"]): s for s in old_list if isinstance(s, dict)})
        # timestamp 0: replay/offline use it at any age, live mode fetches a full list
        cache.meta_set(name, [merged[i] for i in sorted(merged)], now=0.0)


def _with_path(rec: ResultRecord, path: Path) -> ResultRecord:
    d = rec.to_json()
    d["path"] = str(path)
    return ResultRecord.from_json(d)


def _stage_result(
    key: str, e: dict[str, Any], by_name: dict[str, _Member], stage: Path, cap: int
) -> tuple[Path, ResultRecord]:
    """Stage the result of lockfile entry ``e`` (under ``key``) and check it: its sha256 and
    blake3 as recorded, and ``key`` recomputed from the entry's own parameters.

    :raises BundleError: a malformed key or entry, no such member, a hash or key mismatch.
    """
    if not _HEX64.match(key):  # request keys are blake3 hex; anything else could be a path
        raise BundleError(f"the bundle's lockfile has a malformed key {key[:16]!r}; refused")
    label = _entry_label(e)
    part, blake = _stage_result_file(key, e.get("output") or {}, label, by_name, stage, cap)
    spec, version, backend, input_hash = _entry_request(key, e)
    model = e.get("model") or {}
    stamps = e.get("timestamps") or {}
    rec = ResultRecord(
        key=key,
        path=str(part),
        sha=blake,
        size=part.stat().st_size,
        job_id=e.get("job_id") if isinstance(e.get("job_id"), str) else None,
        model=int(model.get("id", spec.model)),
        style_label=str(model.get("label") or ""),
        model_version=version,
        params=spec.canonical(),
        input_hash=input_hash,
        cost=e.get("cost") if isinstance(e.get("cost"), int) else None,
        backend=backend,
        created=float(stamps.get("created", time.time())),
        timings={
            k: float(v) for k, v in stamps.items() if k != "created" and isinstance(v, (int, float))
        },
        source_name=str((e.get("input") or {}).get("name") or ""),
    )
    return part, rec


def _stage_result_file(
    key: str,
    out: dict[str, Any],
    label: str,
    by_name: dict[str, _Member],
    stage: Path,
    cap: int,
) -> tuple[Path, str]:
    """Copy the result member named by the entry's ``output`` to ``stage/<key>.mp4`` and check
    its sha256 and (when recorded) blake3; return the staged file and its blake3.

    :raises BundleError: no valid sha256, no such member, oversize, or a hash mismatch.
    """
    sha = str(out.get("sha256") or "")
    if not _HEX64.match(sha):
        raise BundleError(f"the lockfile entry for {label} has no valid sha256")
    member = by_name.get(f"results/{sha}.mp4")
    if member is None:
        raise BundleError(f"the bundle has no result for {label}")
    part = stage / f"{key}.mp4"
    if part.exists():  # the same file listed twice under one key cannot happen (dict)
        part.unlink()
    got = _stage(member, part, cap)
    if got != sha:
        raise BundleError(f"result for {label} has the wrong hash (sha256 {got[:12]}); refused")
    blake = hash_file(part)
    if out.get("blake3") not in (None, blake):
        raise BundleError(f"result for {label} does not match its recorded blake3; refused")
    return part, blake


def _entry_request(key: str, e: dict[str, Any]) -> tuple[JobSpec, str, str, str]:
    """``(spec, model version, backend, input blake3)`` of a lockfile entry, checked against
    ``key`` (the request key recomputed from them).

    :raises BundleError: a field is missing or malformed, or the key does not match.
    """
    try:
        spec = JobSpec.from_json(dict(e["params"]))
        version = str((e.get("model") or {})["version"])
        backend = str(e["backend"])
        input_hash = str((e.get("input") or {})["blake3"])
        expected_key = request_key(input_hash, spec, version, backend)
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"the lockfile entry {key[:12]} is incomplete; refused") from None
    if expected_key != key:
        raise BundleError(
            f"the lockfile entry {key[:12]} does not match its own parameters; refused"
        )
    return spec, version, backend, input_hash


def _stage_inputs(
    manifest: dict[str, Any],
    by_name: dict[str, _Member],
    stage: Path,
    cap: int,
    inputs_dir: Path | None,
) -> list[tuple[Path, Path]]:
    """Stage and check the bundle's input files; return (staged, destination) pairs (none
    without ``inputs_dir``: the inputs are still checked).

    :raises BundleError: a malformed ``inputs`` entry, a missing or unlisted input member, a
        hash mismatch, or a different file already at a destination.
    """
    listed = manifest.get("inputs") or {}
    if not isinstance(listed, dict):
        raise BundleError(f"{BUNDLE_MANIFEST}: 'inputs' is not an object")
    out: list[tuple[Path, Path]] = []
    for sha, info in sorted(listed.items()):
        if not _HEX64.match(str(sha)) or not isinstance(info, dict):
            raise BundleError(f"{BUNDLE_MANIFEST}: bad input entry {str(sha)[:12]!r}")
        member = by_name.get(str(info.get("member")))
        if member is None or not _INPUT_MEMBER.match(member.name):
            raise BundleError(f"the bundle has no input file for {str(info.get('name'))!r}")
        part = stage / f"input-{sha}"
        if _stage(member, part, cap) != sha:
            raise BundleError(f"input {member.name!r} has the wrong hash; refused")
        if inputs_dir is not None:
            out.append((part, _input_destination(sha, info, inputs_dir)))
    _check_inputs_listed(by_name, listed)
    return out


def _input_destination(sha: str, info: dict[str, Any], inputs_dir: Path) -> Path:
    """Where an input file goes: its recorded base name in ``inputs_dir`` (``<sha12>.mp4`` when
    the name is empty or hidden). :raises BundleError: another file is already there."""
    name = Path(str(info.get("name") or f"{sha[:12]}.mp4")).name
    if not name or name.startswith("."):
        name = f"{sha[:12]}.mp4"
    dest = inputs_dir / name
    if dest.exists() and (not dest.is_file() or sha256_file(dest) != sha):
        raise BundleError(f"{dest} exists with other content; refused to overwrite it")
    return dest


def _check_inputs_listed(by_name: dict[str, _Member], listed: dict[str, Any]) -> None:
    """:raises BundleError: an ``inputs/`` member the manifest does not list."""
    members = [i.get("member") for i in listed.values() if isinstance(i, dict)]
    for name in by_name:
        if _INPUT_MEMBER.match(name) and name not in members:
            raise BundleError(f"bundle member {name!r} is not listed in {BUNDLE_MANIFEST}")


def _manifest_styles(manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    from goenhance_nb._records import Style

    raw = manifest.get("styles") or {}
    if not isinstance(raw, dict):
        raise BundleError(f"{BUNDLE_MANIFEST}: 'styles' is not an object")
    out: dict[str, list[dict[str, Any]]] = {}
    for backend, items in raw.items():
        if not isinstance(items, list):
            raise BundleError(f"{BUNDLE_MANIFEST}: styles of {backend!r} are not a list")
        try:
            out[str(backend)] = [Style.from_json(s).to_json() for s in items]
        except (ValueError, TypeError, AttributeError):
            raise BundleError(f"{BUNDLE_MANIFEST}: a style of {backend!r} is malformed") from None
    return out
