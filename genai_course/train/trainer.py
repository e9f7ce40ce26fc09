"""The training loop: :class:`Trainer`, which knows nothing about any model, and the
:class:`NonFiniteLossError` it stops with."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..budget import auto_precision, resolve_device
from ..checkpoint import load_checkpoint, save_checkpoint
from ..data.streams import EvalData, MovableStream, ShardableStream, require_protocol
from .batches import (
    _as_stream,
    _batch_len,
    _check_eval_data,
    _eval_batches,
    _IterableStream,
    move_to,
)
from .config import LossFn, LossOutput, Objective, TrainConfig, decay_param_groups, lr_factor
from .distributed import _init_distributed, distributed_env
from .history import Callback, History

CHECKPOINT_FORMAT = "genai-course-trainer/1"


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss is NaN or infinite; ``step`` is the 1-based step it happened at."""

    def __init__(self, step: int, objective: str, value: float):
        self.step, self.objective, self.value = step, objective, value
        super().__init__(
            f"the {objective!r} loss is {value} at step {step}; training stopped. "
            "The last checkpoint on disk (if any) is from before this step. "
            "Try a lower learning rate, gradient clipping, or fp32 precision."
        )


class _LossModule(nn.Module):
    """Wraps ``loss_fn(model, batch)`` as a forward pass, so DDP and torch.compile see it."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> LossOutput:
        return self.loss_fn(self.model, batch)


def _split_loss(out: LossOutput, objective: str) -> tuple[Tensor, dict[str, Tensor | float]]:
    if isinstance(out, tuple):
        loss, logs = out
    else:
        loss, logs = out, {}
    if not isinstance(loss, Tensor) or loss.ndim != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(
            f"the {objective!r} loss function must return a scalar tensor "
            f"(or (scalar, dict)), got {shape}"
        )
    return loss, logs


def _default_loss(model: nn.Module, batch: Any) -> LossOutput:
    if not hasattr(model, "loss"):
        raise TypeError(
            f"{type(model).__name__} has no .loss(batch) method: pass loss_fn= "
            "or objectives= to the Trainer"
        )
    return model.loss(batch)


# ----------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """Train ``model`` on ``train_data`` as ``config`` says.

    Args:
        model: any ``nn.Module``.
        train_data: a :class:`TensorLoader`, a tensor or tuple of tensors (wrapped in a
            TensorLoader with ``config.batch_size``), or any iterable of batches (a DataLoader).
        config: a :class:`TrainConfig`.
        val_data: like ``train_data``, for validation (evaluated in order, without shuffling).
        loss_fn: ``loss_fn(model, batch) -> loss | (loss, logs)``; default ``model.loss(batch)``.
        objectives: several :class:`Objective` instead of ``loss_fn`` (e.g. for GANs).
        metrics_fn: ``metrics_fn(model) -> {"val_...": value}``, extra validation metrics.
        callbacks: :class:`Callback` instances.

    ``fit()`` trains; ``history`` holds the metrics; ``ema_model`` the averaged weights (if
    ``config.ema_decay``); ``save_checkpoint``/``load_checkpoint`` resume exactly.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Any,
        config: TrainConfig | None = None,
        *,
        val_data: Any = None,
        loss_fn: LossFn | None = None,
        objectives: Sequence[Objective] | None = None,
        metrics_fn: Callable[[nn.Module], dict[str, float]] | None = None,
        callbacks: Sequence[Callback] = (),
    ):
        self.config = config = config or TrainConfig()
        if loss_fn is not None and objectives is not None:
            raise ValueError("give loss_fn or objectives, not both")
        self.rank, self.local_rank, self.world_size = distributed_env()
        self.device = resolve_device(config.device)
        if self.world_size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        self.precision = (
            auto_precision(self.device) if config.precision == "auto" else config.precision
        )
        self.model = model.to(self.device)

        self.objectives = list(objectives or [Objective("train", loss_fn or _default_loss)])
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objective names must be unique, got {names}")

        self.stream = _as_stream(train_data, config.batch_size, config.shuffle, config.seed)
        if isinstance(self.stream, MovableStream):
            self.stream.to(self.device)
        if val_data is not None:
            _check_eval_data(val_data)
        if isinstance(val_data, (Tensor, tuple)):
            val_data = move_to(val_data, self.device)
        elif isinstance(val_data, EvalData) and isinstance(val_data, MovableStream):
            val_data = val_data.to(self.device)
        self.val_data = val_data
        self.metrics_fn = metrics_fn
        self.callbacks = list(callbacks)

        self.step = 0
        self.history = History()
        self.best_value: float | None = None
        self.best_step: int | None = None
        self._bad_evals = 0
        self._best_state: dict[str, Tensor] | None = None
        self.stop_reason: str | None = None

        if self.world_size > 1:
            _init_distributed(self.device)
            if isinstance(self.stream, ShardableStream):
                self.stream.shard(self.rank, self.world_size)
            elif not isinstance(self.stream, _IterableStream):
                # Unsharded, every rank would train on the same batches; an iterable (a
                # DataLoader) may shard itself with a DistributedSampler.
                require_protocol(self.stream, ShardableStream, role="training data under DDP")
        # Different ranks need different noise (dropout, GAN latents); rank 0 matches 1 process.
        torch.manual_seed(config.seed + self.rank)
        self._params: dict[str, list[nn.Parameter]] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR] = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        for obj in self.objectives:
            params = [p for p in self._module_of(obj.module).parameters() if p.requires_grad]
            if not params:
                raise ValueError(f"objective {obj.name!r} has no trainable parameters")
            self._params[obj.name] = params
            self.optimizers[obj.name] = self._make_optimizer(obj, params)
            self.schedulers[obj.name] = torch.optim.lr_scheduler.LambdaLR(
                self.optimizers[obj.name],
                lambda s: lr_factor(
                    s,
                    total=config.steps,
                    warmup=config.warmup_steps,
                    schedule=config.schedule,
                    min_ratio=config.min_lr_ratio,
                ),
            )
            self.scalers[obj.name] = torch.amp.GradScaler(
                self.device.type, enabled=self.precision == "fp16"
            )
        self._all_params = {id(p) for ps in self._params.values() for p in ps}

        self.ema_model: AveragedModel | None = None
        if config.ema_decay is not None:
            self.ema_model = AveragedModel(
                self._module_of(config.ema_of),
                multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay),
                use_buffers=True,
            )

        self._ddp = self.world_size > 1 and len(self.objectives) == 1
        self._forward: dict[str, nn.Module] = {}
        for obj in self.objectives:
            fwd: nn.Module = _LossModule(self.model, obj.loss_fn)
            if self._ddp:
                fwd = nn.parallel.DistributedDataParallel(
                    fwd, device_ids=[self.device.index] if self.device.type == "cuda" else None
                )
            if config.compile:
                fwd = torch.compile(fwd)
            self._forward[obj.name] = fwd
        if self.world_size > 1 and not self._ddp:
            self._broadcast_from_rank0(parameters=True)

    # -- set-up helpers ---------------------------------------------------------------------

    def _module_of(self, name: str | None) -> nn.Module:
        if name is None:
            return self.model
        try:
            return self.model.get_submodule(name)
        except AttributeError:
            children = [n for n, _ in self.model.named_children()]
            raise ValueError(
                f"model has no submodule {name!r}; its children are {children}"
            ) from None

    def _make_optimizer(self, obj: Objective, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        c = self.config
        lr = obj.lr or c.lr
        wd = c.weight_decay if obj.weight_decay is None else obj.weight_decay
        groups = decay_param_groups(
            self._module_of(obj.module), params, wd, c.decay_rule,
            decay_embeddings=c.decay_embeddings,
        )  # fmt: skip
        betas = obj.betas or c.betas
        fused = {"fused": True} if self.device.type == "cuda" else {}
        if c.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=lr, betas=betas, **fused)
        if c.optimizer == "adam":
            return torch.optim.Adam(groups, lr=lr, betas=betas, **fused)
        if c.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=c.momentum, **fused)
        return torch.optim.RMSprop(groups, lr=lr, momentum=c.momentum)

    def _broadcast_from_rank0(self, parameters: bool = False) -> None:
        """Rank 0's buffers (and with ``parameters`` its parameters) to every rank. Each rank's
        forward passes update buffers such as batch-norm running statistics from its own shard
        (DDP only syncs them at the next forward), so without this the ranks would evaluate,
        and might keep, different models."""
        tensors = list(self.model.buffers())
        if parameters:
            tensors += list(self.model.parameters())
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    @contextlib.contextmanager
    def _only_training(self, obj: Objective):
        """Switch off requires_grad for parameters other objectives own, while ``obj`` runs."""
        if len(self.objectives) == 1:
            yield
            return
        own = {id(p) for p in self._params[obj.name]}
        frozen = [
            p
            for p in self.model.parameters()
            if id(p) in self._all_params and id(p) not in own and p.requires_grad
        ]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    # -- the loop ---------------------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def lr(self, objective: str | None = None) -> float:
        """The current learning rate of an objective (the first by default)."""
        name = objective or self.objectives[0].name
        return self.optimizers[name].param_groups[0]["lr"]

    def _optimizer_step(self, obj: Objective, window: dict[str, list]) -> None:
        c = self.config
        opt, scaler, fwd = (
            self.optimizers[obj.name],
            self.scalers[obj.name],
            self._forward[obj.name],
        )
        opt.zero_grad(set_to_none=True)
        with self._only_training(obj):
            for micro in range(c.accumulate):
                batch = move_to(self.stream.next_batch(), self.device)
                sync = not self._ddp or micro == c.accumulate - 1
                ctx = contextlib.nullcontext() if sync else self._no_sync(fwd)
                with ctx:
                    with self._autocast():
                        loss, logs = _split_loss(fwd(batch), obj.name)
                    scaler.scale(loss / c.accumulate if c.accumulate > 1 else loss).backward()
                window.setdefault(f"{obj.name}_loss", []).append(loss.detach())
                for k, v in logs.items():
                    window.setdefault(k, []).append(v.detach() if isinstance(v, Tensor) else v)
        if self.world_size > 1 and not self._ddp:
            for p in self._params[obj.name]:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad.div_(self.world_size)
        if c.grad_clip is not None:
            scaler.unscale_(opt)
            norm = nn.utils.clip_grad_norm_(self._params[obj.name], c.grad_clip)
            window.setdefault(f"{obj.name}_grad_norm", []).append(norm.detach())
        scaler.step(opt)
        scaler.update()

    @staticmethod
    def _no_sync(fwd: nn.Module) -> contextlib.AbstractContextManager:
        inner = getattr(fwd, "_orig_mod", fwd)
        return inner.no_sync() if hasattr(inner, "no_sync") else contextlib.nullcontext()

    def _flush(self, window: dict[str, list], first_step: int) -> dict[str, float]:
        """Check the window's losses are finite and average every metric, with one device
        sync for the whole window (values stay on the device between log steps)."""
        keys = [k for k, v in window.items() if v]
        if not keys:
            return {}
        per_key = [
            torch.stack(
                [
                    torch.as_tensor(v, dtype=torch.float32, device=self.device).float()
                    for v in window[k]
                ]
            )
            for k in keys
        ]
        flat = torch.cat(per_key).cpu()  # the one sync
        out: dict[str, float] = {}
        for key, vals in zip(keys, flat.split([len(v) for v in per_key])):
            if key.endswith("_loss"):
                bad = (~torch.isfinite(vals)).nonzero()
                if len(bad):
                    i = int(bad[0])
                    per_step = len(vals) / max(1, self.step - first_step)
                    raise NonFiniteLossError(
                        first_step + 1 + int(i // per_step), key[: -len("_loss")], float(vals[i])
                    )
            out[key] = float(vals.mean())
        window.clear()
        return out

    def fit(self, max_steps: int | None = None, resume: bool | str | Path = False) -> History:
        """Train until ``config.steps`` (or ``max_steps``, for demonstrations) or early stopping.

        ``resume=True`` continues from ``checkpoint_dir/last.pt`` when it exists; a path
        continues from that file.
        """
        c = self.config
        if resume:
            path = Path(c.checkpoint_dir or ".") / "last.pt" if resume is True else Path(resume)
            if path.is_file():
                self.load_checkpoint(path)
        until = min(c.steps, max_steps) if max_steps is not None else c.steps
        for cb in self.callbacks:
            cb.on_train_start(self)
        from tqdm.auto import tqdm

        bar = tqdm(
            total=c.steps,
            initial=self.step,
            disable=not (c.progress and self.is_main),
            desc="train",
            dynamic_ncols=True,
            leave=True,
        )
        window: dict[str, list] = {}
        window_start = self.step
        start_time = time.perf_counter()
        self.model.train()
        try:
            while self.step < until and self.stop_reason is None:
                for obj in self.objectives:
                    for _ in range(obj.repeats):
                        self._optimizer_step(obj, window)
                for sched in self.schedulers.values():
                    sched.step()
                if self.ema_model is not None:
                    self.ema_model.update_parameters(self._module_of(c.ema_of))
                self.step += 1
                bar.update(1)

                # Validation runs on its schedule and at the real end; an interruption by
                # max_steps only saves, so a resumed run's history matches an unbroken one.
                end = self.step == c.steps
                evaluate = (c.eval_every and self.step % c.eval_every == 0) or end
                save = c.checkpoint_dir and (
                    (c.checkpoint_every and self.step % c.checkpoint_every == 0)
                    or self.step == until
                )
                last = self.step == until  # the end of this call, also when interrupted
                if self.step % c.log_every == 0 or last or evaluate or save:
                    logs = self._flush(window, window_start)
                    window_start = self.step
                    logs["lr"] = self.lr()
                    logs["time"] = time.perf_counter() - start_time
                    self.history.append(self.step, **logs)
                    bar.set_postfix(
                        {k: f"{v:.4g}" for k, v in logs.items() if k.endswith("loss")},
                        refresh=False,
                    )
                if evaluate and (self.val_data is not None or self.metrics_fn is not None):
                    self._evaluate_and_watch()
                for cb in self.callbacks:
                    cb.on_step_end(self)
                if save:
                    self.save_checkpoint()
        finally:
            bar.close()
        if self.world_size > 1:
            self._broadcast_from_rank0()  # the ranks end with identical models
        if c.restore_best and self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    # -- evaluation and early stopping ------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, data: Any = None) -> dict[str, float]:
        """Mean loss of every objective over ``data`` (default: the validation data) plus
        ``metrics_fn(model)``, in eval mode.  Keys: ``val_loss`` for a single objective,
        ``val_<name>_loss`` for several."""
        data = self.val_data if data is None else data
        if self.world_size > 1:
            self._broadcast_from_rank0()  # every rank evaluates the same model
        was_training = self.model.training
        self.model.eval()
        out: dict[str, float] = {}
        try:
            if data is not None:
                for obj in self.objectives:
                    total, count = torch.zeros((), device=self.device), 0
                    for i, batch in enumerate(_eval_batches(data, self.config.batch_size)):
                        if self.config.eval_batches is not None and i >= self.config.eval_batches:
                            break
                        batch = move_to(batch, self.device)
                        with self._autocast():
                            loss, _ = _split_loss(obj.loss_fn(self.model, batch), obj.name)
                        n = _batch_len(batch)
                        total += loss.float() * n
                        count += n
                    key = "val_loss" if len(self.objectives) == 1 else f"val_{obj.name}_loss"
                    out[key] = float(total) / max(1, count)
            if self.metrics_fn is not None:
                out.update({k: float(v) for k, v in self.metrics_fn(self.model).items()})
        finally:
            self.model.train(was_training)
        return out

    def _evaluate_and_watch(self) -> None:
        c = self.config
        metrics = self.evaluate()
        self.history.append(self.step, **metrics)
        for cb in self.callbacks:
            cb.on_eval_end(self, metrics)
        if c.monitor not in metrics:
            if c.patience is not None or c.restore_best:
                raise KeyError(
                    f"monitor {c.monitor!r} is not among the validation metrics {sorted(metrics)}"
                )
            return
        value = metrics[c.monitor]
        better = self.best_value is None or (
            value < self.best_value - c.min_delta
            if c.mode == "min"
            else value > self.best_value + c.min_delta
        )
        if better:
            self.best_value, self.best_step, self._bad_evals = value, self.step, 0
            if c.restore_best:
                self._best_state = {
                    k: v.detach().clone() for k, v in self.model.state_dict().items()
                }
        else:
            self._bad_evals += 1
            if c.patience is not None and self._bad_evals >= c.patience:
                self.stop_reason = (
                    f"early stopping at step {self.step}: {c.monitor} did not improve "
                    f"for {c.patience} evaluations (best {self.best_value:.4g} "
                    f"at step {self.best_step})"
                )

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly; plain tensors, numbers and strings only."""
        np_state = np.random.get_state()
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "config": _plain(asdict(self.config)),
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "ema": self.ema_model.state_dict() if self.ema_model is not None else None,
            "history": self.history.records,
            "early_stopping": {
                "best_value": self.best_value,
                "best_step": self.best_step,
                "bad_evals": self._bad_evals,
                "stop_reason": self.stop_reason,
            },
            "best_state": self._best_state,
            "data": self.stream.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": [
                    np_state[0],
                    torch.from_numpy(np_state[1].astype(np.int64)),
                    int(np_state[2]),
                    int(np_state[3]),
                    float(np_state[4]),
                ],
                "python": _plain(random.getstate()),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"not a trainer checkpoint: format is {state.get('format')!r}, "
                f"expected {CHECKPOINT_FORMAT!r}"
            )
        if set(state["optimizers"]) != set(self.optimizers):
            raise ValueError(
                f"checkpoint objectives {sorted(state['optimizers'])} do not match "
                f"this trainer's {sorted(self.optimizers)}"
            )
        self.model.load_state_dict(state["model"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        for k, s in self.scalers.items():
            s.load_state_dict(state["scalers"][k])
        if self.ema_model is not None and state["ema"] is not None:
            self.ema_model.load_state_dict(state["ema"])
        self.step = int(state["step"])
        self.history = History(state["history"])
        es = state["early_stopping"]
        self.best_value, self.best_step = es["best_value"], es["best_step"]
        self._bad_evals, self.stop_reason = es["bad_evals"], es["stop_reason"]
        self._best_state = state.get("best_state")
        self.stream.load_state_dict(state["data"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        n = rng["numpy"]
        np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
        random.setstate(_tuples(rng["python"]))

    def save_checkpoint(self, path: str | Path | None = None) -> Path | None:
        """Write the resumable state atomically (rank 0 only); returns the path on rank 0."""
        if path is None:
            if self.config.checkpoint_dir is None:
                raise ValueError("no path given and config.checkpoint_dir is None")
            path = Path(self.config.checkpoint_dir) / "last.pt"
        written = save_checkpoint(self.state_dict(), path) if self.is_main else None
        if written is not None:
            for cb in self.callbacks:
                cb.on_checkpoint(self, written)
        if self.world_size > 1:
            dist.barrier()
        return written

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore the state written by :meth:`save_checkpoint` (no pickled code is executed)."""
        self.load_state_dict(load_checkpoint(path, map_location=self.device))


def _plain(x: Any) -> Any:
    """Tuples to lists, recursively (``weights_only`` loading accepts both; lists are JSON-like)."""
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _tuples(x: Any) -> Any:
    if isinstance(x, list):
        return tuple(_tuples(v) for v in x)
    return x
