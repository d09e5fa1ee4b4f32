"""FSDP2 with torch's own ``fully_shard``, for sharded training where accelerate's FSDP plugin cannot run.

accelerate's FSDP plugin needs CUDA; torch's FSDP2 (``torch.distributed.fsdp.fully_shard``)
works on any process group, gloo on CPU included. The training script uses this module
when a recipe asks for ``strategy = "fsdp"`` on CPU: it shards the model itself (each
transformer block, then the whole model), keeps the model and optimizer out of
accelerate's hands (which would wrap the model in DDP), and checkpoints them with
``torch.distributed.checkpoint`` (every process writes its own shards; any world size can
read them back). accelerate still runs the process group, the data loaders, the scheduler
and the RNG states.
"""

from __future__ import annotations

import os
from typing import Any

SHARDS_DIR = "fsdp"  # the sharded model and optimizer inside a checkpoint directory


def shard(model: Any, layer_classes: list[str] | None = None, *, reshard_after_forward: bool = True) -> list[str]:
    """Apply ``fully_shard`` to every module whose class is in ``layer_classes``, then to the model.

    Args:
        model: the model, already on its device.
        layer_classes: class names of the blocks to shard on their own. None: the model's
            ``_no_split_modules`` (what transformers declares as its transformer blocks);
            an empty list shards the model as one unit.
        reshard_after_forward: free the gathered parameters after each block's forward
            (ZeRO-3 like, the default); False keeps them until the backward (ZeRO-2 like).

    Returns:
        The qualified names of the modules sharded on their own.

    Raises:
        ValueError: if ``layer_classes`` names a class that the model does not have.
    """
    from torch.distributed.fsdp import fully_shard

    wanted = set(getattr(model, "_no_split_modules", None) or []) if layer_classes is None else set(layer_classes)
    found = {type(m).__name__ for m in model.modules()}
    missing = sorted(wanted - found)
    if layer_classes is not None and missing:
        raise ValueError(f"no module of class {', '.join(missing)} in the model; it has {', '.join(sorted(found))}")
    names = []
    for name, module in model.named_modules():
        if module is not model and type(module).__name__ in wanted:
            fully_shard(module, reshard_after_forward=reshard_after_forward)
            names.append(name)
    fully_shard(model, reshard_after_forward=reshard_after_forward)
    return names


def save(model: Any, optimizer: Any, directory: str | os.PathLike) -> None:
    """Write the model's and the optimizer's shards under ``directory/fsdp`` (on every process)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.save(state, checkpoint_id=os.path.join(os.fspath(directory), SHARDS_DIR))


def load(model: Any, optimizer: Any, directory: str | os.PathLike) -> None:
    """Read back what :func:`save` wrote into the sharded model and optimizer (on every process)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    path = os.path.join(os.fspath(directory), SHARDS_DIR)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{directory} has no sharded model ({SHARDS_DIR}/): it was not written by an FSDP run")
    state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optimizer"])


def full_state_dict(model: Any) -> dict[str, Any]:
    """The whole, unsharded state dict on the main process (empty elsewhere); call it on every process."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
