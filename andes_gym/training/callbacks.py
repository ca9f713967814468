"""Training callbacks: QoE metrics in TensorBoard, periodic checkpoints, periodic evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from andes_gym.agents.adapter import ModelAgent
from andes_gym.evaluation import run_episode
from andes_gym.training import checkpoint as ckpt
from andes_gym.training.factory import Predictor

# info["qoe_summary"] field -> TensorBoard tag.
QOE_TAGS: dict[str, str] = {
    "mean_qoe": "qoe/mean",
    "mean_qoe_fixed": "qoe/mean_fixed",
    "p10_qoe": "qoe/p10",
    "frac_qoe_ge_095": "qoe/frac_ge_095",
    "ttft_p50_s": "qoe/ttft_p50_s",
    "ttft_p90_s": "qoe/ttft_p90_s",
    "preemptions_per_request": "qoe/preemptions_per_request",
    "throughput_tok_s": "qoe/throughput_tok_s",
    "num_unfinished": "qoe/num_unfinished",
}


class QoELogger(BaseCallback):
    """Logs each finished training episode's `info["qoe_summary"]` as `qoe/*` means.

    The values are averaged over the episodes that ended since the last log dump (SB3
    dumps once per rollout). `qoe/episodes` counts all episodes seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.episodes = 0
        self.last_summaries: list[dict] = []

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            summary = info.get("qoe_summary")
            if summary is None:
                continue
            self.episodes += 1
            self.last_summaries = (self.last_summaries + [summary])[-20:]
            for field, tag in QOE_TAGS.items():
                value = summary.get(field)
                if value is not None and np.isfinite(value):
                    self.logger.record_mean(tag, float(value))
            self.logger.record("qoe/episodes", self.episodes)
        return True


class PeriodicCheckpoint(BaseCallback):
    """Saves a checkpoint every `freq_timesteps` timesteps.

    Args:
        run_dir: The run directory.
        freq_timesteps: Interval (0: never).
        config_hash: Recorded in each checkpoint.
        keep_last: Older checkpoints beyond this many are deleted (0: keep all).
    """

    def __init__(
        self, run_dir: Path, freq_timesteps: int, config_hash: str, keep_last: int
    ) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.freq = int(freq_timesteps)
        self.config_hash = config_hash
        self.keep_last = keep_last
        self._next = None

    def _on_training_start(self) -> None:
        if self.freq > 0:
            self._next = (self.num_timesteps // self.freq + 1) * self.freq

    def _on_step(self) -> bool:
        if self._next is not None and self.num_timesteps >= self._next:
            ckpt.save_checkpoint(
                self.run_dir, self.model, self.training_env, self.config_hash, self.keep_last
            )
            self._next = (self.num_timesteps // self.freq + 1) * self.freq
        return True


class PeriodicEval(BaseCallback):
    """Plays the deterministic policy on validation seeds every `freq_timesteps` (and at the start).

    Logs `eval/mean_qoe`, `eval/p10_qoe` and `eval/mean_qoe_fixed` (means over the seeds).
    With `select_best`, the policy with the highest validation mean QoE so far (the one
    training starts from included) is saved as `checkpoints/best`.

    Args:
        make_env: Zero-argument factory of an evaluation env.
        seeds: Validation episode seeds (disjoint from training and test seeds).
        freq_timesteps: Interval (must be > 0).
        max_steps: Cut episodes after this many decisions (None: full episodes).
        run_dir: The run directory (for the best checkpoint).
        config_hash: Recorded in the best checkpoint.
        select_best: Keep the best checkpoint.
    """

    def __init__(
        self,
        make_env,
        seeds: list[int],
        freq_timesteps: int,
        max_steps: int | None,
        run_dir: Path | None = None,
        config_hash: str = "",
        select_best: bool = False,
    ) -> None:
        super().__init__()
        if freq_timesteps <= 0:
            raise ValueError(f"freq_timesteps must be > 0, got {freq_timesteps}")
        self.make_env = make_env
        self.seeds = list(seeds)
        self.freq = int(freq_timesteps)
        self.max_steps = max_steps
        self.run_dir = run_dir
        self.config_hash = config_hash
        self.select_best = select_best and run_dir is not None
        self.best_mean_qoe = -np.inf
        self.history: list[tuple[int, float]] = []
        self._env = None
        self._next = 0

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.freq + 1) * self.freq
        if self.select_best:
            best = ckpt.best_checkpoint(self.run_dir)
            if best is not None:
                self.best_mean_qoe = float(ckpt.read_meta(best).get("val_mean_qoe", -np.inf))
        self._evaluate()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next = (self.num_timesteps // self.freq + 1) * self.freq
            self._evaluate()
        return True

    def _evaluate(self) -> None:
        if self._env is None:
            self._env = self.make_env()
        norm = ckpt.find_vecnormalize(self.training_env)
        normalizer = None
        if norm is not None and norm.norm_obs:
            normalizer = {
                "mean": norm.obs_rms.mean,
                "var": norm.obs_rms.var,
                "clip_obs": norm.clip_obs,
                "epsilon": norm.epsilon,
            }
        predictor = Predictor(self.model.policy, normalizer)
        results = [
            run_episode(self._env, ModelAgent(predictor), seed, self.max_steps).summary
            for seed in self.seeds
        ]
        self.model.policy.set_training_mode(True)
        mean_qoe = float(np.mean([r["mean_qoe"] for r in results]))
        self.history.append((self.num_timesteps, mean_qoe))
        for field in ("mean_qoe", "p10_qoe", "mean_qoe_fixed"):
            self.logger.record(f"eval/{field}", float(np.mean([r[field] for r in results])))
        if self.select_best and mean_qoe > self.best_mean_qoe:
            self.best_mean_qoe = mean_qoe
            ckpt.save_checkpoint(
                self.run_dir,
                self.model,
                self.training_env,
                self.config_hash,
                name=ckpt.BEST_NAME,
                extra_meta={"val_mean_qoe": mean_qoe, "val_seeds": self.seeds},
            )
        if self.select_best:
            self.logger.record("eval/best_mean_qoe", self.best_mean_qoe)

    def _on_training_end(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
