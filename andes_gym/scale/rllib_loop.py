"""The training loop of the RLlib trainer: `algo.train()` until the step budget, with
per-iteration logs (`progress.csv`, TensorBoard), validation of the module's
deterministic policy, the best checkpoint and periodic checkpoints.

The run around it (Ray, PPO, the run directory, export and final evaluation) is
`andes_gym.scale.rllib_trainer`.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from andes_gym.agents.adapter import ModelAgent
from andes_gym.evaluation import run_episode
from andes_gym.scale.rllib_checkpoint import BEST_NAME, META_FILE, save_checkpoint
from andes_gym.training.config import TrainConfig
from andes_gym.training.factory import make_env

PROGRESS_FILE = "progress.csv"


def _scalar_metrics(result: dict) -> dict:
    """The per-iteration numbers worth logging from an `Algorithm.train()` result."""
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        EPISODE_RETURN_MEAN,
        LEARNER_RESULTS,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
    )

    runners = result.get(ENV_RUNNER_RESULTS, {})
    learner = result.get(LEARNER_RESULTS, {}).get("default_policy", {})
    row = {
        "timesteps": int(runners.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0)),
        "episode_return_mean": runners.get(EPISODE_RETURN_MEAN, float("nan")),
        "episodes_lifetime": int(runners.get("num_episodes_lifetime", 0)),
    }
    for key in ("policy_loss", "vf_loss", "entropy", "mean_kl_loss", "vf_explained_var"):
        if key in learner:
            row[key] = learner[key]
    return {
        k: v if isinstance(v, int) else float(v) if isinstance(v, float | np.floating) else v
        for k, v in row.items()
    }


class _Progress:
    """progress.csv plus TensorBoard scalars (`rllib/*`), one row per iteration."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / PROGRESS_FILE
        self.fields: list[str] | None = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))
        except ImportError:
            self.writer = None

    def log(self, iteration: int, seconds: float, metrics: dict) -> None:
        row = {"iteration": iteration, "time_s": round(seconds, 3), **metrics}
        self._write_row(row)
        if self.writer is not None:
            step = int(metrics["timesteps"])
            for key, value in metrics.items():
                if key != "timesteps" and isinstance(value, float) and np.isfinite(value):
                    self.writer.add_scalar(f"rllib/{key}", value, step)

    def _write_row(self, row: dict) -> None:
        """Appends `row` to progress.csv, writing the header first in a new file."""
        if self.fields is None and self.path.is_file():  # a resumed run: append
            with self.path.open(newline="") as fh:
                self.fields = next(csv.reader(fh), None)
        if self.fields is None:
            self.fields = list(row)
            with self.path.open("w", newline="") as fh:
                csv.DictWriter(fh, self.fields).writeheader()
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, self.fields, extrasaction="ignore").writerow(row)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ModulePredictor:
    """A module's deterministic slot scores as `predict(obs, deterministic)` (for `ModelAgent`)."""

    def __init__(self, module) -> None:
        self.module = module

    def predict(self, obs: np.ndarray, deterministic: bool = True):
        import torch

        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs, dtype=np.float32)[None])
            scores = self.module.slot_scores(x)[0].numpy()
        return np.clip(scores, -1.0, 1.0), None


def validation_qoe(module, cfg: TrainConfig) -> float:
    """Mean QoE of the module's deterministic policy over `cfg.eval.val_seeds` (in this process)."""
    env = make_env(cfg.env.id, dict(cfg.env.kwargs))
    try:
        agent = ModelAgent(ModulePredictor(module))
        qoe = [
            run_episode(env, agent, int(s), cfg.eval.max_steps).summary["mean_qoe"]
            for s in cfg.eval.val_seeds
        ]
    finally:
        env.close()
    return float(np.mean(qoe))


def _next_multiple(value: int, step: int) -> int:
    """The smallest multiple of `step` above `value`."""
    return (value // step + 1) * step


def train_loop(
    algo, cfg: TrainConfig, run_dir: Path, restored: dict | None = None
) -> tuple[int, int, float]:
    """`algo.train()` until `cfg.total_timesteps` env steps, with logs, validation and saves.

    Args:
        algo: The algorithm.
        cfg: The config.
        run_dir: The run directory.
        restored: `andes_gym_meta.json` of the checkpoint a resumed run restored.

    Returns:
        Env steps sampled (in total), iterations (in total), wall seconds (of this call).

    Raises:
        KeyboardInterrupt: After saving a checkpoint of the iterations done.
    """
    progress = _Progress(run_dir)
    timesteps = int(restored["num_timesteps"]) if restored else 0
    iterations = int(restored["iterations"]) if restored else 0
    # A rebuilt algorithm counts from zero: its lifetime counters add to the checkpoint's.
    steps_base = timesteps
    episodes_base = int(restored.get("num_episodes", 0)) if restored else 0
    best = run_dir / "checkpoints" / BEST_NAME / META_FILE
    best_qoe = json.loads(best.read_text())["val_mean_qoe"] if best.is_file() else -np.inf
    freq = cfg.checkpoint.freq_timesteps
    next_ckpt = _next_multiple(timesteps, freq) if freq > 0 else np.inf
    evaluate_val = cfg.eval.freq_timesteps > 0 and bool(cfg.eval.val_seeds)
    next_eval = _next_multiple(timesteps, cfg.eval.freq_timesteps) if evaluate_val else np.inf
    meta = {
        "num_timesteps": timesteps,
        "iterations": iterations,
        "num_episodes": episodes_base,
        "config_hash": cfg.hash(),
        "algo": "RLlib-PPO",
    }
    done_before, steps_before = iterations, timesteps
    start = time.monotonic()
    try:
        while timesteps < cfg.total_timesteps:
            metrics = _scalar_metrics(algo.train())
            metrics["timesteps"] += steps_base
            metrics["episodes_lifetime"] += episodes_base
            iterations += 1
            timesteps = int(metrics["timesteps"])
            meta.update(
                num_timesteps=timesteps,
                iterations=iterations,
                num_episodes=int(metrics["episodes_lifetime"]),
            )
            print(
                f"[rllib] iter {iterations}: {timesteps}/{cfg.total_timesteps} steps, "
                f"episode return {metrics['episode_return_mean']:.4f}, "
                f"{(timesteps - steps_before) / max(time.monotonic() - start, 1e-9):.0f} steps/s"
            )
            qoe = float("nan")
            if timesteps >= next_eval:
                next_eval = _next_multiple(timesteps, cfg.eval.freq_timesteps)
                # The local env runner's module holds the learner's weights after each iteration.
                qoe = validation_qoe(algo.get_module(), cfg)
                print(f"[rllib] validation mean QoE {qoe:.4f} on seeds {cfg.eval.val_seeds}")
            progress.log(iterations, time.monotonic() - start, {**metrics, "val_mean_qoe": qoe})
            if cfg.eval.select_best and np.isfinite(qoe) and qoe > best_qoe:
                best_qoe = qoe
                save_checkpoint(algo, run_dir, BEST_NAME, {**meta, "val_mean_qoe": qoe})
            if next_ckpt <= timesteps < cfg.total_timesteps:
                next_ckpt = _next_multiple(timesteps, cfg.checkpoint.freq_timesteps)
                save_checkpoint(
                    algo, run_dir, f"step_{timesteps:010d}", meta, cfg.checkpoint.keep_last
                )
    except KeyboardInterrupt:
        if iterations > done_before:
            path = save_checkpoint(algo, run_dir, f"step_{timesteps:010d}", meta)
            print(f"\ninterrupted: saved {path} ({timesteps} env steps)")
        raise
    finally:
        progress.close()
    seconds = time.monotonic() - start
    save_checkpoint(algo, run_dir, f"step_{timesteps:010d}", meta, cfg.checkpoint.keep_last)
    return timesteps, iterations, seconds
