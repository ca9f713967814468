"""`andes_gym.loadgen` against a fake OpenAI-compatible streaming server on loopback."""

from __future__ import annotations

import asyncio
import csv
import json
import threading

import numpy as np
import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

from andes_gym.client.loadgen import StreamRecord, replay, score  # noqa: E402
from andes_gym.loadgen import main  # noqa: E402
from andes_gym.qoe import qoe  # noqa: E402
from andes_gym.workloads.spec import Workload  # noqa: E402


class FakeServer:
    """Streams `max_tokens` token ids per completion, `tokens_per_chunk` per SSE event."""

    def __init__(
        self,
        token_gap_s: float = 0.002,
        tokens_per_chunk: int = 2,
        stall_after: int | None = None,
        status: int = 200,
    ) -> None:
        self.token_gap_s = token_gap_s
        self.tokens_per_chunk = tokens_per_chunk
        self.stall_after = stall_after
        self.status = status
        self.payloads: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.port = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _models(self, request):
        return web.json_response({"object": "list", "data": [{"id": "fake-model"}]})

    async def _completions(self, request):
        payload = await request.json()
        self.payloads.append(payload)
        if self.status != 200:
            return web.json_response({"error": "boom"}, status=self.status)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        sent = 0
        n = payload["max_tokens"]
        while sent < n:
            if self.stall_after is not None and sent >= self.stall_after:
                await self._release.wait()  # until the test is over
                return resp
            k = min(self.tokens_per_chunk, n - sent)
            await asyncio.sleep(self.token_gap_s * k)
            chunk = {
                "choices": [{"index": 0, "text": "", "token_ids": list(range(sent, sent + k))}]
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            sent += k
        await resp.write(b"data: [DONE]\n\n")
        return resp

    def _serve(self):
        asyncio.set_event_loop(self.loop)
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    def __enter__(self):
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc):
        async def stop():
            self._release.set()
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _workload(n: int = 12, output_tokens: int = 6) -> Workload:
    return Workload(
        arrival_s=np.linspace(0.0, 0.1, n),
        prompt_tokens=np.full(n, 5),
        output_tokens=np.full(n, output_tokens),
        ttft_s=np.full(n, 0.05),
        tds_tok_s=np.full(n, 200.0),
        name="tiny",
    )


def test_every_request_completes_and_is_scored():
    wl = _workload()
    with FakeServer() as server:
        result = replay(
            server.base_url, wl, seed=3, vocab_size=100, max_concurrency=4, time_limit_s=30
        )
    assert all(r.done and not r.error for r in result.records)
    assert all(len(r.token_times_s) == 6 for r in result.records)
    assert result.summary["num_requests"] == 12
    assert result.summary["num_unfinished"] == 0 and result.summary["num_errors"] == 0
    for i, rec in enumerate(result.records):
        expected = qoe(
            rec.token_times_s, arrival=rec.arrival_s, ttft=rec.ttft_target_s, tds=rec.tds_tok_s
        )
        assert result.metrics.qoe[i] == pytest.approx(expected)
        assert 0.0 <= result.metrics.qoe_fixed[i] <= 1.0
    payload = server.payloads[0]
    assert payload["model"] == "fake-model"
    assert payload["stream"] is True and payload["ignore_eos"] is True
    assert payload["return_token_ids"] is True
    assert payload["max_tokens"] == 6
    assert len(payload["prompt"]) == 5 and all(0 < t < 100 for t in payload["prompt"])
    assert payload["vllm_xargs"] == {"ttft_s": 0.05, "tds_tok_s": 200.0}


def test_time_limit_scores_unfinished_requests_at_their_lower_bound():
    wl = _workload(n=3)
    with FakeServer(stall_after=2) as server:
        result = replay(server.base_url, wl, max_concurrency=3, time_limit_s=0.5)
    for i, rec in enumerate(result.records):
        assert not rec.done and rec.error == "time limit reached"
        assert len(rec.token_times_s) == 2
        full = rec.token_times_s + [result.end_s] * 4
        assert result.metrics.qoe[i] == pytest.approx(
            qoe(full, arrival=rec.arrival_s, ttft=rec.ttft_target_s, tds=rec.tds_tok_s)
        )
        assert result.metrics.qoe[i] < 1.0
    assert result.summary["num_unfinished"] == 3


def test_http_errors_are_recorded_and_the_cli_fails(tmp_path, capsys, monkeypatch):
    with FakeServer(status=500) as server:
        result = replay(server.base_url, _workload(n=2), time_limit_s=10)
        assert all("HTTP 500" in r.error for r in result.records)
        assert result.summary["num_errors"] == 2

        import andes_gym.loadgen as loadgen

        monkeypatch.setattr(loadgen, "_load_workload", lambda *a: _workload(n=2))
        code = main(["--base-url", server.base_url, "--workload", "x", "--out", str(tmp_path)])
    assert code == 1
    with (tmp_path / "requests.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and "HTTP 500" in rows[0]["error"]
    assert json.loads((tmp_path / "summary.json").read_text())["num_errors"] == 2


def test_cli_writes_csv_and_prints_a_table(tmp_path, capsys):
    with FakeServer() as server:
        code = main(
            [
                "--base-url",
                server.base_url,
                "--workload",
                "bursty_2x_cpu",
                "--seed",
                "1",
                "--num-requests",
                "5",
                "--out",
                str(tmp_path),
                "--time-limit-s",
                "30",
            ]
        )
    assert code == 0
    out = capsys.readouterr().out
    assert "mean_qoe" in out and "replaying 5 requests" in out
    with (tmp_path / "requests.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and all(r["finished"] == "True" for r in rows)


def test_score_counts_missing_tokens_at_the_window_end():
    rec = StreamRecord(
        0,
        arrival_s=0.0,
        prompt_tokens=3,
        output_tokens=4,
        ttft_target_s=1.0,
        tds_tok_s=2.0,
        token_times_s=[1.0, 1.5],
    )
    values, metrics, summary = score([rec], end_s=10.0)
    assert values["delay"][0] == pytest.approx(
        qoe([1.0, 1.5, 10.0, 10.0], arrival=0.0, ttft=1.0, tds=2.0)
    )
    assert values["area"][0] == pytest.approx(
        qoe([1.0, 1.5, 10.0, 10.0], arrival=0.0, ttft=1.0, tds=2.0, variant="area")
    )
    assert metrics.ttft_s[0] == pytest.approx(1.0)
    assert summary["num_unfinished"] == 1


@pytest.mark.parametrize("bad", ["0", "-3", "many"])
def test_cli_rejects_a_request_count_below_one(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(
            ["--base-url", "http://127.0.0.1:9/v1", "--workload", "bursty_2x_cpu"]
            + ["--out", str(tmp_path), "--num-requests", bad]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--num-requests" in err and ("must be >= 1" in err or "not a number" in err)


@pytest.mark.timeout(120)
def test_cli_without_a_server_says_so_in_one_line(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    for model in ([], ["--model", "m"]):  # with --model, GET /models is still the probe
        args = ["--base-url", url, "--workload", "bursty_2x_cpu", "--num-requests", "3"]
        code = main([*args, "--out", str(tmp_path / "out"), *model])
        assert code != 0
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert url in lines[0] and "python -m andes_gym.serve" in lines[0]
    assert not (tmp_path / "out").exists()  # nothing written
