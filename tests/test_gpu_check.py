"""benchmarks/gpu_check.py: its FLOPs and MFU arithmetic by hand, and the whole script on CPU with a tiny model."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import forkrun  # noqa: E402
import gpu_check  # noqa: E402


def test_flops_per_token_by_hand() -> None:
    # hidden 2048, 16 layers, intermediate 5632, vocab 6718, untied embeddings:
    # per layer 4*2048^2 + 3*2048*5632 + 2*2048 = 16,777,216 + 34,603,008 + 4,096 = 51,384,320
    # all: 16 * 51,384,320 + 2 * 6718 * 2048 + 2048 = 822,149,120 + 27,516,928 + 2,048 = 849,668,096
    n = 849_668_096
    # multiplying parameters: less the input embedding 6718 * 2048 = 13,758,464 -> 835,909,632
    # 6 * 835,909,632 = 5,015,457,792; attention 12 * 16 * 2048 * 2048 = 805,306,368
    assert gpu_check.flops_per_token(n, 6718, 2048, 16, 2048) == 5_015_457_792 + 805_306_368


def test_flops_per_token_of_a_small_model() -> None:
    # 1,000 parameters, vocab 10 x hidden 8 of them the input embedding: 6 * 920 = 5,520;
    # attention 12 * 2 layers * 8 * seq_len 16 = 3,072
    assert gpu_check.flops_per_token(1000, 10, 8, 2, 16) == 5520 + 3072


def test_mfu_by_hand() -> None:
    # 100,000 tokens/s x 5.82e9 FLOPs a token = 5.82e14 FLOP/s; of 989 TFLOP/s: 0.58847...
    assert gpu_check.mfu(100_000, 5.82e9, 989.0) == pytest.approx(5.82e14 / 989e12)
    assert gpu_check.mfu(100_000, 5.82e9, 989.0) == pytest.approx(0.588473, abs=1e-6)


def test_peak_by_device_name() -> None:
    assert gpu_check.peak_tflops("NVIDIA H200") == 989.0
    assert gpu_check.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_check.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_check.peak_tflops("NVIDIA GeForce RTX 4090") is None


def test_a_row_in_the_table() -> None:
    gib = 1024**3
    row = gpu_check.Row("fused AdamW", "a", tokens_per_s=12345.6, mfu=0.4567, alloc=20 * gib, reserved=24 * gib, estimate=21 * gib)
    table = gpu_check.table([row])
    assert table.splitlines()[2] == "| fused AdamW | a | 12,346 | 45.7% | 20.00 | 24.00 | 21.00 | 1.050 | 0 | ok |"


@pytest.mark.slow
def test_every_row_on_cpu_with_a_tiny_model(tmp_path: Path) -> None:
    # forked: its `recipec data` and `recipec explain` runs and its runners (into their log files) are forked too
    out = forkrun.run(
        [sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--device", "cpu", "--tiny", "--quick", "--workdir", str(tmp_path)],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=900,
        serve_at_once=True,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    start = lines.index("| " + " | ".join(gpu_check.COLUMNS) + " |")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[start + 2 :] if line.startswith("| ")]
    assert [(r[0], r[1].split(",")[0].split(":")[0]) for r in rows] == [
        ("quickstart bf16", "recipes/quickstart.toml"),
        ("train.py vs bare loop", "a"),
        ("train.py vs bare loop", "b"),
        ("sdpa flash", "a"),
        ("model.compile", "a"),
        ("model.compile", "b"),
        ("fused AdamW", "a"),
        ("activation offloading", "a"),
        ("activation offloading", "a"),
        ("SFT packed vs padded", "packed"),
        ("SFT packed vs padded", "padded"),
        ("SFT packed vs padded", "packed"),
    ]
    by_status = {}
    for r in rows:
        assert len(r) == len(gpu_check.COLUMNS)
        status = r[-1]
        by_status.setdefault(status.split(":")[0], []).append(r)
        if status.startswith("skipped"):
            assert status == "skipped: needs CUDA"
            continue
        assert status.startswith("ok"), r
        assert float(r[2].replace(",", "")) > 0  # tokens/s
        assert float(r[8]) > 0  # seconds
        if not r[1].startswith("b"):
            assert float(r[6]) > 0  # the estimate of every generated train.py
        assert r[3] == "-" and r[4] == "-"  # no MFU without a peak; no CUDA memory on CPU
    assert len(by_status["ok"]) == 8 and len(by_status["skipped"]) == 4
    assert re.fullmatch(r"ok: loss \d+\.\d+ -> \d+\.\d+", rows[0][-1])
    assert re.search(r"^total \d+ s", out.stdout, re.MULTILINE)
