"""launch.strategy "deepspeed": the generated script under DeepSpeed ZeRO 2 and 3, and with sequence
parallelism (launch.parallelism.sp_size, Ulysses), over 2 CPU processes trains as one process does.

DeepSpeed runs here on its CPU accelerator over gloo, so the path the script takes on GPUs is the one
tested: accelerate's DeepSpeed plugin from the generated config, ZeRO's partitioned parameters and
optimizer, DeepSpeed's gradient clipping and norm, the final gather of the weights, a resume from a
DeepSpeed checkpoint and, with sp_size, accelerate's ParallelismConfig from the launcher's environment,
DeepSpeed's Ulysses attention and loader adapter, and the loss summed over the sp group (for preference
pairs, the log-probabilities of every row). Every run starts from the same saved model (a model
initialised under ZeRO-3 draws other random weights than one built whole).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

import forkrun  # noqa: E402
from test_distributed import KILL_RANK0, _launch, _losses_and_lrs  # noqa: E402
from test_training import TINY, _build, _env, _metrics, _project, _weights  # noqa: E402
from test_preference_training import ROUNDING  # noqa: E402

pytestmark = pytest.mark.slow

RECIPE = TINY.replace("attention_dropout = 0.1", "attention_dropout = 0.0")
# micro-batch 4, batch 12: three micro-batches per step on one process, and on the single data-parallel
# rank of an sp group of 2 (an odd count, so that a resume starts inside a loader batch's pair). 8 steps
# stay inside the first epoch: its last loader batch is whole on one process and, over two, filled up
# from the start (accelerate's even_batches), as with data parallelism
STEPS = ["train.batch_size=12", "train.max_steps=8", "train.eval_every=4", "train.eval_batches=0", "train.log_every=1", "train.save_every=5", "train.keep_last=3"]
SP = ["launch.num_processes=2", 'launch.strategy="deepspeed"', "launch.deepspeed.zero_stage=3", "launch.parallelism.sp_size=2", "launch.cpu=false"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few steps of the tiny model, saved with its tokenizer: the model both runs continue from."""
    project = _project(tmp_path_factory.mktemp("base"), RECIPE)
    build_dir = _build(project, "train.max_steps=3", "train.save_every=0", "train.eval_every=0")
    forkrun.run([sys.executable, str(build_dir / "train.py")], env=_env(), check=True, capture_output=True, timeout=600)
    return project / "runs" / "tiny" / "model"


def _from(base: Path, tmp_path: Path) -> Path:
    recipe = re.sub(r"\[model\].*?\[data\]", '[model]\npath = "./base"\n\n[data]', RECIPE, flags=re.S)
    project = _project(tmp_path, recipe)
    shutil.copytree(base, project / "base")
    return project


@pytest.fixture(scope="module")
def one(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = _from(base, tmp_path_factory.mktemp("one"))
    build_dir = _build(project, *STEPS)
    forkrun.run([sys.executable, str(build_dir / "train.py")], env=_env(), check=True, capture_output=True, timeout=600)
    return project / "runs" / "tiny"


@pytest.fixture(scope="module")
def sp(base: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    project = _from(base, tmp_path_factory.mktemp("sp"))
    build_dir = _build(project, *STEPS, *SP)
    proc = _launch(build_dir)
    return project / "runs" / "tiny", proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def one_8(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process, batch 8 in two micro-batches: the reference of data parallelism over 2 processes."""
    project = _from(base, tmp_path_factory.mktemp("one8"))
    build_dir = _build(project, *STEPS, "train.batch_size=8")
    forkrun.run([sys.executable, str(build_dir / "train.py")], env=_env(), check=True, capture_output=True, timeout=600)
    return project / "runs" / "tiny"


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_over_two_processes_matches_one_process(stage: int, base: Path, one_8: Path, tmp_path: Path) -> None:
    """ZeRO over 2 data-parallel processes, micro-batch 4 each: the same losses, learning rates, gradient
    norms and final weights as one process with two micro-batches of 4 per step."""
    project = _from(base, tmp_path)
    build_dir = _build(project, *STEPS, "train.batch_size=8", "launch.num_processes=2", 'launch.strategy="deepspeed"', f"launch.deepspeed.zero_stage={stage}", "launch.cpu=false")
    _launch(build_dir)
    run_dir = project / "runs" / "tiny"
    loss_1, lr_1 = _losses_and_lrs(one_8)
    loss_2, lr_2 = _losses_and_lrs(run_dir)
    assert len(loss_2) == 8 and loss_2 == pytest.approx(loss_1, abs=1e-4) and lr_2 == pytest.approx(lr_1, rel=1e-12)
    norms = [m["grad_norm"] for m in _metrics(run_dir) if "loss" in m]
    assert norms == pytest.approx([m["grad_norm"] for m in _metrics(one_8) if "loss" in m], rel=1e-3)
    evals = [m["eval_loss"] for m in _metrics(run_dir) if "eval_loss" in m]
    assert len(evals) == 3 and evals == pytest.approx([m["eval_loss"] for m in _metrics(one_8) if "eval_loss" in m], abs=1e-5)
    wa, wb = _weights(one_8), _weights(run_dir)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max().item() < 1e-4, k


def test_sp_2_over_zero_3_matches_one_process(one: Path, sp: tuple[Path, str]) -> None:
    run_dir, output = sp
    loss_1, lr_1 = _losses_and_lrs(one)
    loss_2, lr_2 = _losses_and_lrs(run_dir)
    assert len(loss_1) == len(loss_2) == 8
    assert loss_2 == pytest.approx(loss_1, abs=1e-4)
    assert lr_2 == pytest.approx(lr_1, rel=1e-12)
    assert loss_1[-1] < loss_1[0]  # it trains
    # evaluation runs each rank on whole sequences (Ulysses is off in eval mode); the held-out set is
    # split over both processes and filled up with rows the loss does not see, so the mean is one process's
    evals_1 = [m["eval_loss"] for m in _metrics(one) if "eval_loss" in m]
    evals_2 = [m["eval_loss"] for m in _metrics(run_dir) if "eval_loss" in m]
    assert len(evals_1) == len(evals_2) == 3 and evals_2 == pytest.approx(evals_1, abs=1e-5)
    # ZeRO-3 gathers the partitioned weights into the final model
    wa, wb = _weights(one), _weights(run_dir)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max().item() < 1e-4, k
    # the grad norm is DeepSpeed's (the engine clips), logged every step
    norms = [m["grad_norm"] for m in _metrics(run_dir) if "loss" in m]
    assert norms == pytest.approx([m["grad_norm"] for m in _metrics(one) if "loss" in m], rel=1e-3)


def test_sp_2_with_the_chunked_cross_entropy_logs_the_plain_losses(base: Path, one: Path, sp: tuple[Path, str], tmp_path: Path) -> None:
    """The chunked cross-entropy under Ulysses: each rank sums its slice's pre-shifted labels chunk by chunk, and
    the group's sum gives the plain sp run's losses, gradient norms, held-out losses and weights (within 1e-5),
    and one process's."""
    project = _from(base, tmp_path)
    recipe = project / "recipes" / "tiny.toml"
    recipe.write_text(recipe.read_text() + '\n[loss]\ncross_entropy = "chunked"\nchunk_size = 24\n')
    build_dir = _build(project, *STEPS, *SP)
    assert "summed_loss=chunked_sum" in (build_dir / "train.py").read_text()
    _launch(build_dir)
    run_dir, plain = project / "runs" / "tiny", sp[0]
    for key in ("loss", "grad_norm", "eval_loss"):
        want = [m[key] for m in _metrics(plain) if key in m]
        assert len(want) >= 3 and [m[key] for m in _metrics(run_dir) if key in m] == pytest.approx(want, rel=1e-5, abs=1e-5), key
    assert _losses_and_lrs(run_dir)[0] == pytest.approx(_losses_and_lrs(one)[0], abs=1e-4)
    wa, wb = _weights(plain), _weights(run_dir)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 2e-5  # float32 rounding: 1.5e-5 seen with other thread counts


def test_sp_killed_after_a_checkpoint_resumes_where_it_stopped(base: Path, sp: tuple[Path, str], tmp_path: Path) -> None:
    """Killed after the checkpoint of step 5, resumed from it: the same losses as the run that was not
    stopped. The 15 micro-batches done are counted in the adapter's units (sp_size per loader batch):
    7 loader batches are skipped unread and the first half of the 8th after the adapter."""
    straight, _ = sp
    project = _from(base, tmp_path)
    build_dir = _build(project, *STEPS, *SP)
    (project / "killer.py").write_text(KILL_RANK0)
    killed = _launch(build_dir, script=[str(project / "killer.py"), str(build_dir), "5"], expect=None)
    assert killed.returncode != 0
    run_dir = project / "runs" / "tiny"
    assert not (run_dir / "model").exists()
    resumed = _launch(build_dir)
    assert "resum" in (resumed.stdout + resumed.stderr).lower()
    loss_a, lr_a = _losses_and_lrs(straight)
    loss_b, lr_b = _losses_and_lrs(run_dir)
    assert lr_b == lr_a
    assert loss_b == pytest.approx(loss_a, abs=1e-6)


@pytest.mark.parametrize("stage", [2, 3])
def test_examples_under_zero_take_the_mean_over_each_steps_supervised_tokens(stage: int, tmp_path: Path) -> None:
    """Supervised fine-tuning on conversations of very uneven lengths: the loss of a step is the mean over
    its supervised tokens, whatever micro-batches and processes they fall into. DeepSpeed accumulates and
    steps inside its engine, so the script counts each step's tokens ahead (a second loader over the same
    order) and weights every micro-batch's summed loss by them: 2 processes x 2 micro-batches of 2 under
    ZeRO give the losses, weights and held-out generations of 1 process with 4 micro-batches of 2."""
    from test_sft import _model, _project as _sft_project, _train as _sft_train

    model = tmp_path / "model"
    _model(model)
    runs = {}
    for name, processes in (("one", 1), ("zero", 2)):
        project = tmp_path / name
        project.mkdir()
        shutil.copytree(model, project / "model")
        _sft_project(project, "./model", micro=2, processes=processes)
        recipe = project / "recipes" / "chat.toml"
        recipe.write_text(recipe.read_text().replace("eval_batches = 0", "eval_batches = 0\neval_generations = 3\nmax_new_tokens = 6"))
        if processes > 1:
            recipe.write_text(
                recipe.read_text().replace("cpu = true", f'strategy = "deepspeed"\ndeepspeed = {{zero_stage = {stage}}}')
            )
        runs[name] = (_sft_train(project, processes), project / "runs" / "chat")
    one = [m["loss"] for m in runs["one"][0] if "loss" in m]
    zero = [m["loss"] for m in runs["zero"][0] if "loss" in m]
    assert len(one) == 3 and zero == pytest.approx(one, abs=1e-5, rel=0)
    seen = {name: [m["supervised_tokens"] for m in metrics if "loss" in m] for name, (metrics, _) in runs.items()}
    assert seen["zero"] == seen["one"] and seen["one"][0] > 0
    wa, wb = _weights(runs["one"][1]), _weights(runs["zero"][1])
    for k in wa:
        assert (wa[k] - wb[k]).abs().max().item() < 1e-4, k
    # greedy answers to held-out prompts at the start and the end: under ZeRO-3 every process generates
    # (each forward gathers the partitioned weights), and the main process writes what one process would
    generations = [(run_dir / "generations.jsonl").read_text().splitlines() for _, run_dir in runs.values()]
    assert len(generations[0]) == 6 and generations[1] == generations[0]


LORA = '\n[peft]\nmethod = "lora"\nr = 4\ntarget_modules = ["q_proj", "v_proj"]\n'


def _dpo_run(
    root: Path, model: Path, options: str, peft: str, micro: int, processes: int, launch: str = "", objective: str = "dpo",
    data: dict[str, str] | None = None,
) -> dict:
    """The DPO (or other objective's) project of tests/test_preference_training.py (3 steps, evaluated at 0 and 3 with 2
    generations each, but for a reward model, which generates none); `data`: keys of its [data] table set to other
    values."""
    from test_preference_training import _metrics as _pref_metrics, _project as _pref_project, _run as _pref_run

    recipe = _pref_project(root, model, objective=objective, options=options, micro=micro, processes=processes, extra=peft)
    generations = "" if objective == "reward" else "\neval_generations = 2\nmax_new_tokens = 4"
    recipe.write_text(recipe.read_text().replace("eval_every = 0", "eval_every = 3" + generations))
    for key, value in (data or {}).items():
        text = re.sub(rf"^{key} = .*\n", "", recipe.read_text(), flags=re.M)
        recipe.write_text(text.replace("[data]\n", f"[data]\n{key} = {value}\n", 1))
    if processes > 1:
        recipe.write_text(recipe.read_text().replace("cpu = true", launch))
    proc = _pref_run(recipe, processes)
    project = recipe.parent.parent
    return {
        "metrics": _pref_metrics(recipe),
        "model": project / "runs" / "pref" / "model",
        "keys": {p.name.split("-")[1] for p in (project / ".recipec" / "data").glob("*/reference-*.pt")},
        "generations": (project / "runs" / "pref" / "generations.jsonl").read_text().splitlines() if generations else [],
        "output": proc.stdout + proc.stderr,
    }


@pytest.fixture(scope="module")
def dpo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny chat model every preference run of the module starts from."""
    from test_sft import _model

    model = tmp_path_factory.mktemp("dpo-model") / "model"
    _model(model)
    return model


@pytest.fixture(scope="module")
def dpo_one(dpo_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """The model, and one process x micro-batch 8 of it for a reference setting: run once per setting, shared by the cases.

    KTO's KL estimate is the mean over the micro-batch of every process of its mismatched pairs (each prompt with
    the previous row's completion, within a micro-batch), as TRL takes it: it depends on how a step is split into
    micro-batches and processes by design. Its reference is thus 2 processes x micro-batch 4 without sharding (DDP
    on the CPU): the same micro-batches and KL estimates as the sharded run."""
    done: dict[tuple[str, str, str], dict] = {}

    def one(options: str, peft: str, objective: str = "dpo") -> tuple[Path, dict]:
        if (options, peft, objective) not in done:
            root = tmp_path_factory.mktemp("dpo-one") / "one"
            if objective == "kto":
                done[(options, peft, objective)] = _dpo_run(root, dpo_model, options, peft, 4, 2, "cpu = true", objective=objective)
            else:
                done[(options, peft, objective)] = _dpo_run(root, dpo_model, options, peft, 8, 1, objective=objective)
        return dpo_model, done[(options, peft, objective)]

    return one


ZERO3 = 'strategy = "deepspeed"\ndeepspeed = {zero_stage = 3}'


@pytest.mark.parametrize(
    ("launch", "options", "peft", "objective"),
    [
        ('strategy = "deepspeed"\ndeepspeed = {zero_stage = 2}', "", "", "dpo"),  # a live frozen copy beside ZeRO-2's whole weights
        (ZERO3, 'reference = "precomputed"', "", "dpo"),  # scored by the partitioned model
        (ZERO3, "", "", "dpo"),  # a live copy, partitioned by an engine of its own
        (ZERO3, "", LORA, "dpo"),  # live: the partitioned base model, adapter disabled
        (ZERO3, "", "", "kto"),  # the live partitioned copy also scores the mismatched pairs of KTO's KL estimate
        ('cpu = true\nstrategy = "fsdp"', 'reference = "precomputed"', "", "dpo"),  # scored by the sharded model (torch's fully_shard)
        ('cpu = true\nstrategy = "fsdp"', "", "", "dpo"),  # a live copy, sharded as the model is
        (ZERO3, "", "", "reward"),  # a reward model partitioned: its score head too
        (ZERO3, "", LORA, "reward"),  # the adapter and the score head, trained whole beside it
        ('cpu = true\nstrategy = "fsdp"', "", "", "reward"),  # sharded by torch's fully_shard
    ],
    ids=["zero2-copy", "zero3-precomputed", "zero3-copy", "zero3-lora", "zero3-kto", "fsdp-precomputed", "fsdp-copy",
         "zero3-reward", "zero3-reward-lora", "fsdp-reward"],
)
def test_dpo_under_sharding_trains_as_one_process(launch: str, options: str, peft: str, objective: str, dpo_one, tmp_path: Path) -> None:
    """DPO with each kind of reference under DeepSpeed (and FSDP): 2 processes x micro-batch 4 give the losses,
    rewards and weights of 1 process with micro-batch 8, and evaluation the same held-out rewards. A precomputed
    reference is keyed by the whole model's weights, gathered from the shards: the key of one process. FSDP's
    live copy is sharded: each process holds about half of it. Both write the held-out generations of one process.
    KTO under ZeRO-3 with its live copy (which also scores the KL estimate's mismatched pairs) gives the losses, KL
    estimates, rewards and weights of the same 2 processes without sharding (see dpo_one). A reward model (no
    reference, no generations) trains and evaluates as one process under ZeRO-3, full and LoRA, and FSDP."""
    from safetensors.torch import load_file

    model, one_run = dpo_one(options, peft, objective)
    two_run = _dpo_run(tmp_path / "two", model, options, peft, 4, 2, launch, objective)
    if "fsdp" in launch and not options and objective != "reward":  # a live copy
        held, total = (int(n.replace(",", "")) for n in re.findall(r"reference: a frozen copy sharded over 2 processes, ([\d,]+) of its ([\d,]+)", two_run["output"])[0])
        assert total / 2 <= held < 0.55 * total  # rank 0: half of every parameter's rows, rounded up
    # greedy answers at each evaluation: under ZeRO-3 and FSDP every process generates, in step; the main process writes
    assert len(one_run["generations"]) == (0 if objective == "reward" else 4) and two_run["generations"] == one_run["generations"]
    one, two = one_run["metrics"], two_run["metrics"]
    assert two_run["keys"] == one_run["keys"] and len(one_run["keys"]) == (1 if options else 0)
    steps = [m for m in one if "loss" in m]
    assert len(steps) == 3 and steps[-1]["reward_margin"] != 0  # it trained: the policy left the reference
    paired = objective != "kto"  # KTO: unpaired rewards (no accuracy), and its KL estimate
    logps = () if objective == "reward" else ("logps_chosen",)  # a reward model scores; it has no log-probabilities
    for key in ("loss", "rewards_chosen", "rewards_rejected", "reward_margin", *logps, "lr", *(() if paired else ("kl",))):
        assert [m[key] for m in two if "loss" in m] == pytest.approx([m[key] for m in steps], abs=1e-5, rel=ROUNDING), key
    evals = lambda ms: [m for m in ms if "eval_loss" in m]  # noqa: E731
    assert len(evals(one)) == 2
    for key in ("eval_loss", "eval_reward_margin", *(("eval_reward_accuracy",) if paired else ("eval_kl",))):
        assert [m[key] for m in evals(two)] == pytest.approx([m[key] for m in evals(one)], abs=1e-5, rel=ROUNDING), key
    name = "adapter_model.safetensors" if peft else "model.safetensors"
    wa, wb = load_file(str(one_run["model"] / name)), load_file(str(two_run["model"] / name))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max().item() < 1e-4, k


def test_generations_from_partitioned_weights_are_those_of_one_process(tmp_path: Path) -> None:
    """Greedy generations at each evaluation under ZeRO-3, from weights DeepSpeed really partitions.

    DeepSpeed keeps a parameter of fewer than 100,000 elements whole on every process once it has been
    gathered (stage3_param_persistence_threshold), so the tiny models of the other tests never gather
    again after their first forward. Here every attention and MLP matrix is larger (hidden size 320):
    each forward gathers them from both processes, so both must generate, in step; the main process
    writes what one process would."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import torch

    from runtime.chat_fixtures import CHATML_MARKED, chat_tokenizer
    from test_sft import _project as _sft_project, _train as _sft_train

    model = tmp_path / "model"
    tok = chat_tokenizer(CHATML_MARKED)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=320, intermediate_size=640, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=256, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(model)
    tok.save_pretrained(model)
    assert min(p.numel() for n, p in LlamaForCausalLM(config).named_parameters() if n.endswith("proj.weight")) > 100_000
    generations = {}
    for name, processes in (("one", 1), ("zero3", 2)):
        project = tmp_path / name
        project.mkdir()
        shutil.copytree(model, project / "model")
        _sft_project(project, "./model", micro=2, processes=processes)
        recipe = project / "recipes" / "chat.toml"
        text = recipe.read_text().replace("max_steps = 3", "max_steps = 2").replace("lr = 1e-2", "lr = 1e-3")
        text = text.replace("eval_batches = 0", "eval_batches = 1\neval_generations = 3\nmax_new_tokens = 6")
        if processes > 1:
            text = text.replace("cpu = true", 'strategy = "deepspeed"\ndeepspeed = {zero_stage = 3}')
        recipe.write_text(text)
        _sft_train(project, processes)
        generations[name] = (project / "runs" / "chat" / "generations.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in generations["one"]] == [0, 0, 0, 2, 2, 2]
    assert generations["zero3"] == generations["one"]


def test_dpo_under_fsdp_keeps_its_live_reference_across_a_resume(tmp_path: Path) -> None:
    """DPO under FSDP with a live copy, killed after its step-2 checkpoint and resumed: the copy is made from the
    model as it starts, before the checkpoint is loaded, so the resumed run logs the rewards and ends with the
    weights of the run that was not stopped (a copy of the resumed weights would put every reward back to 0)."""
    import torch
    from safetensors.torch import load_file

    from recipec.compiler import build
    from test_preference_training import _project as _pref_project
    from test_sft import _model

    model = tmp_path / "model"
    _model(model)
    runs = {}
    for name in ("straight", "killed"):
        recipe = _pref_project(tmp_path / name, model, micro=4, processes=2, steps=4, save_every=2)
        recipe.write_text(recipe.read_text().replace("cpu = true", 'cpu = true\nstrategy = "fsdp"'))
        project = recipe.parent.parent
        written, _ = build(recipe, (), project / "build" / "pref", project=project)
        if name == "killed":
            (project / "killer.py").write_text(KILL_RANK0)
            killed = _launch(written.dir, script=[str(project / "killer.py"), str(written.dir), "2"], expect=None)
            assert killed.returncode != 0 and not (project / "runs" / "pref" / "model").exists()
        proc = _launch(written.dir)
        if name == "killed":
            assert "at step 2" in proc.stdout + proc.stderr
        runs[name] = project / "runs" / "pref"
    strip = lambda ms: [{k: v for k, v in m.items() if not k.endswith("_per_s")} for m in ms]  # noqa: E731 (timings differ)
    metrics = {k: strip([json.loads(x) for x in (v / "metrics.jsonl").read_text().splitlines()]) for k, v in runs.items()}
    steps = [m for m in metrics["straight"] if "loss" in m]
    assert len(steps) == 4 and abs(steps[-1]["reward_margin"]) > 1e-3  # the policy left the reference
    assert metrics["killed"] == metrics["straight"]
    wa, wb = (load_file(str(v / "model" / "model.safetensors")) for v in runs.values())
    assert wa.keys() == wb.keys() and [k for k in wa if not torch.equal(wa[k], wb[k])] == []


TR_DPO = "reference_sync_every = 2\nreference_sync_alpha = 0.5"


@pytest.fixture(scope="module")
def tr_dpo_one(dpo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TR-DPO on one process, micro-batch 8, 4 steps, the reference synced after steps 2 and 4, a checkpoint at 2."""
    from test_preference_training import _project as _pref_project, _run as _pref_run

    recipe = _pref_project(tmp_path_factory.mktemp("tr-dpo-one") / "one", dpo_model, options=TR_DPO, micro=8, steps=4, save_every=2)
    _pref_run(recipe)
    return recipe.parent.parent / "runs" / "pref"


@pytest.mark.parametrize(
    "launch",
    ["cpu = true", 'strategy = "deepspeed"\ndeepspeed = {zero_stage = 2}', 'cpu = true\nstrategy = "fsdp"', ZERO3],
    ids=["ddp", "zero2", "fsdp", "zero3"],
)
def test_tr_dpo_under_sharding_syncs_and_resumes_as_one_process(launch: str, dpo_model: Path, tr_dpo_one: Path, tmp_path: Path) -> None:
    """TR-DPO over 2 processes x micro-batch 4, killed after its step-2 checkpoint and resumed, against one process x 8:
    the checkpoint holds the whole reference as one process synced it at step 2 (under FSDP each process moved its own
    shards of the copy, under ZeRO-3 each parameter was gathered in turn; either way gathered whole to be saved), and
    the resumed run, whose copy is loaded back from it (sharded again), logs the losses and rewards of one process at
    steps 3 and 4, which score against that reference, and ends with its weights."""
    import torch
    from safetensors.torch import load_file

    from recipec.compiler import build
    from test_preference_training import _project as _pref_project

    recipe = _pref_project(tmp_path / "two", dpo_model, options=TR_DPO, micro=4, processes=2, steps=4, save_every=2)
    recipe.write_text(recipe.read_text().replace("cpu = true", launch))
    project = recipe.parent.parent
    written, _ = build(recipe, (), project / "build" / "pref", project=project)
    (project / "killer.py").write_text(KILL_RANK0)
    killed = _launch(written.dir, script=[str(project / "killer.py"), str(written.dir), "2"], expect=None)
    assert killed.returncode != 0 and not (project / "runs" / "pref" / "model").exists()
    run = project / "runs" / "pref"
    (saved,) = (run / "checkpoints" / "step_00000002").glob("custom_checkpoint_*.pkl")
    (one_saved,) = (tr_dpo_one / "checkpoints" / "step_00000002").glob("custom_checkpoint_*.pkl")
    reference, one_reference = torch.load(saved, weights_only=True), torch.load(one_saved, weights_only=True)
    start = load_file(str(dpo_model / "model.safetensors"))
    names = set(start) & set(one_reference)
    assert names and names <= set(reference)
    assert any(not torch.equal(one_reference[k], start[k]) for k in names)  # the step-2 sync moved the copy
    for k in names:
        assert (reference[k].float() - one_reference[k].float()).abs().max().item() < 1e-5, k
    proc = _launch(written.dir)
    assert "at step 2" in proc.stdout + proc.stderr
    steps = [m for m in (json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    one = [m for m in (json.loads(x) for x in (tr_dpo_one / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert [m["step"] for m in steps] == [m["step"] for m in one] == [1, 2, 3, 4]
    for key in ("loss", "rewards_chosen", "rewards_rejected", "reward_margin", "logps_chosen"):
        assert [m[key] for m in steps] == pytest.approx([m[key] for m in one], abs=1e-5, rel=ROUNDING), key
    wa, wb = load_file(str(tr_dpo_one / "model" / "model.safetensors")), load_file(str(run / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all((wa[k] - wb[k]).abs().max().item() < 1e-4 for k in wa)


SP_LAUNCH = 'cpu = false\nstrategy = "deepspeed"\ndeepspeed = {zero_stage = 3}\nparallelism = {sp_size = 2}'


def _sp_chat(root: Path, model: Path, processes: int, *, batch: int = 8, steps: int = 3, save_every: int = 0) -> Path:
    """The chat fine-tuning project of tests/test_sft.py, unpacked examples, micro-batch 2; over more than one
    process, sequence parallelism of 2 under ZeRO-3 (4 processes: 2 data-parallel ranks x sp 2)."""
    from test_sft import _project as _sft_project

    root.mkdir()
    shutil.copytree(model, root / "model")
    _sft_project(root, "./model", micro=2, processes=processes)
    recipe = root / "recipes" / "chat.toml"
    text = recipe.read_text().replace("batch_size = 8", f"batch_size = {batch}").replace("max_steps = 3", f"max_steps = {steps}")
    text = text.replace("save_every = 0", f"save_every = {save_every}")
    text = text.replace("eval_batches = 0", "eval_batches = 0\neval_generations = 2\nmax_new_tokens = 4")
    if processes > 1:
        text = text.replace("cpu = true", SP_LAUNCH)
    recipe.write_text(text)
    return recipe


def test_examples_under_sequence_parallelism_train_as_one_process(tmp_path: Path) -> None:
    """Supervised fine-tuning of conversations of very uneven lengths with Ulysses: every micro-batch padded to
    seq_len, each rank of an sp group holding half of every sequence. Over 2 processes (one sp group) and 4 (2
    data-parallel ranks x sp 2) the step losses, DeepSpeed's gradient norms, the held-out losses, the generations
    and the final weights are those of one process: each step's loss is the mean over its supervised tokens,
    counted ahead over the group's micro-batches in the order the adapter serves them."""
    from test_sft import _model, _train as _sft_train

    model = tmp_path / "model"
    _model(model)
    runs = {}
    for name, processes in (("one", 1), ("sp2", 2), ("dp2-sp2", 4)):
        recipe = _sp_chat(tmp_path / name, model, processes)
        runs[name] = (_sft_train(recipe.parent.parent, processes), recipe.parent.parent / "runs" / "chat")
    one, one_dir = runs["one"]
    steps = [m for m in one if "loss" in m]
    assert len(steps) == 3 and steps[-1]["loss"] < steps[0]["loss"]
    for name in ("sp2", "dp2-sp2"):
        metrics, run_dir = runs[name]
        assert [m["loss"] for m in metrics if "loss" in m] == pytest.approx([m["loss"] for m in steps], abs=1e-5, rel=0), name
        assert [m["grad_norm"] for m in metrics if "loss" in m] == pytest.approx([m["grad_norm"] for m in steps], rel=1e-4), name
        # every rank of an sp group counts the group's tokens: counted once
        assert [m["supervised_tokens"] for m in metrics if "loss" in m] == [m["supervised_tokens"] for m in steps], name
        evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
        assert evals == pytest.approx([m["eval_loss"] for m in one if "eval_loss" in m], abs=1e-5, rel=0), name
        assert (run_dir / "generations.jsonl").read_text() == (one_dir / "generations.jsonl").read_text(), name
        wa, wb = _weights(one_dir), _weights(run_dir)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert (wa[k] - wb[k]).abs().max().item() < 1e-4, (name, k)


def test_examples_under_zero_3_with_the_chunked_cross_entropy_train_as_one_process(tmp_path: Path) -> None:
    """Conversations of uneven lengths with the chunked cross-entropy under ZeRO-3 over 2 processes, with and
    without Ulysses (sp 2): the step losses, gradient norms, held-out losses and weights of one process with
    the plain loss. The processes' micro-batches (or slices) hold different numbers of supervised tokens, and
    ZeRO-3 gathers the projection on every call: every process runs the most chunks any needs (without it,
    the processes wait for each other's gathers for ever)."""
    from test_sft import _model, _train as _sft_train

    model = tmp_path / "model"
    _model(model)
    chunked = '\n[loss]\ncross_entropy = "chunked"\nchunk_size = 16\n'
    runs = {}
    for name, processes, launch in (("one", 1, None), ("zero3", 2, 'cpu = false\nstrategy = "deepspeed"\ndeepspeed = {zero_stage = 3}'), ("sp2", 2, SP_LAUNCH)):
        recipe = _sp_chat(tmp_path / name, model, processes)
        text = recipe.read_text()
        if launch is not None:
            text = text.replace(SP_LAUNCH, launch) + chunked
        recipe.write_text(text)
        runs[name] = (_sft_train(recipe.parent.parent, processes), recipe.parent.parent / "runs" / "chat")
    one, one_dir = runs["one"]
    for name in ("zero3", "sp2"):
        metrics, run_dir = runs[name]
        for key, tol in (("loss", 1e-5), ("grad_norm", 1e-4), ("eval_loss", 1e-5)):
            want = [m[key] for m in one if key in m]
            assert len(want) >= 2 and [m[key] for m in metrics if key in m] == pytest.approx(want, abs=tol, rel=tol), (name, key)
        wa, wb = _weights(one_dir), _weights(run_dir)
        assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4, name


def test_examples_under_sequence_parallelism_resume_where_they_stopped(tmp_path: Path) -> None:
    """Killed after the checkpoint of step 1 (3 micro-batches of the group: one loader batch of each rank and
    the first of the next round) and resumed: the losses and weights of the run that was not stopped. The
    look-ahead count of supervised tokens restarts at the same place in the adapter's order as the batches."""
    from recipec.compiler import build
    from test_sft import _model

    model = tmp_path / "model"
    _model(model)
    runs = {}
    for name in ("straight", "killed"):
        recipe = _sp_chat(tmp_path / name, model, 2, batch=6, steps=4, save_every=1)
        project = recipe.parent.parent
        written, _ = build(recipe, (), project / "build" / "chat", project=project)
        if name == "killed":
            (project / "killer.py").write_text(KILL_RANK0)
            killed = _launch(written.dir, script=[str(project / "killer.py"), str(written.dir), "1"], expect=None)
            assert killed.returncode != 0 and not (project / "runs" / "chat" / "model").exists()
        proc = _launch(written.dir)
        if name == "killed":
            assert "resum" in (proc.stdout + proc.stderr).lower()
        runs[name] = project / "runs" / "chat"
    loss_a, lr_a = _losses_and_lrs(runs["straight"])
    loss_b, lr_b = _losses_and_lrs(runs["killed"])
    assert len(loss_a) == 4 and lr_b == lr_a
    assert loss_b == pytest.approx(loss_a, abs=1e-6, rel=0)
    wa, wb = _weights(runs["straight"]), _weights(runs["killed"])
    for k in wa:
        assert (wa[k] - wb[k]).abs().max().item() < 1e-6, k


SP_PREF_CASES = {
    # name: (objective, options, peft, micro-batch, processes, sp_size); the reference is one process (see below)
    # a live copy, partitioned by an engine of its own, scoring the slices: of 2 data-parallel ranks x sp 2
    "dpo-copy-dp2-sp2": ("dpo", "", "", 2, 4, 2),
    "dpo-copy-sp4": ("dpo", "", "", 4, 4, 4),  # every row in 4 slices
    # averages over each side's tokens; and WPO's weights, from the aligned log-probabilities summed over the slices
    "ipo-precomputed-wpo-sp2": ("ipo", 'reference = "precomputed"\nwpo = true', "", 4, 2, 2),
    "orpo-sp2": ("orpo", "", "", 4, 2, 2),  # reference-free; averages, and the chosen side's cross-entropy
    "dpo-lora-sp2": ("dpo", "", LORA, 4, 2, 2),  # live: the partitioned base model, adapter disabled
    "kto-copy-sp2": ("kto", "", "", 4, 2, 2),  # and the KL estimate's mismatched pairs, sliced too
    "apo-zero-unpaired-copy-sp2": ("apo_zero_unpaired", "", "", 4, 2, 2),  # labelled completions, no KL estimate
    "tr-dpo-copy-sp2": ("dpo", TR_DPO, "", 4, 2, 2),  # the partitioned copy synced after step 2, gathered in turn
}


@pytest.fixture(scope="module")
def sp_one(dpo_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """One process x micro-batch 4 of a setting of SP_PREF_CASES (objective, options, peft, data): the reference of
    the sp cases, run once per setting (the two "dpo-copy" cases share theirs)."""
    done: dict[tuple, dict] = {}

    def one(objective: str, options: str, peft: str, data: dict[str, str]) -> dict:
        key = (objective, options, peft, tuple(sorted(data.items())))
        if key not in done:
            done[key] = _dpo_run(tmp_path_factory.mktemp("sp-one") / "one", dpo_model, options, peft, 4, 1, "", objective, data=data)
        return done[key]

    return one


@pytest.mark.parametrize("case", list(SP_PREF_CASES))
def test_preference_pairs_under_sequence_parallelism_train_as_one_process(case: str, dpo_model: Path, sp_one, tmp_path: Path) -> None:
    """Preference training with Ulysses over ZeRO-3: each side of a pair a row of its own, padded to seq_len, each rank
    of an sp group holding a slice of every row (half, or a quarter with sp 4). The per-row sums of log-probabilities (and token counts) are summed
    across the group before the objective, so the losses, rewards, log-probabilities and learning rates of every step,
    the held-out metrics (whole rows on every rank), the generations and the final weights are those of one process
    with the same rows per step. KTO's KL estimate is the mean over a step's micro-batches of each data-parallel rank
    (see dpo_one): its reference is one process with micro-batch 4, the micro-batches the sp group takes in turn. The
    held-out rows (9 KTO examples) do not split into whole micro-batches of every process."""
    from safetensors.torch import load_file

    objective, options, peft, micro, processes, sp_size = SP_PREF_CASES[case]
    data = {}
    if objective == "kto":
        # its KL pairs (a prompt and another example's completion) fit seq_len 128; 9 held-out examples, which 2
        # processes do not split into whole micro-batches: filled up with rows that count for nothing
        data = {"max_length": "64"}
    sp = f'cpu = false\nstrategy = "deepspeed"\ndeepspeed = {{zero_stage = 3}}\nparallelism = {{sp_size = {sp_size}}}'
    runs = {"one": sp_one(objective, options, peft, data), "sp": _dpo_run(tmp_path / "sp", dpo_model, options, peft, micro, processes, sp, objective, data=data)}
    one, two = runs["one"]["metrics"], runs["sp"]["metrics"]
    steps = [m for m in one if "loss" in m]
    assert len(steps) == 3 and steps[-1]["reward_margin"] != 0  # it trained
    # (not reward_accuracy per step: while the policy is still the reference its margins are 0 up to 1e-7 of rounding,
    # whose sign differs between slices summed and whole rows)
    keys = ["loss", "rewards_chosen", "rewards_rejected", "reward_margin", "logps_chosen", "logps_rejected", "lr"]
    keys += ["kl"] if objective == "kto" else []
    worst = {}
    for key in keys:
        got, want = [m[key] for m in two if "loss" in m], [m[key] for m in steps]
        worst[key] = max(abs(a - b) for a, b in zip(got, want))
        assert got == pytest.approx(want, abs=1e-5, rel=ROUNDING), key
    # the gradient: DeepSpeed's norm of each step's (it clips), against the one process's
    norms = [m["grad_norm"] for m in two if "loss" in m]
    assert norms == pytest.approx([m["grad_norm"] for m in steps], rel=1e-4)
    evals = lambda ms: [m for m in ms if "eval_loss" in m]  # noqa: E731
    assert len(evals(one)) == 2
    # evaluation splits the held-out rows over all processes (whole rows on each), as without an sp group, filled up
    # with rows that count for nothing; KTO's held-out KL estimate is each micro-batch's own, as one process takes it
    held_out = ["eval_loss", "eval_rewards_chosen", "eval_rewards_rejected", "eval_logps_chosen", "eval_reward_margin"]
    held_out += {"kto": ["eval_kl"], "apo_zero_unpaired": []}.get(objective, ["eval_reward_accuracy"])
    for key in held_out:
        got, want = [m[key] for m in evals(two)], [m[key] for m in evals(one)]
        worst[key] = max(abs(a - b) for a, b in zip(got, want))
        # the KL estimate after training (about 8, a difference of sums over whole rows) inherits the rounding of the
        # trained weights (within 1e-4 of one process's): 1.7e-5 seen, within 1e-5 of its size
        assert got == pytest.approx(want, abs=1e-5, rel=1e-5 if key == "eval_kl" else ROUNDING), key
    print(case, "max |difference| per step:", {k: f"{v:.1e}" for k, v in worst.items()})
    assert runs["sp"]["generations"] == runs["one"]["generations"]
    name = "adapter_model.safetensors" if peft else "model.safetensors"
    wa, wb = load_file(str(runs["one"]["model"] / name)), load_file(str(runs["sp"]["model"] / name))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max().item() < 1e-4, k


def test_preference_pairs_under_sequence_parallelism_resume_where_they_stopped(tmp_path: Path) -> None:
    """DPO with a live copy under sp 2, micro-batch 4, batch 12 (3 micro-batches of the group a step: a round of the
    adapter and half of the next), killed after the checkpoint of step 1 and resumed: the losses, rewards and weights
    of the run that was not stopped. The copy is made from the model as it starts, before the checkpoint is loaded."""
    from safetensors.torch import load_file

    from recipec.compiler import build
    from test_preference_training import _project as _pref_project
    from test_sft import _model

    model = tmp_path / "model"
    _model(model)
    sp = 'cpu = false\nstrategy = "deepspeed"\ndeepspeed = {zero_stage = 3}\nparallelism = {sp_size = 2}'
    runs = {}
    for name in ("straight", "killed"):
        recipe = _pref_project(tmp_path / name, model, micro=4, processes=2, steps=4, save_every=1)
        recipe.write_text(recipe.read_text().replace("cpu = true", sp).replace("batch_size = 8", "batch_size = 12"))
        project = recipe.parent.parent
        written, _ = build(recipe, (), project / "build" / "pref", project=project)
        if name == "killed":
            (project / "killer.py").write_text(KILL_RANK0)
            killed = _launch(written.dir, script=[str(project / "killer.py"), str(written.dir), "1"], expect=None)
            assert killed.returncode != 0 and not (project / "runs" / "pref" / "model").exists()
        proc = _launch(written.dir)
        if name == "killed":
            assert "resum" in (proc.stdout + proc.stderr).lower()
        runs[name] = project / "runs" / "pref"
    keys = ("loss", "lr", "rewards_chosen", "rewards_rejected", "logps_chosen", "logps_rejected")
    metrics = {k: [m for m in (json.loads(x) for x in (v / "metrics.jsonl").read_text().splitlines()) if "loss" in m] for k, v in runs.items()}
    straight, resumed = metrics["straight"], metrics["killed"]
    assert len(straight) == 4 and abs(straight[-1]["reward_margin"]) > 1e-3  # the policy left the reference
    assert [m["step"] for m in resumed] == [1, 2, 3, 4]
    for key in keys:
        assert [m[key] for m in resumed] == pytest.approx([m[key] for m in straight], abs=1e-6, rel=0), key
    wa, wb = (load_file(str(v / "model" / "model.safetensors")) for v in runs.values())
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max().item() < 1e-6, k


def test_trainable_under_zero_3_trains_what_one_process_trains(base: Path, tmp_path: Path) -> None:
    """optim.trainable on a model ZeRO-3 partitions as it builds it: the count is the whole model's,
    the losses and final weights those of one process, and the frozen parameters are saved as loaded."""
    import torch
    from safetensors.torch import load_file

    steps = ["train.batch_size=8", "train.max_steps=4", "train.eval_every=0", "train.save_every=0",
             'optim.trainable={include=["layers[-1]", "norms"], exclude=["layers[-1].mlp.*"]}']  # fmt: skip
    one, two = _from(base, tmp_path / "one"), _from(base, tmp_path / "two")
    proc = forkrun.run([sys.executable, str(_build(one, *steps) / "train.py")], env=_env(), check=True, capture_output=True, text=True, timeout=600)
    counted = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("trainable:")]
    proc = _launch(_build(two, *steps, "launch.num_processes=2", 'launch.strategy="deepspeed"', "launch.deepspeed.zero_stage=3", "launch.cpu=false"))
    assert len(counted) == 1 and [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("trainable:")] == counted
    loss_1, _ = _losses_and_lrs(one / "runs" / "tiny")
    loss_2, _ = _losses_and_lrs(two / "runs" / "tiny")
    assert len(loss_2) == 4 and loss_2 == pytest.approx(loss_1, abs=1e-5)
    start, wa, wb = load_file(str(base / "model.safetensors")), _weights(one / "runs" / "tiny"), _weights(two / "runs" / "tiny")
    picked = {k for k in start if (k.startswith("model.layers.1.") and ".mlp." not in k) or "norm" in k}
    assert {k for k in start if not torch.equal(start[k], wb[k])} == picked
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5
