"""The package as users get it: a wheel installed into fresh virtual environments.

Two groups of tests:

- Import hygiene (fast, in this interpreter's environment): stepping the surrogate, playing
  every registered baseline and running the smoke leaderboard import none of the optional
  dependencies (torch, stable-baselines3, TensorBoard, matplotlib, ONNX, onnxruntime, vLLM),
  and a missing extra is reported with the `pip install` line that fixes it.
- The wheel (`@pytest.mark.install`, run by `make test`): build it from the sources, install
  it into a fresh core-only venv and a fresh core + `train` venv, and run the README's
  commands from a temporary directory outside the checkout, so only the installed package
  and its packaged presets can be found.

The wheel and the two venvs are built once per module; the whole file takes about 100
CPU-seconds, most of it pip (the core venv, about 15 s; the `train` venv with torch, about
50 s), plus one numba compile of the surrogate's kernels in the core venv (about 25 s).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from andes_gym.extras import MissingExtraError, install_hint, require

REPO = Path(__file__).resolve().parents[1]

# Modules that the core install does not provide; none may be imported on the core paths.
OPTIONAL_MODULES = (
    "torch",
    "stable_baselines3",
    "tensorboard",
    "safetensors",
    "matplotlib",
    "onnx",
    "onnxruntime",
    "vllm",
    "ray",
)

# The README's first example plus every registered baseline and the smoke leaderboard,
# in one process; prints the optional modules it ended up importing (JSON).
CORE_PATHS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import gymnasium as gym
    import andes_gym
    from andes_gym.agents import make_policy, registered_policies
    from andes_gym.agents.adapter import PolicyAgent
    from andes_gym.evaluation import run_episode
    from andes_gym import leaderboard

    env = gym.make("andes_gym/Surrogate-v0", workload="bursty_2x", engine="llama7b_a100")
    env.reset(seed=0)
    for _ in range(3):
        env.step(env.action_space.sample())
    small = gym.make(
        "andes_gym/Surrogate-v0",
        workload={
            "name": "tiny",
            "num_requests": 30,
            "arrivals": {"kind": "poisson", "rate_rps": 400.0},
            "lengths": {"kind": "sharegpt", "scale": 0.1, "max_prompt_tokens": 256,
                        "max_output_tokens": 64},
            "targets": {"kind": "reading", "time_scale": 0.02},
        },
        engine="cpu_tiny",
    )
    for name in registered_policies():
        run_episode(small, PolicyAgent(make_policy(name)), seed=0)
    code = leaderboard.main(["--suite", "smoke", "--seeds", "0", "--no-capacity",
                             "--no-plots", "--no-progress", "--workers", "1",
                             "--out", sys.argv[2]])
    assert code == 0, code
    names = json.loads(sys.argv[1])
    print(json.dumps(sorted(n for n in names if n in sys.modules)))
    """
)


def _run(cmd: list, cwd: Path, timeout_s: float = 600, env: dict | None = None):
    """Runs `cmd`, failing the test with its output when it exits non-zero."""
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}",
            pytrace=False,
        )
    return proc


def _clean_env() -> dict:
    """This process's environment without anything that would point at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


# --- import hygiene (this interpreter's environment) -------------------------------------


def test_core_paths_import_no_optional_dependency(tmp_path):
    """The environments, the baselines and the smoke leaderboard stay free of the extras."""
    proc = _run(
        [
            sys.executable,
            "-c",
            CORE_PATHS_SCRIPT,
            json.dumps(OPTIONAL_MODULES),
            tmp_path / "board",
        ],
        cwd=tmp_path,
        timeout_s=300,
    )
    imported = json.loads(proc.stdout.strip().splitlines()[-1])
    assert imported == [], f"core paths imported optional dependencies: {imported}"
    assert (tmp_path / "board" / "board.md").is_file()


def test_missing_extra_names_the_pip_command():
    with pytest.raises(MissingExtraError, match=r"pip install 'andes_gym\[train\]'"):
        require("andes_gym_no_such_module", "training", "train")
    with pytest.raises(ImportError, match=r"andes_gym\[plots\]"):
        require("matplotlib_no_such_module.figure", "plots", "plots")
    assert install_hint("serve") == "pip install 'andes_gym[serve]'"


# --- the wheel in fresh venvs --------------------------------------------------------------


def _venv(path: Path) -> Path:
    """Creates a fresh venv (no system site-packages) and returns its python."""
    _run([sys.executable, "-m", "venv", path], cwd=path.parent, timeout_s=120)
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (the checkout gets no build/ folder)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "andes_gym", src / "andes_gym", ignore=shutil.ignore_patterns("__pycache__")
    )
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", root / "dist", src], cwd=root)
    (whl,) = (root / "dist").glob("andes_gym-*.whl")
    return whl


@pytest.fixture(scope="module")
def core_python(wheel, tmp_path_factory) -> Path:
    """Python of a fresh venv holding the wheel and its core dependencies only."""
    python = _venv(tmp_path_factory.mktemp("venvs") / "core")
    _run([python, "-m", "pip", "install", "--quiet", wheel], cwd=wheel.parent, env=_clean_env())
    return python


@pytest.fixture(scope="module")
def train_python(wheel, tmp_path_factory) -> Path:
    """Python of a fresh venv holding the wheel with its `train` extra.

    torch is pinned to the version of this interpreter's environment, which is on this
    machine already (another version could pull a multi-GB CUDA build).
    """
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("torch is not installed here, so no known-good torch to pin")
    root = tmp_path_factory.mktemp("venvs")
    constraints = root / "constraints.txt"
    constraints.write_text(f"torch=={torch_version}\n")
    python = _venv(root / "train")
    _run(
        [python, "-m", "pip", "install", "--quiet", "-c", constraints, f"{wheel}[train]"],
        cwd=root,
        env=_clean_env(),
    )
    return python


@pytest.mark.install
def test_wheel_holds_presets_license_and_typing_marker(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "andes_gym/py.typed" in names
    for kind in ("workloads", "engines", "train", "suites"):
        packaged = {n for n in names if n.startswith(f"andes_gym/configs/{kind}/")}
        in_repo = {
            f"andes_gym/configs/{kind}/{p.name}"
            for p in (REPO / "andes_gym" / "configs" / kind).iterdir()
            if p.suffix in (".yaml", ".json", ".md")
        }
        assert in_repo and in_repo <= packaged, f"{kind}: missing {sorted(in_repo - packaged)}"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))
    )
    core = [
        line.split(":", 1)[1].strip()
        for line in metadata.decode().splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    heavy = [
        d for d in core if re.split(r"[<>=!~;\[ ]", d)[0].replace("-", "_") in OPTIONAL_MODULES
    ]
    assert not heavy, f"core dependencies hold optional packages: {heavy}"


@pytest.mark.install
def test_core_install_steps_named_presets(core_python, tmp_path):
    script = textwrap.dedent(
        """
        import importlib.util, sys
        import gymnasium as gym
        import andes_gym

        assert "site-packages" in andes_gym.__file__, andes_gym.__file__
        assert importlib.util.find_spec("torch") is None, "torch in the core install"
        env = gym.make("andes_gym/Surrogate-v0", workload="bursty_2x", engine="llama7b_a100")
        obs, info = env.reset(seed=0)
        for _ in range(20):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs)
        try:
            gym.make("andes_gym/Surrogate-v0", workload="no_such_preset", engine="cpu_tiny")
        except Exception as exc:
            print("ERROR:", exc)
        else:
            sys.exit("an unknown preset name was accepted")
        """
    )
    proc = _run([core_python, "-c", script], cwd=tmp_path, env=_clean_env())
    error = proc.stdout.split("ERROR:", 1)[1]
    assert "no_such_preset" in error
    for name in ("bursty_2x", "steady_poisson", "gamma_overload_cpu"):
        assert name in error, f"the error does not list {name}: {error}"


@pytest.mark.install
def test_core_install_runs_smoke_leaderboard_without_plots(core_python, tmp_path):
    out = tmp_path / "board"
    proc = _run(
        [
            core_python,
            "-m",
            "andes_gym.leaderboard",
            "--suite",
            "smoke",
            "--seeds",
            "0",
            "--no-capacity",
            "--no-progress",
            "--workers",
            "2",
            "--out",
            out,
        ],
        cwd=tmp_path,
        env=_clean_env(),
    )
    board = (out / "board.md").read_text()
    assert "andes" in board and "fcfs" in board
    # Plots were asked for (the default) but matplotlib is an extra: skipped with a note.
    assert "pip install 'andes_gym[plots]'" in proc.stderr
    assert not list(out.glob("plots/*.png"))


@pytest.mark.install
@pytest.mark.parametrize(
    "command",
    [["andes_gym.train", "--config", "smoke"], ["andes_gym.export", "no_run", "--out", "p.onnx"]],
    ids=["train", "export"],
)
def test_core_install_names_the_train_extra(core_python, tmp_path, command):
    proc = subprocess.run(
        [str(core_python), "-m", *command],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "pip install 'andes_gym[train]'" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.install
def test_train_install_trains_named_config(train_python, tmp_path):
    runs = tmp_path / "runs"
    _run(
        [
            train_python,
            "-m",
            "andes_gym.train",
            "--config",
            "smoke",
            "--set",
            "total_timesteps=128",
            "--set",
            f"run_root={runs}",
            # The core venv test compiles the kernels; here the Python reference is enough.
            "--set",
            "env.kwargs.simulator=python",
        ],
        cwd=tmp_path,
        env=_clean_env(),
    )
    (run_dir,) = runs.iterdir()
    assert (run_dir / "policy.onnx").is_file()
    assert "learned" in (run_dir / "eval.csv").read_text()
