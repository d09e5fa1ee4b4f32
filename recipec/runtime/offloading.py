"""Activation offloading: the tensors the forward pass saves for the backward pass wait in host memory.

During the model's forward pass (a pre-hook and a hook on the model itself), autograd's
``saved_tensors_hooks`` pack every saved tensor that is an activation (not a parameter, not
already on the host, not smaller than ``min_bytes``) into a host copy, pinned when the
device is a GPU, and unpack it back onto its device when the backward pass reads it. The
device then holds the parameters, the gradients, the optimizer state and the activations of
the operation the backward pass is at, at the cost of one copy each way per saved tensor.

Parameters and views of them stay where they are (a linear layer saves its weight, transposed,
which would otherwise travel twice a step; FSDP's gathered weights are parameters too). A
16-bit copy of a float32 weight that autocast makes for a matmul is an ordinary tensor, and is
offloaded like an activation. The hooks are active in the
model's own forward only: with gradient checkpointing the saved tensors are the checkpointed
layers' inputs, which are offloaded, and the recomputation in the backward pass runs outside
the hooks, so its activations are used where they are made. Outside training (no gradient)
nothing is saved, so nothing moves.

torch's ``torch.autograd.graph.save_on_cpu`` does the same but copies the weights too.
"""

from __future__ import annotations

from typing import Any


class Offloader:
    """The pack and unpack hooks, with counts of what they moved (for the log and the tests).

    Args:
        pin_memory: pin the host copies (a GPU's copies to and from pinned memory are faster).
        min_bytes: tensors smaller than this stay on the device (not worth a copy).
        include_host: offload tensors already on the host too (a copy in host memory); the CPU
            tests use it to run the same path a GPU takes.
    """

    def __init__(self, *, pin_memory: bool, min_bytes: int = 1024, include_host: bool = False) -> None:
        self.pin_memory = pin_memory
        self.min_bytes = min_bytes
        self.include_host = include_host
        self.packed = 0  # tensors offloaded since the start
        self.packed_bytes = 0
        self.kept = 0  # saved tensors left where they were (parameters, small ones, on the host)

    def pack(self, tensor: Any) -> Any:
        import torch

        size = tensor.numel() * tensor.element_size()
        if (
            isinstance(tensor, torch.nn.Parameter)
            or isinstance(tensor._base, torch.nn.Parameter)  # a view of one: a linear layer saves its weight transposed
            or size < self.min_bytes
            or (tensor.device.type == "cpu" and not self.include_host)
            or tensor.layout != torch.strided
        ):
            self.kept += 1
            return tensor
        host = torch.empty(tensor.size(), dtype=tensor.dtype, pin_memory=self.pin_memory and tensor.device.type != "cpu")
        host.copy_(tensor, non_blocking=self.pin_memory)
        self.packed += 1
        self.packed_bytes += size
        return (tensor.device, host)  # contiguous: the same values, whatever the saved tensor's strides

    def unpack(self, packed: Any) -> Any:
        if not isinstance(packed, tuple):
            return packed
        device, host = packed
        return host.to(device, non_blocking=self.pin_memory)

    def hooks(self) -> Any:
        import torch

        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


def offload_activations(model: Any, *, pin_memory: bool, min_bytes: int = 1024, include_host: bool = False) -> Offloader:
    """Offload the activations ``model``'s forward pass saves (see the module docstring); returns the Offloader.

    The hooks go on ``model`` itself: wrap it (DDP, FSDP, DeepSpeed) afterwards, and its
    forward still runs through them.
    """
    offloader = Offloader(pin_memory=pin_memory, min_bytes=min_bytes, include_host=include_host)
    active: list[Any] = []

    def enter(module: Any, args: Any) -> None:
        if module.training:
            context = offloader.hooks()
            context.__enter__()
            active.append(context)

    def leave(module: Any, args: Any, output: Any) -> None:
        if active:
            active.pop().__exit__(None, None, None)

    model.register_forward_pre_hook(enter)
    model.register_forward_hook(leave)
    return offloader
