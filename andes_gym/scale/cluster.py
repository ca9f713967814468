"""Connecting to Ray: one rule for every command that takes `--ray [ADDRESS]`.

- `--ray` alone starts a Ray instance on this machine (`ray.init(num_cpus=...)`), sized by
  the command's worker count, or every CPU when none is given. Ray joins the cluster in
  the `RAY_ADDRESS` environment variable instead when it is set (Ray's own rule).
- `--ray auto` joins the cluster started on this machine with `ray start --head` (or a
  worker node's cluster); `--ray HOST:PORT` joins a cluster's head node, `--ray
  ray://HOST:10001` connects through Ray Client.

A process that already called `ray.init` (a test session, a notebook) keeps its Ray: the
commands then use it and leave it running.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from andes_gym.extras import install_hint, is_available

RAY_EXTRA_HINT = install_hint("ray")
LOCAL = "local"
"""The `--ray` value meaning: start Ray on this machine."""


class RayUnavailableError(ValueError):
    """Ray is not installed; the message says which extra to install."""


class RayConnectionError(ValueError):
    """No Ray cluster answered at the given address."""


def require_ray(what: str = "--ray") -> None:
    """Raises `RayUnavailableError` (naming the `ray` extra) when Ray is not importable.

    Args:
        what: The feature that needs Ray, named in the message.
    """
    if not is_available("ray"):
        raise RayUnavailableError(
            f"{what} needs Ray, which is not installed; install it with: {RAY_EXTRA_HINT}"
        )


@dataclass
class RayConnection:
    """Where Ray runs and whether this process started it.

    Args:
        address: None or `LOCAL` to start Ray here; `auto`, `HOST:PORT` or
            `ray://HOST:PORT` to join a cluster.
        num_cpus: CPUs of a Ray started here (None: every CPU); ignored when joining.
        owned: Whether `ensure` initialized Ray in this process (then `close` shuts it down).
    """

    address: str | None = None
    num_cpus: int | None = None
    owned: bool = False

    def ensure(self):
        """Initializes Ray unless this process already did; returns the `ray` module.

        Raises:
            RayUnavailableError: When Ray is not installed.
            RayConnectionError: When no cluster answers at `address`.
        """
        require_ray()
        import ray

        if ray.is_initialized():
            return ray
        local = self.address in (None, LOCAL)
        if local and not os.environ.get("RAY_ADDRESS"):
            ray.init(num_cpus=self.num_cpus, include_dashboard=False)
        else:
            # Joining: the given address, or Ray's RAY_ADDRESS (a CPU count is only for a
            # new instance).
            address = os.environ["RAY_ADDRESS"] if local else self.address
            try:
                ray.init(address=None if local else address)
            except (ConnectionError, RuntimeError) as exc:
                raise RayConnectionError(
                    f"could not join the Ray cluster at {address!r} ({exc}); start one "
                    "with `ray start --head`, or run --ray without an address. A cluster with "
                    "token authentication needs RAY_AUTH_MODE=token and its token (~/.ray/"
                    "auth_token or RAY_AUTH_TOKEN) here too (docs/SCALE_OUT.md)"
                ) from exc
        self.owned = True
        return ray

    def close(self) -> None:
        """Shuts Ray down if `ensure` started it (a Ray the caller had is left running)."""
        if self.owned:
            import ray

            ray.shutdown()
            self.owned = False


def describe(address: str | None) -> str:
    """Where `--ray ADDRESS` runs, in words (for progress lines and the docs)."""
    if address in (None, LOCAL):
        return "a local Ray instance"
    return f"the Ray cluster at {address}"
