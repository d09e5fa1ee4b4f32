"""`peft.adapter`: a saved adapter goes on training. The recipe's `[peft]` keys are checked against
its adapter_config.json (peft's own file) and the keys left unset take its values; the script loads
it with `PeftModel.from_pretrained(..., is_trainable=True)`; with `[continual]` from the run that
saved it, the adapter goes on training instead of being merged."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import accelerate_launch

import forkrun
from recipec.cli import main
from recipec.compiler import build, plan_recipe
from recipec.runtime import adapters

from test_sft import _env, _model, _project, _train

LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0}


def _save_adapter(model_dir: Path, directory: Path, config=None, *, tokenizer: bool = True, seed: int = 1):
    """A LoRA adapter of the tiny model with random B (so that it changes the model), as peft saves it."""
    import peft
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    wrapped = peft.get_peft_model(model, config or peft.LoraConfig(task_type="CAUSAL_LM", **LORA))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    wrapped.save_pretrained(directory)
    if tokenizer:
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(directory)
    return wrapped


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _model(tmp_path / "model")
    _project(tmp_path, "./model")
    _save_adapter(tmp_path / "model", tmp_path / "adapters" / "a")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _recipe(project: Path, peft: str) -> Path:
    path = project / "recipes" / "chat.toml"
    path.write_text(path.read_text() + "\n[peft]\n" + peft)
    return path


def _errors(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--no-color", "validate", "recipes/chat.toml", *args])
    return result.exit_code, result.output


def test_unset_keys_take_the_adapters_values_and_the_lock_names_its_files(project: Path) -> None:
    _recipe(project, 'method = "lora"\nadapter = "./adapters/a"\n')
    plan, _ = plan_recipe("recipes/chat.toml", ())
    assert plan["peft_adapter"] == "./adapters/a"
    assert plan["peft_spec"] == {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "bias": "none", "rslora": False, "dora": False}
    assert plan.recipe.peft.r == 4 and plan.recipe.peft.alpha == 8  # what resolved.toml and the memory estimate see
    assert plan["tokenizer_path"] == "./adapters/a"  # saved beside the adapter
    written, _ = build("recipes/chat.toml", (), project / "build" / "chat", project=project)
    lock = json.loads((written.dir / "recipe.lock.json").read_text())
    files = lock["peft_adapter"]["sha256"]
    assert lock["peft_adapter"]["path"] == "./adapters/a"
    assert set(files) == {"adapter_config.json", "adapter_model.safetensors"}
    import hashlib

    assert files["adapter_model.safetensors"] == hashlib.sha256((project / "adapters" / "a" / "adapter_model.safetensors").read_bytes()).hexdigest()
    resolved = (written.dir / "resolved.toml").read_text()
    assert "r = 4" in resolved and 'adapter = "./adapters/a"' in resolved
    script = (written.dir / "train.py").read_text()
    assert "model = adapters.load(model, local(peft_adapter), peft_spec)" in script
    assert "adapters.apply(" not in script


def _hub_adapter(cache: Path, repo: str, commits: dict[str, Path], main: str) -> dict[str, str]:
    """A Hugging Face cache holding each adapter directory as a commit of the hub repo `repo`, as downloads leave
    them, with refs/main at the commit `main` names; {name: commit}."""
    import hashlib

    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    shas = {}
    for name, directory in commits.items():
        shas[name] = hashlib.sha1(name.encode()).hexdigest()
        shutil.copytree(directory, folder / "snapshots" / shas[name])
    (folder / "refs" / "main").write_text(shas[main])
    return shas


def test_a_hub_adapter_is_read_from_the_cache_at_its_revision(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """peft.adapter a hub id: its config read from the hub cache at peft.adapter_revision (the default branch unset),
    the keys left unset taken from it; the lock and the script carry the revision, the lock the commit it is at in the
    cache; one not in the cache is a warning."""
    import peft

    config = peft.LoraConfig(task_type="CAUSAL_LM", **{**LORA, "r": 8, "lora_alpha": 16})
    _save_adapter(project / "model", project / "adapters" / "b", config)
    shas = _hub_adapter(project / "hub", "org/adapter", {"a": project / "adapters" / "a", "b": project / "adapters" / "b"}, main="b")
    monkeypatch.setenv("HF_HUB_CACHE", str(project / "hub"))
    _recipe(project, 'method = "lora"\nadapter = "org/adapter"\n')
    plan, _ = plan_recipe("recipes/chat.toml", ())
    assert plan.recipe.peft.r == 8 and plan.get("peft_adapter_revision") is None  # refs/main
    plan, _ = plan_recipe("recipes/chat.toml", (f'peft.adapter_revision="{shas["a"]}"',))
    assert plan.recipe.peft.r == 4 and plan.recipe.peft.alpha == 8 and plan["peft_adapter_revision"] == shas["a"]
    assert not [w for w in plan.warnings if "not in the local cache" in w.message]
    written, _ = build("recipes/chat.toml", (f'peft.adapter_revision="{shas["a"]}"',), project / "build" / "chat", project=project)
    lock = json.loads((written.dir / "recipe.lock.json").read_text())
    assert lock["peft_adapter"] == {"path": "org/adapter", "sha256": None, "revision": shas["a"], "commit": shas["a"]}
    at_main, _ = build("recipes/chat.toml", (), project / "build" / "main", project=project)  # the commit refs/main is at
    assert json.loads((at_main.dir / "recipe.lock.json").read_text())["peft_adapter"] == {"path": "org/adapter", "sha256": None, "commit": shas["b"]}
    assert "model = adapters.load(model, local(peft_adapter), peft_spec, revision=peft_adapter_revision)" in (written.dir / "train.py").read_text()
    plan, _ = plan_recipe("recipes/chat.toml", ('peft.adapter_revision="v2"',))
    [warning] = [w for w in plan.warnings if "not in the local cache" in w.message]
    assert "the hub adapter org/adapter (revision v2) is not in the local cache" in warning.message
    # a revision applies to a hub id
    code, out = _errors("--set", 'peft.adapter="./adapters/a"', "--set", 'peft.adapter_revision="main"')
    assert code == 2 and "applies to a hub id, and `adapter` is the local directory './adapters/a'" in out
    recipe = project / "recipes" / "chat.toml"
    recipe.write_text(recipe.read_text().replace('adapter = "org/adapter"', 'target_modules = ["q_proj"]\nadapter_revision = "main"'))
    code, out = _errors()
    assert code == 2 and "is the revision of a hub adapter, and `adapter` is not set" in out


def test_a_recipec_run_directory_names_its_model(project: Path) -> None:
    shutil.copytree(project / "adapters" / "a", project / "runs" / "old" / "model")
    _recipe(project, 'method = "lora"\nadapter = "./runs/old"\n')
    plan, _ = plan_recipe("recipes/chat.toml", ())
    assert plan["peft_adapter"] == "./runs/old/model"


def test_a_key_the_adapter_disagrees_with_is_an_error_at_its_line(project: Path) -> None:
    _recipe(project, 'method = "lora"\nadapter = "./adapters/a"\nr = 8\ndropout = 0.1\ntarget_modules = ["q_proj", "v_proj"]\n')
    code, out = _errors()
    assert code == 2
    assert "peft.r: the recipe sets 8, and the adapter was trained with 4 (./adapters/a/adapter_config.json)" in out
    assert "peft.dropout: the recipe sets 0.1, and the adapter was trained with 0.0" in out
    assert "chat.toml:" in out and "remove the key to take the adapter's value" in out
    assert "target_modules" not in out  # the same names, in the same or another order


def test_another_method_is_an_error_at_the_method(project: Path) -> None:
    _recipe(project, 'method = "loha"\nadapter = "./adapters/a"\n')
    code, out = _errors()
    assert code == 2 and "peft.method: the adapter is 'lora', not 'loha'" in out


def test_a_directory_without_an_adapter_is_an_error(project: Path) -> None:
    _recipe(project, 'method = "lora"\nadapter = "./model"\n')
    code, out = _errors()
    assert code == 2 and "'./model' holds no adapter_config.json" in out
    code, out = _errors("--set", 'peft.adapter="./nowhere"')
    assert code == 2 and "'./nowhere' does not exist" in out


@pytest.mark.parametrize(
    ("peft", "message"),
    [
        ('method = "lora"\nadapter = "./adapters/a"\ninit = "pissa"\n', "init 'pissa' starts a new adapter"),
        ('method = "adalora"\nadapter = "./adapters/a"\n', "AdaLoRA's rank budget (its importance scores and schedule) is not saved"),
        ('method = "lora"\nadapter = " "\n', "is empty"),
    ],
)
def test_what_a_saved_adapter_cannot_do(project: Path, peft: str, message: str) -> None:
    _recipe(project, peft)
    code, out = _errors()
    assert code == 2 and message in out


def test_the_parents_merged_adapter_is_not_applied_twice(project: Path) -> None:
    """continual.from a run whose model_full/ has its adapter merged in, and peft.adapter that adapter."""
    from test_parent import CHILD

    run = project / "runs" / "chat"
    shutil.copytree(project / "adapters" / "a", run / "model")
    shutil.copytree(project / "model", run / "model_full")
    _fake_finished(project, run)
    (project / "recipes" / "child.toml").write_text(CHILD + '\n[peft]\nmethod = "lora"\nadapter = "./runs/chat"\n')
    result = CliRunner().invoke(main, ["--no-color", "validate", "recipes/child.toml"])
    assert result.exit_code == 2
    assert "saved this adapter merged into its model_full/, which continual.from loads: it would apply twice" in result.output


def _fake_finished(project: Path, run: Path) -> None:
    """The files a finished run leaves that `continual.from` reads (the chat recipe, as resolved)."""
    from recipec.compiler import build as build_

    written, _ = build_(project / "recipes" / "chat.toml", (), project / "build" / "parent", project=project)
    shutil.copy(written.dir / "resolved.toml", run / "resolved.toml")
    shutil.copy(written.dir / "recipe.lock.json", run / "recipe.lock.json")
    (run / "schedule.csv").write_text("step,lr\n0,0.001\n1,0.001\n2,0.001\n3,0.001\n")
    (run / "run.json").write_text(json.dumps({"status": "completed", "steps": 3}))


# --------------------------------------------------------------------------- the runtime, against peft


SPECS = [
    {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"], "bias": "lora_only", "rslora": True},
    {"method": "lora", "r": 2, "alpha": 4, "target_modules": ["o_proj"], "dora": True, "modules_to_save": ["lm_head"]},
    {"method": "loha", "r": 4, "alpha": 4, "rank_dropout": 0.1, "target_modules": ["q_proj"]},
    {"method": "lokr", "r": 4, "alpha": 4, "decompose_both": True, "target_modules": ["k_proj"]},
    {"method": "ia3", "target_modules": ["k_proj", "down_proj"], "feedforward_modules": ["down_proj"]},
    {"method": "oft", "r": 4, "target_modules": ["q_proj"]},
    {"method": "boft", "boft_block_num": 4, "target_modules": ["q_proj"]},
    {"method": "vera", "r": 8, "target_modules": ["q_proj", "v_proj"]},
    {"method": "miss", "r": 4, "target_modules": ["q_proj"]},
    {"method": "ln_tuning", "target_modules": ["input_layernorm"]},
    {"method": "prefix_tuning", "num_virtual_tokens": 5},
    {"method": "prompt_tuning", "num_virtual_tokens": 5},
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["method"])
def test_the_spec_agrees_with_the_config_peft_saves_for_it(spec: dict, tmp_path: Path) -> None:
    """peft's own saved adapter_config.json for a spec: nothing to complain about, its values read back
    as the spec's, and each key changed is named."""
    adapters.peft_config(spec).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert adapters.saved_config_problems(spec, saved) == []
    values = adapters.saved_values(spec["method"], saved)
    for key, value in spec.items():
        if key != "method":
            assert values[key] == (sorted(value) if isinstance(value, list) else value), key
    for key, value in spec.items():
        if key == "method" or key == "target_modules":
            continue
        changed = {**spec, key: (not value) if isinstance(value, bool) else ["embed_tokens"] if isinstance(value, list) else value * 2 if value else 1}
        assert [k for k, _ in adapters.saved_config_problems(changed, saved)] == [key]
    assert adapters.saved_config_problems(spec, saved, task_type="SEQ_CLS")[0][0] == "method"


def test_load_gives_peft_s_trainable_model_and_checks_all_linear(tmp_path: Path) -> None:
    import peft
    from transformers import AutoModelForCausalLM

    _model(tmp_path / "model")
    saved = _save_adapter(tmp_path / "model", tmp_path / "a")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    ours = adapters.load(base, tmp_path / "a", {"method": "lora", "r": 4})
    theirs = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "model"), tmp_path / "a", is_trainable=True)
    trained = {n: p for n, p in ours.named_parameters() if p.requires_grad}
    assert sorted(trained) == sorted(n for n, p in theirs.named_parameters() if p.requires_grad)
    assert len(trained) == 8  # q and v, A and B, two layers
    for name, p in saved.named_parameters():
        if "lora_" in name:
            assert torch.equal(dict(ours.named_parameters())[name], p), name
    ids = torch.tensor([[1, 5, 9, 12, 3]])
    assert torch.equal(ours(ids).logits, theirs(ids).logits)
    with pytest.raises(ValueError, match=r"peft\.r: the recipe sets 8, and the adapter was trained with 4\."):
        adapters.load(AutoModelForCausalLM.from_pretrained(tmp_path / "model"), tmp_path / "a", {"method": "lora", "r": 8})
    with pytest.raises(ValueError, match=r"peft\.target_modules: the recipe sets 'all-linear' \(\['down_proj', 'gate_proj'"):
        adapters.load(AutoModelForCausalLM.from_pretrained(tmp_path / "model"), tmp_path / "a", {"method": "lora", "target_modules": "all-linear"})
    every = peft.LoraConfig(task_type="CAUSAL_LM", r=4, target_modules="all-linear")
    _save_adapter(tmp_path / "model", tmp_path / "b", every, tokenizer=False)
    adapters.load(AutoModelForCausalLM.from_pretrained(tmp_path / "model"), tmp_path / "b", {"method": "lora", "target_modules": "all-linear"})


# --------------------------------------------------------------------------- training


PARENT_PEFT = '\n[peft]\nmethod = "lora"\nr = 4\nalpha = 8\ntarget_modules = ["q_proj", "v_proj"]\n'


@pytest.mark.slow
def test_the_saved_adapter_goes_on_training_from_its_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A LoRA run, then runs that go on training its adapter: one naming it with peft.adapter on the same model,
    one continuing the run with [continual] (its adapter no longer merged), and the first again under DeepSpeed
    ZeRO-3 over 2 processes (the base model built partitioned, the adapter loaded onto it), and the same adapter as a
    hub id at a pinned commit in the local cache (read offline), which trains as the local one does. Each evaluates at step 0
    exactly as the first run evaluated at its end (the same held-out split, the same weights), trains only the
    adapter's parameters and saves an adapter of the same config that has moved on; under ZeRO-3 with the step
    losses, gradient norms and held-out losses of one process."""
    from safetensors.torch import load_file

    from test_parent import CHILD

    _model(tmp_path / "model")
    _project(tmp_path, "./model")
    parent = tmp_path / "recipes" / "chat.toml"
    parent.write_text(parent.read_text() + PARENT_PEFT)
    first = _train(tmp_path)
    final_eval = [m["eval_loss"] for m in first if "eval_loss" in m][-1]
    base_eval = [m["eval_loss"] for m in first if "eval_loss" in m][0]
    assert abs(final_eval - base_eval) > 1e-3  # the adapter changed the model
    saved = load_file(tmp_path / "runs" / "chat" / "model" / "adapter_model.safetensors")

    same = parent.read_text().replace('name = "chat"', 'name = "again"').replace(PARENT_PEFT, '\n[peft]\nmethod = "lora"\nadapter = "./runs/chat"\n')
    (tmp_path / "recipes" / "again.toml").write_text(same)
    (tmp_path / "recipes" / "child.toml").write_text(CHILD + '\n[peft]\nmethod = "lora"\nadapter = "./runs/chat"\n')
    zero3 = 'cpu = false\nstrategy = "deepspeed"\ndeepspeed = {zero_stage = 3}\nnum_processes = 2'
    (tmp_path / "recipes" / "zero3.toml").write_text(same.replace("micro_batch_size = 8", "micro_batch_size = 4").replace("cpu = true\nnum_processes = 1", zero3))
    # the same adapter as a hub repo in the local cache, named by its id at a pinned commit (read offline)
    shas = _hub_adapter(tmp_path / "hub", "org/chat-lora", {"chat": tmp_path / "runs" / "chat" / "model"}, main="chat")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    hub = same.replace('adapter = "./runs/chat"', f'adapter = "org/chat-lora"\nadapter_revision = "{shas["chat"]}"')
    (tmp_path / "recipes" / "hub.toml").write_text(hub)
    runs = {}
    for name in ("again", "child", "hub", "zero3"):
        if name == "zero3" and importlib.util.find_spec("deepspeed") is None:
            continue
        written, plan = build(tmp_path / "recipes" / f"{name}.toml", (f'output.dir="runs/{name}"',), tmp_path / "build" / name, project=tmp_path)
        adapter = "org/chat-lora" if name == "hub" else "./runs/chat/model"
        assert plan["peft_adapter"] == adapter and plan.get("parent_adapter") is None
        assert plan["model_path"] == "./model"
        script = str(written.dir / "train.py")
        cmd = accelerate_launch(written.dir / "accelerate_config.yaml", script) if name == "zero3" else [sys.executable, script]
        proc = forkrun.run(cmd, env=_env(HF_HUB_CACHE=str(tmp_path / "hub")), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"peft: the saved adapter {adapter} goes on training" in proc.stdout
        metrics = runs[name] = [json.loads(line) for line in (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        assert metrics[0]["step"] == 0 and metrics[0]["eval_loss"] == pytest.approx(final_eval, abs=1e-6), name
        record = json.loads((tmp_path / "runs" / name / "run.json").read_text())
        first_record = json.loads((tmp_path / "runs" / "chat" / "run.json").read_text())
        assert record["peft"] == first_record["peft"]  # the same parameters train
        config = json.loads((tmp_path / "runs" / name / "model" / "adapter_config.json").read_text())
        assert (config["r"], config["lora_alpha"], sorted(config["target_modules"])) == (4, 8, ["q_proj", "v_proj"])
        now = load_file(tmp_path / "runs" / name / "model" / "adapter_model.safetensors")
        assert now.keys() == saved.keys()
        assert all(not torch.equal(now[k], saved[k]) for k in now if "lora_A" in k)  # trained further
    for key in ("loss", "grad_norm", "eval_loss"):
        want = [m[key] for m in runs["again"] if key in m]
        assert [m[key] for m in runs["hub"] if key in m] == pytest.approx(want, abs=1e-6), key  # the same adapter, from the hub
        if "zero3" in runs:
            assert len(want) >= 2 and [m[key] for m in runs["zero3"] if key in m] == pytest.approx(want, abs=1e-5, rel=1e-4), key


BEST_PEFT = '\n[peft]\nmethod = "lora"\nr = 16\nalpha = 32\ntarget_modules = "all-linear"\n'


@pytest.mark.slow
def test_the_best_adapter_is_kept_and_goes_on_training(tmp_path: Path) -> None:
    """output.save_best under LoRA: model_best/ is an adapter directory (its config, its weights, the tokenizer and
    best.json) holding the adapter of the lowest held-out loss, not the final one; named by peft.adapter, it evaluates
    at step 0 exactly as that evaluation did."""
    from safetensors.torch import load_file

    _model(tmp_path / "model")
    _project(tmp_path, "./model")
    recipe = tmp_path / "recipes" / "chat.toml"
    text = (
        recipe.read_text().replace("lr = 1e-2", "lr = 1.0").replace("eval_every = 0", "eval_every = 1")
        + BEST_PEFT + "\n[output]\nsave_best = true\n"
    )
    recipe.write_text(text)
    metrics = _train(tmp_path)
    evals = [m for m in metrics if "eval_loss" in m]
    lowest = min(evals, key=lambda m: m["eval_loss"])
    best = tmp_path / "runs" / "chat" / "model_best"
    assert json.loads((best / "best.json").read_text()) == {"step": lowest["step"], "eval_loss": lowest["eval_loss"]}
    assert (best / "adapter_config.json").exists() and (best / "tokenizer.json").exists()
    kept, final = load_file(best / "adapter_model.safetensors"), load_file(tmp_path / "runs" / "chat" / "model" / "adapter_model.safetensors")
    assert kept.keys() == final.keys()
    # at this LR the loss turns up again at the last step on Python 3.11.7's text (lowest at step 2 of 3); on another
    # release's text (the steps read text that ships with Python) it may fall to the end: then the best is the final
    if lowest["step"] < evals[-1]["step"]:
        assert any(not torch.equal(kept[k], final[k]) for k in kept)
    else:
        assert all(torch.equal(kept[k], final[k]) for k in kept)

    again = text.replace('name = "chat"', 'name = "again"').replace(BEST_PEFT, '\n[peft]\nmethod = "lora"\nadapter = "./runs/chat/model_best"\n')
    (tmp_path / "recipes" / "again.toml").write_text(again.replace("max_steps = 3", "max_steps = 2"))
    written, _ = build(tmp_path / "recipes" / "again.toml", ('output.dir="runs/again"',), tmp_path / "build" / "again", project=tmp_path)
    proc = forkrun.run([sys.executable, str(written.dir / "train.py")], env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = json.loads((tmp_path / "runs" / "again" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0 and first["eval_loss"] == pytest.approx(lowest["eval_loss"], abs=1e-6)

