"""A project's folder and the only writer of its pool state.

    <workspace>/
      pool.sqlite     images, states, mask versions, rounds, scores, selections, sync ids, events
      config.yaml     the resolved config the workspace was made with
      masks/          every mask version ever written, as palette PNGs, never overwritten
      rounds/<r>/     each round's training run: checkpoint, log.jsonl, metrics.json

SQLite runs in WAL mode so readers (status, the UI) never block the writer; every change is one transaction
(`BEGIN IMMEDIATE`), so a process killed mid-step leaves the pool as it was before that step.

Image states: unlabeled -> queued (selected for labeling) -> in_review (pushed to an annotator) -> labeled.
Mask kinds: ground_truth (came with the data), pseudo (a model's pre-annotation), human (a person's
correction), partial (region mode: a person's labels inside the regions they reviewed, 255 elsewhere). A label
is the newest ground_truth or human version: newest wins, nothing is deleted.

Region mode (acquire.unit: region): each pool image's SLIC superpixels are stored once (`superpixels`), a
round's per-region scores beside the image scores (`region_scores`), and a selection queues regions
(`region_queries`: the image is queued as a whole, the person reviews the listed regions). A partial save
merges the reviewed regions into the image's newest partial mask and returns the image to `unlabeled`: it
trains as labeled data inside what was reviewed, stays in the unlabeled stream, and may be queried again for
other regions.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .config import Config, config_diff, dump_config, from_dict, load_config
from .data.layouts import Sample, read_source_mask
from .data.masks import IGNORE, class_histogram, read_mask, write_mask
from .errors import DataError, Problem, WorkspaceError

SCHEMA_VERSION = 1
STATES = ("unlabeled", "queued", "in_review", "labeled")
MASK_KINDS = ("ground_truth", "pseudo", "human", "partial")
# allowed state changes; anything else is a bug or a user mistake and is refused with a clear message
TRANSITIONS = {
    "unlabeled": {"queued", "in_review", "labeled"},
    "queued": {"unlabeled", "in_review", "labeled"},
    "in_review": {"queued", "unlabeled", "labeled"},
    "labeled": {"in_review"},
}

_MASKS_TABLE = """
CREATE TABLE IF NOT EXISTS masks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL REFERENCES images (id),
    kind TEXT NOT NULL CHECK (kind IN ('ground_truth', 'pseudo', 'human', 'partial')),
    path TEXT NOT NULL,
    round INTEGER,
    class_pixels TEXT NOT NULL,
    changed_pixels INTEGER,
    changed_regions INTEGER,
    source TEXT,
    created_at REAL NOT NULL,
    reviewed_pixels INTEGER
);
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    split TEXT NOT NULL CHECK (split IN ('pool', 'val')),
    image_path TEXT NOT NULL,
    source_mask_path TEXT,
    sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'unlabeled' CHECK (state IN ('unlabeled', 'queued', 'in_review', 'labeled')),
    missing INTEGER NOT NULL DEFAULT 0,
    added_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_state ON images (split, state);
""" + _MASKS_TABLE + """
CREATE INDEX IF NOT EXISTS masks_image ON masks (image_id, kind);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    method TEXT,
    labeled_count INTEGER NOT NULL,
    checkpoint TEXT,
    metrics TEXT,
    config TEXT,
    started_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS scores (
    round INTEGER NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images (id),
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (round, image_id, name)
);
CREATE TABLE IF NOT EXISTS region_maps (
    round INTEGER NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images (id),
    name TEXT NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (round, image_id, name)
);
CREATE TABLE IF NOT EXISTS embeddings (
    round INTEGER NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images (id),
    data BLOB NOT NULL,
    PRIMARY KEY (round, image_id)
);
CREATE TABLE IF NOT EXISTS selections (
    round INTEGER NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images (id),
    rank INTEGER NOT NULL,
    strategy TEXT NOT NULL,
    score REAL,
    PRIMARY KEY (round, image_id)
);
CREATE TABLE IF NOT EXISTS sync (
    image_id INTEGER NOT NULL REFERENCES images (id),
    backend TEXT NOT NULL,
    external_id TEXT NOT NULL,
    project TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (image_id, backend)
);
CREATE TABLE IF NOT EXISTS loop_steps (
    round INTEGER NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('started', 'done')),
    detail TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    PRIMARY KEY (round, step)
);
CREATE TABLE IF NOT EXISTS superpixels (
    image_id INTEGER PRIMARY KEY REFERENCES images (id),
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    count INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS region_scores (
    round INTEGER NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images (id),
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (round, image_id, name)
);
CREATE TABLE IF NOT EXISTS region_queries (
    round INTEGER NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images (id),
    regions TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'done')),
    PRIMARY KEY (round, image_id)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT
);
"""


@dataclass
class ImageRecord:
    id: int
    name: str
    split: str
    image_path: Path
    source_mask_path: Path | None
    sha256: str
    width: int
    height: int
    state: str
    missing: bool


@dataclass
class MaskRecord:
    id: int
    image_id: int
    kind: str
    path: Path
    round: int | None
    class_pixels: list[int]
    changed_pixels: int | None
    changed_regions: int | None
    source: str | None
    reviewed_pixels: int | None = None  # partial masks: the pixels inside the regions the person reviewed


@dataclass
class PartialSave:
    mask_id: int
    reviewed_pixels: int  # pixels inside the queried regions
    regions: int  # regions the person reviewed (one click each in the editor's fast path)
    outside_pixels: int  # labels handed back outside the queried regions: not stored, reported


@dataclass
class NewImage:
    name: str
    split: str
    image_path: Path
    mask_path: Path | None
    sha256: str
    width: int
    height: int
    label: np.ndarray | None  # stored as its ground_truth label (the image starts labeled); None = unlabeled


@dataclass
class PoolUpdate:
    new: list[NewImage]
    late_masks: list[tuple[int, Path, np.ndarray | None]]  # (image id, mask path, label to store or None)
    changed_sha: dict[str, str]  # name -> new content hash
    missing: list[str]  # names gone from the source
    found: dict[str, Path]  # names back in the source -> their image path
    summary: dict


@dataclass
class SyncReport:
    added: int = 0
    labeled: int = 0
    unchanged: int = 0
    changed: list[str] = None  # names whose image content changed since the last init
    disappeared: list[str] = None  # names no longer found in the source
    problems: list[Problem] = None
    restored: list[str] = None  # ground-truth mask files that were lost from masks/ and rewritten from the dataset
    lost: list[Problem] = None  # mask files lost from masks/ that only a backup brings back

    def __post_init__(self):
        self.changed = self.changed or []
        self.disappeared = self.disappeared or []
        self.problems = self.problems or []
        self.restored = self.restored or []
        self.lost = self.lost or []


@dataclass
class LostMask:
    """A mask version whose file is gone from the workspace's masks/ (deleted by hand, an incomplete copy)."""
    mask: "MaskRecord"
    image_name: str
    is_label: bool  # the image's current label: training and export need it


def _row_image(r: sqlite3.Row) -> ImageRecord:
    return ImageRecord(r["id"], r["name"], r["split"], Path(r["image_path"]),
                       Path(r["source_mask_path"]) if r["source_mask_path"] else None, r["sha256"],
                       r["width"], r["height"], r["state"], bool(r["missing"]))


def _row_mask(r: sqlite3.Row, root: Path) -> MaskRecord:
    return MaskRecord(r["id"], r["image_id"], r["kind"], root / r["path"], r["round"],
                      json.loads(r["class_pixels"]), r["changed_pixels"], r["changed_regions"], r["source"],
                      r["reviewed_pixels"])


class Workspace:
    """Open an existing workspace; `Workspace.create` makes a new one."""

    def __init__(self, path: str | Path, write: bool = True):
        """`write=False` (status, report, export) also opens a read-only workspace; `self.readonly` says so."""
        self.root = Path(path)
        db = self.root / "pool.sqlite"
        if self.root.exists() and not self.root.is_dir():
            raise WorkspaceError(f"--workspace {self.root} is a file, not a workspace folder; pass the folder "
                                 "that holds pool.sqlite")
        if not db.is_file():
            raise WorkspaceError(f"{self.root}: no workspace here (no pool.sqlite); create one with "
                                 f"'annotassist init --config CONFIG --workspace {self.root}'")
        self.readonly = not _writable(self.root, db)
        if self.readonly and write:
            from .lock import read_only_message
            raise WorkspaceError(read_only_message(self.root))
        self._key = os.path.realpath(db)
        with _OPENING:
            # checked before SQLite sees it (it would turn an empty file into a new database), and only while
            # this process has no connection to it: closing our own descriptor of the file would drop that
            # connection's POSIX locks (sqlite.org/howtocorrupt.html, 2.2); the editor opens per request
            if not _open_here.get(self._key):
                check_database_file(db)
            try:
                self.db = _connect_readonly(db) if self.readonly else self._connect(db)
            except sqlite3.DatabaseError as e:
                raise WorkspaceError(damaged_message(db, e)) from None
            _open_here[self._key] = _open_here.get(self._key, 0) + 1
        try:
            version = self._meta("schema_version")
            if version is None or int(version) != SCHEMA_VERSION:
                raise WorkspaceError(f"{db}: schema version {version}, this annotassist reads {SCHEMA_VERSION}")
            self._migrate()
            self.config = load_config(self.root / "config.yaml")
            self.data_root = Path(self._meta("data_root") or ".")
        except sqlite3.DatabaseError as e:
            self.close()
            raise WorkspaceError(damaged_message(db, e)) from None
        except BaseException:
            self.close()
            raise

    def _migrate(self) -> None:
        """Older workspaces of the same schema version gain what was added since (tables, columns, the
        `partial` mask kind)."""
        names = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {r["name"] for r in self.db.execute("PRAGMA table_info(rounds)")}
        mask_columns = {r["name"] for r in self.db.execute("PRAGMA table_info(masks)")}
        if {"loop_steps", "region_queries"} <= names and "config" in columns and "reviewed_pixels" in mask_columns:
            return
        if self.readonly:
            raise WorkspaceError(f"{self.root} was made by an older annotassist and needs a small upgrade, but it "
                                 "is read-only; run 'annotassist status' on it once where it is writable")
        with self.transaction() as db:
            if "reviewed_pixels" not in mask_columns:
                # the kind CHECK gains 'partial': SQLite cannot alter a CHECK, so the table is copied (nothing
                # references masks, and the copy is one transaction with the rename)
                db.execute("ALTER TABLE masks RENAME TO masks_old")
                db.execute("DROP INDEX IF EXISTS masks_image")
                db.execute(_MASKS_TABLE)
                db.execute("CREATE INDEX IF NOT EXISTS masks_image ON masks (image_id, kind)")
                db.execute("INSERT INTO masks (id, image_id, kind, path, round, class_pixels, changed_pixels, "
                           "changed_regions, source, created_at) SELECT id, image_id, kind, path, round, class_pixels, "
                           "changed_pixels, changed_regions, source, created_at FROM masks_old")
                db.execute("DROP TABLE masks_old")
            if "config" not in columns:
                db.execute("ALTER TABLE rounds ADD COLUMN config TEXT")
        self.db.executescript(SCHEMA)  # the tables added since (all IF NOT EXISTS)

    # -- set-up ------------------------------------------------------------------------------------------

    @staticmethod
    def _connect(db: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(db, isolation_level=None, timeout=30.0)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    @classmethod
    def create(cls, path: str | Path, cfg: Config, data_root: str | Path) -> "Workspace":
        """A new workspace holding `cfg` (already resolved: profile and overrides applied) as its config.
        Use importer.create_workspace to also read the dataset in."""
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise WorkspaceError(f"--workspace {root} is a file; choose a folder for the workspace")
        root.mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        db_path = root / "pool.sqlite"
        fresh = not db_path.exists()
        conn = cls._connect(db_path)
        conn.executescript(SCHEMA)
        with _transaction(conn):
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('data_root', ?)", (str(Path(data_root).resolve()),))
            if fresh:
                conn.execute("INSERT INTO meta VALUES ('created_at', ?)", (str(time.time()),))
        conn.close()
        _write_config(cfg, root / "config.yaml")
        ws = cls(root)
        ws._record_config_origin(cfg, "created")
        return ws

    def close(self) -> None:
        with _OPENING:
            if self.db is not None:
                self.db.close()
                self.db = None
                _open_here[self._key] -= 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with _transaction(self.db):
            yield self.db

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees the pool as of the first one, whatever a writer (a running
        loop, the editor) commits meanwhile. Mask files are never overwritten, so the rows' files stay valid."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN DEFERRED")
        try:
            yield
        finally:
            self.db.execute("ROLLBACK")  # nothing was written

    def log_event(self, kind: str, detail: dict | None = None) -> None:
        self.db.execute("INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)",
                        (time.time(), kind, json.dumps(detail or {})))

    def last_event(self, kind: str) -> dict | None:
        """The detail of the newest event of this kind (None if there is none)."""
        row = self.db.execute("SELECT detail FROM events WHERE kind = ? ORDER BY id DESC LIMIT 1", (kind,)).fetchone()
        return None if row is None else json.loads(row[0] or "{}")

    # -- the config: one resolved copy, every command and round reads it ---------------------------------

    def apply_config(self, profile: str | None = None, overrides: list[str] | None = None,
                     replace: Config | None = None, why: str = "") -> list[str]:
        """Apply a profile and `--set` overrides to the stored config (or replace it), store the result and
        record what changed; returns the changes as 'key: old -> new' lines. Changing the classes of a
        workspace that holds images is refused: its masks are class ids of the old list."""
        if replace is not None:
            new = replace
        elif profile or overrides:
            new = from_dict(self.config.to_dict(), source=f"{self.root / 'config.yaml'}", profile=profile,
                            overrides=overrides)
        else:
            return []
        changes = config_diff(self.config, new)
        if not changes:
            return []
        if new.dataset.classes != self.config.dataset.classes and self.count(split=None) > 0:
            raise WorkspaceError(f"{self.root} holds images labeled with the classes {self.config.dataset.classes}; "
                                 f"its classes cannot change to {new.dataset.classes}. Start a new workspace")
        _write_config(new, self.root / "config.yaml")
        self.reload_config()
        with self.transaction():
            self.log_event("config", {"changes": changes, "profile": profile, "overrides": overrides or [],
                                      "why": why})
        return changes

    def reload_config(self) -> Config:
        self.config = load_config(self.root / "config.yaml")
        return self.config

    def _record_config_origin(self, cfg: Config, why: str) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('config_source', ?)", (cfg.source or "",))
            self.log_event("config", {"source": cfg.source, "why": why})

    def set_data_root(self, data_root: str | Path) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('data_root', ?)", (str(Path(data_root).resolve()),))
        self.data_root = Path(data_root).resolve()

    # -- images ------------------------------------------------------------------------------------------

    def apply_import(self, update: "PoolUpdate") -> None:
        """Bring a dataset's images into the pool in one transaction (importer.py decides what changes)."""
        now = time.time()
        palette = self.config.palette()
        with self.transaction() as db:
            for im in update.new:
                cur = db.execute(
                    "INSERT INTO images (name, split, image_path, source_mask_path, sha256, width, height, "
                    "state, added_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (im.name, im.split, str(im.image_path), str(im.mask_path) if im.mask_path else None, im.sha256,
                     im.width, im.height, "labeled" if im.label is not None else "unlabeled", now, now))
                if im.label is not None:
                    self._insert_mask(cur.lastrowid, im.label, "ground_truth", None, source=str(im.mask_path),
                                      palette=palette)
            for image_id, mask_path, label in update.late_masks:
                db.execute("UPDATE images SET source_mask_path = ?, updated_at = ? WHERE id = ?",
                           (str(mask_path), now, image_id))
                if label is not None:
                    self._insert_mask(image_id, label, "ground_truth", None, source=str(mask_path), palette=palette)
                    db.execute("UPDATE images SET state = 'labeled' WHERE id = ?", (image_id,))
            for name, sha in update.changed_sha.items():
                db.execute("UPDATE images SET sha256 = ?, updated_at = ? WHERE name = ?", (sha, now, name))
            for name in update.missing:
                db.execute("UPDATE images SET missing = 1, updated_at = ? WHERE name = ?", (now, name))
            for name, path in update.found.items():
                db.execute("UPDATE images SET missing = 0, image_path = ?, updated_at = ? WHERE name = ?",
                           (str(path), now, name))
            self.log_event("sync", update.summary)

    def images(self, split: str | None = "pool", state: str | Iterable[str] | None = None,
               include_missing: bool = False) -> list[ImageRecord]:
        sql, args = "SELECT * FROM images WHERE 1=1", []
        if split is not None:
            sql += " AND split = ?"
            args.append(split)
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            for s in states:
                _check_state(s)
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += states
        if not include_missing:
            sql += " AND missing = 0"
        return [_row_image(r) for r in self.db.execute(sql + " ORDER BY id", args)]

    def image(self, image_id: int) -> ImageRecord:
        row = self.db.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise WorkspaceError(f"{self.root}: no image with id {image_id}")
        return _row_image(row)

    def image_by_name(self, name: str) -> ImageRecord:
        row = self.db.execute("SELECT * FROM images WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise WorkspaceError(f"{self.root}: no image named {name!r}")
        return _row_image(row)

    def median_side(self, split: str = "pool") -> int | None:
        """The median of min(width, height) over a split's images (sizes the editor's brush)."""
        row = self.db.execute("SELECT MIN(width, height) FROM images WHERE split = ? ORDER BY 1 LIMIT 1 OFFSET "
                              "(SELECT COUNT(*) / 2 FROM images WHERE split = ?)", (split, split)).fetchone()
        return row[0] if row else None

    def count(self, split: str | None = "pool", state: str | None = None) -> int:
        return len(self.images(split, state))

    def set_state(self, image_ids: Iterable[int], state: str, reason: str = "") -> None:
        """Move images to `state` in one transaction; an illegal move (e.g. labeled -> queued) is refused.
        An image handed back to `unlabeled` unanswered (its Label Studio task deleted) withdraws its open region
        query, so no editor or push asks those regions again; a later selection may pick them anew."""
        _check_state(state)
        ids = list(image_ids)
        withdrawn = 0
        with self.transaction() as db:
            for i in ids:
                row = db.execute("SELECT name, state FROM images WHERE id = ?", (i,)).fetchone()
                if row is None:
                    raise WorkspaceError(f"no image with id {i} in {self.root}")
                if row["state"] == state:
                    continue
                if state not in TRANSITIONS[row["state"]]:
                    raise WorkspaceError(f"image {row['name']} is {row['state']}; it cannot become {state} "
                                         f"(allowed: {', '.join(sorted(TRANSITIONS[row['state']]))})")
                db.execute("UPDATE images SET state = ?, updated_at = ? WHERE id = ?", (state, time.time(), i))
                if state == "unlabeled":
                    withdrawn += db.execute("DELETE FROM region_queries WHERE image_id = ? AND status = 'queued'",
                                            (i,)).rowcount
            self.log_event("state", {"ids": ids, "state": state, "reason": reason,
                                     **({"region_queries_withdrawn": withdrawn} if withdrawn else {})})

    # -- masks -------------------------------------------------------------------------------------------

    def _insert_mask(self, image_id: int, mask: np.ndarray, kind: str, round_: int | None, *, source: str,
                     palette, changed_pixels: int | None = None, changed_regions: int | None = None,
                     reviewed_pixels: int | None = None) -> int:
        hist = class_histogram(mask, self.config.num_classes).tolist()
        cur = self.db.execute(
            "INSERT INTO masks (image_id, kind, path, round, class_pixels, changed_pixels, changed_regions, "
            "source, created_at, reviewed_pixels) VALUES (?, ?, '', ?, ?, ?, ?, ?, ?, ?)",
            (image_id, kind, round_, json.dumps(hist), changed_pixels, changed_regions, source, time.time(),
             reviewed_pixels))
        mask_id = cur.lastrowid
        # the id is part of the name, so a version is never overwritten
        rel = f"masks/{image_id:06d}/{mask_id:07d}-{kind}.png"
        write_mask(mask, self.root / rel, palette)
        self.db.execute("UPDATE masks SET path = ? WHERE id = ?", (rel, mask_id))
        return mask_id

    def add_mask(self, image_id: int, mask: np.ndarray, kind: str, round_: int | None = None, *,
                 source: str = "", mark_labeled: bool | None = None, changed_pixels: int | None = None,
                 changed_regions: int | None = None, reviewed_pixels: int | None = None, _then=None) -> int:
        """Store a new mask version (and, for ground_truth/human masks, mark the image labeled) atomically."""
        if kind not in MASK_KINDS:
            raise WorkspaceError(f"unknown mask kind {kind!r} (one of {', '.join(MASK_KINDS)})")
        rec = self.image(image_id)
        mask = np.asarray(mask)
        if mask.shape != (rec.height, rec.width):
            raise DataError(f"mask for image {rec.name} is {mask.shape[1]}x{mask.shape[0]}, the image is "
                            f"{rec.width}x{rec.height}; masks must match their image's size")
        if not np.issubdtype(mask.dtype, np.integer) or (mask.size and mask.min() < 0):
            raise DataError(f"mask for image {rec.name} must hold class ids 0..{self.config.num_classes - 1} "
                            f"(255 = ignore) as non-negative integers, got dtype {mask.dtype}")
        bad = np.unique(mask[(mask >= self.config.num_classes) & (mask != IGNORE)])
        if bad.size:
            raise DataError(f"mask for image {rec.name} has class ids {bad.tolist()} outside 0.."
                            f"{self.config.num_classes - 1} (255 = ignore)")
        if mark_labeled is None:
            mark_labeled = kind in ("ground_truth", "human")
        with self.transaction():
            mask_id = self._insert_mask(image_id, mask.astype(np.uint8), kind, round_, source=source,
                                        palette=self.config.palette(), changed_pixels=changed_pixels,
                                        changed_regions=changed_regions, reviewed_pixels=reviewed_pixels)
            if _then is not None:  # more writes that belong to the same transaction (a partial save's query)
                _then(self.db)
            if mark_labeled and rec.state != "labeled":
                if "labeled" not in TRANSITIONS[rec.state]:
                    raise WorkspaceError(f"image {rec.name} is {rec.state}; it cannot become labeled")
                self.db.execute("UPDATE images SET state = 'labeled', updated_at = ? WHERE id = ?",
                                (time.time(), image_id))
            self.log_event("mask", {"image": rec.name, "kind": kind, "mask_id": mask_id, "round": round_})
        return mask_id

    def masks(self, image_id: int, kind: str | None = None) -> list[MaskRecord]:
        sql, args = "SELECT * FROM masks WHERE image_id = ?", [image_id]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        return [_row_mask(r, self.root) for r in self.db.execute(sql + " ORDER BY id", args)]

    def lost_masks(self) -> list[LostMask]:
        """Mask versions whose file is missing from masks/ (one stat per version)."""
        rows = self.db.execute(
            "SELECT m.*, i.name AS image_name, m.id = (SELECT MAX(l.id) FROM masks l WHERE l.image_id = m.image_id "
            "AND l.kind IN ('ground_truth', 'human')) AS is_label FROM masks m JOIN images i ON i.id = m.image_id "
            "ORDER BY m.id").fetchall()
        return [LostMask(_row_mask(r, self.root), r["image_name"], bool(r["is_label"])) for r in rows
                if not (self.root / r["path"]).is_file()]

    def restore_mask_file(self, lost: LostMask, mask: np.ndarray) -> None:
        """Write a lost version's file again from the same content (its stored class pixels must match): the
        file is absent, so nothing is overwritten and the pool's rows do not change."""
        if class_histogram(mask, self.config.num_classes).tolist() != lost.mask.class_pixels:
            raise DataError(f"{lost.mask.source}: differs from the mask stored for {lost.image_name} when it was "
                            "imported; restore the workspace's copy from a backup")
        write_mask(mask, lost.mask.path, self.config.palette())

    def label_mask(self, image_id: int) -> MaskRecord | None:
        """The image's current label: the newest ground_truth or human version (pseudo masks never count)."""
        row = self.db.execute("SELECT * FROM masks WHERE image_id = ? AND kind IN ('ground_truth', 'human') "
                              "ORDER BY id DESC LIMIT 1", (image_id,)).fetchone()
        return _row_mask(row, self.root) if row else None

    def read_label(self, image_id: int) -> np.ndarray:
        rec = self.label_mask(image_id)
        if rec is None:
            raise WorkspaceError(f"image {self.image(image_id).name} has no label yet")
        return read_mask(rec.path, self.config.num_classes)

    def read_oracle(self, image_id: int) -> np.ndarray:
        """The dataset's own mask for an image (what the simulated annotator hands back)."""
        rec = self.image(image_id)
        if rec.source_mask_path is None:
            raise WorkspaceError(f"image {rec.name} has no mask in the source data: the simulated annotator "
                                 "needs a dataset with masks for every pool image")
        return read_source_mask(rec.source_mask_path, self.config)

    def samples(self, split: str = "pool", state: str | None = None) -> list[Sample]:
        """Image paths with their current label path (None for images without one), for datasets."""
        rows = self.db.execute(
            "SELECT i.name, i.image_path, ("
            " SELECT m.path FROM masks m WHERE m.image_id = i.id AND m.kind IN ('ground_truth', 'human')"
            " ORDER BY m.id DESC LIMIT 1) AS label "
            "FROM images i WHERE i.split = ? AND i.missing = 0" + (" AND i.state = ?" if state else "") +
            " ORDER BY i.id", (split, state) if state else (split,)).fetchall()
        return [Sample(r["name"], Path(r["image_path"]), self.root / r["label"] if r["label"] else None)
                for r in rows]

    def labeled_samples(self) -> list[Sample]:
        """Labeled images with their labels, then (region mode) images with reviewed regions with their
        partial masks: 255 outside what was reviewed, so training ignores it there."""
        return [s for s in self.samples("pool", "labeled") if s.mask is not None] + self.partial_samples()

    def partial_samples(self) -> list[Sample]:
        """Images with reviewed regions and their newest partial mask, weighted by the share of the image the
        reviewed regions cover (the mask's non-ignore pixels)."""
        rows = self.db.execute(
            "SELECT i.name, i.image_path, i.width, i.height, m.path AS label, m.class_pixels FROM images i "
            "JOIN masks m ON m.id = (SELECT m2.id FROM masks m2 WHERE m2.image_id = i.id AND m2.kind = 'partial' "
            "ORDER BY m2.id DESC LIMIT 1) WHERE i.split = 'pool' AND i.missing = 0 AND i.state != 'labeled' "
            "ORDER BY i.id").fetchall()
        return [Sample(r["name"], Path(r["image_path"]), self.root / r["label"],
                       weight=min(1.0, sum(json.loads(r["class_pixels"])) / max(1, r["width"] * r["height"])))
                for r in rows]

    def unlabeled_samples(self) -> list[Sample]:
        return self.samples("pool", "unlabeled")

    def val_samples(self) -> list[Sample]:
        return [s for s in self.samples("val") if s.mask is not None]

    def class_pixels(self, split: str = "pool") -> np.ndarray:
        """Pixels per class over the current labels of labeled images."""
        total = np.zeros(self.config.num_classes, dtype=np.int64)
        rows = self.db.execute(
            "SELECT m.class_pixels FROM masks m JOIN images i ON i.id = m.image_id "
            "WHERE i.split = ? AND i.state = 'labeled' AND i.missing = 0 AND m.id = ("
            " SELECT m2.id FROM masks m2 WHERE m2.image_id = i.id AND m2.kind IN ('ground_truth', 'human')"
            " ORDER BY m2.id DESC LIMIT 1)", (split,))
        for (hist,) in rows:
            total += np.array(json.loads(hist), dtype=np.int64)
        # region mode: what was reviewed in images that are not labeled whole
        rows = self.db.execute(
            "SELECT m.class_pixels FROM masks m JOIN images i ON i.id = m.image_id "
            "WHERE i.split = ? AND i.state != 'labeled' AND i.missing = 0 AND m.id = ("
            " SELECT m2.id FROM masks m2 WHERE m2.image_id = i.id AND m2.kind = 'partial' ORDER BY m2.id DESC LIMIT 1)",
            (split,))
        for (hist,) in rows:
            total += np.array(json.loads(hist), dtype=np.int64)
        return total

    # -- rounds ------------------------------------------------------------------------------------------

    def current_round(self) -> int | None:
        row = self.db.execute("SELECT MAX(round) FROM rounds").fetchone()
        return row[0]

    def round_info(self, round_: int) -> dict | None:
        row = self.db.execute("SELECT * FROM rounds WHERE round = ?", (round_,)).fetchone()
        if row is None:
            return None
        d = dict(row)
        d.pop("config", None)  # round_config() reads it
        d["metrics"] = json.loads(d["metrics"]) if d["metrics"] else None
        if d["checkpoint"]:
            d["checkpoint"] = str((self.root / d["checkpoint"]).resolve())
        return d

    def rounds(self) -> list[dict]:
        return [self.round_info(r[0]) for r in self.db.execute("SELECT round FROM rounds ORDER BY round")]

    def start_round(self, method: str, config: Config | None = None) -> int:
        """A new round in state 'training', with the config it trains with and its train step begun (one
        transaction: a kill never leaves a round without its step or a step without its round)."""
        cfg = config or self.config
        now = time.time()
        with self.transaction() as db:
            cur = self.current_round()
            r = 0 if cur is None else cur + 1
            db.execute("INSERT INTO rounds (round, status, method, labeled_count, config, started_at) "
                       "VALUES (?, 'training', ?, ?, ?, ?)",
                       (r, method, self.count("pool", "labeled"), json.dumps(cfg.to_dict()), now))
            db.execute("INSERT INTO loop_steps (round, step, status, started_at) VALUES (?, 'train', 'started', ?) "
                       "ON CONFLICT (round, step) DO NOTHING", (r, now))
            self.log_event("round_start", {"round": r, "method": method})
        return r

    def round_config(self, round_: int) -> Config | None:
        """The config round `round_` trained with (None for rounds recorded before configs were kept)."""
        row = self.db.execute("SELECT config FROM rounds WHERE round = ?", (round_,)).fetchone()
        if row is None or row[0] is None:
            return None
        return from_dict(json.loads(row[0]), source=f"{self.root} round {round_}")

    def set_round_config(self, round_: int, config: Config) -> None:
        with self.transaction() as db:
            db.execute("UPDATE rounds SET config = ? WHERE round = ?", (json.dumps(config.to_dict()), round_))
            self.log_event("round_config", {"round": round_})

    def round_dir(self, round_: int) -> Path:
        return self.root / "rounds" / f"{round_:03d}"

    def finish_round_training(self, round_: int, checkpoint: Path, metrics: dict) -> None:
        """Record the round's model and metrics and end its train step, in one transaction. The model's path
        is kept relative to the workspace, so a copied workspace points at its own files."""
        path = Path(checkpoint).resolve()
        try:
            stored = str(path.relative_to(self.root.resolve()))
        except ValueError:
            stored = str(path)
        now = time.time()
        with self.transaction() as db:
            db.execute("UPDATE rounds SET status = 'trained', checkpoint = ?, metrics = ?, finished_at = ? "
                       "WHERE round = ?", (stored, json.dumps(metrics), now, round_))
            db.execute("UPDATE loop_steps SET status = 'done', detail = ?, finished_at = ? WHERE round = ? AND "
                       "step = 'train'", (json.dumps({k: metrics.get(k) for k in ("mIoU", "steps", "seconds")}),
                                         now, round_))
            self.log_event("round_trained", {"round": round_, "mIoU": metrics.get("mIoU")})

    def latest_model(self) -> tuple[int, Path]:
        row = self.db.execute("SELECT round, checkpoint FROM rounds WHERE checkpoint IS NOT NULL "
                              "ORDER BY round DESC LIMIT 1").fetchone()
        if row is None:
            raise WorkspaceError(f"{self.root}: no trained model yet; run 'annotassist train --workspace "
                                 f"{self.root}' first")
        return row["round"], (self.root / row["checkpoint"]).resolve()

    # -- loop steps: each step's start and end is a transaction, so a rerun knows where it was ------------

    def begin_step(self, round_: int, step: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO loop_steps (round, step, status, started_at) VALUES (?, ?, 'started', ?) "
                       "ON CONFLICT (round, step) DO NOTHING", (round_, step, time.time()))
            self.log_event("step_start", {"round": round_, "step": step})

    def end_step(self, round_: int, step: str, detail: dict | None = None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE loop_steps SET status = 'done', detail = ?, finished_at = ? WHERE round = ? AND "
                       "step = ?", (json.dumps(detail or {}), time.time(), round_, step))
            self.log_event("step_done", {"round": round_, "step": step})

    def step_status(self, round_: int, step: str) -> str | None:
        row = self.db.execute("SELECT status FROM loop_steps WHERE round = ? AND step = ?",
                              (round_, step)).fetchone()
        return row[0] if row else None

    def loop_steps(self) -> list[dict]:
        rows = self.db.execute("SELECT * FROM loop_steps ORDER BY round, started_at").fetchall()
        return [{**dict(r), "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]

    # -- scores and selections ---------------------------------------------------------------------------

    def write_scores(self, round_: int, rows: list[tuple[int, str, float | None]],
                     region_maps: list[tuple[int, str, np.ndarray]] = (),
                     embeddings: list[tuple[int, np.ndarray]] = ()) -> None:
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)",
                           [(round_, i, n, None if v is None or not np.isfinite(v) else float(v))
                            for i, n, v in rows])
            db.executemany("INSERT OR REPLACE INTO region_maps VALUES (?, ?, ?, ?, ?, ?)",
                           [(round_, i, n, m.shape[0], m.shape[1], m.astype(np.float16).tobytes())
                            for i, n, m in region_maps])
            db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                           [(round_, i, e.astype(np.float16).tobytes()) for i, e in embeddings])

    def scores(self, round_: int, name: str | None = None) -> dict[int, dict[str, float | None]]:
        sql, args = "SELECT image_id, name, value FROM scores WHERE round = ?", [round_]
        if name:
            sql += " AND name = ?"
            args.append(name)
        out: dict[int, dict[str, float | None]] = {}
        for r in self.db.execute(sql, args):
            out.setdefault(r["image_id"], {})[r["name"]] = r["value"]
        return out

    def region_map(self, round_: int, image_id: int, name: str) -> np.ndarray | None:
        r = self.db.execute("SELECT height, width, data FROM region_maps WHERE round = ? AND image_id = ? "
                            "AND name = ?", (round_, image_id, name)).fetchone()
        if r is None:
            return None
        return np.frombuffer(r["data"], dtype=np.float16).reshape(r["height"], r["width"]).astype(np.float32)

    def embedded_ids(self, round_: int) -> set[int]:
        return {r[0] for r in self.db.execute("SELECT image_id FROM embeddings WHERE round = ?", (round_,))}

    def embeddings(self, round_: int) -> dict[int, np.ndarray]:
        return {r["image_id"]: np.frombuffer(r["data"], dtype=np.float16).astype(np.float32)
                for r in self.db.execute("SELECT image_id, data FROM embeddings WHERE round = ?", (round_,))}

    def record_selection(self, round_: int, picks: list[tuple[int, float | None]], strategy: str) -> None:
        """Store the picked images in rank order and queue them, in one transaction."""
        with self.transaction() as db:
            for rank, (image_id, score) in enumerate(picks):
                row = db.execute("SELECT state FROM images WHERE id = ?", (image_id,)).fetchone()
                if row is None:
                    raise WorkspaceError(f"no image with id {image_id} in {self.root}")
                state = row["state"]
                if state != "unlabeled":
                    raise WorkspaceError(f"image {image_id} is {state}; only unlabeled images can be selected")
                db.execute("INSERT OR REPLACE INTO selections VALUES (?, ?, ?, ?, ?)",
                           (round_, image_id, rank, strategy, score))
                db.execute("UPDATE images SET state = 'queued', updated_at = ? WHERE id = ?",
                           (time.time(), image_id))
            db.execute("UPDATE rounds SET status = 'selected' WHERE round = ?", (round_,))
            self.log_event("select", {"round": round_, "strategy": strategy, "count": len(picks)})

    def latest_selection_round(self) -> int | None:
        return self.db.execute("SELECT MAX(round) FROM selections").fetchone()[0]

    def selection_round(self, image_id: int) -> int | None:
        """The latest round that selected this image (None if it was never selected)."""
        return self.db.execute("SELECT MAX(round) FROM selections WHERE image_id = ?", (image_id,)).fetchone()[0]

    def selections(self, round_: int) -> list[tuple[int, int, str, float | None]]:
        return [(r["image_id"], r["rank"], r["strategy"], r["score"]) for r in self.db.execute(
            "SELECT * FROM selections WHERE round = ? ORDER BY rank", (round_,))]

    # -- regions (acquire.unit: region) ------------------------------------------------------------------

    def superpixels(self, image_id: int) -> np.ndarray | None:
        """The image's stored superpixel map at the working scale (int32 region ids), or None."""
        r = self.db.execute("SELECT height, width, data FROM superpixels WHERE image_id = ?", (image_id,)).fetchone()
        if r is None:
            return None
        return np.frombuffer(zlib.decompress(r["data"]), dtype=np.uint16).reshape(r["height"], r["width"]) \
            .astype(np.int32)

    def set_superpixels(self, image_id: int, segments: np.ndarray) -> None:
        seg = np.asarray(segments)
        if seg.max(initial=0) >= 65535:
            raise WorkspaceError(f"{int(seg.max()) + 1} superpixels in one image; acquire.superpixels must stay "
                                 "below 65535")
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO superpixels VALUES (?, ?, ?, ?, ?)",
                       (image_id, seg.shape[0], seg.shape[1], int(seg.max(initial=0)) + 1,
                        zlib.compress(seg.astype(np.uint16).tobytes(), 6)))

    def region_map_full(self, image_id: int) -> np.ndarray:
        """The superpixel map at the image's own size (nearest-neighbour from the working scale): what a
        person's mask is compared with."""
        seg = self.superpixels(image_id)
        rec = self.image(image_id)
        if seg is None:
            raise WorkspaceError(f"image {rec.name} has no stored regions; run 'annotassist score --unit region "
                                 f"--workspace {self.root}'")
        rows = (np.arange(rec.height) * seg.shape[0] // rec.height).clip(0, seg.shape[0] - 1)
        cols = (np.arange(rec.width) * seg.shape[1] // rec.width).clip(0, seg.shape[1] - 1)
        return seg[rows[:, None], cols[None, :]]

    def region_pixels(self, image_id: int, regions: Iterable[int]) -> np.ndarray:
        """(H, W) bool: the pixels of the listed regions, at the image's size."""
        return np.isin(self.region_map_full(image_id), np.fromiter(regions, dtype=np.int32))

    def write_region_scores(self, round_: int, rows: list[tuple[int, str, np.ndarray]]) -> None:
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO region_scores VALUES (?, ?, ?, ?)",
                           [(round_, i, n, np.asarray(v, dtype=np.float32).tobytes()) for i, n, v in rows])

    def region_scores(self, round_: int) -> dict[int, dict[str, np.ndarray]]:
        """image id -> score name -> per-region values (NaN where a region has no pixels)."""
        out: dict[int, dict[str, np.ndarray]] = {}
        for r in self.db.execute("SELECT image_id, name, data FROM region_scores WHERE round = ?", (round_,)):
            out.setdefault(r["image_id"], {})[r["name"]] = np.frombuffer(r["data"], dtype=np.float32)
        return out

    def record_region_selection(self, round_: int, picks: dict[int, list[int]], scores: dict[int, float],
                                strategy: str) -> None:
        """Queue the picked regions: one query per image (its regions), the image queued as a whole and
        ranked by its best region's score, in one transaction."""
        order = sorted(picks, key=lambda i: -scores.get(i, 0.0))
        with self.transaction() as db:
            for rank, image_id in enumerate(order):
                row = db.execute("SELECT state FROM images WHERE id = ?", (image_id,)).fetchone()
                if row is None or row["state"] != "unlabeled":
                    raise WorkspaceError(f"image {image_id} is {row['state'] if row else 'unknown'}; only unlabeled "
                                         "images can be queried")
                db.execute("INSERT OR REPLACE INTO region_queries VALUES (?, ?, ?, 'queued')",
                           (round_, image_id, json.dumps(sorted(int(x) for x in picks[image_id]))))
                db.execute("INSERT OR REPLACE INTO selections VALUES (?, ?, ?, ?, ?)",
                           (round_, image_id, rank, strategy, scores.get(image_id)))
                db.execute("UPDATE images SET state = 'queued', updated_at = ? WHERE id = ?", (time.time(), image_id))
            db.execute("UPDATE rounds SET status = 'selected' WHERE round = ?", (round_,))
            self.log_event("select", {"round": round_, "strategy": strategy, "unit": "region", "images": len(picks),
                                      "regions": sum(len(v) for v in picks.values())})

    def region_query(self, round_: int | None, image_id: int) -> list[int] | None:
        """The regions a round asked about in an image (of its newest query if `round_` is None), or None if
        the image holds no region query (image mode)."""
        sql = "SELECT regions FROM region_queries WHERE image_id = ?" + (" AND round = ?" if round_ is not None else
                                                                        " ORDER BY round DESC LIMIT 1")
        r = self.db.execute(sql, (image_id, round_) if round_ is not None else (image_id,)).fetchone()
        return json.loads(r[0]) if r else None

    def open_region_query(self, image_id: int) -> tuple[int, list[int]] | None:
        """(round, regions) of the image's query still waiting for a person, or None."""
        r = self.db.execute("SELECT round, regions FROM region_queries WHERE image_id = ? AND status = 'queued' "
                            "ORDER BY round DESC LIMIT 1", (image_id,)).fetchone()
        return (r[0], json.loads(r[1])) if r else None

    def reviewed_regions(self, image_id: int) -> set[int]:
        """Every region of the image a person has reviewed (answered queries, all rounds)."""
        out: set[int] = set()
        for (regions,) in self.db.execute("SELECT regions FROM region_queries WHERE image_id = ? AND status = "
                                          "'done'", (image_id,)):
            out.update(json.loads(regions))
        return out

    def partial_mask(self, image_id: int) -> MaskRecord | None:
        row = self.db.execute("SELECT * FROM masks WHERE image_id = ? AND kind = 'partial' ORDER BY id DESC LIMIT 1",
                              (image_id,)).fetchone()
        return _row_mask(row, self.root) if row else None

    def add_partial(self, image_id: int, labels: np.ndarray, round_: int, *, source: str = "",
                    changed_pixels: int | None = None, changed_regions: int | None = None) -> "PartialSave":
        """A person's answer to a region query: `labels` (the whole image as they handed it back) count only
        inside the queried regions; they are merged into the image's newest partial mask (255 where nothing
        was ever reviewed), stored as a new `partial` version, the query is closed and the image returns to
        `unlabeled` (it trains on what was reviewed and may be queried again for other regions). One
        transaction; a second save for a closed query is refused."""
        rec = self.image(image_id)
        query = self.region_query(round_, image_id)
        if query is None:
            raise WorkspaceError(f"image {rec.name} has no region query in round {round_}; save it as a whole "
                                 "label instead")
        row = self.db.execute("SELECT status FROM region_queries WHERE round = ? AND image_id = ?",
                              (round_, image_id)).fetchone()
        if row["status"] == "done":
            raise WorkspaceError(f"the regions of image {rec.name} asked in round {round_} are already saved")
        labels = np.asarray(labels)
        inside = self.region_pixels(image_id, query)
        previous = self.partial_mask(image_id)
        merged = read_mask(previous.path, self.config.num_classes) if previous else \
            np.full((rec.height, rec.width), IGNORE, dtype=np.uint8)
        if labels.shape != merged.shape:
            raise DataError(f"mask for image {rec.name} is {labels.shape[1]}x{labels.shape[0]}, the image is "
                            f"{rec.width}x{rec.height}; masks must match their image's size")
        before = merged.copy()
        merged[inside] = labels[inside]
        outside = int(((labels != before) & ~inside & (labels != IGNORE)).sum())
        mask_id = self.add_mask(image_id, merged, "partial", round_, source=source, mark_labeled=False,
                                changed_pixels=changed_pixels, changed_regions=changed_regions,
                                reviewed_pixels=int(inside.sum()), _then=lambda db: self._close_query(
                                    db, round_, image_id, rec.state))
        return PartialSave(mask_id, int(inside.sum()), len(query), outside)

    def _close_query(self, db, round_: int, image_id: int, state: str) -> None:
        db.execute("UPDATE region_queries SET status = 'done' WHERE round = ? AND image_id = ?", (round_, image_id))
        if state != "unlabeled":
            db.execute("UPDATE images SET state = 'unlabeled', updated_at = ? WHERE id = ?", (time.time(), image_id))

    def reviewed_pixels(self, split: str = "pool") -> tuple[int, int]:
        """(pixels a person has labeled or reviewed, all pixels) over a split: labeled images count whole,
        others by the regions reviewed in them."""
        total = self.db.execute("SELECT COALESCE(SUM(width * height), 0) FROM images WHERE split = ? AND missing = 0",
                                (split,)).fetchone()[0]
        whole = self.db.execute("SELECT COALESCE(SUM(width * height), 0) FROM images WHERE split = ? AND missing = 0 "
                                "AND state = 'labeled'", (split,)).fetchone()[0]
        part = self.db.execute(
            "SELECT COALESCE(SUM(m.reviewed_pixels), 0) FROM masks m JOIN images i ON i.id = m.image_id WHERE "
            "m.kind = 'partial' AND i.split = ? AND i.missing = 0 AND i.state != 'labeled'", (split,)).fetchone()[0]
        return int(whole + part), int(total)

    # -- annotation tools --------------------------------------------------------------------------------

    def set_sync_id(self, image_id: int, backend: str, external_id: str, project: str | None = None) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO sync VALUES (?, ?, ?, ?, ?)",
                       (image_id, backend, str(external_id), project, time.time()))

    def sync_id(self, image_id: int, backend: str) -> str | None:
        r = self.db.execute("SELECT external_id FROM sync WHERE image_id = ? AND backend = ?",
                            (image_id, backend)).fetchone()
        return r[0] if r else None

    def synced_image(self, backend: str, external_id: str) -> int | None:
        """The image an annotation tool's item (e.g. a Label Studio task id) stands for, if any."""
        r = self.db.execute("SELECT image_id FROM sync WHERE backend = ? AND external_id = ?",
                            (backend, str(external_id))).fetchone()
        return r[0] if r else None


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE takes the write lock up front; a nested call joins the outer transaction."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


SQLITE_MAGIC = b"SQLite format 3\x00"
_OPENING = threading.Lock()
_open_here: dict[str, int] = {}  # pool.sqlite (real path) -> connections this process has open to it


def check_database_file(db: Path) -> None:
    """Refuse an empty, foreign or truncated pool.sqlite with a message, leaving the file as it is."""
    try:
        size = db.stat().st_size
        with open(db, "rb") as f:
            head = f.read(100)
    except OSError as e:
        raise WorkspaceError(f"{db} cannot be read ({e.strerror}); fix its permissions") from None
    fix = (f"restore {db} from a backup (the file was left as it is), or start a new workspace with "
           "'annotassist init --workspace NEW'")
    if size == 0:
        raise WorkspaceError(f"{db} is empty (0 bytes): the pool was lost, e.g. by an interrupted copy; {fix}")
    if not head.startswith(SQLITE_MAGIC) or len(head) < 100:
        raise WorkspaceError(f"{db} is not a SQLite database (damaged or replaced, {size} bytes); {fix}")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    # the header's page count, when valid, is what the file holds; not while a -wal has content, since a
    # checkpoint writes page 1 (with the new count) before the pages that extend the file
    try:
        settled = db.with_name(db.name + "-wal").stat().st_size == 0
    except OSError:
        settled = True
    if settled and head[92:96] == head[24:28] and size < pages * page_size:
        raise WorkspaceError(f"{db} is truncated ({size} of {pages * page_size} bytes); {fix}")


def damaged_message(db: Path, e: Exception) -> str:
    return (f"{db} is damaged ({e}); restore it from a backup, or start a new workspace with 'annotassist init "
            "--workspace NEW'")


def _writable(root: Path, db: Path) -> bool:
    """Can this process change the pool? (SQLite needs the folder too, for its -wal and -shm files.) os.access
    sees a read-only mount as well as file modes."""
    return os.access(root, os.W_OK | os.X_OK) and os.access(db, os.W_OK)


def _connect_readonly(db: Path) -> sqlite3.Connection:
    """A read-only workspace: SQLite reads a WAL database there only when its -shm file exists or can be
    made; otherwise, with no WAL content left to merge, the file alone is the whole pool (immutable)."""
    uri = db.resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("SELECT 1 FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        conn.close()
        wal = db.with_name(db.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise WorkspaceError(f"{db.parent} is read-only and {wal.name} holds changes not yet merged into "
                                 "the pool; open it once where it is writable (any 'annotassist status' there "
                                 "merges them)") from None
        conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def _check_state(state: str) -> None:
    if state not in STATES:
        raise WorkspaceError(f"unknown image state {state!r} (one of {', '.join(STATES)})")


def _write_config(cfg: Config, path: Path) -> None:
    """config.yaml, replaced atomically (a kill never leaves half a config)."""
    tmp = path.with_name(path.name + ".tmp")
    dump_config(cfg, tmp)
    os.replace(tmp, path)
