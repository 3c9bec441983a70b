"""Measuring one model: ours (the registered model, made inference-ready by
:func:`segnet.optimize_for_inference` for inference, and in train mode in the memory layout
``segnet train`` uses by default for training) beside its plain-PyTorch reference twin.

* ``forward_ms`` -- one inference forward of ``batch`` images (median over ``repeats``);
* ``train_forward_ms`` / ``backward_ms`` -- forward and backward of one training step (cross
  entropy); ``train_images_per_s`` = batch / (forward + backward);
* ``inference_mb`` / ``training_mb`` -- peak memory growth during one forward / one training
  step, in a pass of its own (:class:`~.memory.PeakMemory`);
* ``indices_mb`` -- pooling indices kept for the backward pass of one training step.

Engine rows (ONNX Runtime, OpenVINO; fp32, bf16, int8 -- :mod:`.rows`) have inference
columns only; their memory figure is their first forward's, which allocates the buffers the
engine keeps (it includes what an engine prepares lazily at that call).
Every row and the reference alternate within each repeat, so a machine busy with other work
slows all alike; the ratios are the figures to read.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.base import SegmentationDataset
from ..deploy.optimize import optimize_for_inference
from ..deploy.runtime import DEFAULT_INT8_PLAN, autocast, resolve_channels_last
from ..engine.weights import load_for_inference
from ..metrics import pixel_agreement
from ..models import build_model, model_entry
from .memory import MB, PeakMemory, saved_indices_mb
from .reference import reference_model
from .rows import Row, image_agreement, row_plan, split_quality


@dataclass
class Measurement:
    """One model, one implementation; None where not measured (no reference, no memory probe)."""

    model: str
    implementation: str
    parameters: int
    size_mb: float
    forward_ms: float
    images_per_s: float
    train_forward_ms: float | None = None
    backward_ms: float | None = None
    train_images_per_s: float | None = None
    inference_mb: float | None = None
    training_mb: float | None = None
    indices_mb: float | None = None
    precision: str = "fp32"
    agreement: float | None = None  # share of pixels labelled as eager fp32 labels them
    miou: float | None = None  # on the --data split


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000


class Runner:
    """The inference and training closures of one implementation, with their measurements."""

    def __init__(
        self,
        name: str,
        infer: nn.Module,
        train: nn.Module | None,
        images: torch.Tensor,
        masks: torch.Tensor,
        device: torch.device,
        precision: str,
        parameters: int,
    ) -> None:
        """``train`` None: an inference engine, no training columns."""
        self.name, self.infer, self.train, self.device = name, infer, train, device
        self.images, self.masks, self.precision = images, masks, precision
        self.parameters, self.agreement, self.miou = parameters, None, None
        self.times: dict[str, list[float]] = {"forward": [], "train_forward": [], "backward": []}
        self.memory: dict[str, list[float]] = {"inference": [], "training": []}

    def infer_once(self, *, memory: bool = False) -> None:
        with torch.no_grad():
            if memory:
                with PeakMemory(self.device) as peak:
                    self.infer(self.images)
                if peak.mb is not None:
                    self.memory["inference"].append(peak.mb)
            else:
                self.times["forward"].append(_timed(lambda: self.infer(self.images), self.device))

    def train_once(self, *, memory: bool = False) -> None:
        if self.train is None:
            return
        self.train.zero_grad(set_to_none=True)
        holder = {}

        def forward() -> None:
            with autocast(self.device, self.precision):
                holder["loss"] = F.cross_entropy(self.train(self.images).float(), self.masks)

        if memory:
            with PeakMemory(self.device) as peak:
                forward()
                holder.pop("loss").backward()
            if peak.mb is not None:
                self.memory["training"].append(peak.mb)
        else:
            self.times["train_forward"].append(_timed(forward, self.device))
            self.times["backward"].append(
                _timed(lambda: holder.pop("loss").backward(), self.device)
            )

    def summary(self, model: str, batch: int, training: bool) -> Measurement:
        median = lambda values: statistics.median(values) if values else None  # noqa: E731
        forward = median(self.times["forward"])
        row = Measurement(
            model=model, implementation=self.name, parameters=self.parameters,
            size_mb=self.parameters * 4 / MB, forward_ms=forward, images_per_s=1000 * batch / forward,
            inference_mb=median(self.memory["inference"]), precision=self.precision,
            agreement=self.agreement, miou=self.miou,
        )  # fmt: skip
        if training and self.train is not None:
            row.train_forward_ms = median(self.times["train_forward"])
            row.backward_ms = median(self.times["backward"])
            row.train_images_per_s = 1000 * batch / (row.train_forward_ms + row.backward_ms)
            row.training_mb = median(self.memory["training"])
            row.indices_mb = saved_indices_mb(self.train, self.images[:1]) * batch
        return row


def copy_for_training(model: nn.Module, *, channels_last: bool) -> nn.Module:
    trainable = copy.deepcopy(model).train()
    trainable.requires_grad_(True)
    return trainable.to(memory_format=torch.channels_last) if channels_last else trainable


def _load(
    name: str, num_classes: int, checkpoint: str | None, weights: str | None
) -> tuple[str, nn.Module, int, int]:
    """(name, eval-mode model, num_classes, in_channels): a checkpoint's, shipped weights, or
    a freshly initialised model."""
    if checkpoint is not None or weights is not None:
        model, config = load_for_inference(
            checkpoint=checkpoint, model=None if checkpoint else name, weights=weights
        )
        return config.name, model.float().eval(), config.num_classes, config.in_channels
    return name, build_model(name, num_classes=num_classes).eval(), num_classes, 3


def _runners(
    name: str, model: nn.Module, *, inputs: tuple[torch.Tensor, torch.Tensor], device: torch.device,
    rows: Sequence[Row], calibration: list | None, compile: bool, num_classes: int, in_channels: int,
    int8_plan: str,
) -> list[Runner]:  # fmt: skip
    """The reference (where the registry names a plain-SegNet twin), then one runner per row:
    torch rows ("ours") with their training twin, engines for inference only."""
    images, masks = inputs
    train_layout = resolve_channels_last(None, device)  # what `segnet train` uses by default
    layout = torch.channels_last if train_layout else torch.contiguous_format
    params = sum(p.numel() for p in model.parameters())
    runners = []
    if model_entry(name).spec is not None:
        reference = reference_model(name, num_classes=num_classes, in_channels=in_channels)
        reference.load_state_dict(model.state_dict())
        plain = copy_for_training(reference.to(device), channels_last=False)
        runners.append(Runner("reference", reference.to(device).eval(), plain, images, masks,
                              device, "fp32", params))  # fmt: skip
    for backend, precision in rows:
        optimized = optimize_for_inference(
            model, device=device, precision=precision, backend=backend, calibration=calibration,
            compile=compile and backend == "torch", int8_plan=int8_plan,
        )  # fmt: skip
        torch_row = optimized.backend == "torch"
        trainable = copy_for_training(model, channels_last=train_layout) if torch_row else None
        notes = []  # e.g. "openvino (auto, fast plan)"
        if backend == "auto":
            notes.append("auto")
        if optimized.int8_plan:
            notes.append(f"{optimized.int8_plan} plan")
        label = "ours" if torch_row else optimized.backend
        label += f" ({', '.join(notes)})" if notes else ""
        runners.append(Runner(label, optimized, trainable, images.contiguous(memory_format=layout),
                              masks, device, optimized.precision, params))  # fmt: skip
    return runners


def _measure(runners: Sequence[Runner], *, repeats: int, training: bool) -> None:
    # Memory in passes of its own (the probe changes allocator settings), inference before any
    # training step: a training step first left its allocations behind and moved the inference
    # figure by up to 90 MB from run to run.
    # Engines allocate their buffers at the first forward and keep them: their figure is that
    # first forward's. Torch frees its activations after each forward: probed after a warm-up.
    for runner in runners:
        if runner.train is None:
            runner.infer_once(memory=True)
    for runner in runners:  # warm-up: oneDNN primitives, allocator, compilation
        runner.infer_once()
    for runner in runners:
        if runner.train is not None:
            runner.infer_once(memory=True)
    for runner in runners:
        if training:
            runner.train_once()
        runner.times = {k: [] for k in runner.times}
    for _ in range(repeats):  # alternating, so that other work on the machine slows both alike
        for runner in runners:
            runner.infer_once()
            if training:
                runner.train_once()
    for runner in runners:
        if training:
            runner.train_once(memory=True)


def benchmark_model(
    name: str, *, size: tuple[int, int], batch: int = 1, device: torch.device, repeats: int = 3,
    training: bool = True, compile: bool = False, num_classes: int = 11,
    checkpoint: str | None = None, weights: str | None = None,
    images: Sequence[Path] | None = None, backends: Sequence[str] = ("torch",),
    precisions: Sequence[str] = ("auto",), calibration: list | None = None,
    dataset: SegmentationDataset | None = None, int8_plan: str = DEFAULT_INT8_PLAN,
) -> dict:  # fmt: skip
    """Measures ``name`` (or the checkpoint's model), its reference where one exists, and one row
    per backend x precision (:func:`.rows.row_plan`; int8 keeping ``int8_plan``'s convolutions
    fp32), all alternating in one run.

    ``agreement`` compares each row's argmax with the eager fp32 model's: on the real ``images``
    when given, over ``dataset`` (with mIoU) when given, else on the random benchmark input.
    """
    name, model, num_classes, in_channels = _load(name, num_classes, checkpoint, weights)
    model = model.to(device)
    rows = row_plan(backends, precisions, device)
    generator = torch.Generator().manual_seed(0)
    inputs = (
        torch.randn(batch, in_channels, *size, generator=generator).to(device),
        torch.randint(0, num_classes, (batch, *size), generator=generator).to(device),
    )
    runners = _runners(name, model, inputs=inputs, device=device, rows=rows, calibration=calibration,
                       compile=compile, num_classes=num_classes, in_channels=in_channels,
                       int8_plan=int8_plan)  # fmt: skip
    _measure(runners, repeats=repeats, training=training)
    measured = [r for r in runners if r.name != "reference"]
    eager_miou = _quality(model, measured, inputs[0], device, images=images, dataset=dataset)
    on = (
        f"{len(images)} images"
        if images
        else f"{len(dataset)} images"
        if dataset
        else "random input"
    )
    return {
        "model": name, "precision": measured[0].precision, "agreement": measured[0].agreement,
        "agreement_on": on, "eager_miou": eager_miou,
        "rows": [runner.summary(name, batch, training) for runner in runners],
    }  # fmt: skip


def _quality(
    model: nn.Module, runners: Sequence[Runner], random_images: torch.Tensor, device: torch.device,
    *, images: Sequence[Path] | None, dataset: SegmentationDataset | None,
) -> float | None:  # fmt: skip
    """Sets each runner's agreement (and mIoU with ``dataset``); returns eager fp32's mIoU."""
    if dataset is not None:
        eager_miou, found = split_quality(model, [r.infer for r in runners], dataset, device)
        for runner, (agreement, miou) in zip(runners, found):
            runner.agreement, runner.miou = agreement, miou
        return eager_miou
    for runner in runners:
        if images:
            runner.agreement = image_agreement(model, runner.infer, images, device)
        else:
            with torch.no_grad():
                labels = runner.infer(random_images).argmax(1).to(device)
                runner.agreement = pixel_agreement(labels, model.eval()(random_images).argmax(1))
    return None
