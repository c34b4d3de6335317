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
    configure_threads()
    folder = store.run_dir(cfg.experiment, C.config_hash(cfg), root)
    with store.locked(folder):
        if recompute:
            for name in ("DONE", "FAILED", "metrics.csv", "checkpoint.pt"):
                (folder / name).unlink(missing_ok=True)
        if store.is_done(folder):
            try:
                return load(cfg, root)
            except store.StoreError as e:
                warnings.warn(f"stored run is damaged, training again: {e}", stacklevel=2)
                (folder / "DONE").unlink(missing_ok=True)
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
        if (folder / "checkpoint.pt").exists():
            try:
                resume = store.load_torch(folder / "checkpoint.pt")
                if progress:
                    at = (
                        f"step {resume['step']}"
                        if "step" in resume
                        else f"seed {resume['seed_index']} epoch {resume['epoch']}"
                    )
                    print(f"resuming {folder.name} from {at}", flush=True)
            except store.StoreError as e:
                warnings.warn(f"{e}; starting from step 0", stacklevel=2)

        def checkpoint(state, rows):
            store.write_metrics(folder / "metrics.csv", rows)
            store.save_torch(folder / "checkpoint.pt", state)

        (folder / "FAILED").unlink(missing_ok=True)
        try:
            with determinism(cfg.deterministic):
                rows, summary = TRAINERS[cfg.experiment](
                    cfg, resume=resume, checkpoint=checkpoint, progress=progress
                )
        except NonFiniteLoss as e:
            store.write_metrics(folder / "metrics.csv", e.rows)
            store.mark_failed(folder, str(e))
            raise
        store.write_metrics(folder / "metrics.csv", rows)
        store.mark_done(folder, len(rows), summary)
        (folder / "checkpoint.pt").unlink(missing_ok=True)
        if progress:
            print(f"stored {folder}", flush=True)
        return Run(cfg, folder, store.Metrics(rows), store.read_json(folder / "DONE"))


def clear(cfg, root=None) -> None:
    shutil.rmtree(store.run_dir(cfg.experiment, C.config_hash(cfg), root), ignore_errors=True)
