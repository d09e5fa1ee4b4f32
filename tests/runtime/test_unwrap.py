"""recipec_runtime/unwrap.py: accelerate's unwrap without importing DeepSpeed where nothing imported it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("deepspeed")

CHECK = textwrap.dedent(
    """
    import sys
    import torch
    from accelerate import Accelerator
    from accelerate.utils import other
    from recipec.runtime import unwrap

    assert unwrap.skip_deepspeed_import() and unwrap.skip_deepspeed_import()  # a second call changes nothing more
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(2, 2))
    assert accelerator.unwrap_model(model) is model
    assert sorted(accelerator.get_state_dict(model)) == ["bias", "weight"]
    assert "deepspeed" not in sys.modules, "the unwrap imported deepspeed"
    assert not other.is_deepspeed_available()
    import deepspeed  # once something has imported it, accelerate's test for its engine is as before

    assert other.is_deepspeed_available()
    print("ok")
    """
)


def test_the_unwrap_and_the_state_dict_import_no_deepspeed() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "ok"


def test_without_it_accelerate_imports_deepspeed_to_unwrap() -> None:
    """What the module is for: the accelerate pinned here imports deepspeed in the plain unwrap (if a later one
    stops doing so, this test says the module can go)."""
    check = "\n".join(line for line in CHECK.splitlines() if "skip_deepspeed_import" not in line)
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "the unwrap imported deepspeed" in out.stderr, out.stderr[-3000:]
