"""RLlib PPO vs stable-baselines3 PPO: training env steps per second on the quickstart config.

Usage:
    python benchmarks/bench_rllib.py                 # 8192 steps, 2 workers, quickstart
    python benchmarks/bench_rllib.py --steps 4096 --workers 2 --set env.kwargs.k_slots=64
    python benchmarks/bench_rllib.py --quick         # 1024 steps, saved only with --out

Both trainers run the same PPO update on the same network (the slot scorer) from the same
config (`configs/train/quickstart.yaml` without the imitation warm start, evaluation or
checkpoints): `algo.n_steps` x workers env steps per update, the same minibatch size,
epochs, learning rate and clipping. Workers: RLlib env runners (Ray actors, one CPU each,
one env each; the update in the driver) vs SB3 with `env.n_envs` = workers, once with
`SubprocVecEnv` (one process per env, the config's default) and once with `DummyVecEnv`
(every env in the trainer process). Each trainer runs a fixed number of env steps (whole
PPO iterations, so RLlib may sample a few more); the rate is env steps over the wall time
of the training loop, set-up (Ray start, actors, subprocesses) timed separately.

Writes `benchmarks/results/rllib.md`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import RESULTS_DIR, header  # noqa: E402

from andes_gym.training.config import TrainConfig, load_config  # noqa: E402


def bench_config(config: str, steps: int, workers: int, overrides: list[str]) -> TrainConfig:
    """The benchmark's training config: the named one without BC, evaluation or checkpoints."""
    fixed = [
        "bc.enabled=false",
        "eval.final=false",
        "eval.freq_timesteps=0",
        "checkpoint.freq_timesteps=0",
        "progress_bar=false",
        f"total_timesteps={steps}",
        f"env.n_envs={workers}",
    ]
    return load_config(config, fixed + list(overrides))


def run_sb3(cfg: TrainConfig, vec_env: str) -> dict:
    """SB3 PPO for `cfg.total_timesteps` steps; rollout and update time split by a callback."""
    import dataclasses

    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    from andes_gym.training import factory

    class Split(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.rollout_s = 0.0
            self._start = 0.0

        def _on_rollout_start(self) -> None:
            self._start = time.perf_counter()

        def _on_rollout_end(self) -> None:
            self.rollout_s += time.perf_counter() - self._start

        def _on_step(self) -> bool:
            return True

    cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, vec_env=vec_env))
    torch.set_num_threads(max(cfg.torch_threads, 1))
    start = time.perf_counter()
    spec, _, _ = factory.probe_env(cfg)
    venv = factory.make_vec_env(cfg)
    try:
        model = factory.make_model(cfg, venv, spec)
        setup_s = time.perf_counter() - start
        split = Split()
        start = time.perf_counter()
        model.learn(total_timesteps=cfg.total_timesteps, callback=split)
        loop_s = time.perf_counter() - start
        steps = int(model.num_timesteps)
    finally:
        venv.close()
    return {
        "trainer": f"SB3 PPO, {vec_env} vec env",
        "workers": f"{cfg.env.n_envs} envs ({vec_env})",
        "steps": steps,
        "setup_s": setup_s,
        "loop_s": loop_s,
        "sample_s": split.rollout_s,
        "update_s": loop_s - split.rollout_s,
    }


def run_rllib(cfg: TrainConfig, workers: int) -> dict:
    """RLlib PPO (new API stack) with `workers` env runners on a local Ray."""
    import torch
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    from andes_gym.scale.rllib_trainer import build_ppo_config, ray_connection
    from andes_gym.training import factory

    torch.set_num_threads(max(cfg.torch_threads, 1))
    start = time.perf_counter()
    spec, _, _ = factory.probe_env(cfg)
    connection = ray_connection(None, workers)
    connection.ensure()
    algo = build_ppo_config(cfg, spec, workers).build_algo()
    setup_s = time.perf_counter() - start
    steps = iterations = 0
    try:
        start = time.perf_counter()
        while steps < cfg.total_timesteps:
            result = algo.train()
            iterations += 1
            steps = int(result[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME])
        loop_s = time.perf_counter() - start
    finally:
        algo.stop()
        connection.close()
    return {
        "trainer": "RLlib PPO (new API stack)",
        "workers": f"{workers} env runners x 1 env",
        "steps": steps,
        "setup_s": setup_s,
        "loop_s": loop_s,
        # RLlib's own timers are smoothed (EMA), not totals: no split is reported.
        "sample_s": None,
        "update_s": None,
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--steps", type=int, default=8192, help="env steps per trainer")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--only", choices=["rllib", "subproc", "dummy"], action="append", help="run only these"
    )
    parser.add_argument("--quick", action="store_true", help="1024 steps (a smoke test)")
    parser.add_argument(
        "--out",
        default=None,
        help="where to save the section (default: benchmarks/results/rllib.md; --quick runs "
        "save only when given)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 1024
    cfg = bench_config(args.config, args.steps, args.workers, args.overrides)
    load_before = os.getloadavg()
    rows = []
    for name in args.only or ["rllib", "subproc", "dummy"]:
        print(f"running {name} ...", flush=True)
        row = run_rllib(cfg, args.workers) if name == "rllib" else run_sb3(cfg, name)
        print(row, flush=True)
        rows.append(row)
    load_after = os.getloadavg()

    a = cfg.algo
    lines = header(
        "RLlib PPO vs stable-baselines3 PPO: training throughput"
        + (" (quick)" if args.quick else "")
    )
    lines += [
        f"Config `{args.config}` (K = {cfg.env.kwargs.get('k_slots')}, {cfg.env.id}, engine "
        f"{cfg.env.kwargs.get('engine')}) without imitation, evaluation or checkpoints: "
        f"{args.steps} env steps per trainer, {args.workers} workers, PPO with "
        f"{a.n_steps} steps per worker per update ({a.n_steps * args.workers} per update), "
        f"minibatch {a.batch_size}, {a.n_epochs} epochs, the slot scorer "
        f"{cfg.policy.slot_hidden}/{cfg.policy.context_hidden}/{cfg.policy.value_hidden}; "
        f"torch threads in the trainer: {cfg.torch_threads}. Load average (1 min) "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (the machine is shared, "
        "run with `nice`).",
        "",
        "| trainer | workers | env steps | set-up s | training loop s | env steps/s | "
        "sampling s | update s | ratio to RLlib |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rllib_rate = next(
        (r["steps"] / r["loop_s"] for r in rows if r["trainer"].startswith("RLlib")), None
    )
    for r in rows:
        rate = r["steps"] / r["loop_s"]
        ratio = f"{rate / rllib_rate:.2f}x" if rllib_rate else "-"
        lines.append(
            f"| {r['trainer']} | {r['workers']} | {r['steps']:,} | {r['setup_s']:.1f} | "
            f"{r['loop_s']:.1f} | {rate:,.0f} | {_seconds(r['sample_s'])} | "
            f"{_seconds(r['update_s'])} | {ratio} |"
        )
    lines += [
        "",
        "Sampling and update seconds: SB3 from rollout start/end callbacks (update = the rest "
        "of the loop, where the PPO epochs run). RLlib's own timers "
        "(`env_runner_sampling_timer`, `learner_update_timer`) are exponential moving "
        "averages dominated by the first iterations, not totals, so no split is given for it; "
        "its loop also holds the actors' round trips, the episode bookkeeping of its "
        "connectors, the learner connector pipeline (GAE on the whole batch) and the weight "
        "sync to the runners.",
    ]
    text = "\n".join(lines).rstrip() + "\n"
    print(text)
    out = args.out or (None if args.quick else str(RESULTS_DIR / "rllib.md"))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
