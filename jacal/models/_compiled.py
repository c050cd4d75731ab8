"""Penultimate embeddings and MC dropout for models jacal did not build: TorchScript and torch.export.

An eager ``nn.Module`` gives its penultimate features through a forward hook on its last
``nn.Linear`` and does MC dropout by switching its dropout modules to train mode. Neither works on a
compiled model: TorchScript modules take no hooks, and a ``torch.export`` program is an FX graph of
``aten`` ops whose dropout was recorded with ``train=False``. The rules here, the same in spirit for
every format (documented in :func:`jacal.acquire`):

* **Embedding** = the input of the model's last linear layer, or the output of a layer the user
  names (``embedding_layer=``; :func:`embedding_runner`).
  - Eager: a forward hook on that module.
  - TorchScript (scripted or traced): TorchScript modules take no Python hooks ("register_forward_hook
    is not supported on ScriptModules"), so jacal copies the model's own ``forward`` graph, inlines
    every call into it, and returns one more value from that copy: the input of its last
    ``aten::linear`` in program order (or the last tensor made inside the named layer, found by the
    module path TorchScript records on each inlined node, that the rest of the forward uses). Any
    forward works: reshapes, normalization, residuals, functional ops, nested containers. Out of
    reach, with a one-line error that says what to do: a last linear layer (or named layer) that runs
    inside a loop or a branch of the forward (its values are not the graph's to return), calls the
    graph cannot inline (module interfaces, ``torch.jit.fork``), or no ``aten::linear`` at all.
    "Last" is in program order, as for ``torch.export``; the eager hook takes the last registered
    ``nn.Linear``, the same layer whenever the head is registered after the body, as usual. Torch has
    no public call that takes a value out of a TorchScript module, so this uses the JIT's own graph
    tools (``_jit_pass_inline``, ``Node.getModuleHierarchy``, ``_create_function_from_graph``).
  - ``torch.export``: the graph is run by ``torch.fx.Interpreter`` and the first argument of its last
    ``aten.linear`` node is kept (or the output of the last node recorded inside the named module).
* **MC dropout**: TorchScript ``Dropout`` submodules (found by their original class name) are put
  in train mode, as for an eager model; a traced model fixed its dropout when it was traced, which a
  check catches (two passes in train mode must differ). ``torch.export``: every ``aten.dropout``
  node is run with ``train=True``.
"""
from __future__ import annotations

import re
from typing import Callable, Iterator, List, Optional, Tuple

import torch
from torch import nn

from jacal._internal.validation import JacalError

__all__ = ["dropout_layers", "has_dropout", "embedding_runner", "mc_runner", "is_compiled"]

NEEDS = "this strategy needs embeddings (by default the input of the model's last linear layer)"
NAME_ONE = "name a layer whose output to use with `embedding_layer` or pass `embed`."


DROPOUT_NAMES = {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"}


def _is_script(model: nn.Module) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


def _is_graph(model: nn.Module) -> bool:
    return isinstance(model, torch.fx.GraphModule)


def is_compiled(model: nn.Module) -> bool:
    """A TorchScript module or an FX graph (what ``torch.export``'s ``.module()`` returns)."""
    return _is_script(model) or _is_graph(model)


def _linear_nodes(gm: torch.fx.GraphModule) -> list:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.linear.default]


def _dropout_nodes(gm: torch.fx.GraphModule) -> list:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.dropout.default]


def dropout_layers(model: nn.Module) -> List[nn.Module]:
    """The dropout modules of an eager or TorchScript model (by class, or by TorchScript's original name)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)
            or (_is_script(m) and getattr(m, "original_name", "") in DROPOUT_NAMES)]


def has_dropout(model: nn.Module) -> bool:
    """Whether ``model`` has dropout that MC dropout can switch on (eager, TorchScript or an export graph)."""
    if _is_graph(model) and _dropout_nodes(model):
        return True
    return bool(dropout_layers(model))


class _Run(torch.fx.Interpreter):
    """Runs an export graph, keeping one node's value and optionally forcing dropout on."""

    def __init__(self, gm: torch.fx.GraphModule, keep=None, train_dropout: bool = False, take_input: bool = True) -> None:
        super().__init__(gm)
        self.keep, self.train_dropout, self.take_input, self.kept = keep, train_dropout, take_input, None

    def run_node(self, n):
        if n is self.keep and self.take_input:
            self.kept = self.env[n.args[0]]
        if self.train_dropout and n.op == "call_function" and n.target is torch.ops.aten.dropout.default:
            x, p = self.env[n.args[0]], n.args[1]
            return torch.ops.aten.dropout.default(x, p, True)
        out = super().run_node(n)
        if n is self.keep and not self.take_input:
            self.kept = out
        return out


def _graph_output(out):
    return out[0] if isinstance(out, (tuple, list)) and len(out) == 1 else out


def _names(names: List[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:12])
    return (shown + f" (and {len(names) - 12} more)") if len(names) > 12 else (shown or "none")


def _graph_runner(model: torch.fx.GraphModule, layer: Optional[str]):
    if layer is None:
        linears = _linear_nodes(model)
        if not linears:
            raise JacalError(f"{NEEDS}, and this torch.export program has no aten.linear op; {NAME_ONE}")
        keep, take_input = linears[-1], True
    else:  # the output of the named module: the last graph node recorded inside it
        paths: List[str] = []
        keep = None
        for n in model.graph.nodes:
            for path, _ in (n.meta.get("nn_module_stack") or {}).values():
                if path and path not in paths:
                    paths.append(path)
                if path == layer or n.name == layer:
                    keep = n
        if keep is None:
            raise JacalError(f"`embedding_layer` {layer!r} is not a layer of this torch.export program; its layers: "
                             f"{_names(paths)}.")
        take_input = False

    def run_graph(x: torch.Tensor):
        interp = _Run(model, keep=keep, take_input=take_input)
        z = _graph_output(interp.run(x))
        return z, interp.kept
    return run_graph


def _walk(block) -> Iterator:
    """Every node of a TorchScript block in program order, those inside loops and branches included."""
    for node in block.nodes():
        yield node
        for sub in node.blocks():
            yield from _walk(sub)


def _module_path(node) -> str:
    """The module a node of an inlined graph was recorded in, as ``named_modules`` names it (``"body.2"``);
    ``""`` for the model's own forward. TorchScript keeps it as ``"body(Sequential).2(Dropout)"``, with
    ``UNKNOWN_INSTANCE`` for functions (``F.relu``) called inside a module."""
    return ".".join(name for name, _ in _SCOPE.findall(node.getModuleHierarchy() or "") if name != "UNKNOWN_INSTANCE")


_SCOPE = re.compile(r"([^.()]+)\(([^()]*)\)")
_OPAQUE = {"prim::CallMethod", "prim::CallFunction", "prim::fork"}  # calls the inlined graph still hides


def _inside(path: str, layer: str) -> bool:
    return path == layer or path.startswith(layer + ".")


def _script_runner(model: nn.Module, layer: Optional[str]):
    what = "last linear layer" if layer is None else f"layer {layer!r}"
    graph = model.forward.graph.copy()  # the model's own forward, every call inlined; the model is untouched
    torch._C._jit_pass_inline(graph)
    nodes = list(_walk(graph.block()))
    if any(n.kind() in _OPAQUE for n in nodes):
        raise JacalError(f"{NEEDS}, and the {what} of this TorchScript model is out of reach (its forward calls "
                         f"code TorchScript cannot inline, e.g. a module interface or torch.jit.fork); {NAME_ONE}")
    if layer is None:
        linears = [n for n in nodes if n.kind() == "aten::linear"]
        if not linears:
            raise JacalError(f"{NEEDS}, and the forward of this TorchScript model has no linear layer (aten::linear); "
                             f"{NAME_ONE}")
        value, at = linears[-1].inputsAt(0), linears[-1]
    else:
        names = [n for n, _ in model.named_modules() if n]
        if layer not in names:
            raise JacalError(f"`embedding_layer` {layer!r} is not a layer of this TorchScript model; its layers: "
                             f"{_names(names)}.")
        # the layer's output: the last tensor made inside it that the rest of the forward uses
        outs = [(o, n) for n in nodes if _inside(_module_path(n), layer) for o in n.outputs()
                if o.type().kind() == "TensorType"
                and any(u.user.kind() == "prim::Return" or not _inside(_module_path(u.user), layer) for u in o.uses())]
        if not outs:
            raise JacalError(f"the forward of this TorchScript model leaves no output of layer {layer!r} in its graph "
                             "(never called, or an identity); name another layer with embedding_layer= or pass embed=.")
        value, at = outs[-1]
    if at.owningBlock().owningNode() is not None:  # a value inside a loop or branch cannot be returned
        raise JacalError(f"{NEEDS}, and the {what} of this TorchScript model is out of reach (it runs inside a "
                         f"loop or branch of the forward, whose values TorchScript does not return); {NAME_ONE}")
    graph.registerOutput(value)  # the forward returns (its output, the embedding)
    graph.makeMultiOutputIntoTuple()
    forward = torch._C._create_function_from_graph("jacal_forward_with_embedding", graph)

    def run(x: torch.Tensor):
        z, emb = forward(model._c, x)
        return z, emb
    return run


def _eager_runner(model: nn.Module, layer: Optional[str]):
    if layer is None:
        target = None
        for mod in model.modules():
            if isinstance(mod, nn.Linear):
                target = mod
        if target is None:
            raise JacalError(f"{NEEDS}, and the model has no nn.Linear module jacal can observe; {NAME_ONE}")
    else:
        modules = dict(model.named_modules())
        if layer not in modules or layer == "":
            raise JacalError(f"`embedding_layer` {layer!r} is not a layer of this model; its layers: "
                             f"{_names([n for n in modules if n])}.")
        target = modules[layer]

    def run(x: torch.Tensor):
        seen = []
        grab = (lambda mod, inp, out: seen.append(inp[0])) if layer is None else (lambda mod, inp, out: seen.append(out))
        handle = target.register_forward_hook(grab)
        try:
            z = model(x)
        finally:
            handle.remove()
        if not seen:
            raise JacalError(f"the model's forward never called {'its last nn.Linear' if layer is None else repr(layer)}, "
                             "so it gives no embedding; name another layer with embedding_layer= or pass embed=.")
        return z, seen[-1]
    return run


def embedding_runner(model: nn.Module, layer: Optional[str] = None
                     ) -> Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]:
    """``x -> (logits, embeddings)`` for any model format, in one forward pass.

    ``layer=None``: the input of the model's last linear layer (penultimate features). ``layer="name"``:
    the output of that layer, named as in ``model.named_modules()`` (eager and TorchScript:
    ``"body.2"``), or as the module path (or node name) recorded in the graph (``torch.export``).

    Raises:
        ValueError: one line saying why no embedding can be taken, and what to pass instead.
    """
    if _is_graph(model):
        return _graph_runner(model, layer)
    if _is_script(model):
        return _script_runner(model, layer)
    return _eager_runner(model, layer)


def mc_runner(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> logits`` with dropout on, for any model format; the model's own modes are restored by
    the caller (eager and TorchScript dropout modules are switched here and back in ``finally``)."""
    if _is_graph(model):
        if not _dropout_nodes(model):
            raise JacalError("strategy 'bald' needs a model with dropout layers (MC dropout); this torch.export "
                             "program has no aten.dropout op (export the model with its nn.Dropout layers).")
        return lambda x: _graph_output(_Run(model, train_dropout=True).run(x))
    return model


class Portable:
    """A compiled model as bytes in its own format, for a worker process (Ray pickles its task
    arguments, and TorchScript modules and export graphs do not pickle)."""

    def __init__(self, kind: str, data: bytes) -> None:
        self.kind, self.data = kind, data

    def load(self) -> nn.Module:
        import io

        buf = io.BytesIO(self.data)
        if self.kind == "torchscript":
            return torch.jit.load(buf, map_location="cpu")
        return torch.export.load(buf).module()


def to_portable(model: nn.Module):
    """``model`` itself for an eager module (it pickles); :class:`Portable` bytes for a compiled one.

    Raises:
        ValueError: an export graph that did not come from :func:`jacal.models.load_model_file`
            (so its ``ExportedProgram`` is unknown) and does not pickle.
    """
    import io

    if _is_script(model):
        buf = io.BytesIO()
        torch.jit.save(model, buf)
        return Portable("torchscript", buf.getvalue())
    if _is_graph(model):
        program = getattr(model, "_jacal_program", None)
        if program is None:
            raise JacalError("a distributed backend sends the model to its workers, and this torch.export graph has no "
                             "program to serialize; load it with jacal.load_model_file so jacal keeps its "
                             "ExportedProgram.")
        buf = io.BytesIO()
        torch.export.save(program, buf)
        return Portable("export", buf.getvalue())
    return model


def from_portable(obj) -> nn.Module:
    return obj.load() if isinstance(obj, Portable) else obj
