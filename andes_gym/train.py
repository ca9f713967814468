"""Train a scheduling policy with stable-baselines3 and compare it with the baselines.

Usage:
    python -m andes_gym.train --config quickstart
    python -m andes_gym.train --config quickstart --set algo.learning_rate=1e-4 --set seed=3
    python -m andes_gym.train --resume runs/andes_gym-Surrogate-v0__quickstart__0__20250101-120000

A run writes `{run_root}/{env}__{exp}__{seed}__{time}/` (see `andes_gym.training.run_dir`):
the resolved config, the command, TensorBoard logs (`tensorboard --logdir runs`) with
`qoe/*` metrics besides the reward, periodic checkpoints, `policy.onnx`, and the final
evaluation table (`eval.csv`). Ctrl-C (or SIGTERM) saves a checkpoint before exiting;
`--resume RUN_DIR` continues from the newest intact checkpoint (timesteps, weights, optimizer,
normalization statistics; new episodes start from fresh resets; a broken newer one is
skipped with a warning naming it).

The config, the env and the model are all checked and built before anything is written: a
config error (exit status 2, naming the key and where it came from) leaves no run
directory behind, and a rejected `--resume` leaves its run directory as it was.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from andes_gym.training.config import (
    ConfigError,
    TrainConfig,
    add_config_arguments,
    describe_keys,
    dump_yaml,
    load_config,
)

EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m andes_gym.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (override any with --set KEY=VALUE; values are parsed as YAML):\n"
        + "\n".join(describe_keys()),
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint"
    )
    return parser


@contextmanager
def _sigterm_as_interrupt():
    """Turns SIGTERM into KeyboardInterrupt while training, so both save a checkpoint."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None, callbacks: list | None = None) -> int:
    """Entry point; returns the exit code.

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`).
        callbacks: Extra SB3 callbacks (tests use one to simulate Ctrl-C).
    """
    args = _parser().parse_args(argv)
    from andes_gym.extras import MissingExtraError, require

    try:
        require("torch", "training (python -m andes_gym.train)")
        require("stable_baselines3", "training (python -m andes_gym.train)")
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from andes_gym.training.checkpoint import CheckpointError

    try:
        return _run(args, callbacks or [], argv)
    except (ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args, extra_callbacks: list, argv: list[str] | None) -> int:
    import torch

    from andes_gym.training import checkpoint as ckpt
    from andes_gym.training import factory
    from andes_gym.training import run_dir as runs
    from andes_gym.training.progress import make_logger

    # Everything is checked and built before anything is written: a config error leaves no
    # run directory behind, and a rejected --resume leaves its run as it was.
    run_dir = latest = resume_meta = None
    if args.resume:
        if args.config:
            raise ConfigError("--resume takes the run's own config; pass overrides with --set")
        cfg, spec = runs.read_run(args.resume, args.overrides)
        factory.validate(cfg, spec)
        _check_same_layout(factory.probe_env(cfg)[0], spec, args)
        latest = ckpt.newest_intact_checkpoint(args.resume)
        resume_meta = ckpt.read_meta(latest)
    else:
        cfg = load_config(args.config, args.overrides)
        factory.validate(cfg)
        spec, _, _ = factory.probe_env(cfg)
    torch.set_num_threads(max(cfg.torch_threads, 1))
    started = time.monotonic()

    need_bc = cfg.bc.enabled and (resume_meta is None or resume_meta.get("phase") == "bc")
    venv = factory.make_vec_env(cfg, with_teacher=cfg.bc.enabled)
    try:
        seed = cfg.seed
        if resume_meta is not None:  # a fresh stream for the resumed session, within numpy's range
            seed = (cfg.seed + int(resume_meta["num_timesteps"]) + 1) % 2**32
        model = factory.make_model(cfg, venv, spec, seed=seed)
        if resume_meta is not None:
            ckpt.load_checkpoint(model, latest, venv)
            run_dir = Path(args.resume)
            if args.overrides:
                (run_dir / runs.CONFIG_FILE).write_text(dump_yaml(cfg))
        else:
            run_dir = runs.create_run_dir(cfg, spec)
        runs.record_command(
            run_dir, ["andes_gym.train", *(argv if argv is not None else sys.argv[1:])]
        )
        print(f"run directory: {run_dir}")
        if resume_meta is not None:
            print(f"resumed from {latest} at {model.num_timesteps} timesteps")
        model.set_logger(make_logger(run_dir, cfg.verbose))
        code = _train(model, venv, cfg, spec, run_dir, need_bc, extra_callbacks)
    finally:
        _close(venv)
    if code != 0:
        return code
    print(f"training finished in {time.monotonic() - started:.0f} s")
    _export(run_dir)
    if cfg.eval.final:
        try:
            final_evaluation(run_dir, cfg)
        except KeyboardInterrupt:
            print(f"\nevaluation interrupted; the trained run is complete in {run_dir}")
            return EXIT_INTERRUPTED
    print(f"total wall time {time.monotonic() - started:.0f} s; run directory: {run_dir}")
    return 0


def _check_same_layout(probed, spec, args) -> None:
    """A resumed run's env must observe what its checkpoints were trained on."""
    if probed == spec:
        return
    from andes_gym.training.run_dir import SPEC_FILE

    raise ConfigError(
        f"the env built from the run's config has another observation layout (k_slots "
        f"{probed.k_slots}, {probed.obs_dim} features) than its {SPEC_FILE} (k_slots "
        f"{spec.k_slots}, {spec.obs_dim} features) that the checkpoints were trained on",
        source=f"--set {' '.join(args.overrides)}" if args.overrides else args.resume,
        key="env.kwargs",
    )


def _train(
    model, venv, cfg: TrainConfig, spec, run_dir: Path, need_bc: bool, extra_callbacks: list
) -> int:
    from andes_gym.training import checkpoint as ckpt
    from andes_gym.training import factory
    from andes_gym.training.callbacks import PeriodicCheckpoint, PeriodicEval, QoELogger

    h = cfg.hash()
    phase = "bc"

    def save(phase_now: str) -> Path:
        # "phase": "bc" marks a save from inside imitation, which --resume redoes.
        return ckpt.save_checkpoint(
            run_dir, model, venv, h, cfg.checkpoint.keep_last, extra_meta={"phase": phase_now}
        )

    with _sigterm_as_interrupt():
        try:
            if need_bc:
                from andes_gym.training.imitation import run_imitation

                start = time.monotonic()
                run_imitation(model, venv, cfg, spec, model.logger)
                print(
                    f"[bc] warm start done in {time.monotonic() - start:.0f} s; RL fine-tuning follows"
                )
                save("rl")
            elif cfg.bc.enabled:
                venv.env_method("set_labeling", False)
            phase = "rl"
            callbacks = [
                QoELogger(),
                PeriodicCheckpoint(
                    run_dir, cfg.checkpoint.freq_timesteps, h, cfg.checkpoint.keep_last
                ),
            ]
            if cfg.eval.freq_timesteps > 0 and cfg.eval.val_seeds:
                env_id, kwargs = cfg.env.id, dict(cfg.env.kwargs)
                callbacks.append(
                    PeriodicEval(
                        lambda: factory.make_env(env_id, kwargs),
                        cfg.eval.val_seeds,
                        cfg.eval.freq_timesteps,
                        cfg.eval.max_steps,
                        run_dir,
                        h,
                        cfg.eval.select_best,
                    )
                )
            remaining = cfg.total_timesteps - model.num_timesteps
            if remaining > 0:
                model.learn(
                    total_timesteps=remaining,
                    callback=callbacks + list(extra_callbacks),
                    reset_num_timesteps=False,
                    progress_bar=cfg.progress_bar,
                )
        except KeyboardInterrupt:
            path = save(phase)
            print(
                f"\ninterrupted: saved {path} ({model.num_timesteps} timesteps); continue with --resume {run_dir}"
            )
            return EXIT_INTERRUPTED
        save("rl")
    return 0


def _close(venv) -> None:
    # Workers may already be gone (e.g. after Ctrl-C).
    with suppress(EOFError, BrokenPipeError, ConnectionResetError, OSError):
        venv.close()


def _export(run_dir: Path) -> None:
    from andes_gym.export import export_run

    try:
        path = export_run(run_dir, run_dir / "policy.onnx")
        print(f"exported {path}")
    except Exception as exc:  # noqa: BLE001 (export is a convenience; training succeeded)
        print(f"warning: export to ONNX failed: {exc}", file=sys.stderr)


def final_evaluation(run_dir: Path, cfg: TrainConfig) -> list[dict]:
    """Evaluates the run's policy and the baselines on the held-out seeds; prints and saves.

    Returns:
        The per-policy mean rows.
    """
    from andes_gym.training import checkpoint as ckpt
    from andes_gym.training.evaluate import AgentSpec, final_table

    chosen = ckpt.policy_checkpoint(run_dir)
    meta = ckpt.read_meta(chosen)
    picked = (
        f"the best validation checkpoint (mean QoE {meta['val_mean_qoe']:.4f} on seeds {cfg.eval.val_seeds})"
        if chosen.name == ckpt.BEST_NAME
        else "the last checkpoint"
    )
    print(f"learned policy: {chosen} = {picked}, after {meta['num_timesteps']} RL timesteps")
    num_agents = 1 + len(cfg.eval.baselines)
    print(
        f"final evaluation: learned vs {', '.join(cfg.eval.baselines)} on held-out seeds "
        f"{cfg.eval.seeds} ({num_agents * len(cfg.eval.seeds)} episodes, {cfg.eval.n_workers} workers)"
    )
    note = None
    if cfg.bc.enabled:
        note = (
            f"note: the learned policy was warm-started by behaviour cloning of {cfg.bc.teacher!r} "
            f"(bc.enabled in the config), then fine-tuned with {cfg.algo.name} "
            f"({meta['num_timesteps']} timesteps in the evaluated checkpoint)."
        )
    start = time.monotonic()
    means = final_table(run_dir, cfg, AgentSpec("run", str(run_dir), "learned"), note)
    print(f"evaluation took {time.monotonic() - start:.0f} s; saved {run_dir / 'eval.csv'}")
    return means


if __name__ == "__main__":
    sys.exit(main())
