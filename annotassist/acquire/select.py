"""Pick the next images to label from a round's stored scores, and queue them in the workspace."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import AnnotassistError
from .strategies import Candidates, resolve

if TYPE_CHECKING:
    from ..workspace import Workspace


@dataclass
class Selection:
    round: int
    strategy: str
    picks: list[tuple[int, float | None]]  # (image id, score) in pick order
    message: str = ""


def select_next(ws: Workspace, cfg, strategy: str | None = None, budget: int | None = None,
                round_: int | None = None) -> Selection:
    strategy = strategy or cfg.acquire.strategy
    budget = cfg.acquire.budget if budget is None else budget
    if budget < 1:
        raise AnnotassistError(f"budget must be at least 1, got {budget}")
    fn, needs = resolve(strategy)
    if round_ is None:
        round_, _ = ws.latest_model()
    candidates = ws.images("pool", state="unlabeled")
    if not candidates:
        return Selection(round_, strategy, [], "nothing left to label: every pool image is labeled or queued")
    message = ""
    if budget > len(candidates):
        message = f"budget {budget} is more than the {len(candidates)} unlabeled images: taking them all"
        budget = len(candidates)
    scores = ws.scores(round_)
    require_scores(candidates, scores, needs, f"score for round {round_}",
                   f"annotassist score --workspace {ws.root} --strategy {strategy}")
    labeled = [r.id for r in ws.images("pool", state="labeled")]
    cand = Candidates([c.id for c in candidates], scores, ws.embeddings(round_), labeled)
    picks = fn(cand, budget, cfg)
    ws.record_selection(round_, picks, strategy)
    return Selection(round_, strategy, picks, message)


def require_scores(candidates, stored: dict, needs: list[str], what: str, command: str) -> None:
    """Selection reads only stored scores: a candidate without one means the scoring pass did not run for this
    round or strategy, so name the command that makes them instead of picking from a partial ranking."""
    missing = [c.name for c in candidates if not all(n in stored.get(c.id, {}) for n in needs)]
    if missing:
        raise AnnotassistError(f"{len(missing)} unlabeled images have no {'/'.join(needs)} {what} (e.g. "
                               f"{missing[0]}); run '{command}' first")


def score_names(cfg, strategy: str | None = None) -> tuple[list[str], list[str]]:
    """(image scores, region scores) the scoring pass must store for a strategy in the config's unit."""
    strategy = strategy or cfg.acquire.strategy
    if cfg.acquire.unit == "region":
        from .regions import resolve_region
        return [], resolve_region(strategy)[1]
    return resolve(strategy)[1], []


def reads_region_judge(cfg) -> bool:
    """Whether anything in this config reads the region-relevance discriminator: the strategy's scores (in the
    config's unit) or the pseudo-label filter. The trainer trains the judge only then: its step is a large share
    of a training step (measured in configs/camvid.yaml's value profile), wasted under random or entropy selection."""
    if not cfg.region.enabled:
        return False
    image, region = score_names(cfg)
    return cfg.region.filter or "region_relevance" in image + region


def select_for(ws: Workspace, cfg, strategy: str | None = None, budget: int | None = None,
               round_: int | None = None):
    """The config's unit decides: whole images (select_next) or regions (regions.select_regions); both
    return an object with `picks` (per image) and `message`."""
    if cfg.acquire.unit == "region":
        from .regions import select_regions
        return select_regions(ws, cfg, strategy, budget, round_)
    return select_next(ws, cfg, strategy, budget, round_)
