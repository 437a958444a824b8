"""The training loop every recipe runs: a nanoGPT-style loop on `accelerate`.

A recipe (llasa.train.lm, llasa.train.codec) builds its models, optimisers and schedulers,
prepares them with the accelerator it is handed, and supplies the batch of a step, the step
itself (forward, backward and its optimisers' steps: one optimiser, or a GAN's two) and an
evaluation. This module does the rest, the same way for every recipe:

- device, precision and processes: accelerate (`accelerate launch` or torchrun for several);
- batches: the batch of step s is a pure function of (seed, s, process), so a DataLoader over
  the steps from where the run stands is all a resumed run needs to read what it would have;
- checkpoints: ``output_dir/checkpoint-N/`` holds the recipe's loadable model, ``train_state/``
  (``accelerator.save_state``: weights, optimisers, schedulers, every RNG) and ``progress.json``
  (the step and the run's counters), written last: a checkpoint without it is incomplete and
  ignored. A run killed at any moment, even while saving, resumes from the newest complete
  one exactly as if it had not stopped;
- the log: a JSONL record every ``log_every`` steps (means over them, throughput, the run's
  counters) and at evaluations, cut back to the resumed step on resume, and its plot.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from llasa.extras import MissingExtra, pyplot
from llasa.hardware import resolve_precision
from llasa.train.args import OptimArgs, TrainArgs

STATE_DIR = "train_state"
PROGRESS_FILE = "progress.json"
LOG_FILE = "train_log.jsonl"
CONFIG_FILE = "train_config.json"
PLOT_FILE = "curve.png"


class Recipe:
    """What a recipe gives the loop; a subclass builds everything in ``__init__(config,
    accelerator, resumed)``, where ``resumed`` is the progress of the checkpoint the run
    resumes from (None for a new run), before that checkpoint's state is loaded."""

    name = "train"
    """shown on the progress bar"""
    final_dir = "final"
    """the folder of the output directory that receives the model of a finished run"""
    counters: tuple[str, ...] = ()
    """`train_step` stats summed over processes and steps and kept as run totals (e.g. tokens):
    saved in progress.json, logged with their rate per second"""
    plot_x = "step"
    """the log field on the plot's horizontal axis"""
    plot_panels: dict[str, tuple[str, ...]] = {}
    """one panel of the plot per title, with the log fields drawn in it"""

    def start(self) -> dict[str, Any]:
        """The progress a run starts from when no checkpoint resumes it."""
        return {"step": 0}

    def batch(self, step: int) -> Any:
        """This process's batch of ``step``: a function of (seed, step, process) only."""
        raise NotImplementedError

    def train_step(self, batch: Any, step: int) -> dict[str, torch.Tensor | float]:
        """One step (forward, backward, the optimisers' and schedulers' steps); returns stats,
        tensors left on the device (the loop syncs only when it logs)."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Held-out figures (every process calls it; reduce across them)."""
        return {}

    def export(self, directory: Path) -> None:
        """Write the loadable model into ``directory`` (every process calls it: sharded
        weights are gathered; the main process writes)."""
        raise NotImplementedError

    def progress(self) -> dict[str, Any]:
        """The recipe's own fields of progress.json (read back as ``resumed``)."""
        return {}


def make_scheduler(optimizer: torch.optim.Optimizer, optim: OptimArgs, steps: int, *, start: int = 0):
    """``transformers.get_scheduler`` over ``steps`` steps: linear warmup, then decay to
    ``min_lr_ratio`` of the peak; ``start`` places it at that step (a continued run)."""
    from transformers import get_scheduler

    warmup = optim.warmup_steps if optim.warmup_steps is not None else int(optim.warmup_ratio * steps)
    warmup = min(warmup, steps - 1)  # a schedule no longer than its warmup would never decay (and divides by 0)
    floor = {"cosine_with_min_lr": {"min_lr_rate": optim.min_lr_ratio},
             "polynomial": {"lr_end": optim.lr * optim.min_lr_ratio, "power": 1.0}}[optim.scheduler]  # fmt: skip
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])  # what a scheduler starting past step 0 reads
    return get_scheduler(optim.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=steps,
                         scheduler_specific_kwargs={**floor, "last_epoch": start - 1})  # fmt: skip


class TrainLog:
    """The training curve: one JSON record per line, appended as the run goes."""

    def __init__(self, path: Path):
        self.path = path

    def records(self) -> list[dict]:
        """The complete records (a line cut short by a killed process is not one)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out

    def cut(self, step: int) -> None:
        """Drop the records past ``step``, where a resumed run starts: it logs them again."""
        kept = [r for r in self.records() if r["step"] <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def append(self, record: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def plot(self, png: Path, *, x: str, panels: dict[str, tuple[str, ...]]) -> Path:
        """One panel per title with its fields against ``x`` (a record without ``x`` takes the
        last one seen); evaluations marked. Needs matplotlib."""
        plt = pyplot("training curves")
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
        records = self.records()
        for axis, (title, keys) in zip(axes[0], panels.items()):
            for key in keys:
                points, at = [], None
                for record in records:
                    at = record.get(x, at)
                    if key in record and at is not None and math.isfinite(record[key]):
                        points.append((at, record[key]))
                if points:
                    axis.plot(*zip(*points), label=key, marker="o" if key.startswith("eval_") else None)
            axis.set(xlabel=x, title=title)
            axis.grid(alpha=0.3)
            if axis.lines:
                axis.legend()
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        plt.close(fig)
        return png


class Checkpoints:
    """The ``checkpoint-N`` folders of an output directory.

    Not accelerate's automatic checkpoint naming: it deletes the oldest checkpoint before it
    writes the new one, so a process killed while saving could leave none complete. Here old
    ones go only once a new one is complete, and the names carry the step."""

    pattern = re.compile(r"checkpoint-(\d+)")

    def __init__(self, output_dir: Path, keep: int):
        self.output_dir, self.keep = output_dir, keep

    def path(self, step: int) -> Path:
        return self.output_dir / f"checkpoint-{step}"

    def _all(self) -> list[Path]:
        found = [p for p in self.output_dir.glob("checkpoint-*") if self.pattern.fullmatch(p.name)]
        return sorted(found, key=lambda p: int(self.pattern.fullmatch(p.name)[1]))

    def complete(self) -> list[Path]:
        return [p for p in self._all() if (p / PROGRESS_FILE).is_file() and (p / STATE_DIR).is_dir()]

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def prune(self) -> None:
        """Delete all but the newest ``keep`` complete checkpoints."""
        kept = set(self.complete()[-self.keep :])
        for path in self._all():
            if path not in kept:
                shutil.rmtree(path, ignore_errors=True)

    def clear(self) -> None:
        for path in self._all():
            shutil.rmtree(path, ignore_errors=True)


class _Window:
    """The stats of the steps since the last record, summed on the device: nothing is read
    back to the host (a sync on a GPU) until a record is made. Its clock counts training time
    only: the loop pauses it while evaluating and saving."""

    def __init__(self, counters: tuple[str, ...], totals: dict[str, Any], device: torch.device):
        self.counters, self.totals, self.device = counters, totals, device
        self.pending = {name: 0 for name in counters}  # counted since they were last added to totals
        self.counted = {name: 0.0 for name in counters}  # counted since the last record
        self.sums: dict[str, torch.Tensor] = {}
        self.seen: dict[str, int] = {}  # steps that gave each stat (a GAN's only once it starts)
        self.steps, self.seconds, self.clock = 0, 0.0, time.perf_counter()

    def pause_clock(self) -> None:
        self.seconds += time.perf_counter() - self.clock

    def resume_clock(self) -> None:
        self.clock = time.perf_counter()

    def add(self, stats: dict[str, Any]) -> None:
        self.steps += 1
        for name, value in stats.items():
            if name in self.counters:
                self.pending[name] = self.pending[name] + value
                continue
            value = value.detach() if torch.is_tensor(value) else torch.tensor(value, dtype=torch.float64)
            self.sums[name] = self.sums.get(name, 0) + value.to(self.device, torch.float64)
            self.seen[name] = self.seen.get(name, 0) + 1

    def settle(self, accelerator) -> None:
        """Add the counters' pending counts, summed over processes, to the run totals."""
        if not self.counters:
            return
        pending = torch.tensor([float(self.pending[n]) for n in self.counters], dtype=torch.float64, device=self.device)
        for name, count in zip(self.counters, accelerator.reduce(pending, "sum").tolist()):
            self.totals[name] = self.totals.get(name, 0) + int(count)
            self.counted[name] += count
            self.pending[name] = 0

    def record(self, accelerator) -> dict[str, float]:
        """Means over the window's steps and the processes, the counters' totals and rates;
        then a new window starts."""
        self.pause_clock()
        self.settle(accelerator)
        names = sorted(self.sums)
        out: dict[str, float] = {}
        if names:
            means = torch.stack([self.sums[n] / self.seen[n] for n in names])
            out.update(zip(names, accelerator.reduce(means, "mean").tolist()))
        seconds = max(self.seconds, 1e-9)
        for name in self.counters:
            out[name] = self.totals[name]
            out[f"{name}_per_s"] = self.counted[name] / seconds
            self.counted[name] = 0.0
        out.update(interval_s=round(seconds, 4), steps_per_s=self.steps / seconds)
        self.sums, self.seen, self.steps, self.seconds = {}, {}, 0, 0.0
        self.resume_clock()
        return out


class _Steps(torch.utils.data.Dataset):
    """Batches indexed by step: what the DataLoader reads in the order of its step sampler."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def __getitem__(self, step: int):
        return self.recipe.batch(step)


def make_accelerator(args: TrainArgs, **options):
    """The ``accelerate.Accelerator`` of a run: its device, processes (from the launcher's
    environment) and ``args.mixed_precision`` resolved for the hardware; ``options`` go to it."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    precision = resolve_precision(args.mixed_precision, "cuda" if cuda else "cpu", where="train.mixed_precision")
    # accelerate keeps one state per process and refuses a second precision in it; a process may
    # train several times (a notebook, the tests), each with its own (the process group stays)
    AcceleratorState._reset_state()
    # cpu=True is what lets accelerate form a gloo process group under torchrun on CPU-only hosts
    accelerator = Accelerator(mixed_precision=precision, cpu=not cuda, **options)
    accelerator.print(f"precision: {'fp32' if precision == 'no' else precision} (train.mixed_precision: {args.mixed_precision})")
    return accelerator


def fit(build: Callable[..., Recipe], config, *, resume: bool = True, max_steps: int | None = None,
        **accelerator_options) -> Path:  # fmt: skip
    """Train ``build(config, accelerator, resumed)``'s recipe to ``config.train.max_steps`` (or
    stop at ``max_steps``, resuming later); returns the finished model's folder (or the last
    checkpoint of a run stopped early). ``config`` has ``output_dir`` and ``train``;
    ``accelerator_options`` go to ``accelerate.Accelerator``. Without ``resume`` the output
    directory's checkpoints and log are deleted first."""
    from accelerate.utils import set_seed

    args, out = config.train, Path(config.output_dir)
    accelerator = make_accelerator(args, **accelerator_options)
    main = accelerator.is_main_process
    checkpoints, log = Checkpoints(out, args.keep_checkpoints), TrainLog(out / LOG_FILE)
    if not resume and main:
        checkpoints.clear()
        log.path.unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    latest = checkpoints.latest() if resume else None
    resumed = json.loads((latest / PROGRESS_FILE).read_text()) if latest else None
    set_seed(args.seed)
    recipe = build(config, accelerator, resumed)
    if latest is not None:
        try:
            accelerator.load_state(str(latest / STATE_DIR))
        except (RuntimeError, FileNotFoundError, KeyError, ValueError) as exc:
            raise RuntimeError(f"{latest}: its training state does not fit this recipe (another model, optimiser or "
                               f"version wrote it: {exc}); use a new output_dir, or --no-resume") from exc  # fmt: skip
        accelerator.print(f"resuming from {latest} at step {resumed['step']}")
    progress = dict(resumed or recipe.start())
    step = progress["step"]
    stop = args.max_steps if max_steps is None else min(args.max_steps, max_steps)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2))
        log.cut(step)

    def plot() -> None:
        try:
            log.plot(out / PLOT_FILE, x=recipe.plot_x, panels=recipe.plot_panels)
        except MissingExtra as exc:
            accelerator.print(f"no {PLOT_FILE} ({exc}); {LOG_FILE} has every figure")

    def save() -> None:
        path = checkpoints.path(step)
        if main:
            shutil.rmtree(path, ignore_errors=True)  # an incomplete one, left by a killed run
        accelerator.wait_for_everyone()
        accelerator.save_state(str(path / STATE_DIR))
        recipe.export(path)
        if main:
            (path / PROGRESS_FILE).write_text(json.dumps({**progress, "step": step, **recipe.progress()}))
            checkpoints.prune()
            plot()
        accelerator.wait_for_everyone()

    batches = torch.utils.data.DataLoader(
        _Steps(recipe), sampler=range(step, stop), batch_size=None, num_workers=args.data_workers,
        pin_memory=accelerator.device.type == "cuda",
        generator=torch.Generator(),  # not the global one: iterating must not move the RNG a checkpoint restores
    )  # fmt: skip
    window = _Window(recipe.counters, progress, accelerator.device)
    bar = tqdm(total=stop, initial=step, desc=recipe.name, unit="step", disable=not main)
    for batch in batches:
        window.add(recipe.train_step(batch, step))
        step += 1
        bar.update(1)
        record = {}
        if step % args.log_every == 0 or step == stop:
            record.update(window.record(accelerator))
            shown = [k for keys in recipe.plot_panels.values() for k in keys if k in record][:2]
            bar.set_postfix({k: f"{record[k]:.3g}" for k in shown})
        window.pause_clock()  # evaluating and saving are not training time
        if step % args.eval_every == 0 or step == stop:
            record.update(recipe.evaluate())
        if record and main:
            log.append({"step": step, **record})
        if step % args.save_every == 0 or step == stop:
            window.settle(accelerator)
            save()
        window.resume_clock()
    bar.close()

    final = checkpoints.path(step)
    if step >= args.max_steps:
        final = out / recipe.final_dir
        if main:
            shutil.rmtree(final, ignore_errors=True)
            shutil.copytree(checkpoints.path(step), final, ignore=shutil.ignore_patterns(STATE_DIR))
            plot()
    accelerator.wait_for_everyone()
    return final
