"""The calibration run: hooks that measure, rescale and correct each layer in one pass."""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import itertools
import logging
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import _torch
from .. import random as _random
from .._errors import LSUVError
from .._modules import CONV_TYPES, is_norm, resets_scale
from .._schemes import _orthogonal_stack, _stackable
from .proof import (
    _ALWAYS_RANDOM,
    _METADATA,
    _TEMPLATE_ARG,
    _TRAINING_RANDOM,
    _func_name,
    _orthogonal,
    _stock_forward,
    _torch_nn_only,
    _Watch,
)
from .report import LSUVStep
from .scale import _channel_view, _Scratch, _solve_scale, _stats, _std, _View, rescale, scale_weight
from .units import _STOCK, _memory, _rnn_layer_output, _Unit

logger = logging.getLogger("initwise.lsuv")

_IN_PLACE = (nn.Linear, *CONV_TYPES)  # output rescaled in place when nothing else can see it
_PREFETCH_BYTES = 256 << 20  # pre-init matrices computed ahead of the pass, at most this much


class _Run:
    def __init__(self, model: nn.Module, units: list[_Unit], *, target: float, tol: float,
                 include_bias: bool, orthogonal_first: bool, zero_bias: bool, seed: int | None,
                 progress: Callable[[LSUVStep], None] | None) -> None:  # fmt: skip
        self.model = model
        self.units = units
        self.target = target
        self.tol = tol
        self.include_bias = include_bias
        self.orthogonal_first = orthogonal_first
        self.zero_bias = zero_bias
        self.seed = seed
        # seed=None: the pre-init depends on torch's global RNG through one draw, made here, so
        # the model's own use of that RNG during the pass stays detectable
        self.generator = torch.Generator()
        if seed is None:
            self.generator.manual_seed(int(torch.randint(0, 2**62, (), dtype=torch.int64)))
        self.progress = progress
        self.last_visited: str | None = None  # the last weight visited in the current pass
        self.pass_index = 0
        self.corrections = 0
        self.param_backup: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        # rows[(weight name, call)] = [module, kind, std_before, std_last, normalized_by]
        self.rows: dict[tuple[str, int], list[Any]] = {}
        self.order: list[tuple[str, int]] = []
        self.outputs: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()
        self.output_keys: dict[int, tuple[str, int]] = {}
        self.by_module: dict[int, list[_Unit]] = {}
        self.norm_names: dict[int, str] = {}
        # first-pass exactness proof (see _Watch)
        self.internal = 0  # > 0 while our own hooks run
        self.active: dict[int, int] = {}  # id(module) -> open calls of a calibrated module
        self.watched: dict[int, tuple[set[int], set[str], str]] = {}  # id(param) -> (owner
        # modules, weight names still to calibrate, display name)
        self.outside: dict[int, str] = {}  # id(param) -> why it was read outside its module
        self.param_units: dict[int, list[_Unit]] = {}
        self.reasons: list[str] = []
        self.watching = False  # the first pass runs under _Watch
        self.buffer_state: list[tuple[nn.Module, str, torch.Tensor, int]] = []
        self.param_versions: dict[int, tuple[str, torch.Tensor, int]] = {}
        self.final: dict[int, tuple[torch.Tensor, int, float | None]] = {}  # id -> (p, ptr, sum)
        self.own_code = True  # the forward may run code other than torch.nn's modules
        self.rng_state: tuple[torch.Tensor, list[torch.Tensor]] | None = None
        self.prefetched: dict[str, torch.Tensor] | None = None  # name -> keyed pre-init values
        # (numel, dtype) -> a free slot of the prefetched matrices' buffer: the next backup
        self.spare: dict[tuple[int, torch.dtype], torch.Tensor] = {}
        self.scratch = _Scratch()
        self.in_place: set[int] = set()  # id(module): its fresh output is rescaled in place
        # id(module): a stock layer's subclass with its own forward (no calibrated module
        # inside): its first correction is checked by running that forward again
        self.check_linear: set[int] = set()
        self.call_args: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self.nonlinear: dict[str, str] = {}  # weight name -> why it was left uncalibrated
        self.writes: dict[int, list[tuple[torch.Tensor, str]]] = {}  # id(unit) -> written()

    # -- first-pass exactness ----------------------------------------------------------------
    def proof_begin(self) -> _Watch | None:
        """Static conditions, state snapshots; returns the mode observing the first pass."""
        model, units = self.model, self.units
        compiled = [n or "<root>" for n, m in model.named_modules()
                    if isinstance(m, torch.jit.ScriptModule) or _torch.compile_wrapped(m) is not None]  # fmt: skip
        if compiled:
            self.doubt(f"compiled or scripted modules ({', '.join(compiled[:3])}) are opaque")
        if _torch.global_hooks():
            self.doubt("global module forward hooks are registered")
        users: dict[int, int] = {}
        for u in units:
            users[id(u.weight)] = users.get(id(u.weight), 0) + 1
            m = u.module
            if not _stock_forward(m):
                self.doubt(f"{u.module_name or '<root>'} ({type(m).__name__}) overrides the "
                           "forward of its layer type")  # fmt: skip
            if _torch.has_module_hooks(m):
                self.doubt(f"{u.module_name or '<root>'} has its own forward hooks")
            if u.weight.param.dtype not in (torch.float32, torch.float64):
                self.doubt(f"{u.weight.name} is {u.weight.param.dtype} (rounding of the rescaled weight)")
        for u in units:
            if users[id(u.weight)] > 1:
                self.doubt(f"{u.weight.name} is shared by {users[id(u.weight)]} modules")
        self.buffer_state = [(m, k, b, _torch.version(b)) for m in model.modules()
                             for k, b in _torch.own_buffers(m).items() if b is not None]  # fmt: skip
        self.param_versions = {id(p): (n, p, _torch.version(p)) for n, p in model.named_parameters()}
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        self.rng_state = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if cuda else [])
        memory: dict[tuple[Any, ...], dict[int, str]] = {}  # aliasing across weights
        for u in units:
            for p, name in self.written(u):
                memory.setdefault(_memory(p), {})[id(u.weight)] = name
        for names in memory.values():
            if len(names) > 1:
                self.doubt(f"{', '.join(sorted(set(names.values())))} share memory")
        self.watch(units)
        # writes through ``.data`` bump no version: the first pass compares sums of the final
        # weights, unless only torch.nn's own modules run (they write no parameter)
        self.own_code = bool(compiled) or _torch.global_hooks() or not all(
            _torch_nn_only(m) for m in model.modules())
        return None if compiled else _Watch(self)

    def proof_end(self) -> None:
        """Conditions only the first pass could show: call counts, reads, state, randomness."""
        seen: set[int] = set()
        for u in self.units:
            w = u.weight
            if id(w) not in seen and w.calls > 1:
                self.doubt(f"{w.name} is used by {w.calls} calls in one forward pass")
            seen.add(id(w))
        for key, why in self.outside.items():
            if any(u.weight.preinit_done for u in self.param_units.get(key, [])):
                self.doubt(why)
        names = {key: n for key, (n, _, _) in self.param_versions.items()}
        for name, p, version in self.param_versions.values():
            if _torch.version(p) != version:
                self.doubt(f"parameter {name} is modified in place during the forward pass")
        for key, (p, ptr, total) in self.final.items():
            if p.data_ptr() != ptr or (total is not None and float(p.detach().sum()) != total):
                self.doubt(f"parameter {names.get(key, '?')} is modified during the forward "
                           "pass after it was calibrated")  # fmt: skip
        for m, k, b, version in self.buffer_state:
            if _torch.own_buffers(m).get(k) is b and _torch.version(b) == version:
                continue
            stats = isinstance(m, (_torch.BatchNormBase, _torch.InstanceNormBase))
            if not (stats and m.training and k in ("running_mean", "running_var", "num_batches_tracked")):
                self.doubt(f"the forward pass changes buffer {k!r} of {type(m).__name__}")
        if self.rng_state is not None:
            cpu, cuda = self.rng_state
            cuda_now = torch.cuda.get_rng_state_all() if cuda else []
            if not torch.equal(cpu, torch.get_rng_state()) or any(
                not torch.equal(a, b) for a, b in zip(cuda, cuda_now, strict=True)
            ):
                self.doubt("the forward pass draws from torch's global random generator")

    def quiet(self) -> Any:
        """Our own tensor work inside hooks bypasses the watching mode (it is not the model's)."""
        return _torch.disable_torch_function() if self.watching else contextlib.nullcontext()

    def doubt(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    def written(self, u: _Unit) -> list[tuple[torch.Tensor, str]]:
        """The tensors a unit writes in the first pass (weight, pre-init blocks, zeroed bias)."""
        out = self.writes.get(id(u))
        if out is None:
            out = [(u.weight.param, u.weight.name)]
            out += [(p, name) for name, p, _ in u.weight.extra_ortho if p is not u.weight.param]
            if self.zero_bias and u.bias_param is not None:
                out.append((u.bias_param, f"bias of {u.weight.name}"))
            self.writes[id(u)] = out
        return out

    def watch(self, units: list[_Unit]) -> None:
        for u in units:
            for p, name in self.written(u):
                entry = self.watched.setdefault(id(p), (set(), set(), name))
                entry[0].add(id(u.module))
                entry[1].add(u.weight.name)
                self.param_units.setdefault(id(p), []).append(u)

    def wrote(self, p: torch.Tensor) -> None:
        """Our own write to ``p`` (not the model's): refresh its version snapshot."""
        known = self.param_versions.get(id(p))
        if known is not None:
            self.param_versions[id(p)] = (known[0], known[1], _torch.version(known[1]))

    def settle(self, unit: _Unit) -> None:
        """``unit``'s weight is final: later reads anywhere are consistent with a fresh pass."""
        for p, _ in self.written(unit):
            self.wrote(p)  # our last write to it in this pass
            if self.watching:  # writes through ``.data`` bump no version: compare values too
                self.final[id(p)] = (p, p.data_ptr(), float(p.detach().sum()) if self.own_code else None)
            key = id(p)
            entry = self.watched.get(key)
            if entry is not None:
                entry[1].discard(unit.weight.name)
                if not entry[1]:
                    del self.watched[key]

    def observe(self, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        name = _func_name(func)
        if name in _ALWAYS_RANDOM:
            self.doubt(f"the forward pass draws random numbers ({name})")
        elif name in _TRAINING_RANDOM:
            pos, default = _TRAINING_RANDOM[name]
            training = args[pos] if len(args) > pos else kwargs.get(
                "training", kwargs.get("train", kwargs.get("dropout_p", default)))
            if training:
                self.doubt(f"the forward pass draws random numbers ({name} in training mode)")
        if not self.watched or name in _METADATA:
            return
        if name in _TEMPLATE_ARG:  # x.type_as(w), x.to(w), zeros_like(w), w.new_zeros(...)
            skip = _TEMPLATE_ARG[name]
            args = [a for i, a in enumerate(args) if i != skip]
            kwargs = {k: v for k, v in kwargs.items() if k != "other"}
        for a in (*args, *kwargs.values()):
            for t in (a if isinstance(a, (list, tuple)) else (a,)):
                entry = self.watched.get(id(t))
                if entry is not None and id(t) not in self.outside:
                    owners, _, pname = entry
                    if not any(self.active.get(m) for m in owners):
                        self.outside[id(t)] = (f"{pname} is read outside its module ({name}) "
                                               "before it is calibrated")  # fmt: skip

    # -- state backup ------------------------------------------------------------------------
    def backup(self, p: torch.Tensor) -> None:
        if id(p) not in self.param_backup:
            self.param_backup[id(p)] = (p, p.detach().clone())

    def restore_params(self) -> None:
        with torch.no_grad():
            for p, saved in self.param_backup.values():
                p.copy_(saved)

    # -- per call ----------------------------------------------------------------------------
    def _ortho_targets(self, w: Any) -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
        """(name, tensor, extra param or None) for each orthogonal pre-init of weight ``w``."""
        view = w.view()
        step = view.shape[0] // w.blocks
        out: list[tuple[str, torch.Tensor, torch.Tensor | None]] = [
            (w.name if w.blocks == 1 else f"{w.name}[{i}]",
             view if w.blocks == 1 else view[i * step : (i + 1) * step], None)
            for i in range(w.blocks)
        ]  # fmt: skip
        out += [(name, p if rows is None else p[rows], p) for name, p, rows in w.extra_ortho]
        return out

    def _prefetch(self) -> dict[str, torch.Tensor]:
        """The keyed pre-init matrices of every calibrated weight, computed before the pass.

        With a seed each matrix is a pure function of (seed, name) and is computed
        single-threaded (``orthogonal_`` pins its linear algebra to one thread), so the values
        do not depend on who computes them or when. Matrices of one shape are formed as a
        stack (:func:`_orthogonal_stack`, the bits ``orthogonal_`` gives each alone), split
        in ``t`` pieces with ``t >= 2`` torch threads, computed by the calling thread and
        ``t - 1`` workers (each at one torch thread, in a copy of the caller's context),
        instead of one after the other inside the pass. Only float32/float64
        CPU tensors of a shape the stack handles, at most _PREFETCH_BYTES in all (the rest
        stays lazy); a piece whose computation fails is left to the lazy path, which raises
        where it always did. The buffer doubles as the backups: it has one spare slot per
        shape, :meth:`preinit` copies a weight's original values into the spare and the
        matrix into the weight, and the matrix's slot is the next spare (two copies per
        weight, no new memory).
        """
        if not self.orthogonal_first or self.seed is None:
            return {}
        groups: dict[tuple[int, int, torch.dtype], list[str]] = {}
        seen: set[str] = set()
        total = 0
        for u in self.units:
            if u.weight.preinit_done or _torch.is_lazy(u.weight.param):
                continue
            for name, t, _ in self._ortho_targets(u.weight):
                if name in seen or t.device.type != "cpu" or t.dim() < 2 or t.numel() == 0:
                    continue
                rows, cols = t.shape[0], t.numel() // t.shape[0]
                nbytes = t.numel() * t.element_size()
                if not _stackable(rows, cols, t.dtype) or total + nbytes > _PREFETCH_BYTES:
                    continue
                seen.add(name)
                total += nbytes
                groups.setdefault((rows, cols, t.dtype), []).append(name)
        seed = self.seed
        threads = torch.get_num_threads()
        pieces: list[tuple[list[str], torch.Tensor, int, int, torch.dtype]] = []
        for (rows, cols, dtype), names in groups.items():
            # one slot more than matrices: the first swap's backup (see preinit)
            buf = torch.empty(len(names) + 1, rows, cols, dtype=dtype)
            self.spare[(rows * cols, dtype)] = buf[len(names)]
            step = -(-len(names) // threads)  # one piece per worker (one scratch each)
            for i in range(0, len(names), step):
                end = min(i + step, len(names))  # never the spare slot
                pieces.append((names[i:end], buf[i:end], rows, cols, dtype))

        def make(piece: tuple[list[str], torch.Tensor, int, int, torch.dtype]) -> None:
            names, out, rows, cols, dtype = piece
            _orthogonal_stack([_random.key(seed, n) for n in names], rows, cols, dtype, out=out)

        done: dict[str, torch.Tensor] = {}
        for names, out, _, _, _ in pieces:
            done.update(zip(names, out, strict=True))
        failed: list[int] = []
        if threads < 2 or len(pieces) < 2:
            for i, piece in enumerate(pieces):
                try:
                    make(piece)
                except Exception:  # left to the lazy path, which raises where it always did
                    failed.append(i)
        else:
            # all before the pass: workers computing while the pass runs were slower (the
            # pass's two-thread GEMMs wait for a core; docs/lsuv.md). The calling thread takes
            # pieces too (one thread fewer to start and wait for: 20.4 ms instead of 21.8 for
            # 2 x 25 of 256x256, best of 30); each thread takes the next piece left
            order = itertools.count()  # next() on a count is atomic under the GIL
            stop: list[bool] = []  # set when the calling thread leaves early (Ctrl-C)

            def work() -> None:
                torch.set_num_threads(1)
                while not stop and (i := next(order)) < len(pieces):
                    try:
                        make(pieces[i])
                    except Exception:  # left to the lazy path (list.append: atomic under the GIL)
                        failed.append(i)

            workers = min(threads, len(pieces)) - 1
            try:
                with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                    # each worker in a copy of the caller's context: its settings
                    # (use_normal_precision, use_orthogonal_method, use_backend) hold there too
                    helpers = [pool.submit(contextvars.copy_context().run, work) for _ in range(workers)]
                    try:
                        work()
                    except BaseException:
                        stop.append(True)
                        raise
                for h in helpers:
                    h.result()
            finally:
                torch.set_num_threads(threads)
        for i in failed:
            for name in pieces[i][0]:
                del done[name]
        return done

    def _swappable(self, name: str, t: torch.Tensor, param: torch.Tensor) -> bool:
        """True if ``t`` (pre-init target) is all of ``param`` and its matrix was computed ahead:
        then the prefetched buffer's spare slot can take the original values as the backup."""
        assert self.prefetched is not None
        return (name in self.prefetched and id(param) not in self.param_backup
                and t.data_ptr() == param.data_ptr() and t.numel() == param.numel()
                and param.is_contiguous() and type(param.detach()) is torch.Tensor)  # fmt: skip

    def prepare(self) -> None:
        """Before the first pass: the pre-init matrices computed ahead."""
        self.prefetched = self._prefetch()

    def preinit(self, unit: _Unit) -> None:
        w = unit.weight
        if w.preinit_done:
            return
        if self.prefetched is None:
            self.prefetched = {}
        w.preinit_done = True
        if not (self.orthogonal_first or (self.zero_bias and unit.bias_param is not None)):
            return
        if self.orthogonal_first:
            for name, t, extra in self._ortho_targets(w):
                param = w.param if extra is None else extra
                if self._swappable(name, t, param):
                    q = self.prefetched.pop(name)
                    key = (q.numel(), q.dtype)
                    saved = self.spare[key].view(t.shape)
                    with torch.no_grad():  # the original to the spare slot, the matrix to t
                        saved.copy_(t)
                        t.copy_(q.view(t.shape))
                    self.param_backup[id(param)] = (param, saved)
                    self.spare[key] = q  # its slot is free now
                else:
                    self.backup(w.param)
                    if extra is not None:
                        self.backup(extra)
                    ahead = self.prefetched.pop(name, None)
                    if ahead is None:
                        _orthogonal(t, name, self.seed, self.generator)
                    else:
                        with torch.no_grad():
                            t.copy_(ahead.view(t.shape))  # the values _orthogonal writes, computed ahead
                if extra is not None:
                    self.wrote(extra)
        self.backup(w.param)
        b = unit.bias()
        if self.zero_bias and b is not None and unit.bias_param is not None:
            self.backup(unit.bias_param)
            b.zero_()

    def measure(self, unit: _Unit, t: torch.Tensor, bias: torch.Tensor | None, dim: int,
                has_bias: bool, inp: Any = None, view: _View | Literal[True] = True
                ) -> tuple[float, float, float, int]:  # fmt: skip
        name = unit.weight.name
        if t.numel() < 2:
            raise LSUVError(f"lsuv: layer {name!r} produced fewer than 2 values", name)
        a, c, d, n = _stats(t, bias, dim, has_bias=has_bias, scratch=self.scratch, view=view)
        if not self.include_bias:
            c = d = 0.0
        if not math.isfinite(a):
            why = "its weight or bias"
            bad_input = isinstance(inp, torch.Tensor) and inp.is_floating_point()
            if bad_input and not bool(torch.isfinite(inp).all()):
                why = "its input (an earlier operation overflowed or produced NaN)"
            raise LSUVError(
                f"lsuv: the output of layer {name!r} (module {unit.module_name or '<root>'}) "
                f"is not finite (NaN or inf, or its variance overflows); the cause is {why}",
                name,
            )
        return a, c, d, n

    def visit(self, unit: _Unit, t: torch.Tensor, bias: torch.Tensor | None, dim: int,
              has_bias: bool, inp: Any = None, view: _View | Literal[True] = True) -> float:  # fmt: skip
        """Measure one call, maybe rescale the weight; return the factor applied (1 if none).
        ``view``: ``t``'s :func:`_channel_view` if the caller has it."""
        w = unit.weight
        call = w.calls
        w.calls += 1
        self.last_visited = w.name
        if w.name in self.nonlinear:
            return 1.0
        key = (w.name, call)
        a, c, d, n = self.measure(unit, t, bias, dim, has_bias, inp, view)
        std = _std(a, c, d, n)
        first_pass = self.pass_index == 1
        s = 1.0
        if call == 0 and (first_pass or abs(std / self.target - 1.0) > self.tol):
            s = _solve_scale(a, c, d, n, self.target, w.name)
            with torch.no_grad():
                scale_weight(w.view(), s)
            torch.clear_autocast_cache()  # a cached low-precision copy of w is stale now
            w.scale *= s
            w.iterations += 1
            self.corrections += 1
        row = self.rows.get(key)
        if row is None:
            row = [unit.module_name, unit.kind, std if first_pass else None, std, None]
            self.rows[key] = row
            self.order.append(key)
        row[3] = _std(a, c, d, n, s)
        row[0] = unit.module_name
        logger.debug("lsuv pass %d: %s call %d std %.6g -> %.6g (x%.6g)", self.pass_index,
                     w.name, call, std, row[3], s)  # fmt: skip
        if self.progress is not None:
            self.progress(LSUVStep(self.pass_index, w.name, call, std, s))
        return s

    def hook_pre(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.active[id(module)] = self.active.get(id(module), 0) + 1
        self.internal += 1
        try:
            with self.quiet():
                self._pre(module, args, kwargs)
        finally:
            self.internal -= 1

    def rnn_input(self, m: nn.RNNBase, layer: int, args: tuple[Any, ...],
                  kwargs: dict[str, Any], stack: list[Any]) -> Any:  # fmt: skip
        """Input of ``layer`` of a stacked RNN in this call: the lower layers, already
        calibrated, are run one by one (``stack`` caches their outputs for this call)."""
        if not stack:
            stack.append(args[0] if args else kwargs.get("input"))
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        while len(stack) <= layer:
            stack.append(_rnn_layer_output(m, len(stack) - 1, stack[-1], hx))
        x = stack[layer]
        return x.data if isinstance(x, nn.utils.rnn.PackedSequence) else x

    def _pre(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if id(module) in self.check_linear and self.pass_index == 1:
            self.call_args[id(module)] = (args, kwargs)
        stack: list[Any] = []  # stacked RNN: layer inputs of this call
        for unit in self.by_module[id(module)]:
            if self.pass_index == 1:
                self.preinit(unit)
            if unit.at != "input":
                continue
            assert unit.take_input is not None
            if unit.rnn_layer > 0:
                assert isinstance(module, nn.RNNBase)
                x = self.rnn_input(module, unit.rnn_layer, args, kwargs, stack)
            else:
                x = unit.take_input(args, kwargs)
            if not isinstance(x, torch.Tensor):
                raise LSUVError(f"lsuv: cannot find the input of {unit.weight.name!r}",
                                unit.weight.name)  # fmt: skip
            u = F.linear(x, unit.weight.view()).float()
            if unit.weight.calls == 0 and self.pass_index == 1:
                self.backup(unit.weight.param)
            self.visit(unit, u, unit.bias(), -1, False, x)
            self.settle(unit)

    def hook_post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        self.internal += 1
        try:
            with self.quiet():
                return self._post(module, args, output)
        finally:
            self.internal -= 1
            self.active[id(module)] -= 1

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        for unit in self.by_module[id(module)]:
            if unit.at != "output":
                continue
            y = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(output, (tuple, list)) and not isinstance(module, _STOCK) and any(
                isinstance(o, torch.Tensor) for o in output[1:]
            ):
                self.doubt(f"{unit.module_name or '<root>'} returns several tensors (only the "
                           "first is corrected)")  # fmt: skip
            if not isinstance(y, torch.Tensor):
                raise LSUVError(f"lsuv: module {unit.module_name!r} returned no tensor",
                                unit.weight.name)  # fmt: skip
            if y.requires_grad:
                raise LSUVError(
                    f"lsuv: the output of {unit.weight.name!r} is part of an autograd graph built "
                    "inside the model's forward pass (torch.enable_grad, e.g. a forward that "
                    "differentiates its output); weights saved for that backward cannot be "
                    "rescaled in place. Calibrate the differentiated sub-network itself: "
                    "lsuv(model.net, inputs)",
                    unit.weight.name,
                )
            bias = unit.bias()
            if y.dtype not in (torch.float32, torch.float64):
                self.doubt(f"{unit.weight.name} outputs {y.dtype} (rounding)")
            y32 = y.detach() if y.dtype in (torch.float32, torch.float64) else y.detach().float()
            dim = unit.bias_dim(y)
            if self.pass_index == 1 and unit.weight.calls == 0:
                self.backup(unit.weight.param)
            view: _View | Literal[True] = _channel_view(y32, dim, bias)  # measured, then rescaled
            s = self.visit(unit, y32, bias, dim, True, args[0] if args else None, view)
            if s != 1.0 and id(module) in self.check_linear and self.pass_index == 1 \
                    and unit.weight.calls == 1:  # fmt: skip
                redone = self.linearity(module, unit, s, y.detach())
                if redone is not None:  # not linear: the weight is back, so is its output
                    output, s = redone, 1.0
                    y = output[0] if isinstance(output, (tuple, list)) else output
                    y32 = y.detach() if y.dtype in (torch.float32, torch.float64) else y.detach().float()
                    view = True
            own = _torch.sole_memory(y) if s != 1.0 and id(module) in self.in_place else None
            if own is not None and y32.dtype == y.dtype and not any(a is own for a in args):
                # a stock layer's output is a new tensor nothing else holds: rescale it where
                # it is (the same values as the copy below, without new memory)
                rescale(y32, s, bias, dim, out=y32, view=view)
            elif s != 1.0:  # y' = s * (y - B) + B, what the rescaled weight produces
                y = rescale(y32, s, bias, dim, view=view).to(y.dtype)
                if isinstance(output, tuple):
                    output = (y, *output[1:])
                elif isinstance(output, list):
                    output = [y, *output[1:]]
                else:
                    output = y
            self.note_output(y, unit)
            self.settle(unit)
        return output

    def linearity(self, module: nn.Module, unit: _Unit, s: float, before: torch.Tensor) -> Any:
        """A layer whose forward is its own (a subclass of a stock layer) was just corrected by
        ``s``; ``before`` is its output with the weight it had. Run that forward again (hooks
        bypassed, same call's inputs) with the corrected weight and with the weight zeroed: the
        correction is what LSUV assumes only if ``f(s W) - f(0) = s (f(W) - f(0))`` (within
        1e-3 of its norm; an affine forward such as ``2 (W x + b)`` passes). If not (a router
        returning top-k sigmoid scores, a weight-standardized layer), the weight gets back its
        values from before LSUV (pre-init included), the layer is reported as not calibrated,
        and the output of that original weight is returned (what later layers see). ``None``:
        it is linear."""
        args, kwargs = self.call_args.pop(id(module), ((), {}))
        w = unit.weight
        view = w.view()
        with torch.no_grad():
            again = module.forward(*args, **kwargs)
            kept = view.clone()
            view.zero_()
            try:
                zero = module.forward(*args, **kwargs)
            except Exception:  # e.g. dividing by the weight's std
                zero = None
            finally:
                view.copy_(kept)
        got = again[0] if isinstance(again, (tuple, list)) else again
        base = zero[0] if isinstance(zero, (tuple, list)) else zero
        if isinstance(got, torch.Tensor) and isinstance(base, torch.Tensor) and got.shape == before.shape == base.shape:
            want = (before.double() - base.double()) * s
            err = float((got.double() - base.double() - want).norm()) / max(float(want.norm()), 1e-300)
            if math.isfinite(err) and err <= 1e-3:
                return None
        saved = self.param_backup.get(id(w.param))
        if saved is None:  # nothing to put back: keep the correction
            return None
        with torch.no_grad():
            view.copy_(saved[1] if w.rows is None else saved[1][w.rows])
            again = module.forward(*args, **kwargs)
        torch.clear_autocast_cache()
        self.nonlinear[w.name] = (
            f"{w.name} ({type(module).__name__}): its own forward is not linear in the weight "
            f"(scaling it by {s:.4g} did not scale the output's weight-dependent part by as "
            "much); left as the model made it")
        w.scale, w.iterations = 1.0, 0
        self.rows.pop((w.name, 0), None)
        self.order = [k for k in self.order if k[0] != w.name]
        return again

    def note_output(self, y: torch.Tensor, unit: _Unit) -> None:
        if not self.norm_names:  # only hook_norm reads them
            return
        key = (unit.weight.name, unit.weight.calls - 1)
        self.outputs[id(y)] = y
        self.output_keys[id(y)] = key

    def hook_norm(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not args or not isinstance(args[0], torch.Tensor) or not resets_scale(module):
            return
        x = args[0]
        if self.outputs.get(id(x)) is x:
            key = self.output_keys[id(x)]
            self.rows[key][4] = self.norm_names[id(module)]

    # -- passes ------------------------------------------------------------------------------
    def run_pass(self, call: Callable[[], Any]) -> None:
        self.pass_index += 1
        self.corrections = 0
        self.last_visited = None
        for u in self.units:
            u.weight.calls = 0
        self.outputs = weakref.WeakValueDictionary()
        self.output_keys = {}
        torch.clear_autocast_cache()
        call()

    def install(self) -> list[Any]:
        mods: dict[int, nn.Module] = {}
        for u in self.units:
            self.by_module.setdefault(id(u.module), []).append(u)
            mods[id(u.module)] = u.module
        handles = []
        pre, post, norm = self.hook_pre, self.hook_post, self.hook_norm
        compiled = any(_torch.compile_wrapped(m) is not None for m in self.model.modules())
        if compiled:
            # a torch.compile'd submodule: keep dynamo out of the hooks (they change weights
            # it guards on); imported only here, torch._dynamo is slow to import
            pre, post, norm = (torch.compiler.disable(h) for h in (pre, post, norm))
        if not compiled and not _torch.global_hooks():
            # outputs rescaled in place: stock linear layers (their forward returns a new
            # tensor) that no other hook sees
            self.in_place = {key for key, m in mods.items()
                             if isinstance(m, _IN_PLACE) and _stock_forward(m)
                             and not _torch.has_module_hooks(m)}  # fmt: skip
        self.check_linear = {key for key, m in mods.items() if not _stock_forward(m)
                             and not any(id(sub) in mods for sub in m.modules() if sub is not m)}  # fmt: skip
        for m in mods.values():
            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(m.register_forward_hook(post))
        for name, m in self.model.named_modules():
            if is_norm(m):
                self.norm_names[id(m)] = name
                handles.append(m.register_forward_pre_hook(norm))
        return handles


