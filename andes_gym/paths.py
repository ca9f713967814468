"""Finding the project's YAML configs by short name (`configs/<kind>/<name>.yaml`)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_ROOT = REPO_ROOT / "configs"


def resolve_config(kind: str, name_or_path: str | Path) -> Path:
    """The YAML file for a config name or path.

    A value with a path separator or a `.yaml`/`.yml` suffix is a path; a bare name is
    looked up as `configs/<kind>/<name>.yaml`, first under the current directory, then in
    the andes_gym checkout.

    Args:
        kind: Sub-folder of `configs/` ("workloads", "engines", "train", "suites").
        name_or_path: A bare name such as `"bursty_2x"`, or a path.

    Raises:
        FileNotFoundError: Naming what was looked for and the names available.
    """
    text = str(name_or_path)
    if "/" in text or text.endswith((".yaml", ".yml")):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"{kind} config file not found: {path}")
        return path
    for root in (Path.cwd() / "configs", CONFIG_ROOT):
        path = root / kind / f"{text}.yaml"
        if path.is_file():
            return path
    available = sorted(p.stem for p in (CONFIG_ROOT / kind).glob("*.yaml"))
    raise FileNotFoundError(
        f"no {kind} config named {text!r}; available: {', '.join(available) or 'none'}"
    )
