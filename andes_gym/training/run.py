"""One training run with stable-baselines3: config in, run directory and final evaluation out.

`run_training(cfg)` starts a run and `resume_training(run_dir)` continues one; both are
what `python -m andes_gym.train` runs, and the sweep (`andes_gym.scale.sweep`) calls
`run_training` for each trial. A run writes `{run_root}/{env}__{exp}__{seed}__{time}/`
(see `andes_gym.training.run_dir`): the resolved config, the command, TensorBoard logs with
`qoe/*` metrics besides the reward, periodic checkpoints, `policy.onnx`, and the final
evaluation table (`eval.csv`). Ctrl-C (or SIGTERM) saves a checkpoint and ends the run
with `EXIT_INTERRUPTED`; resuming continues from the newest intact checkpoint (timesteps,
weights, optimizer, normalization statistics; new episodes start from fresh resets; a
broken newer one is skipped with a warning naming it).

The config, the env and the model are all checked and built before anything is written: a
config error leaves no run directory behind, and a rejected resume leaves its run
directory as it was. torch and stable-baselines3 are imported only when a run starts (the
modules `checkpoint`, `callbacks` and `progress` import them, hence their imports inside
the functions here).
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from andes_gym.core.features import FeatureSpec
from andes_gym.extras import require
from andes_gym.training import factory
from andes_gym.training import run_dir as runs
from andes_gym.training.config import ConfigError, TrainConfig, dump_yaml
from andes_gym.training.evaluate import AgentSpec, final_table
from andes_gym.training.export_onnx import export_run
from andes_gym.training.imitation import run_imitation

# The exit status of a run stopped by Ctrl-C or SIGTERM (after saving a checkpoint).
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced.

    Attributes:
        run_dir: The run directory.
        exit_status: 0 when the run finished (training, export and, when configured, the
            final evaluation); `EXIT_INTERRUPTED` when Ctrl-C or SIGTERM stopped it.
        eval_means: The final evaluation's mean row per policy (None when it did not run).
    """

    run_dir: Path
    exit_status: int = 0
    eval_means: list[dict] | None = None


@dataclass(frozen=True)
class _Resume:
    """Where a resumed run continues from."""

    run_dir: Path
    checkpoint: Path
    meta: dict
    overrides: tuple[str, ...]


def require_training_extras() -> None:
    """Checks that torch and stable-baselines3 are installed.

    Raises:
        MissingExtraError: Naming the `pip install` line of the `train` extra.
    """
    require("torch", "training (python -m andes_gym.train)")
    require("stable_baselines3", "training (python -m andes_gym.train)")


def run_training(
    cfg: TrainConfig, *, command: Sequence[str] = (), callbacks: Sequence = ()
) -> TrainingResult:
    """Trains a new run of `cfg`, exports its policy and runs the final evaluation.

    Args:
        cfg: The training config.
        command: The `python -m andes_gym.train` arguments that reproduce the run
            (recorded in the run's `command.txt`).
        callbacks: Extra SB3 callbacks (tests use one to simulate Ctrl-C).

    Returns:
        The run directory, exit status and final evaluation.

    Raises:
        MissingExtraError: Without torch or stable-baselines3.
        ConfigError: For a config the env or the model rejects (nothing is written).
    """
    require_training_extras()
    factory.validate(cfg)
    spec, _, _ = factory.probe_env(cfg)
    return _run(cfg, spec, command, callbacks, resume=None)


def resume_training(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    *,
    command: Sequence[str] = (),
    callbacks: Sequence = (),
) -> TrainingResult:
    """Continues a run from its newest intact checkpoint.

    Args:
        run_dir: The run directory.
        overrides: `KEY=VALUE` overrides of the run's saved config (e.g. a larger
            `total_timesteps`); written back to the run's config when given.
        command: As in `run_training`.
        callbacks: As in `run_training`.

    Returns:
        As `run_training`.

    Raises:
        MissingExtraError: Without torch or stable-baselines3.
        ConfigError: For a bad override or an env that observes another layout than the
            run's checkpoints (the run is left as it was).
        CheckpointError: When the run has no intact checkpoint.
    """
    require_training_extras()
    # The checkpoint module imports torch; the check above names the extra first.
    from andes_gym.training import checkpoint as ckpt

    cfg, spec = runs.read_run(run_dir, list(overrides))
    factory.validate(cfg, spec)
    _check_same_layout(factory.probe_env(cfg)[0], spec, run_dir, overrides)
    latest = ckpt.newest_intact_checkpoint(run_dir)
    resume = _Resume(Path(run_dir), latest, ckpt.read_meta(latest), tuple(overrides))
    return _run(cfg, spec, command, callbacks, resume)


def _run(
    cfg: TrainConfig,
    spec: FeatureSpec,
    command: Sequence[str],
    extra_callbacks: Sequence,
    resume: _Resume | None,
) -> TrainingResult:
    import torch

    from andes_gym.training import checkpoint as ckpt
    from andes_gym.training.progress import make_logger

    torch.set_num_threads(max(cfg.torch_threads, 1))
    started = time.monotonic()

    need_bc = cfg.bc.enabled and (resume is None or resume.meta.get("phase") == "bc")
    venv = factory.make_vec_env(cfg, with_teacher=cfg.bc.enabled)
    try:
        seed = cfg.seed
        if resume is not None:  # a fresh stream for the resumed session, within numpy's range
            seed = (cfg.seed + int(resume.meta["num_timesteps"]) + 1) % 2**32
        model = factory.make_model(cfg, venv, spec, seed=seed)
        if resume is not None:
            ckpt.load_checkpoint(model, resume.checkpoint, venv)
            run_dir = resume.run_dir
            if resume.overrides:
                (run_dir / runs.CONFIG_FILE).write_text(dump_yaml(cfg))
        else:
            run_dir = runs.create_run_dir(cfg, spec)
        runs.record_command(run_dir, ["andes_gym.train", *command])
        print(f"run directory: {run_dir}")
        if resume is not None:
            print(f"resumed from {resume.checkpoint} at {model.num_timesteps} timesteps")
        model.set_logger(make_logger(run_dir, cfg.verbose))
        code = _train(model, venv, cfg, spec, run_dir, need_bc, list(extra_callbacks))
    finally:
        _close(venv)
    if code != 0:
        return TrainingResult(run_dir, code)
    print(f"training finished in {time.monotonic() - started:.0f} s")
    _export(run_dir)
    means = None
    if cfg.eval.final:
        try:
            means = final_evaluation(run_dir, cfg)
        except KeyboardInterrupt:
            print(f"\nevaluation interrupted; the trained run is complete in {run_dir}")
            return TrainingResult(run_dir, EXIT_INTERRUPTED)
    print(f"total wall time {time.monotonic() - started:.0f} s; run directory: {run_dir}")
    return TrainingResult(run_dir, 0, means)


def _check_same_layout(
    probed: FeatureSpec, spec: FeatureSpec, run_dir: str | Path, overrides: Sequence[str]
) -> None:
    """A resumed run's env must observe what its checkpoints were trained on."""
    if probed == spec:
        return
    raise ConfigError(
        f"the env built from the run's config has another observation layout (k_slots "
        f"{probed.k_slots}, {probed.obs_dim} features) than its {runs.SPEC_FILE} (k_slots "
        f"{spec.k_slots}, {spec.obs_dim} features) that the checkpoints were trained on",
        source=f"--set {' '.join(overrides)}" if overrides else str(run_dir),
        key="env.kwargs",
    )


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


def _train(
    model, venv, cfg: TrainConfig, spec, run_dir: Path, need_bc: bool, extra_callbacks: list
) -> int:
    from andes_gym.training import checkpoint as ckpt
    from andes_gym.training.callbacks import PeriodicCheckpoint, PeriodicEval, QoELogger

    h = cfg.hash()
    phase = "bc"

    def save(phase_now: str) -> Path:
        # "phase": "bc" marks a save from inside imitation, which a resume redoes.
        return ckpt.save_checkpoint(
            run_dir, model, venv, h, cfg.checkpoint.keep_last, extra_meta={"phase": phase_now}
        )

    with _sigterm_as_interrupt():
        try:
            if need_bc:
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
