"""Module, Sequential, ModuleList: parameter bookkeeping without PyTorch's Module class.

A module's state lives in plain attributes, discovered in attribute insertion order:

- a parameter is a tensor attribute that was a leaf with ``requires_grad=True`` when it
  was assigned (it stays a parameter if it is frozen later with ``requires_grad_(False)``);
- a buffer is a tensor registered with :meth:`Module.register_buffer` (running statistics,
  masks); reassigning the attribute keeps it a buffer;
- a submodule is an attribute that is a :class:`Module`.

Any other tensor attribute (``self.out``, a cached activation) is ignored by the bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from dlf.errors import DlfError

__all__ = ["Module", "ModuleList", "Sequential"]


def _is_new_parameter(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.is_leaf and value.requires_grad


class Module:
    """Base class for layers and models: ``module(*args)`` calls ``forward(*args)``."""

    # Class-level default so subclasses that skip ``super().__init__()`` still work.
    training: bool = True

    def __init__(self) -> None:
        self.training = True

    # -- registries -------------------------------------------------------------------------

    def _registry(self, key: str) -> dict[str, None]:
        # dicts as ordered sets; created lazily so a missing super().__init__() is harmless
        reg = self.__dict__.get(key)
        if reg is None:
            reg = {}
            object.__setattr__(self, key, reg)
        return reg

    def __setattr__(self, name: str, value: object) -> None:
        params = self._registry("_dlf_params")
        buffers = self._registry("_dlf_buffers")
        if name not in buffers:
            if _is_new_parameter(value):
                params[name] = None
            elif name in params and not (isinstance(value, torch.Tensor) and value.is_leaf):
                # a non-leaf or non-tensor replaces the parameter: it is a plain attribute now
                del params[name]
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._registry("_dlf_params").pop(name, None)
        self._registry("_dlf_buffers").pop(name, None)
        self._registry("_dlf_nonpersistent").pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, tensor: torch.Tensor, persistent: bool = True) -> None:
        """Store ``tensor`` as attribute ``name``: moved by ``to()``, saved by ``state_dict()``
        unless ``persistent=False`` (e.g. a causal mask that is rebuilt on construction)."""
        if not isinstance(tensor, torch.Tensor):
            raise DlfError(f"buffer {name!r} must be a torch.Tensor, got {type(tensor).__name__}")
        self._registry("_dlf_params").pop(name, None)
        self._registry("_dlf_buffers")[name] = None
        if persistent:
            self._registry("_dlf_nonpersistent").pop(name, None)
        else:
            self._registry("_dlf_nonpersistent")[name] = None
        object.__setattr__(self, name, tensor)

    def _local_items(self) -> Iterator[tuple[str, str, object]]:
        """Yield (kind, name, value) for this module's own state in insertion order;
        kind is 'param', 'buffer' or 'module'."""
        params = self._registry("_dlf_params")
        buffers = self._registry("_dlf_buffers")
        for name, value in list(vars(self).items()):
            if isinstance(value, Module):
                yield "module", name, value
            elif isinstance(value, torch.Tensor):
                if name in buffers:
                    yield "buffer", name, value
                elif name in params:
                    yield "param", name, value

    # -- traversal --------------------------------------------------------------------------

    def named_modules(self, prefix: str = "") -> list[tuple[str, Module]]:
        """This module and all submodules (pre-order, each once) with dotted names."""
        out: list[tuple[str, Module]] = []
        seen: set[int] = set()

        def visit(mod: Module, name: str) -> None:
            if id(mod) in seen:
                return
            seen.add(id(mod))
            out.append((name, mod))
            for kind, child_name, child in mod._local_items():
                if kind == "module":
                    visit(child, f"{name}.{child_name}" if name else child_name)

        visit(self, prefix)
        return out

    def modules(self) -> list[Module]:
        return [m for _, m in self.named_modules()]

    def named_children(self) -> list[tuple[str, Module]]:
        return [(n, v) for kind, n, v in self._local_items() if kind == "module"]

    def children(self) -> list[Module]:
        return [m for _, m in self.named_children()]

    def _named_tensors(
        self, kinds: tuple[str, ...], dedupe: bool
    ) -> list[tuple[str, torch.Tensor]]:
        out: list[tuple[str, torch.Tensor]] = []
        seen: set[int] = set()
        for mod_name, mod in self.named_modules():
            for kind, name, value in mod._local_items():
                if kind not in kinds:
                    continue
                if dedupe:
                    if id(value) in seen:
                        continue
                    seen.add(id(value))
                out.append((f"{mod_name}.{name}" if mod_name else name, value))
        return out

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """(dotted name, tensor) for every parameter; a shared (tied) tensor appears once."""
        return self._named_tensors(("param",), dedupe=True)

    def parameters(self) -> list[torch.Tensor]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self) -> list[tuple[str, torch.Tensor]]:
        return self._named_tensors(("buffer",), dedupe=True)

    def buffers(self) -> list[torch.Tensor]:
        return [b for _, b in self.named_buffers()]

    def num_parameters(self) -> int:
        """Total number of scalar parameters (a tied tensor counted once)."""
        return sum(p.numel() for p in self.parameters())

    # -- modes and gradients ----------------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        for mod in self.modules():
            mod.training = bool(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    # -- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """name -> tensor for parameters (detached, sharing storage) and persistent buffers.

        A tensor tied between two modules (the same tensor assigned in each) appears under
        each of their names. A module shared at two places is visited once, as in
        `named_modules`, so its tensors appear under its first name only; loading
        restores both places, since they are one module."""
        out: dict[str, torch.Tensor] = {}
        for mod_name, mod in self.named_modules():
            nonpersistent = mod._registry("_dlf_nonpersistent")
            for kind, name, value in mod._local_items():
                if kind == "module" or name in nonpersistent:
                    continue
                out[f"{mod_name}.{name}" if mod_name else name] = value.detach()
        return out

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Copy values in place (dtype/device converted to the module's tensors).

        Raises one DlfError naming every problem: missing and unexpected keys (when
        ``strict``) and shape mismatches (always)."""
        if not isinstance(state_dict, dict):
            raise DlfError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched = []
        for k in own:
            if k not in state_dict:
                continue
            value = state_dict[k]
            if not isinstance(value, torch.Tensor):
                mismatched.append(f"{k}: checkpoint value is {type(value).__name__}, not a tensor")
            elif value.shape != own[k].shape:
                mismatched.append(
                    f"{k}: checkpoint {tuple(value.shape)} vs model {tuple(own[k].shape)}"
                )
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if mismatched:
            problems.append("shape mismatch: " + "; ".join(mismatched))
        if problems:
            raise DlfError(
                f"cannot load state_dict into {type(self).__name__}: " + " | ".join(problems)
            )
        with torch.no_grad():
            for k, target in own.items():
                if k in state_dict:
                    target.copy_(state_dict[k])

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Module:
        """Move parameters and buffers; ``dtype`` applies to floating-point tensors only.

        Parameters are replaced by new leaf tensors (same ``requires_grad``, gradients
        dropped) when anything changes, so build the optimizer after calling ``to``. Tied
        tensors stay tied."""
        if dtype is not None and not dtype.is_floating_point:
            raise DlfError(f"Module.to(dtype=...) needs a floating-point dtype, got {dtype}")
        memo: dict[int, torch.Tensor] = {}

        def convert(t: torch.Tensor, is_param: bool) -> torch.Tensor:
            if id(t) in memo:
                return memo[id(t)]
            new_dtype = dtype if (dtype is not None and t.is_floating_point()) else None
            moved = t.detach().to(device=device, dtype=new_dtype)
            if moved.device == t.device and moved.dtype == t.dtype:
                new = t  # nothing changed: keep the very same object (optimizers hold it)
            elif is_param:
                new = moved.requires_grad_(t.requires_grad)
            else:
                new = moved
            memo[id(t)] = new
            return new

        for mod in self.modules():
            for kind, name, value in list(mod._local_items()):
                if kind == "module":
                    continue
                assert isinstance(value, torch.Tensor)
                object.__setattr__(mod, name, convert(value, kind == "param"))
        return self

    # -- calling and printing ---------------------------------------------------------------

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        """One line of constructor arguments shown by ``repr`` (override in layers)."""
        return ""

    def __repr__(self) -> str:
        children = self.named_children()
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not children:
            return head + ")"
        lines = [head]
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules whose parameters are named ``0.*``, ``1.*``, ...; no forward."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        for m in modules:
            self.append(m)

    def _items(self) -> list[Module]:
        return self.children()

    def append(self, module: Module) -> ModuleList:
        if not isinstance(module, Module):
            raise DlfError(f"{type(self).__name__} holds Modules, got {type(module).__name__}")
        setattr(self, str(len(self)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        for m in modules:
            self.append(m)
        return self

    def __len__(self) -> int:
        return len(self._items())

    def __iter__(self) -> Iterator[Module]:
        return iter(self._items())

    def __getitem__(self, index: int | slice):
        items = self._items()
        if isinstance(index, slice):
            return type(self)(items[index])
        return items[index]

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward(); iterate over it instead")


class Sequential(ModuleList):
    """Chain of layers: ``forward(x)`` applies each in order. Children are named "0", "1", ...

    Example: ``self.net = Sequential(Linear(3, 4), Tanh())`` names ``net.0.weight``.
    """

    def __init__(self, *layers: Module) -> None:
        super().__init__(layers)

    def __getitem__(self, index: int | slice):
        items = self._items()
        if isinstance(index, slice):
            return Sequential(*items[index])
        return items[index]

    @property
    def layers(self) -> list[Module]:
        """The layers in order (the lectures' ``model.layers`` for diagnostics)."""
        return self._items()

    def forward(self, x):
        for layer in self._items():
            x = layer(x)
        return x
