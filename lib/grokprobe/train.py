"""run(cfg): the finished run from the store, or training it (resumed from a checkpoint where one
exists), saved through the store. Notebooks and sweeps call only this."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from . import classify, grokking, store
from . import config as C
from .runtime import NonFiniteLoss, configure_threads, determinism

CHECKPOINT = "checkpoint.pt"
TRAINERS = {"grokking": grokking.train, "anti_flat": classify.train, "collapse": classify.train}


@dataclass
class Run:
    config: object
    path: Path
    metrics: store.Metrics
    summary: dict

    @property
    def seeds(self):
        return list(self.config.seeds)


def load(cfg, root=None) -> Run:
    """A finished run of cfg from the store; StoreError if there is none (or it is damaged)."""
    folder = store.run_dir(cfg.experiment, C.config_hash(cfg), root)
    metrics = store.check_complete(folder, C.hashed_dict(cfg))
    return Run(cfg, folder, metrics, store.read_json(folder / "DONE"))


def run(cfg, *, recompute: bool = False, progress: bool = True, root=None) -> Run:
    C.validate(cfg)
    return stored(cfg, lambda: TRAINERS[cfg.experiment], recompute=recompute, progress=progress, root=root)


def stored(cfg, make_trainer, *, recompute=False, progress=True, root=None, check_resume=None) -> Run:
    """The store's life cycle, shared by every training loop (run above; paper_scale.run_one).

    Under the run folder's lock: the finished run if there is one (a damaged one is reported and
    trained again), else make_trainer() -- called only then, so a finished run never loads its data
    -- gives trainer(cfg, resume=, checkpoint=, progress=) -> (rows, summary), which is resumed from
    checkpoint.pt where that loads (and passes check_resume(state), which raises StoreError for a
    checkpoint this loop cannot continue). A non-finite loss keeps the rows so far, marks the
    folder FAILED and re-raises.
    """
    configure_threads()
    folder = store.run_dir(cfg.experiment, C.config_hash(cfg), root)
    unit = "step" if hasattr(cfg, "steps") else "epoch"
    with store.locked(folder):
        if recompute:
            for name in ("DONE", "FAILED", "metrics.csv", CHECKPOINT):
                (folder / name).unlink(missing_ok=True)
        if store.is_done(folder):
            try:
                return load(cfg, root)
            except store.StoreError as e:
                warnings.warn(f"stored run is damaged, training again: {e}", stacklevel=3)
                (folder / "DONE").unlink(missing_ok=True)
        trainer = make_trainer()
        store.write_json(
            folder / "config.json",
            {
                "experiment": cfg.experiment,
                "config": C.hashed_dict(cfg),
                "device": cfg.device,
                "provenance": store.provenance(),
            },
        )
        resume = None
        if (folder / CHECKPOINT).exists():
            try:
                resume = store.load_torch(folder / CHECKPOINT)
                if check_resume is not None:
                    resume = check_resume(resume)
                if progress:
                    print(f"resuming {folder.name} from {_resume_point(cfg, resume)}", flush=True)
            except store.StoreError as e:
                resume = None
                warnings.warn(f"{folder / CHECKPOINT}: {e}; starting from {unit} 0", stacklevel=3)

        def checkpoint(state, rows):
            store.write_metrics(folder / "metrics.csv", rows)
            store.save_torch(folder / CHECKPOINT, state)

        (folder / "FAILED").unlink(missing_ok=True)
        try:
            with determinism(getattr(cfg, "deterministic", False)):
                rows, summary = trainer(cfg, resume=resume, checkpoint=checkpoint, progress=progress)
        except NonFiniteLoss as e:
            store.write_metrics(folder / "metrics.csv", e.rows)
            store.mark_failed(folder, str(e))
            raise
        store.write_metrics(folder / "metrics.csv", rows)
        store.mark_done(folder, len(rows), summary)
        (folder / CHECKPOINT).unlink(missing_ok=True)
        if progress:
            print(f"stored {folder}", flush=True)
        return Run(cfg, folder, store.Metrics(rows), store.read_json(folder / "DONE"))


def _resume_point(cfg, state) -> str:
    if "step" in state:
        return f"step {state['step']}"
    # epoch loops train their seeds in turn: say which seed (not its index) and how far it got
    return f"seed {cfg.seeds[state['seed_index']]} epoch {state['epoch']}"


def clear(cfg, root=None) -> None:
    shutil.rmtree(store.run_dir(cfg.experiment, C.config_hash(cfg), root), ignore_errors=True)
