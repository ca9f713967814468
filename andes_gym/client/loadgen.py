"""The load generator: replay a workload against an OpenAI-compatible endpoint, score each stream.

Each request of a workload is sent at its arrival time as a streaming completion with the
prompt as a list of token ids (`prompt_token_ids`: drawn from a seed, below a vocabulary
size), `max_tokens` = its output length, `ignore_eos` (so it generates exactly that many
tokens), `return_token_ids` (so every chunk says how many tokens it carries), and its QoE
targets in `vllm_xargs` (`ttft_s`, `tds_tok_s`; vLLM passes them to the scheduler hook as
`SamplingParams.extra_args`). The client timestamps every token when its chunk arrives;
`score` computes each request's QoE in all variants with `andes_gym.qoe.qoe`, measured from
the request's scheduled arrival (so time a request waits for a client slot counts against
it). A request that errors or is still streaming when the time limit ends gets the lower
bound of docs/ANDES.md §1 (missing tokens delivered at the end of the window).
Preemptions are not visible to a client (reported NaN).

`replay` does both (blocking); `write_results` writes `requests.csv`, `summary.csv` and
`summary.json`. The command is `python -m andes_gym.loadgen`; aiohttp (the `serve` extra)
is imported only when a replay starts.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from andes_gym.extras import require
from andes_gym.metrics import RequestMetrics, summarize
from andes_gym.qoe import qoe
from andes_gym.workloads import load_workload_config, make_workload
from andes_gym.workloads.spec import Workload


class ServerUnreachableError(ConnectionError):
    """No OpenAI-compatible server answers at the base URL."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(
            f"no server answers at {base_url} ({reason}); start one with "
            "`python -m andes_gym.serve --policy andes --port 8000` (or point --base-url at "
            "a running server)"
        )
        self.base_url = base_url


@dataclass
class StreamRecord:
    """What the client saw of one request (times are seconds since the replay started)."""

    request_id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    ttft_target_s: float
    tds_tok_s: float
    token_times_s: list[float] = field(default_factory=list)
    sent_s: float = math.nan
    done: bool = False
    error: str = ""


@dataclass
class LoadgenResult:
    """The replay's per-request records, QoE, metrics and summary."""

    records: list[StreamRecord]
    qoe: dict[str, np.ndarray]
    metrics: RequestMetrics
    summary: dict
    end_s: float


def prompt_token_ids(workload: Workload, seed: int, vocab_size: int) -> list[list[int]]:
    """Seeded prompts of the workload's lengths, ids in [1, vocab_size) (0 is often special)."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    rng = np.random.default_rng(seed)
    return [rng.integers(1, vocab_size, size=int(n)).tolist() for n in workload.prompt_tokens]


def _tokens_in_chunk(chunk: dict) -> int:
    choices = chunk.get("choices") or []
    count = 0
    for choice in choices:
        ids = choice.get("token_ids")
        if ids is not None:
            count += len(ids)
        elif choice.get("text"):
            count += 1  # servers without return_token_ids: one token per text delta
    return count


async def _stream_one(session, url: str, payload: dict, rec: StreamRecord, t0: float) -> None:
    aiohttp = require("aiohttp", "the load generator (python -m andes_gym.loadgen)")

    rec.sent_s = time.monotonic() - t0
    try:
        async with session.post(url, json=payload) as resp:
            if resp.status != 200:
                body = (await resp.text())[:300]
                rec.error = f"HTTP {resp.status}: {body}"
                return
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                now = time.monotonic() - t0
                chunk = json.loads(data)
                if "error" in chunk:
                    rec.error = str(chunk["error"])[:300]
                    return
                rec.token_times_s.extend([now] * _tokens_in_chunk(chunk))
        rec.done = len(rec.token_times_s) >= rec.output_tokens
        if not rec.done and not rec.error:
            rec.error = f"stream ended after {len(rec.token_times_s)} of {rec.output_tokens} tokens"
    except (aiohttp.ClientError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"[:300]


async def _replay(
    base_url: str,
    model: str | None,
    workload: Workload,
    prompts: list[list[int]],
    max_concurrency: int,
    time_limit_s: float,
    extra_body: dict,
) -> tuple[list[StreamRecord], float]:
    aiohttp = require("aiohttp", "the load generator (python -m andes_gym.loadgen)")

    base = base_url.rstrip("/")
    connector = aiohttp.TCPConnector(limit=max_concurrency)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    records = [
        StreamRecord(
            i,
            float(workload.arrival_s[i]),
            int(workload.prompt_tokens[i]),
            int(workload.output_tokens[i]),
            float(workload.ttft_s[i]),
            float(workload.tds_tok_s[i]),
        )
        for i in range(len(workload))
    ]
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Asked even with --model: a missing server is one clear error, not N failed streams.
        try:
            served = await _first_model(session, base)
        except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.InvalidURL) as exc:
            raise ServerUnreachableError(base, f"{type(exc).__name__}: {exc}") from None
        except (aiohttp.ClientError, RuntimeError, ValueError):
            if model is None:
                raise
            served = model  # a server without a usable GET /models; --model names it
        model = model or served
        slots = asyncio.Semaphore(max_concurrency)
        t0 = time.monotonic()

        async def run(rec: StreamRecord, prompt: list[int]) -> None:
            await asyncio.sleep(max(rec.arrival_s - (time.monotonic() - t0), 0.0))
            payload = {
                "model": model,
                "prompt": prompt,
                "max_tokens": rec.output_tokens,
                "stream": True,
                "ignore_eos": True,
                "temperature": 0.0,
                "return_token_ids": True,
                "vllm_xargs": {"ttft_s": rec.ttft_target_s, "tds_tok_s": rec.tds_tok_s},
                **extra_body,
            }
            async with slots:
                await _stream_one(session, f"{base}/completions", payload, rec, t0)

        tasks = [asyncio.ensure_future(run(r, p)) for r, p in zip(records, prompts, strict=True)]
        _, pending = await asyncio.wait(tasks, timeout=time_limit_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        end_s = time.monotonic() - t0
    for rec in records:
        if not rec.done and not rec.error:
            rec.error = "time limit reached"
    return records, end_s


async def _first_model(session, base: str) -> str:
    """The first model `GET {base}/models` lists.

    Raises:
        aiohttp.ClientConnectionError: Nothing answers (passed on).
        RuntimeError: The answer is not an OpenAI-compatible model list.
    """
    import aiohttp

    async with session.get(f"{base}/models") as resp:
        if resp.status != 200:
            hint = " (does --base-url end with /v1?)" if resp.status == 404 else ""
            raise RuntimeError(f"GET {base}/models returned HTTP {resp.status}{hint}")
        try:
            data = await resp.json()
            models = [m["id"] for m in data.get("data", [])]
        except (aiohttp.ContentTypeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RuntimeError(
                f"GET {base}/models is not an OpenAI model list ({type(exc).__name__}: {exc})"
            ) from None
    if not models:
        raise RuntimeError(f"GET {base}/models lists no model")
    return models[0]


def score(
    records: list[StreamRecord], end_s: float
) -> tuple[dict[str, np.ndarray], RequestMetrics, dict]:
    """Per-request QoE (all variants), metrics and the summary of a replay.

    Missing tokens of unfinished requests count as delivered at `end_s` (the lower bound).
    """
    variants = ("delay", "delay_fixed", "area")
    values = {v: np.zeros(len(records)) for v in variants}
    ttft = np.full(len(records), np.nan)
    tbt = np.full(len(records), np.nan)
    delivered = np.zeros(len(records), dtype=np.int64)
    for i, rec in enumerate(records):
        times = sorted(max(t, rec.arrival_s) for t in rec.token_times_s)
        delivered[i] = len(times)
        if times:
            ttft[i] = times[0] - rec.arrival_s
        if len(times) > 1:
            tbt[i] = (times[-1] - times[0]) / (len(times) - 1)
        missing = rec.output_tokens - len(times)
        full = times + [max(end_s, times[-1] if times else end_s)] * max(missing, 0)
        for v in variants:
            values[v][i] = qoe(
                full, arrival=rec.arrival_s, ttft=rec.ttft_target_s, tds=rec.tds_tok_s, variant=v
            )
    metrics = RequestMetrics(
        qoe=values["delay"],
        qoe_fixed=values["delay_fixed"],
        qoe_area=values["area"],
        ttft_s=ttft,
        tbt_mean_s=tbt,
        num_tokens=delivered,
        num_preemptions=np.full(len(records), np.nan),  # invisible to a client
        finished=np.array([r.done for r in records], dtype=bool),
    )
    start = min((r.arrival_s for r in records), default=0.0)
    summary = summarize(metrics, start_s=start, end_s=end_s)
    summary["num_errors"] = sum(bool(r.error) for r in records)
    return values, metrics, summary


def replay(
    base_url: str,
    workload: Workload,
    seed: int = 0,
    model: str | None = None,
    vocab_size: int = 512,
    max_concurrency: int = 256,
    time_limit_s: float = 600.0,
    extra_body: dict | None = None,
) -> LoadgenResult:
    """Replays `workload` against the endpoint and scores it (blocking).

    Args:
        base_url: OpenAI-compatible base URL, e.g. `http://127.0.0.1:8000/v1`.
        workload: Requests to send.
        seed: Seed of the prompt token ids.
        model: Model name; None asks `GET {base_url}/models`.
        vocab_size: Prompt ids are drawn below this.
        max_concurrency: Most open streams at once.
        time_limit_s: Wall-clock limit of the whole replay.
        extra_body: Extra request fields.

    Returns:
        The result.
    """
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    if not time_limit_s > 0:
        raise ValueError(f"time_limit_s must be > 0, got {time_limit_s}")
    prompts = prompt_token_ids(workload, seed, vocab_size)
    records, end_s = asyncio.run(
        _replay(
            base_url,
            model,
            workload,
            prompts,
            max_concurrency,
            time_limit_s,
            dict(extra_body or {}),
        )
    )
    values, metrics, summary = score(records, end_s)
    return LoadgenResult(records, values, metrics, summary, end_s)


def write_results(result: LoadgenResult, out: str | Path) -> None:
    """`requests.csv`, `summary.csv` and `summary.json` into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fields = [
        "request_id",
        "arrival_s",
        "prompt_tokens",
        "output_tokens",
        "ttft_target_s",
        "tds_tok_s",
        "tokens_received",
        "ttft_s",
        "tbt_mean_s",
        "qoe",
        "qoe_fixed",
        "qoe_area",
        "finished",
        "error",
    ]
    with (out / "requests.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        m = result.metrics
        for i, rec in enumerate(result.records):
            writer.writerow(
                {
                    "request_id": rec.request_id,
                    "arrival_s": rec.arrival_s,
                    "prompt_tokens": rec.prompt_tokens,
                    "output_tokens": rec.output_tokens,
                    "ttft_target_s": rec.ttft_target_s,
                    "tds_tok_s": rec.tds_tok_s,
                    "tokens_received": len(rec.token_times_s),
                    "ttft_s": m.ttft_s[i],
                    "tbt_mean_s": m.tbt_mean_s[i],
                    "qoe": m.qoe[i],
                    "qoe_fixed": m.qoe_fixed[i],
                    "qoe_area": m.qoe_area[i],
                    "finished": rec.done,
                    "error": rec.error,
                }
            )
    with (out / "summary.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(result.summary))
        writer.writeheader()
        writer.writerow(result.summary)
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2, default=float) + "\n")


def format_summary(summary: dict) -> str:
    """A two-column text table of the summary."""
    width = max(len(k) for k in summary)
    lines = []
    for key, value in summary.items():
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{key.ljust(width)}  {text}")
    return "\n".join(lines)


def load_replay_workload(
    name: str, seed: int, num_requests: int | None = None, rate_scale: float = 1.0
) -> Workload:
    """The workload preset `name` drawn from `seed`: its first `num_requests` requests,
    arriving `rate_scale` times faster.

    Raises:
        FileNotFoundError, ValueError: For an unknown preset or an invalid config.
    """
    wl = make_workload(load_workload_config(name), seed)
    if num_requests is not None:
        wl = wl.select(np.arange(len(wl)) < num_requests)
    if rate_scale != 1.0:
        wl = wl.scale_rate(rate_scale)
    return wl
