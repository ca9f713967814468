"""Profiling a live vLLM engine: controlled request sets, timed `engine.step()` calls.

Each scenario submits a fixed set of requests to an idle engine and steps it until every
request finished, timing each `step()` and recording what the step computed (read from
the scheduler's output, so chunking, preemption and re-prefill are seen exactly as vLLM
did them). A step is described the way the surrogate's latency model sees an iteration:

- `prefill_tokens`: tokens computed for requests that are not in plain decode (first
  prefill chunks, later chunks, and the full re-prefill of a recompute-preempted request);
- `decode_seqs`: requests computing exactly their one next token;
- `context_tokens`: the sum over scheduled requests of their computed tokens after the step.

Prompts are random token ids drawn per request, so prefix caching (if enabled) never
shortens a prefill. vLLM is reached only through the engine handle passed in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from andes_gym.engine_bridge.engine import scheduler_of


@dataclass(frozen=True)
class StepSample:
    """One timed engine step.

    Attributes:
        scenario: Name of the scenario that produced it.
        prefill_tokens: Prefill (incl. re-prefill) tokens computed in the step.
        decode_seqs: Sequences that decoded one token.
        context_tokens: Sum of the scheduled requests' computed tokens after the step.
        reprefill_tokens: Part of `prefill_tokens` that recomputes preempted requests.
        num_preempted: Requests vLLM preempted while scheduling the step.
        prefill_seqs: Requests computing prefill (or re-prefill) tokens in the step.
        latency_s: Wall time of `engine.step()` (the median over repeats once aggregated).
        num_repeats: Timings the latency is the median of.
    """

    scenario: str
    prefill_tokens: int
    decode_seqs: int
    context_tokens: int
    reprefill_tokens: int
    num_preempted: int
    prefill_seqs: int
    latency_s: float
    num_repeats: int = 1

    @property
    def key(self) -> tuple:
        return (
            self.scenario,
            self.prefill_tokens,
            self.decode_seqs,
            self.context_tokens,
            self.reprefill_tokens,
            self.num_preempted,
            self.prefill_seqs,
        )

    @property
    def kind(self) -> str:
        """The step kind for per-kind fit errors: decode, prefill, mixed or reprefill."""
        if self.reprefill_tokens:
            return "reprefill"
        if self.prefill_tokens and self.decode_seqs:
            return "mixed"
        return "prefill" if self.prefill_tokens else "decode"


@dataclass(frozen=True)
class Scenario:
    """A controlled request set.

    Attributes:
        name: Label of the samples.
        prompt_tokens: Prompt length of each request submitted at the start.
        output_tokens: Output length of each of them.
        inject_after_steps: When set, `inject_prompt_tokens` requests (one output token
            each) are submitted after this many steps, to measure mixed prefill + decode.
        inject_prompt_tokens: Prompt lengths of the injected requests.
    """

    name: str
    prompt_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]
    inject_after_steps: int | None = None
    inject_prompt_tokens: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if len(self.prompt_tokens) != len(self.output_tokens) or not self.prompt_tokens:
            raise ValueError(
                f"scenario {self.name!r}: need one output length per prompt, got "
                f"{len(self.prompt_tokens)} prompts and {len(self.output_tokens)} outputs"
            )
        if min(self.prompt_tokens + self.output_tokens + self.inject_prompt_tokens) < 1:
            raise ValueError(f"scenario {self.name!r}: lengths must be >= 1")


@dataclass(frozen=True)
class EngineShape:
    """The limits a plan must respect (from the live engine config).

    Attributes:
        usable_kv_blocks: KV blocks requests can hold (vLLM reserves one null block).
        block_size: Tokens per block.
        max_num_seqs: Batch limit.
        max_num_batched_tokens: Token budget per step.
        max_model_len: Longest prompt + output.
    """

    usable_kv_blocks: int
    block_size: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int

    def blocks(self, tokens: int) -> int:
        return -(-int(tokens) // self.block_size)


def _spread(lo: int, hi: int, n: int) -> list[int]:
    """About n distinct integers spread geometrically over [lo, hi]."""
    if hi <= lo:
        return [lo]
    return sorted({int(round(v)) for v in np.geomspace(lo, hi, n)})


def default_plan(shape: EngineShape, decode_steps: int = 24) -> list[Scenario]:
    """Scenarios covering decode batch x context, prefill chunk sizes, mixed steps, preemption.

    Every scenario fits the engine: prompt + output <= max_model_len, and (except the
    preemption scenario, which overflows the KV cache on purpose, and is left out when
    the cache is too large to overflow) the final KV footprint of all requests fits the
    usable blocks.

    Args:
        shape: The engine's limits.
        decode_steps: Output tokens of the decode scenarios (decode iterations per run).

    Returns:
        The scenarios, small first.
    """
    s = shape
    plan: list[Scenario] = []
    out = decode_steps
    max_prompt = s.max_model_len - out
    # Decode: batch sizes x context lengths.
    for ctx in _spread(16, max(16, min(max_prompt, 4096)), 4):
        for batch in _spread(1, s.max_num_seqs, 7):
            if batch * s.blocks(ctx + out) > s.usable_kv_blocks:
                continue
            plan.append(Scenario(f"decode_b{batch}_l{ctx}", (ctx,) * batch, (out,) * batch))
    # Prefill: single prompts of many sizes (one output token: the prefill step only),
    # and groups whose total exceeds the budget (full chunks).
    for prompt in _spread(8, min(s.max_model_len - 1, s.max_num_batched_tokens), 10):
        plan.append(Scenario(f"prefill_p{prompt}", (prompt,), (1,)))
    # Many short prompts in one step: separates the per-request cost from the per-token one.
    for count in _spread(2, s.max_num_seqs, 4):
        for prompt in (16, 64):
            fits_kv = count * s.blocks(prompt + 1) <= s.usable_kv_blocks
            if count * prompt <= s.max_num_batched_tokens and fits_kv:
                plan.append(Scenario(f"prefill_{count}x{prompt}", (prompt,) * count, (1,) * count))
    group = min(s.max_model_len - 2, s.max_num_batched_tokens)
    n_group = min(s.max_num_seqs, max(2, (s.usable_kv_blocks // s.blocks(group + 1)) // 2))
    plan.append(Scenario(f"prefill_chunks_{n_group}x{group}", (group,) * n_group, (2,) * n_group))
    # Mixed: a decoding batch, then prompts injected mid-run.
    for batch in _spread(2, max(2, s.max_num_seqs // 2), 3):
        for prompt in _spread(16, min(s.max_model_len - 1, s.max_num_batched_tokens // 2), 4):
            foot = batch * s.blocks(64 + out) + s.blocks(prompt + 1)
            if foot > s.usable_kv_blocks:
                continue
            plan.append(
                Scenario(
                    f"mixed_b{batch}_p{prompt}",
                    (64,) * batch,
                    (out,) * batch,
                    inject_after_steps=out // 2,
                    inject_prompt_tokens=(prompt,),
                )
            )
    overflow = preemption_scenario(s)
    if overflow is not None:
        plan.append(overflow)
    return plan


def preemption_scenario(shape: EngineShape) -> Scenario | None:
    """Requests whose prompts fit the cache but whose outputs do not: vLLM preempts some
    mid-decode (recompute) and re-prefills them later.

    Returns:
        The scenario, or None when a full batch of the longest requests still fits the
        cache (a large GPU cache: preemption cannot happen in one batch).
    """
    s = shape
    batch = s.max_num_seqs
    prompt_blocks = max(1, (s.usable_kv_blocks * 2 // 3) // batch)
    prompt = max(1, min(prompt_blocks * s.block_size - 1, s.max_model_len // 2))
    # Enough output that the batch's final footprint exceeds the cache.
    out_blocks = -(-s.usable_kv_blocks // batch) - s.blocks(prompt) + 1
    out = min(s.max_model_len - prompt, max(1, out_blocks) * s.block_size)
    if batch * s.blocks(prompt + out) <= s.usable_kv_blocks:
        return None
    return Scenario(f"preempt_{batch}x{prompt}+{out}", (prompt,) * batch, (out,) * batch)


class StepRecorder:
    """Records what each `schedule()` of an in-process vLLM scheduler scheduled.

    Wraps the scheduler *instance's* `schedule` (the class is untouched); `detach`
    restores it.

    Args:
        scheduler: The engine core's scheduler (`engine_bridge.engine.scheduler_of`).
    """

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler
        self.last: tuple[int, int, int, int, int, int] | None = None
        self._inner = scheduler.schedule
        scheduler.schedule = self._schedule

    def _schedule(self, *args, **kwargs):
        sched = self.scheduler
        before = sum(r.num_preemptions for r in sched.requests.values())
        out = self._inner(*args, **kwargs)
        prefill = decode = context = reprefill = prefill_seqs = 0
        for req_id, num_new in out.num_scheduled_tokens.items():
            req = sched.requests[req_id]
            computed = int(req.num_computed_tokens)  # already advanced by this step
            context += computed
            if num_new == 1 and computed == req.num_tokens and req.num_output_tokens > 0:
                decode += 1
                continue
            prefill += num_new
            prefill_seqs += 1
            if req.num_output_tokens > 0 and computed - num_new < req.num_tokens - 1:
                reprefill += num_new
        preempted = sum(r.num_preemptions for r in sched.requests.values()) - before
        self.last = (prefill, decode, context, reprefill, preempted, prefill_seqs)
        return out

    def detach(self) -> None:
        self.scheduler.schedule = self._inner


def _sampling_params(max_tokens: int):
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        max_tokens=int(max_tokens),
        ignore_eos=True,
        detokenize=False,
        output_kind=RequestOutputKind.DELTA,
    )


def _submit(engine, prefix: str, prompts, outputs, vocab_size: int, rng) -> None:
    from vllm.inputs import TokensPrompt

    for i, (p, o) in enumerate(zip(prompts, outputs, strict=True)):
        ids = rng.integers(3, vocab_size, size=int(p)).tolist()
        engine.add_request(f"{prefix}-{i}", TokensPrompt(prompt_token_ids=ids), _sampling_params(o))


def run_scenario(
    engine,
    recorder: StepRecorder,
    scenario: Scenario,
    vocab_size: int,
    rng: np.random.Generator,
    tag: str = "",
    max_steps: int = 100_000,
) -> list[StepSample]:
    """Runs one scenario on an idle engine and returns its timed steps.

    Args:
        engine: An in-process vLLM `LLMEngine` with no unfinished requests.
        recorder: The recorder attached to its scheduler.
        scenario: What to submit.
        vocab_size: Token ids are drawn below this.
        rng: Draws the prompt token ids.
        tag: Makes request ids unique across repeats.
        max_steps: Safety cap.

    Raises:
        RuntimeError: When the engine is not idle or the scenario does not finish.
    """
    if engine.has_unfinished_requests():
        raise RuntimeError("run_scenario needs an idle engine (unfinished requests found)")
    _submit(
        engine,
        f"{scenario.name}{tag}",
        scenario.prompt_tokens,
        scenario.output_tokens,
        vocab_size,
        rng,
    )
    samples: list[StepSample] = []
    for step in range(max_steps):
        if scenario.inject_after_steps is not None and step == scenario.inject_after_steps:
            prompts = scenario.inject_prompt_tokens
            _submit(
                engine, f"{scenario.name}{tag}-inj", prompts, (1,) * len(prompts), vocab_size, rng
            )
        if not engine.has_unfinished_requests():
            return samples
        recorder.last = None
        start = time.perf_counter()
        engine.step()
        elapsed = time.perf_counter() - start
        if recorder.last is None or recorder.last[0] + recorder.last[1] == 0:
            continue  # nothing computed (e.g. only outputs flushed)
        p, d, c, r, k, ps = recorder.last
        samples.append(StepSample(scenario.name, p, d, c, r, k, ps, elapsed))
    raise RuntimeError(f"scenario {scenario.name!r} did not finish in {max_steps} steps")


def aggregate(samples: list[StepSample]) -> list[StepSample]:
    """One sample per distinct step (scenario + composition) with the median latency."""
    groups: dict[tuple, list[float]] = {}
    for s in samples:
        groups.setdefault(s.key, []).append(s.latency_s)
    return [
        StepSample(*key, latency_s=float(np.median(lat)), num_repeats=len(lat))
        for key, lat in groups.items()
    ]


def profile_engine(
    engine,
    vocab_size: int,
    plan: list[Scenario],
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    progress=None,
) -> list[StepSample]:
    """Runs a plan `warmup` times (discarded) and `repeats` times; medians per distinct step.

    Repeats interleave the scenarios (plan, plan, ...) rather than running one scenario
    `repeats` times in a row, so a slow phase of a shared machine spreads over all
    scenarios instead of biasing one.

    Args:
        engine: An idle in-process `LLMEngine`.
        vocab_size: Token ids are drawn below this.
        plan: Scenarios.
        repeats: Timed passes over the plan.
        warmup: Untimed passes first.
        seed: Seeds the prompt token ids.
        progress: Optional callable `f(pass_index, num_passes)`.

    Returns:
        The aggregated samples.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rng = np.random.default_rng(seed)
    recorder = StepRecorder(scheduler_of(engine))
    timed: list[StepSample] = []
    try:
        for rep in range(warmup + repeats):
            if progress is not None:
                progress(rep, warmup + repeats)
            for scenario in plan:
                samples = run_scenario(engine, recorder, scenario, vocab_size, rng, tag=f"-r{rep}")
                if rep >= warmup:
                    timed.extend(samples)
    finally:
        recorder.detach()
    return aggregate(timed)
