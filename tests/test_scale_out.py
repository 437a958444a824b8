"""Scale-out: the launcher configs in configs/accelerate and configs/deepspeed are what
`accelerate launch` accepts, and DDP, FSDP2 and DeepSpeed ZeRO-2/3 through them, on 2 CPU
processes (gloo), train the LM as one process does on the same global batch.

The 2-process runs start from the shipped 8-GPU configs with only the process count and the
device changed, so they exercise the shipped settings (FSDP2 wrap policy and state-dict type,
the DeepSpeed JSON with its "auto" fields).

Tolerance: every run is fp32 on the same rows in the same order. One process takes the token
mean over 4 rows; two take 2 rows each and reduce sums across ranks, so losses and gradients
differ only in summation order, a few float32 ulps (measured: 9e-8 relative on the losses,
1.2e-7 absolute on the weights after 4 Adam steps). RTOL = 1e-5 leaves a hundredfold margin
for other CPUs and BLAS builds, while a fault that changes an update (unsynchronised
gradients, a rank skipping or repeating rows, a shard lost on save or resume) moves the next
loss by the size of a different step, orders of magnitude more (a step here moves it by 0.2-0.3).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import test_train_lm
import torch
import yaml
from safetensors.torch import load_file
from test_train_lm import REPO, config, log

from llasa.train.lm import train_lm

ACCELERATE_CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
DEEPSPEED_CONFIGS = sorted((REPO / "configs" / "deepspeed").glob("*.json"))
RTOL = 1e-5
# scripts/install.sh puts DeepSpeed in a folder of its own: imported, it prints to stdout in every
# process, which the CLI tests read, so only these tests' processes get it on their path
DEEPSPEED_SITE = REPO / "build" / "deepspeed"
if DEEPSPEED_SITE.is_dir() and str(DEEPSPEED_SITE) not in sys.path:
    sys.path.append(str(DEEPSPEED_SITE))
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
STEPS = 4
shards = test_train_lm.shards  # the LM tests' tiny shard folder (a fixture)


def _launch_command(config_file: Path):
    """What `accelerate launch --config_file FILE -m llasa.cli train lm recipe.yaml` hands to
    torchrun: its arguments and the environment the training processes start with."""
    import torch.distributed.run as distrib_run
    from accelerate.commands import launch
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    seen = {}

    def record(args):
        seen.update(args=args, env=dict(os.environ))

    def deepspeed_single_node(args):
        # accelerate's DeepSpeed launcher on one node, less its `import deepspeed` (which only
        # its multi-node branch uses), so the configs are checked where DeepSpeed is absent too
        _, env = prepare_deepspeed_cmd_env(args)
        with mock.patch.dict(os.environ, env):
            distrib_run.run(args)

    args = launch.launch_command_parser().parse_args(
        ["--config_file", str(config_file), "-m", "llasa.cli", "train", "lm", "recipe.yaml"]
    )
    with mock.patch.object(distrib_run, "run", record), \
         mock.patch.object(launch, "deepspeed_launcher", launch.deepspeed_launcher if HAS_DEEPSPEED else deepspeed_single_node):  # fmt: skip
        launch.launch_command(args)
    return seen["args"], seen["env"]


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_is_what_accelerate_launch_accepts(path, monkeypatch):
    """Each file parses with accelerate's own config class and goes through `accelerate launch`;
    in the environment the launcher gives the training processes, the FSDP or DeepSpeed plugin
    builds as it does there."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import (
        DeepSpeedPlugin,
        DistributedType,
        FullyShardedDataParallelPlugin,
    )

    monkeypatch.chdir(REPO)  # the files name the DeepSpeed JSON from the repository root
    cluster = load_config_from_file(str(path))
    args, env = _launch_command(path)
    assert int(args.nproc_per_node) == cluster.num_processes
    with mock.patch.dict(os.environ, env, clear=True):
        if cluster.distributed_type == DistributedType.FSDP:
            plugin = FullyShardedDataParallelPlugin()
            assert plugin.fsdp_version == 2
            assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
        elif cluster.distributed_type == DistributedType.DEEPSPEED:
            # refuses accelerate-side settings (mixed_precision, ...) beside a JSON file
            plugin = DeepSpeedPlugin()
            plugin.set_mixed_precision("bf16")  # as the trainer's Accelerator does on a GPU
            assert plugin.deepspeed_config["bf16"]["enabled"] is True
        else:
            assert cluster.distributed_type == DistributedType.MULTI_GPU


def test_every_deepspeed_json_is_used_and_valid():
    """Each JSON is named by an accelerate config (so the test above loads it) and its ZeRO
    section passes DeepSpeed's own schema where DeepSpeed is installed."""
    named = {
        (REPO / yaml.safe_load(p.read_text()).get("deepspeed_config", {}).get("deepspeed_config_file", "")).resolve()
        for p in ACCELERATE_CONFIGS
    }
    assert DEEPSPEED_CONFIGS
    for path in DEEPSPEED_CONFIGS:
        assert path.resolve() in named, f"{path.name} is named by no file in configs/accelerate"
        settings = json.loads(path.read_text())
        try:
            from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
        except ImportError:
            assert settings["zero_optimization"]["stage"] in (0, 1, 2, 3)
        else:
            DeepSpeedZeroConfig(**settings["zero_optimization"])  # unknown keys are errors there


def _two_cpu_config(name: str, tmp_path: Path) -> Path:
    """A shipped launcher config for 2 CPU processes: only the process count and the device
    change (and the DeepSpeed JSON's path becomes absolute)."""
    settings = yaml.safe_load((REPO / "configs" / "accelerate" / f"{name}.yaml").read_text())
    settings.update(num_processes=2, use_cpu=True)
    settings.pop("gpu_ids", None)
    if "deepspeed_config" in settings:
        ds = settings["deepspeed_config"]
        ds["deepspeed_config_file"] = str(REPO / ds["deepspeed_config_file"])
    path = tmp_path / f"{name}_2cpu.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _launch(launcher: Path, recipe: dict, tmp_path: Path, *extra: str) -> None:
    recipe_path = tmp_path / "recipe.json"
    recipe_path.write_text(json.dumps(recipe))
    distributed = yaml.safe_load(launcher.read_text())["distributed_type"]
    # DDP runs the CLI as users do; FSDP and DeepSpeed need this file's CPU entry point (below)
    entry = ["-m", "llasa.cli"] if distributed == "MULTI_GPU" else [__file__]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launcher),
           *entry, "train", "lm", str(recipe_path), *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(map(str, (REPO, DEEPSPEED_SITE)))}
    result = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


@pytest.fixture(scope="module")
def one_process(shards, tmp_path_factory) -> Path:
    """The reference: one process, 4 rows per step."""
    out = tmp_path_factory.mktemp("one") / "run"
    train_lm(config(shards, out, max_steps=STEPS, eval_every=2, save_every=2))
    return out


def _assert_same_run(one: Path, two: Path) -> None:
    a, b = log(one), log(two)
    assert [r["step"] for r in b] == list(range(1, STEPS + 1))
    np.testing.assert_allclose([r["loss"] for r in a], [r["loss"] for r in b], rtol=RTOL)
    np.testing.assert_allclose([r["eval_loss"] for r in a if "eval_loss" in r],
                               [r["eval_loss"] for r in b if "eval_loss" in r], rtol=RTOL)  # fmt: skip
    assert [r["tokens"] for r in a] == [r["tokens"] for r in b]
    wa, wb = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    # FSDP's full state dict writes the tied output layer out as a copy of the embedding
    for key in wb.keys() - wa.keys():
        assert key == "lm_head.weight" and torch.equal(wb[key], wb["model.embed_tokens.weight"])
    assert wa.keys() <= wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=RTOL, atol=1e-5)


def test_ddp_config_two_processes_equal_one(shards, one_process, tmp_path):
    launcher = _two_cpu_config("ddp_8gpu", tmp_path)
    out = tmp_path / "run"
    _launch(launcher, config(shards, out, max_steps=STEPS, eval_every=2, save_every=2, batch_size=2), tmp_path)
    _assert_same_run(one_process, out)


@pytest.mark.parametrize(
    "name, state_file",
    [
        ("fsdp_8gpu", "pytorch_model_fsdp.bin"),  # accelerate's FSDP checkpoint, not a DDP one
        *[pytest.param(name, "pytorch_model",  # a DeepSpeed checkpoint folder
                       marks=pytest.mark.skipif(not HAS_DEEPSPEED, reason="needs deepspeed"))
          for name in ("deepspeed_zero2_8gpu", "deepspeed_zero3_8gpu")],
    ],
)  # fmt: skip
def test_sharded_two_processes_equal_one_across_a_resume(shards, one_process, tmp_path, name, state_file):
    """Stopped after the step-2 checkpoint and resumed, the sharded run still equals one process."""
    launcher = _two_cpu_config(name, tmp_path)
    out = tmp_path / "run"
    recipe = config(shards, out, max_steps=STEPS, eval_every=2, save_every=2, batch_size=2)
    _launch(launcher, recipe, tmp_path, "--max-steps", "2")
    assert list((out / "checkpoint-2").rglob(state_file)), f"no {state_file}: the plugin did not run"
    _launch(launcher, recipe, tmp_path)
    _assert_same_run(one_process, out)


def _main_on_cpu(argv: list[str]) -> int:
    """`llasa` as `accelerate launch` runs it for the FSDP and DeepSpeed tests.

    accelerate applies its FSDP and DeepSpeed plugins only on accelerator devices: on a
    CPU-only host the trainer's Accelerator(cpu=True) forms a gloo DDP group and the plugin
    is dropped without a word. Here the plugin the launcher configured is put onto the gloo
    group instead, so the trainer's FSDP / DeepSpeed paths (sharded parameters, the plugins'
    checkpoints, resume) run as they do on GPUs."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType, InitProcessGroupKwargs

    if os.environ.get("ACCELERATE_USE_FSDP") == "true":
        init_state = AcceleratorState.__init__

        def fsdp_on_gloo(self, *args, fsdp_plugin=None, **kwargs):
            init_state(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
            if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
                # both states: AcceleratorState copies PartialState's type on every later construction
                PartialState._shared_state["distributed_type"] = self.distributed_type = DistributedType.FSDP
                self.fsdp_plugin = fsdp_plugin

        AcceleratorState.__init__ = fsdp_on_gloo
    elif os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        init_accelerator = Accelerator.__init__

        def deepspeed_on_gloo(self, *args, cpu=False, **kwargs):
            # DeepSpeed starts only on accelerate's device path; with no device there, accelerate
            # also needs the backend named, or it counts one process
            handlers = [*(kwargs.pop("kwargs_handlers", None) or []), InitProcessGroupKwargs(backend="gloo")]
            init_accelerator(self, *args, cpu=False, kwargs_handlers=handlers, **kwargs)

        Accelerator.__init__ = deepspeed_on_gloo
    from llasa.cli import main

    return main(argv)


if __name__ == "__main__":
    sys.exit(_main_on_cpu(sys.argv[1:]))
