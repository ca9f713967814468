"""Train a scheduling policy with RLlib PPO (env runners on Ray) and compare it with the baselines.

Usage:
    python -m andes_gym.train_rllib --config quickstart
    python -m andes_gym.train_rllib --config quickstart --num-env-runners 4 --set total_timesteps=100000
    python -m andes_gym.train_rllib --config quickstart --ray auto          # join `ray start --head`
    python -m andes_gym.train_rllib --config quickstart --ray HEAD_IP:6379  # join a cluster
    python -m andes_gym.train_rllib --resume runs/andes_gym-Surrogate-v0__quickstart-rllib__0__<time>

Reads the same training config as `python -m andes_gym.train`, trains the same slot-scorer
network with RLlib's PPO (new API stack) on rollouts from `--num-env-runners` Ray actors
(default: `env.n_envs`), and writes a run directory with the config, the command,
checkpoints (safetensors and JSON, never pickle), `policy.onnx` (the format
`andes_gym.export` writes) and the final evaluation table. Without `--ray` (or with `--ray` alone) Ray starts on this machine. See
`andes_gym.scale.rllib_trainer` for the config mapping and the run directory layout.
"""

from __future__ import annotations

import argparse
import sys

from andes_gym.scale.cluster import LOCAL, RayConnectionError, RayUnavailableError, require_ray
from andes_gym.training.config import ConfigError, add_config_arguments, load_config
from andes_gym.training.run_dir import CheckpointError

EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m andes_gym.train_rllib",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys: see python -m andes_gym.train --help",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        default=None,
        metavar="ADDRESS",
        help="Ray cluster to join (auto, HOST:PORT or ray://HOST:PORT); "
        "absent or without an address: start Ray on this machine",
    )
    parser.add_argument(
        "--num-env-runners",
        type=int,
        default=None,
        metavar="N",
        help="Ray actors collecting rollouts (default: env.n_envs; 0: sample in this process)",
    )
    parser.add_argument(
        "--num-envs-per-env-runner",
        type=int,
        default=1,
        metavar="M",
        help="environments each runner steps (default 1; keep 1 for andes_gym/VLLM-v0)",
    )
    parser.add_argument(
        "--num-gpus-per-env-runner",
        type=float,
        default=0,
        metavar="G",
        help="GPUs Ray reserves per runner (default 0; 1 for andes_gym/VLLM-v0 on GPUs)",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an RLlib run from its newest checkpoint (--set may raise "
        "total_timesteps; --num-env-runners may change)",
    )
    parser.add_argument(
        "--init-from",
        metavar="RUN_DIR",
        help="start from the slot scorer of a `python -m andes_gym.train` run (same network "
        "and K), e.g. one trained with --set total_timesteps=0 to keep only its imitation",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code.

    Returns:
        0 on success; 1 when Ray is missing or no cluster answers at `--ray ADDRESS` (as
        every `--ray` command); 2 for a config error (or an unusable `--init-from` run); 130 on Ctrl-C (after saving a
        checkpoint).
    """
    args = _parser().parse_args(argv)
    try:
        require_ray("python -m andes_gym.train_rllib")
        from andes_gym.scale import rllib_trainer  # imports torch: after the Ray check

        runners = {
            "ray_address": args.ray,
            "num_env_runners": args.num_env_runners,
            "num_envs_per_env_runner": args.num_envs_per_env_runner,
            "num_gpus_per_env_runner": args.num_gpus_per_env_runner,
            "argv": sys.argv[1:] if argv is None else argv,
        }
        if args.resume:
            if args.config or args.init_from:
                raise ConfigError(
                    "--resume takes the run's own config and weights; pass overrides with --set"
                )
            rllib_trainer.resume(args.resume, args.overrides, **runners)
        else:
            cfg = load_config(args.config, args.overrides)
            rllib_trainer.train(cfg, init_from=args.init_from, **runners)
    except (RayUnavailableError, RayConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
