"""One Accelerate training engine for every dpr_hf model (retriever and reader).

The engine owns the loop: data order, optimisation, precision, checkpoints, resumption, evaluation and the final
save. A `TrainingTask` owns everything model-specific. To train something new, subclass `TrainingTask`:

```python
class MyTask(TrainingTask):
    def models(self) -> dict[str, nn.Module]: ...  # trained modules by name, e.g. {"reader": reader}
    def train_dataset(self) -> Dataset: ...  # map-style; the engine shuffles it with a seeded sampler
    def data_collator(self) -> Callable: ...  # examples -> batch (nested dicts of tensors are moved to device)
    def compute_loss(self, models, batch) -> Tensor: ...  # `models`: the prepared (DDP-wrapped) modules
    def evaluate(self, models, accelerator) -> dict[str, float]: ...  # optional; `models` are unwrapped
    def save(self, models, output_dir) -> None: ...  # `models` unwrapped; write save_pretrained + tokenizer


Trainer(MyTask(...), TrainingArguments(output_dir="runs/x", ...)).train()
```

Output folder: `checkpoints/step_N/` (`accelerator.save_state` + `trainer_state.json`, written to a temporary
folder then renamed; the last `save_total_limit` kept), `best/` (the task's save of the best evaluation),
the task's final save at the top level (the best model when `load_best_model_at_end`), `training_args.json`,
`metrics.json` and `log.jsonl` (one JSON line per logged step/evaluation). With `report_to`, accelerate's
trackers get the same records (`train/loss`, `train/learning_rate`, `eval/<metric>`) and the settings, under
`runs/`. The task names the metric that picks `best/` (`TrainingTask.metric_for_best_model`) unless the
arguments do; `training_args.json` records the one used.

Over ~400 lines on purpose: the loop, checkpointing and resumption share state that a split would pass around.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, broadcast_object_list, set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..atomic import replace_folder, staged_file, staged_folder
from .arguments import TrainingArguments, parse_recipe, resolve_model_path

# parse_recipe / resolve_model_path live in arguments.py; code written against engine.py keeps importing them here
__all__ = [
    "Trainer",
    "TrainerState",
    "TrainingArguments",
    "TrainingTask",
    "parse_recipe",
    "resolve_model_path",
]

CHECKPOINT_PREFIX = "step_"
FUSED_ADAMW_DEVICES = ("cpu", "cuda", "mps", "xpu")  # where torch's AdamW has a fused kernel
STATE_FILE = "trainer_state.json"
TRACKING_PROJECT = "runs"  # trackers log under output_dir/runs (tensorboard: its event files)


class TrainingTask:
    """What the engine trains. Subclasses implement the model-specific parts; see the module docstring.

    `args` (a dataclass of task settings, or None) is written to `training_args.json` next to the engine's.
    `metric_for_best_model` / `greater_is_better`: the evaluation metric that picks `best/` when the training
    arguments name none, and its direction.
    """

    args: Any = None
    metric_for_best_model: str = "loss"
    greater_is_better: bool = False

    def models(self) -> dict[str, nn.Module]:
        """The trained modules by name (the optimizer covers all their parameters). Called once."""
        raise NotImplementedError

    def train_dataset(self) -> Dataset:
        """Map-style training dataset (e.g. a `datasets.Dataset`); the engine shuffles it with a seeded sampler."""
        raise NotImplementedError

    def data_collator(self) -> Callable[[list], Any]:
        """Turns a list of examples into a batch. If it has `set_epoch(epoch)`, the engine calls it each epoch."""
        raise NotImplementedError

    def compute_loss(self, models: dict[str, nn.Module], batch: Any) -> torch.Tensor:
        """Scalar loss of one batch; `models` are the prepared modules (call them, do not unwrap them)."""
        raise NotImplementedError

    def training_step(
        self, models: dict[str, nn.Module], batch: Any, accelerator: Accelerator
    ) -> torch.Tensor:
        """Forward and backward of one batch; returns the detached loss. Override for custom backward passes
        (e.g. gradient caching), always through `accelerator.backward` for the loss."""
        loss = self.compute_loss(models, batch)
        accelerator.backward(loss)
        return loss.detach()

    def evaluate(self, models: dict[str, nn.Module], accelerator: Accelerator) -> dict[str, float]:
        """Validation metrics (empty: no evaluation). Called on every process with the unwrapped modules in eval
        mode under `torch.no_grad`; the main process's result is used everywhere, so a task may compute only on
        the main process and return `{}` elsewhere."""
        return {}

    def save(self, models: dict[str, nn.Module], output_dir: Path) -> None:
        """Write the trained model(s) to `output_dir` (save_pretrained + tokenizer). Main process only."""
        raise NotImplementedError


@dataclass
class TrainerState:
    """What a checkpoint needs besides accelerate's state, as JSON: position, best evaluation, history."""

    global_step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    log_history: list[dict] = field(default_factory=list)


def _checkpoints(output_dir: Path) -> list[Path]:
    folders = (output_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*")
    done = [f for f in folders if f.name[len(CHECKPOINT_PREFIX) :].isdigit() and (f / STATE_FILE).exists()]
    return sorted(done, key=lambda f: int(f.name[len(CHECKPOINT_PREFIX) :]))


def _to_jsonable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)


def _tracker_metrics(record: dict) -> dict[str, float]:
    """A log record as tracker scalars, named as transformers' trackers name them (`train/loss`, `eval/em`)."""
    return {
        (f"eval/{key[len('eval_') :]}" if key.startswith("eval_") else f"train/{key}"): value
        for key, value in record.items()
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


class Trainer:
    """Trains `task` with `args`: AdamW, linear warmup/decay, clipping, mixed precision, gradient accumulation,
    seeded data order, atomic checkpoints with exact resumption, periodic evaluation and best-model selection.

    Works unchanged under `accelerate launch` (DDP over several processes/devices).
    """

    def __init__(self, task: TrainingTask, args: TrainingArguments):
        if not args.output_dir:
            raise ValueError("TrainingArguments.output_dir is required")
        metric = args.metric_for_best_model or task.metric_for_best_model
        if args.greater_is_better is not None:
            greater = args.greater_is_better
        else:
            greater = task.greater_is_better if metric == task.metric_for_best_model else False
        self.task = task
        # resolved, so that training_args.json states what picked best/
        self.args = args = dataclasses.replace(args, metric_for_best_model=metric, greater_is_better=greater)
        self.output_dir = Path(args.output_dir)
        # several processes without a GPU (e.g. `torchrun --nproc_per_node 2` on CPUs): accelerate goes
        # multi-CPU (gloo) only when told to use the CPU, else every process would think it is alone
        several = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accelerator = Accelerator(
            cpu=args.use_cpu or (several and not torch.cuda.is_available()),
            mixed_precision=args.mixed_precision,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
            log_with=args.report_to or None,
            project_dir=str(self.output_dir),
        )
        missing = sorted(set(args.report_to) - {"all"} - {str(t) for t in self.accelerator.log_with})
        if missing:  # accelerate drops a tracker whose package is missing without a word
            raise ImportError(f"report_to={missing}: not installed (e.g. `pip install {' '.join(missing)}`)")
        self.state = TrainerState()

    # ----------------------------------------------------------------------------------------------------- setup
    def _optimizer(self, models: dict[str, nn.Module]) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for model in models.values():
            for name, param in model.named_parameters():
                if param.requires_grad:
                    no_decay_param = param.ndim < 2 or "norm" in name.lower()  # biases and LayerNorm weights
                    (no_decay if no_decay_param else decay).append(param)
        # fused: one kernel updates every parameter (torch has them for CPU, CUDA, MPS and XPU); elsewhere the loop
        fused = self.args.optim == "adamw_torch_fused" and self.accelerator.device.type in FUSED_ADAMW_DEVICES
        return torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.args.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.args.learning_rate,
            betas=(self.args.adam_beta1, self.args.adam_beta2),
            eps=self.args.adam_epsilon,
            fused=fused or None,
        )

    def _write_json(self, name: str, payload: Any) -> None:
        if self.accelerator.is_main_process:
            with staged_file(self.output_dir / name) as tmp:
                tmp.write_text(json.dumps(payload, indent=2, default=_to_jsonable) + "\n", encoding="utf-8")

    def _log(self, record: dict) -> None:
        self.state.log_history.append(record)
        self.accelerator.log(_tracker_metrics(record), step=record["step"])
        if self.accelerator.is_main_process:
            with open(self.output_dir / "log.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------------------------- checkpoints and best
    def _save_checkpoint(self) -> None:
        """accelerate state + trainer state into a temporary folder, renamed when complete; prune old ones."""
        root = self.output_dir / "checkpoints"
        final = root / f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        main, staging = self.accelerator.is_main_process, root / f"tmp-{final.name}"
        # every process writes its part of the state into the folder the main process stages
        with staged_folder(final, staging=staging) if main else nullcontext():
            self.accelerator.wait_for_everyone()
            self.accelerator.save_state(str(staging))
            self.accelerator.wait_for_everyone()
            if main:
                (staging / STATE_FILE).write_text(
                    json.dumps(dataclasses.asdict(self.state)), encoding="utf-8"
                )
        if main:
            for old in _checkpoints(self.output_dir)[: -self.args.save_total_limit or None]:
                shutil.rmtree(old)
        self.accelerator.wait_for_everyone()

    def _resume(self) -> None:
        checkpoints = _checkpoints(self.output_dir)
        if not checkpoints:
            self.accelerator.print(
                f"no checkpoint in {self.output_dir / 'checkpoints'}: starting from scratch"
            )
            return
        self.accelerator.load_state(str(checkpoints[-1]))
        self.state = TrainerState(**json.loads((checkpoints[-1] / STATE_FILE).read_text(encoding="utf-8")))
        self.accelerator.print(f"resumed from {checkpoints[-1]} (step {self.state.global_step})")

    def _is_better(self, metrics: dict[str, float]) -> bool:
        key = self.args.metric_for_best_model
        if key not in metrics:
            raise KeyError(
                f"metric_for_best_model={key!r} is not among the evaluation metrics {sorted(metrics)}"
            )
        best = self.state.best_metric
        if best is None:
            return True
        return metrics[key] > best if self.args.greater_is_better else metrics[key] < best

    def _unwrapped(self, models: dict[str, nn.Module]) -> dict[str, nn.Module]:
        return {name: self.accelerator.unwrap_model(model) for name, model in models.items()}

    def _save_models(self, models: dict[str, nn.Module], target: Path) -> None:
        """The task's save into a temporary folder, renamed when complete (main process only)."""
        if self.accelerator.is_main_process:
            with staged_folder(target, staging=target.parent / f".tmp-{target.name}") as tmp:
                self.task.save(self._unwrapped(models), tmp)
        self.accelerator.wait_for_everyone()

    def _evaluate(self, models: dict[str, nn.Module]) -> dict[str, float]:
        for model in models.values():
            model.eval()
        with torch.no_grad(), self.accelerator.autocast():
            metrics = self.task.evaluate(self._unwrapped(models), self.accelerator)
        for model in models.values():
            model.train()
        metrics = broadcast_object_list([metrics])[0]  # the main process's metrics decide everywhere
        if not metrics:
            return metrics
        self._log({"step": self.state.global_step, **{f"eval_{k}": v for k, v in metrics.items()}})
        if self._is_better(metrics):
            self.state.best_metric = metrics[self.args.metric_for_best_model]
            self.state.best_step = self.state.global_step
            self._save_models(models, self.output_dir / "best")
        return metrics

    # ------------------------------------------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Run training to the end (resuming if asked); returns the final metrics (also in metrics.json)."""
        args, accelerator, task = self.args, self.accelerator, self.task
        set_seed(args.seed)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        settings = {
            **(dataclasses.asdict(task.args) if task.args is not None else {}),
            **dataclasses.asdict(args),
        }
        self._write_json("training_args.json", settings)
        # trackers take flat scalars (tensorboard's hparams: bool, int, float or str)
        accelerator.init_trackers(
            TRACKING_PROJECT,
            config={k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in settings.items()},
        )
        named_models = task.models()
        names = list(named_models)
        optimizer = self._optimizer(named_models)
        collator = task.data_collator()
        loader = DataLoader(
            task.train_dataset(),
            batch_size=args.per_device_train_batch_size,
            shuffle=True,
            # its own generator: starting an epoch then draws nothing from the global RNG (dropout), so a resumed
            # run continues with exactly the random state the checkpoint saved
            generator=torch.Generator().manual_seed(args.seed),
            collate_fn=collator,
            num_workers=args.dataloader_num_workers,
        )
        *prepared, optimizer, loader = accelerator.prepare(*named_models.values(), optimizer, loader)
        models = dict(zip(names, prepared, strict=True))
        steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
        total_steps = (
            args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
        )
        # not prepared: accelerate would step it once per process; registered so checkpoints include it
        scheduler = get_linear_schedule_with_warmup(optimizer, args.warmup_steps, total_steps)
        accelerator.register_for_checkpointing(scheduler)
        if args.resume:
            self._resume()
        elif _checkpoints(self.output_dir):
            raise FileExistsError(
                f"{self.output_dir} holds checkpoints: pass --resume, or use a new output_dir"
            )
        elif accelerator.is_main_process:
            (self.output_dir / "log.jsonl").unlink(missing_ok=True)

        for model in models.values():
            model.train()
        if args.eval_on_start and self.state.global_step == 0:
            self._evaluate(models)
        progress = tqdm(
            total=total_steps,
            initial=self.state.global_step,
            desc="training",
            disable=args.disable_tqdm or not accelerator.is_local_main_process,
        )
        start_time, start_step = time.time(), self.state.global_step
        running_loss, running_batches = torch.zeros((), device=accelerator.device), 0
        epoch = self.state.global_step // steps_per_epoch
        while self.state.global_step < total_steps:
            loader.set_epoch(epoch)
            if hasattr(collator, "set_epoch"):
                collator.set_epoch(epoch)
            skip = (self.state.global_step - epoch * steps_per_epoch) * args.gradient_accumulation_steps
            for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
                with accelerator.accumulate(*models.values()):
                    running_loss += task.training_step(models, batch, accelerator)
                    running_batches += 1
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(
                            [p for m in models.values() for p in m.parameters()], args.max_grad_norm
                        )
                    optimizer.step()
                    if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                if not accelerator.sync_gradients:
                    continue
                self.state.global_step += 1
                step = self.state.global_step
                progress.update(1)
                if step % args.logging_steps == 0 or step == total_steps:
                    loss = accelerator.reduce(running_loss, reduction="mean").item() / running_batches
                    record = {"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": round(loss, 6)}
                    record["learning_rate"] = scheduler.get_last_lr()[0]
                    self._log(record)
                    progress.set_postfix(loss=f"{loss:.4f}", lr=f"{record['learning_rate']:.2e}")
                    running_loss.zero_()
                    running_batches = 0
                end_of_epoch = step % steps_per_epoch == 0
                if (args.eval_steps > 0 and step % args.eval_steps == 0) or (
                    args.eval_steps <= 0 and end_of_epoch
                ):
                    self._evaluate(models)
                if args.save_steps > 0 and step % args.save_steps == 0 and step < total_steps:
                    self._save_checkpoint()
                if step >= total_steps:
                    break
            epoch += 1
        progress.close()
        metrics = self._finish(models, start_time, start_step)
        # DDP's gradient reducer holds the gloo process group; were it the last holder, freeing it later (with the
        # GIL held) would join gloo's worker threads while they wait for the GIL to free finished work: a hang at
        # exit (pytorch#56297). Free the wrappers first, so that end_training destroys the group itself.
        del models, prepared
        accelerator.free_memory()
        gc.collect()
        accelerator.end_training()
        return metrics

    def _finish(self, models: dict[str, nn.Module], start_time: float, start_step: int) -> dict[str, Any]:
        """Final save (the best evaluation if asked and available) and metrics.json."""
        step = self.state.global_step
        done = [
            r for r in self.state.log_history if r["step"] == step and any(k.startswith("eval_") for k in r)
        ]
        if done:
            last_eval = {k: v for k, v in done[-1].items() if k.startswith("eval_")}
        else:
            last_eval = {f"eval_{k}": v for k, v in self._evaluate(models).items()}
        best = self.output_dir / "best"
        use_best = self.args.load_best_model_at_end and self.state.best_step is not None and best.exists()
        if self.accelerator.is_main_process:
            # assemble the final model(s) aside, then move each entry into place
            final = self.output_dir / ".tmp-final"
            if final.exists():
                shutil.rmtree(final)
            if use_best:
                shutil.copytree(best, final)
            else:
                final.mkdir()
                self.task.save(self._unwrapped(models), final)
            for entry in list(final.iterdir()):
                replace_folder(entry, self.output_dir / entry.name)
            final.rmdir()
        self.accelerator.wait_for_everyone()
        source_step = self.state.best_step if use_best else step
        losses = [r["loss"] for r in self.state.log_history if "loss" in r]
        elapsed = time.time() - start_time
        metrics = {
            "global_step": self.state.global_step,
            "train_loss": losses[-1] if losses else None,
            "train_runtime_s": round(elapsed, 2),
            "train_steps_per_s": round((self.state.global_step - start_step) / max(elapsed, 1e-9), 4),
            "saved_model_step": source_step,
            "best_step": self.state.best_step,
            f"best_{self.args.metric_for_best_model}": self.state.best_metric,
            **last_eval,
            "log_history": self.state.log_history,
        }
        self._write_json("metrics.json", metrics)
        return metrics
