"""Sweep fusion: K P-tuning jobs that share a frozen backbone train in one process over ONE
copy of it, one backbone forward (and one backward) per step over every job's rows.

Design. Each job runs the project's own run stages (``ptexp.run.prepare/build/fit/record``)
in its own thread, with its own ``PTuningTrainer``: its own sampler and data order, optimizer,
schedule, gradient clipping, evaluation, checkpoints, resume, W&B run and run folder. Only two
things are shared:

- the backbone: after ``build``, the job's backbone (``model.bert``) is swapped for a
  :class:`SharedBackbone` that registers the group's one copy of the frozen embeddings and
  encoder under the same names (so parameter names, counts, the adapter and
  trainable_state.safetensors are a separate run's) and keeps the job's own pooler (trainable
  with ``model.extra_trainable_modules=[pooler]``);
- the training step: when a job's training forward reaches the backbone, its thread hands the
  rows to the group and waits; once every job of the group is waiting, the group runs ONE
  backbone forward over all rows (each row ``[its job's prompts, its tokens, padding]``, right
  padded with attention mask 0, so positions equal a separate run's; on a CPU, where padding
  costs compute, one forward per set of rows of about one length), hands each job its slice,
  and the jobs run their own heads and losses. The same rendezvous at ``backward``: the group
  back-propagates the sum of the jobs' losses once. The backbone is frozen and rows never mix
  (attention and LayerNorm act within a row), so each job's gradient reaches only its own
  prompt encoder, pooler and head: exactly the gradient of its separate run.

Only one job thread runs at a time (the others wait on a semaphore), and the group swaps each
job's RNG states (torch, CUDA, numpy, random) in and out around its turn, so every job draws
from its own random stream exactly as its separate run would (initialisation, data order,
evaluation loaders, head dropout). The backbone pass draws from the group's stream: with the
backbone's dropout at 0 a fused job's numbers equal its separate run's up to float noise
(``tests/test_fusion.py``); with dropout they are another draw of the same run.

A job whose training fails (a NaN/inf loss, caught by the run's own ``StopOnNonFiniteLoss``)
leaves the group and is recorded failed in its ``status.json``; the others go on.

What is fused is decided by :func:`unfusable` (per job) and :func:`fusion_key` (which jobs
may share a group); ``ptexp.sweep`` plans groups with them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("ptexp.fusion")

#: Methods whose trainable parameters all sit outside the backbone (prompts prepended through
#: ``inputs_embeds``, a head after it). LoRA and prefix tuning change the backbone's own layers.
FUSABLE_METHODS = ("p_tuning",)
#: Backbone architectures whose fused pass is tested equal to a separate run (BERT family,
#: MiniLM included): an encoder whose rows never interact, pooler read from position 0.
FUSABLE_MODEL_TYPES = ("bert",)
#: Modules that may train besides the prompt encoder and the head: each job keeps its own.
PER_JOB_BACKBONE_MODULES = ("pooler",)
#: Config keys jobs of one group may differ in: they only touch each job's own parameters,
#: optimizer, schedule, clipping and random stream.
FUSABLE_KEYS = (
    "prompt_encoder",
    "seed",
    "run_name",
    "trainer.learning_rate",
    "trainer.weight_decay",
    "trainer.max_grad_norm",
    "trainer.warmup_steps",
    "trainer.lr_scheduler_type",
    "trainer.adam_beta1",
    "trainer.adam_beta2",
    "trainer.adam_epsilon",
    "trainer.label_smoothing_factor",
    "trainer.data_seed",
    # Each job's own prompt-encoder init, optimizer param groups and stopping callback
    # (tests/test_recipe_levers.py: fused equals separate, a job that stops early leaves the group).
    "method.token_init",
    "method.head_learning_rate",
    "trainer.early_stopping_patience",
)


# -- what may fuse -------------------------------------------------------------------------------
def unfusable(cfg: DictConfig) -> str | None:
    """Why this job cannot train in a fused group, or None when it can. Reads the config only."""
    method = str(OmegaConf.select(cfg, "method.name", default="p_tuning"))
    if method not in FUSABLE_METHODS:
        return (
            f"method={method} changes the backbone's own layers or has no prompt encoder "
            f"(fused: {', '.join(FUSABLE_METHODS)})"
        )
    extra = [str(m) for m in (OmegaConf.select(cfg, "model.extra_trainable_modules", default=None) or [])]
    inside = [m for m in extra if m not in PER_JOB_BACKBONE_MODULES]
    if inside:
        return f"model.extra_trainable_modules={inside} trains layers inside the shared backbone"
    task = str(OmegaConf.select(cfg, "dataset.task", default="SEQ_CLS"))
    if task != "SEQ_CLS":
        return f"dataset.task={task} is not fused (fused and tested: SEQ_CLS)"
    trainer = cfg.trainer
    for key in ("fp16", "torch_compile", "gradient_checkpointing"):
        if bool(trainer.get(key, False)):
            return f"trainer.{key}=true is not supported in a fused group"
    if trainer.get("optim") in ("lomo", "adalomo"):
        return f"trainer.optim={trainer.get('optim')} steps inside backward"
    return None


def fusion_key(experiment: dict[str, Any]) -> str:
    """Jobs with the same key may share a group: their effective configs (``ptexp.sweep.
    experiment_config``) differ only in :data:`FUSABLE_KEYS`."""
    import copy
    import json

    data = copy.deepcopy(experiment)
    for dotted in FUSABLE_KEYS:
        *parents, leaf = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return json.dumps(data, sort_keys=True, default=str)


def backbone_type_reason(model_cfg: DictConfig) -> str | None:
    """Why the backbone cannot be fused (its architecture), from its config.json only."""
    from ptexp.modeling import load_backbone_config

    _, config = load_backbone_config(model_cfg)
    if config.model_type not in FUSABLE_MODEL_TYPES or config.is_decoder:
        return f"backbone type {config.model_type} is not fused (fused: {', '.join(FUSABLE_MODEL_TYPES)})"
    return None


# -- one job of a group -----------------------------------------------------------------------
@dataclass
class Member:
    """One job of a fused group: what ``ptexp.run.run`` would be called with."""

    cfg: DictConfig
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    tracking: Any = None  # ptexp.tracking.Tracking
    num_threads: int | None = None
    # Filled in while the group runs:
    metrics: dict[str, Any] | None = None
    error: BaseException | None = None
    wandb: Any = None
    trainer: Any = None
    group: FusionGroup | None = None
    _go: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    _request: _Request | None = None
    _rng: dict[str, Any] | None = None
    _done: bool = False
    _thread: threading.Thread | None = None


@dataclass
class _Request:
    kind: str  # "encode" or "backward"
    payload: dict[str, Any]
    result: Any = None
    error: BaseException | None = None


_local = threading.local()


def current_member() -> Member | None:
    """The fused job whose thread this is (None outside a fused group)."""
    return getattr(_local, "member", None)


# -- RNG isolation ----------------------------------------------------------------------------------
def _get_rng() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"torch": torch.get_rng_state(), "random": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


# -- the shared backbone ---------------------------------------------------------------------------
def _shared_backbone_class() -> type:
    import torch

    class SharedBackbone(torch.nn.Module):
        """Stands where a job's backbone was (``model.bert``). The group's one frozen copy of
        the embeddings and encoder is registered here under the backbone's own names (the
        same module objects in every job: named_parameters, num_parameters, ``to`` and
        ``train()`` behave as in a separate run); the job's own pooler is its own module.

        A training forward (grad on) goes through the group's fused pass; evaluation and
        prediction run the shared backbone directly, in the job's thread."""

        def __init__(self, group: FusionGroup, pooler: Any) -> None:
            super().__init__()
            shared = group.backbone
            for name, child in shared.named_children():
                if name != "pooler":
                    self.add_module(name, child)
            self.pooler = pooler
            self.config = shared.config
            # Set last: until then attribute lookups must not fall through to the backbone.
            object.__setattr__(self, "_group", group)  # not a submodule: one group, many jobs

        def __getattr__(self, name: str) -> Any:
            # What the backbone offers besides its modules (get_input_embeddings, dtype, ...).
            try:
                return super().__getattr__(name)
            except AttributeError:
                if "_group" not in self.__dict__:
                    raise
                return getattr(self.__dict__["_group"].backbone, name)

        def forward(
            self,
            input_ids: Any = None,
            attention_mask: Any = None,
            token_type_ids: Any = None,
            position_ids: Any = None,
            inputs_embeds: Any = None,
            **kwargs: Any,
        ) -> Any:
            from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

            group: FusionGroup = self.__dict__["_group"]
            if self.training and torch.is_grad_enabled():
                if input_ids is not None or position_ids is not None:
                    raise RuntimeError("a fused training forward takes inputs_embeds and default positions only")
                if kwargs.get("output_attentions") or kwargs.get("output_hidden_states"):
                    raise RuntimeError("a fused training forward returns no attentions or hidden states")
                sequence = group.encode(inputs_embeds, attention_mask, token_type_ids)
            else:
                shared = group.backbone
                shared.train(self.training)
                sequence = shared(
                    input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                    position_ids=position_ids,
                    inputs_embeds=inputs_embeds,
                    **kwargs,
                ).last_hidden_state
            pooled = self.pooler(sequence) if self.pooler is not None else None
            return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=sequence, pooler_output=pooled)

    return SharedBackbone


# -- the group -------------------------------------------------------------------------------------
#: On a CPU a backbone pass costs every position it holds, padding included (compute-bound); rows
#: share a pass while their padding stays within this share of their real positions. On a GPU
#: one pass for all (a step is launch-bound there: padding is nearly free, launches are not).
CPU_PADDING_WASTE = 0.05


def length_passes(requests: Sequence[_Request], waste: float) -> list[list[_Request]]:
    """The requests in passes of about one row length: longest first, a request joins the
    current pass while the pass's padded positions stay within ``1 + waste`` of its real ones."""
    ordered = sorted(requests, key=lambda r: r.payload["embeds"].shape[1], reverse=True)
    passes: list[list[_Request]] = []
    for r in ordered:
        if passes:
            current = [*passes[-1], r]
            rows = sum(x.payload["embeds"].shape[0] for x in current)
            real = sum(x.payload["embeds"].shape[0] * x.payload["embeds"].shape[1] for x in current)
            if rows * current[0].payload["embeds"].shape[1] <= (1 + waste) * real:
                passes[-1].append(r)
                continue
        passes.append([r])
    return passes


class FusionGroup:
    """Runs K members in lockstep threads over one backbone (see the module docstring)."""

    def __init__(self, members: Sequence[Member], padding_waste: float | None = None) -> None:
        self.members = list(members)
        #: How much padding rows of different lengths may add to share a backbone pass (see
        #: length_passes); None: the device's default (CPU_PADDING_WASTE on a CPU, one pass on a GPU).
        self.padding_waste = padding_waste
        self.backbone: Any = None  # the shared BertModel (its pooler detached)
        self._back = threading.Semaphore(0)
        self._rng: dict[str, Any] | None = None  # the fused pass's own random stream
        #: Jobs in each fused step (one rendezvous of the waiting jobs), in order.
        self.passes: list[int] = []
        #: Backbone forwards those steps took (more than the steps on a CPU: see length_passes).
        self.backbone_calls = 0
        #: Set by SIGUSR2 (SLURM's warning before a time limit or preemption): every job saves a
        #: checkpoint after its current step and stops; then the group hands the signal on.
        self.signalled = False

    # -- called from a member's thread ---------------------------------------------------
    def _yield(self, kind: str, **payload: Any) -> Any:
        member = current_member()
        assert member is not None, "fused requests come from a member's thread"
        member._request = _Request(kind, payload)
        self._back.release()
        member._go.acquire()
        request, member._request = member._request, None
        assert request is not None
        if request.error is not None:
            raise request.error
        return request.result

    def encode(self, inputs_embeds: Any, attention_mask: Any, token_type_ids: Any) -> Any:
        """The backbone's sequence output for this job's rows, from the group's fused pass."""
        import torch

        device = inputs_embeds.device.type
        autocast = (torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None, device)
        return self._yield(
            "encode", embeds=inputs_embeds, mask=attention_mask, token_type_ids=token_type_ids, autocast=autocast
        )

    def backward(self, loss: Any, **kwargs: Any) -> None:
        if kwargs:
            raise RuntimeError(f"a fused backward takes no arguments (got {sorted(kwargs)})")
        self._yield("backward", loss=loss)

    def share_backbone(self, model: Any) -> None:
        """Swap the job's freshly built backbone for the group's one copy (the first job's).
        Called in the member's thread right after ``build``; the job keeps its own pooler."""
        import torch

        base = model.get_base_model()
        prefix = base.base_model_prefix
        own = getattr(base, prefix)
        if own.config.model_type not in FUSABLE_MODEL_TYPES:
            raise RuntimeError(f"backbone type {own.config.model_type} is not fused ({FUSABLE_MODEL_TYPES})")
        pooler = getattr(own, "pooler", None)
        if self.backbone is None:
            own.pooler = None  # each job applies its own pooler after the shared pass
            for param in own.parameters():
                if param.requires_grad:
                    raise RuntimeError(f"{prefix}: a trainable parameter inside the shared backbone")
            self.backbone = own
        else:
            shared = dict(self.backbone.named_parameters())
            theirs = {n: p for n, p in own.named_parameters() if not n.startswith("pooler.")}
            same = set(shared) == set(theirs) and all(torch.equal(shared[n], theirs[n]) for n in shared)
            if not same:
                raise RuntimeError("this job's backbone weights differ from the group's: it cannot be fused")
            if any(p.requires_grad for p in theirs.values()):
                raise RuntimeError(f"{prefix}: a trainable parameter inside the shared backbone")
        setattr(base, prefix, _shared_backbone_class()(self, pooler))
        # peft keeps the word embeddings it prepends prompts to: the shared ones (same weights).
        model.word_embeddings = self.backbone.get_input_embeddings()

    # -- the coordinator (the calling thread) ------------------------------------------------
    def run(self, body: Callable[[Member], dict[str, Any]]) -> list[Member]:
        """Run ``body(member)`` for every member, fusing their training steps. Returns the
        members with ``metrics`` or ``error`` set; never raises for one member's failure."""
        import torch

        if self._rng is None:
            self._rng = _get_rng()
        outer = _get_rng()
        previous = self._catch_signal()
        for member in self.members:
            member._thread = threading.Thread(
                target=self._member_main, args=(member, body), name=f"fused-{member.run_dir.name}", daemon=True
            )
            member._rng = outer  # each job seeds itself in prepare, as a separate run does
            member._thread.start()
        try:
            for member in self.members:
                self._resume(member)
            while True:
                waiting = [m for m in self.members if not m._done]
                if not waiting:
                    break
                encode = [m for m in waiting if m._request and m._request.kind == "encode"]
                batch = encode or waiting
                _set_rng(self._rng)
                try:
                    with torch.enable_grad():
                        (self._encode if encode else self._backward)([m._request for m in batch])
                except Exception as err:  # noqa: BLE001  (each job of the pass fails with it)
                    for m in batch:
                        m._request.error = err
                self._rng = _get_rng()
                for member in batch:
                    self._resume(member)
        finally:
            _set_rng(outer)
        for member in self.members:
            member._thread.join()
        self._hand_on_signal(previous)
        return self.members

    def _member_main(self, member: Member, body: Callable[[Member], dict[str, Any]]) -> None:
        _local.member = member
        member._go.acquire()
        try:
            member.metrics = body(member)
        except BaseException as err:  # noqa: BLE001  (recorded; the group goes on)
            member.error = err
        finally:
            member._done = True
            self._back.release()

    def _catch_signal(self) -> Any:
        """SIGUSR2 while the group trains: each job's own CheckpointOnSignal cannot catch it
        (only the main thread may), so the group does, for all of them. Returns the handler it
        replaced (submitit's requeue on SLURM), or None off the main thread."""
        import signal

        if threading.current_thread() is not threading.main_thread():
            return None

        def caught(signum: int, frame: Any) -> None:
            log.warning("caught SIGUSR2: every fused job saves a checkpoint after its current step")
            self.signalled = True

        return signal.signal(signal.SIGUSR2, caught)

    def _hand_on_signal(self, previous: Any) -> None:
        """Restore the handler; after a SIGUSR2 (every job has saved and stopped), hand it on as
        a lone job's CheckpointOnSignal does: submitit requeues, and this launch job ends."""
        import signal

        if previous is None:
            return
        signal.signal(signal.SIGUSR2, previous)
        if not self.signalled:
            return
        if callable(previous):
            previous(signal.SIGUSR2, None)
        raise SystemExit("stopped by SIGUSR2 after every fused job saved a checkpoint")

    def _resume(self, member: Member) -> None:
        """Let one member's thread run until its next request (or its end), in its own RNG."""
        _set_rng(member._rng)
        member._go.release()
        self._back.acquire()
        member._rng = _get_rng()

    def _encode(self, requests: list[_Request]) -> None:
        """The backbone over every waiting job's rows, each row [prompts, tokens, padding]: one
        pass on a GPU; on a CPU, passes of rows of about one length (:func:`length_passes`)."""
        waste = self.padding_waste
        if waste is None:
            waste = CPU_PADDING_WASTE if requests[0].payload["embeds"].device.type == "cpu" else math.inf
        passes = length_passes(requests, waste)
        for chunk in passes:
            self._encode_pass(chunk)
        self.passes.append(len(requests))
        self.backbone_calls += len(passes)

    def _encode_pass(self, requests: list[_Request]) -> None:
        import torch
        import torch.nn.functional as F

        length = max(r.payload["embeds"].shape[1] for r in requests)
        embeds, masks, types = [], [], []
        for r in requests:
            e = r.payload["embeds"]
            rows, own = e.shape[0], e.shape[1]
            mask = r.payload["mask"]
            if mask is None:
                mask = torch.ones(rows, own, dtype=torch.long, device=e.device)
            kinds = r.payload["token_type_ids"]
            if kinds is None:
                kinds = torch.zeros(rows, own, dtype=torch.long, device=e.device)
            embeds.append(F.pad(e, (0, 0, 0, length - own)))
            masks.append(F.pad(mask, (0, length - own), value=0))
            types.append(F.pad(kinds, (0, length - own), value=0))
        dtype, device = requests[0].payload["autocast"]
        context = torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        self.backbone.train(True)
        with context:
            out = self.backbone(
                inputs_embeds=torch.cat(embeds),
                attention_mask=torch.cat(masks),
                token_type_ids=torch.cat(types),
                return_dict=True,
            ).last_hidden_state
        start = 0
        for r in requests:
            rows, own = r.payload["embeds"].shape[:2]
            r.result = out[start : start + rows, :own]
            start += rows

    def _backward(self, requests: list[_Request]) -> None:
        """One backward over the sum of the jobs' losses: each loss reaches only its own job's
        parameters (frozen backbone, rows that never mix)."""
        total = requests[0].payload["loss"]
        for r in requests[1:]:
            total = total + r.payload["loss"]
        total.backward()


# -- the Trainer of a fused job ------------------------------------------------------------------
_FUSED_CLASSES: dict[type, type] = {}


def fused_trainer_class(base: type) -> type:
    """``base`` (the task's Trainer class, a ``PTuningTrainer``) whose backward goes through
    the group, and whose W&B callback logs to the job's own W&B run (several are open in one
    process)."""
    if base in _FUSED_CLASSES:
        return _FUSED_CLASSES[base]

    class FusedJobTrainer(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            member = current_member()
            if member is None:
                raise RuntimeError("a fused job's Trainer is built inside its group's thread")
            self.fusion_member = member
            member.trainer = self
            if self.args.n_gpu > 1 or self.args.world_size > 1:
                # DataParallel replicas or other ranks would reach the group from threads and
                # processes that are not its jobs.
                raise RuntimeError(
                    "a fused group trains in one process on one device: make one GPU visible "
                    "(CUDA_VISIBLE_DEVICES) and launch without torch.distributed"
                )
            if getattr(self.accelerator, "scaler", None) is not None:
                raise RuntimeError("fp16 loss scaling is per job: a fused group cannot share one backward")
            group = member.group
            assert group is not None
            group.backbone.to(self.args.device)
            # Trainer.training_step calls self.accelerator.backward(loss): the one place where
            # the job's backward can join the group's.
            self.accelerator.backward = group.backward
            from transformers.integrations import WandbCallback

            from ptexp.trainer import CheckpointOnSignal

            if any(isinstance(c, CheckpointOnSignal) for c in self.callback_handler.callbacks):
                self.remove_callback(CheckpointOnSignal)
                self.add_callback(_group_checkpoint_on_signal(group))
            for callback in self.callback_handler.callbacks:
                if isinstance(callback, WandbCallback) and member.wandb is not None:
                    # The callback logs through the wandb module's global run, which is unset
                    # while several runs are open: give it this job's run instead.
                    callback._wandb = _RunAsModule(member.wandb)

    FusedJobTrainer.__name__ = FusedJobTrainer.__qualname__ = f"Fused{base.__name__}"
    _FUSED_CLASSES[base] = FusedJobTrainer
    return FusedJobTrainer


@functools.cache
def _group_checkpoint_on_signal_class() -> type:
    from ptexp.trainer import CheckpointOnSignal

    class GroupCheckpointOnSignal(CheckpointOnSignal):
        """CheckpointOnSignal for a job in a group's thread: the group catches SIGUSR2 (see
        ``FusionGroup._catch_signal``); the job saves after its current step (an epoch's last
        step: at the epoch's end, after its evaluation, as CheckpointOnSignal does) and stops."""

        def __init__(self, group: FusionGroup) -> None:
            super().__init__()
            self.group = group

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            pass  # the group holds the handler

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.received = self.group.signalled
            super().on_step_end(args, state, control, **kwargs)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.group.signalled:
                log.warning("stopped by SIGUSR2 after saving step %d", state.global_step)
                raise SystemExit(f"stopped by SIGUSR2 after saving step {state.global_step}")

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            pass

    return GroupCheckpointOnSignal


def _group_checkpoint_on_signal(group: FusionGroup) -> Any:
    """A :class:`GroupCheckpointOnSignal` (built lazily: ptexp.trainer imports torch)."""
    return _group_checkpoint_on_signal_class()(group)


class _FusedTask:
    """The run's task, except that it trains with the fused subclass of its own Trainer class:
    ``ptexp.run.fit`` asks the task for its Trainer (``Task.trainer_class``), nothing else."""

    def __init__(self, task: Any) -> None:
        self._task = task

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def trainer_class(self) -> type:
        return fused_trainer_class(self._task.trainer_class())


class _RunAsModule:
    """The ``wandb`` module as the Trainer's WandbCallback uses it, bound to one run."""

    def __init__(self, run: Any) -> None:
        import wandb

        self._module = wandb
        self.run = run

    def __getattr__(self, name: str) -> Any:
        if name in ("config", "summary", "log", "define_metric", "watch", "log_artifact"):
            return getattr(self.run, name)
        if name == "finish":
            return lambda *a, **k: None  # the job's own context finishes its run
        if name == "init":
            raise RuntimeError("a fused job's W&B run is opened by the group")
        return getattr(self._module, name)


# -- per-job logs -----------------------------------------------------------------------------------
class _ThreadFilter(logging.Filter):
    def __init__(self, keep: Callable[[int], bool]) -> None:
        super().__init__()
        self.keep = keep

    def filter(self, record: logging.LogRecord) -> bool:
        return self.keep(record.thread or 0)


@contextlib.contextmanager
def _member_logs(members: Sequence[Member]) -> Iterator[None]:
    """Each job's log lines in its own ``train.log`` (a separate run's log file), and not in
    the launching job's file (Hydra's handler)."""
    from ptexp.layout import LOG_FILE

    root = logging.getLogger()
    existing = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    formatter = (
        existing[0].formatter if existing else logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    )
    idents = lambda: {m._thread.ident for m in members if m._thread is not None}  # noqa: E731
    foreign = _ThreadFilter(lambda thread: thread not in idents())
    for handler in existing:
        handler.addFilter(foreign)
    added = []
    for member in members:
        member.run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(member.run_dir / LOG_FILE)
        handler.setFormatter(formatter)
        handler.addFilter(_ThreadFilter(lambda thread, m=member: m._thread is not None and thread == m._thread.ident))
        root.addHandler(handler)
        added.append(handler)
    try:
        yield
    finally:
        for handler in existing:
            handler.removeFilter(foreign)
        for handler in added:
            root.removeHandler(handler)
            handler.close()


# -- running a group --------------------------------------------------------------------------------
def train_member(member: Member) -> dict[str, Any]:
    """``ptexp.run.run`` for one job of a group, through its hooks: the task swapped for one
    whose Trainer fuses, the backbone shared after build, the job's W&B run opened as one of
    several (``reinit="create_new"``)."""
    from ptexp import run as stages

    assert member.group is not None, "train_member runs inside run_group"
    group = member.group

    def fused_task(prepared: Any) -> None:
        log.info("fused: %s trains in a group of %d", prepared.run_dir.name, len(group.members))
        prepared.task = _FusedTask(prepared.task)

    def check_fused(fitted: Any) -> None:
        if member.trainer is None or fitted.trainer is not member.trainer:
            raise RuntimeError(
                "ptexp.run.fit did not build its Trainer from the task's trainer_class(): the job trained unfused"
            )

    hooks = stages.Hooks(
        prepared=fused_task,
        built=lambda built: group.share_backbone(built.model),
        tracked=lambda wb: setattr(member, "wandb", wb),
        fitted=check_fused,
        wandb_reinit="create_new",
    )
    return stages.run(member.cfg, member.run_dir, member.overrides, member.tracking, member.num_threads, hooks=hooks)


def isolated(metric: str) -> Callable[[Member], dict[str, Any] | None]:
    """A :func:`run_group` body for sweep jobs: each job records its status.json (running,
    completed, or failed with the error) as a lone sweep job does (``ptexp.jobs.run_isolated``),
    so a failing job is recorded and leaves the group while the others go on. ``metric`` is
    the one the sweep's progress shows."""
    from ptexp.jobs import run_isolated
    from ptexp.layout import METRICS_FILE
    from ptexp.outputs import read_json

    def body(member: Member) -> dict[str, Any] | None:
        run_isolated(member.run_dir, lambda: train_member(member), metric)
        metrics = member.run_dir / METRICS_FILE
        return read_json(metrics) if metrics.is_file() else None

    return body


def run_group(
    members: Sequence[Member],
    body: Callable[[Member], dict[str, Any]] | None = None,
    log_files: bool = False,
    padding_waste: float | None = None,
) -> FusionGroup:
    """Train ``members`` as one fused group; each ends with ``metrics`` or ``error`` set (a
    failing job never raises here). ``body`` trains one job (default :func:`train_member`;
    the sweep wraps it to record the job's status.json). ``log_files``: each job's log lines
    also go to its own ``train.log``, as Hydra gives a separate job (the sweep sets it).
    ``padding_waste``: see :class:`FusionGroup` (``math.inf``: one pass for all rows)."""
    group = FusionGroup(members, padding_waste)
    for member in members:
        member.group = group
    started = time.perf_counter()
    logs = _member_logs(members) if log_files else contextlib.nullcontext()
    with logs:
        group.run(body or train_member)
    failed = [m.run_dir.name for m in members if m.error is not None]
    log.info(
        "fused group of %d jobs: %d fused steps (%d job-steps, %d backbone passes) in %.1f s%s",
        len(members),
        len(group.passes),
        sum(group.passes),
        group.backbone_calls,
        time.perf_counter() - started,
        f"; failed: {', '.join(failed)}" if failed else "",
    )
    return group
