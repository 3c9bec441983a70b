"""Engine backends and int8: every backend x precision agrees with eager fp32 on real CamVid
images (shipped SegNet-Basic weights), the any-size export, the pooling left float in int8
graphs, one-line errors (missing calibration, engine not installed, int8 on CUDA, unsupported
combinations), ``backend="auto"`` and its cache, int8 export and the benchmark's engine rows."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import segnet
from segnet import SegNetError, optimize_for_inference
from segnet.cli import main
from segnet.data.base import normalize
from segnet.data.io import read_image
from segnet.deploy import choose
from segnet.deploy.backends import (
    BACKEND_PRECISIONS,
    EngineModel,
    engine_installed,
    installed_backends,
)
from segnet.deploy.export import export_onnx_any_size, read_metadata

SIZE = (180, 240)  # CamVid at half resolution: real content, a quarter of the work
COMBINATIONS = [
    ("torch", "fp32", 0.999),
    ("torch", "bf16", 0.97),
    ("onnxruntime", "fp32", 0.999),
    ("onnxruntime", "int8", 0.98),  # 8-bit values reach its pools (deploy/quantize.py)
    ("openvino", "fp32", 0.999),
    ("openvino", "bf16", 0.97),
    ("openvino", "int8", 0.985),
]


def _camvid(root, split: str, count: int) -> list[torch.Tensor]:
    paths = sorted((root / split).glob("*.png"))[::40][:count]  # spread over the sequences
    images = [normalize(torch.from_numpy(read_image(p).copy()))[None] for p in paths]
    return [F.interpolate(x, size=SIZE, mode="bilinear", align_corners=False) for x in images]


def _need(backend: str) -> None:
    if not engine_installed(backend):
        pytest.skip(f"{backend} is not installed (pip install 'segnet[...]'; CI installs it)")


@pytest.fixture(scope="module")
def shipped() -> torch.nn.Module:
    return segnet.load_pretrained("segnet_basic", "camvid")


@pytest.mark.parametrize("backend, precision, floor", COMBINATIONS)
def test_every_backend_and_precision_agrees_with_eager_fp32(
    backend, precision, floor, shipped, camvid_root
) -> None:
    _need(backend)
    calibration = _camvid(camvid_root, "train", 8)
    optimized = optimize_for_inference(
        shipped, backend=backend, precision=precision, calibration=calibration
    )
    assert (optimized.backend, optimized.precision) == (backend, precision)
    images = torch.cat(_camvid(camvid_root, "val", 3))  # (3, 3, 180, 240): a batch
    with torch.no_grad():
        expected = shipped(images).argmax(1)
        logits = optimized(images)
    assert isinstance(logits, torch.Tensor) and logits.dtype == torch.float32
    assert logits.shape == (3, 11, *SIZE)
    agreement = (logits.argmax(1) == expected).float().mean().item()
    assert agreement >= floor, f"{backend} {precision}: {agreement:.4f}"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_engines_take_any_size_and_batch(backend, model_factory) -> None:
    _need(backend)
    model = model_factory("segnet_basic")
    optimized = optimize_for_inference(model, backend=backend, precision="fp32")
    assert isinstance(optimized, EngineModel)
    for shape in [(1, 3, 45, 61), (2, 3, 32, 48), (1, 3, 7, 9)]:  # odd sizes: ceil-mode pools
        x = torch.randn(*shape)
        with torch.no_grad():
            assert torch.allclose(optimized(x), model(x), atol=1e-3)


def test_openvino_compiles_the_first_shapes_static_and_the_rest_once_dynamic(
    model_factory, monkeypatch
) -> None:
    _need("openvino")
    from segnet.deploy import backends

    monkeypatch.setattr(backends, "STATIC_SHAPES", 2)
    model = model_factory("segnet_basic")
    optimized = optimize_for_inference(model, backend="openvino", precision="fp32")
    graph = optimized.make_runner.args[0]  # the OpenVinoGraph replicas share
    x = torch.randn(1, 3, 32, 48)
    optimized(x), optimized(x), optimized.replica()(x)
    assert list(graph.static) == [(1, 3, 32, 48)]  # once, for the model and its replica
    assert graph.static[1, 3, 32, 48].input(0).get_partial_shape().is_static
    assert graph.dynamic is None
    for shape in [(1, 3, 40, 56), (2, 3, 32, 48), (1, 3, 45, 61), (1, 3, 32, 48)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            assert torch.allclose(optimized(x), model(x), atol=1e-3)
    assert list(graph.static) == [(1, 3, 32, 48), (1, 3, 40, 56)]  # the first two, kept
    assert not graph.dynamic.input(0).get_partial_shape().is_static  # the others: one compile


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_engine_replicas_run_side_by_side_with_their_own_state(backend, model_factory) -> None:
    """serve's workers: each replica has its own session/request, none is rebuilt, and two
    threads running at once give what one gives alone."""
    _need(backend)
    from concurrent.futures import ThreadPoolExecutor

    optimized = optimize_for_inference(model_factory("segnet_basic"), backend=backend)
    replica = optimized.replica()
    assert isinstance(replica, EngineModel) and replica.run is not optimized.run
    assert replica.make_runner is optimized.make_runner  # the exported graph, not a new export
    inputs = [
        torch.randn(1, 3, 40, 56, generator=torch.Generator().manual_seed(i)) for i in range(6)
    ]
    alone = [optimized(x) for x in inputs]
    with ThreadPoolExecutor(2) as pool:  # each thread runs its own copy, as a serve worker
        halves = pool.map(lambda m, xs: [m(x) for x in xs], (optimized, replica),
                          (inputs[0::2], inputs[1::2]))  # fmt: skip
        first, second = list(halves)
    for a, b in zip(alone, [y for pair in zip(first, second) for y in pair]):
        assert torch.allclose(a, b, atol=1e-5)


def test_any_size_export_pads_without_infinity(model_factory, tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    path = export_onnx_any_size(model_factory("segnet_basic"), tmp_path / "m.onnx")
    graph = onnx.load(str(path)).graph
    pads = [n for n in graph.node if n.op_type == "Pad"]
    assert pads and all(
        a.s == b"edge" for n in pads for a in n.attribute if a.name == "mode"
    )  # repeat the last row/column: OpenVINO's NNCF refuses -inf
    assert {"MaxUnpool", "MaxPool"}.isdisjoint(n.op_type for n in graph.node)


def test_openvino_int8_leaves_the_pooling_float(model_factory, tmp_path) -> None:
    _need("openvino")
    pytest.importorskip("nncf")
    import openvino as ov

    from segnet.deploy.backends import openvino_core
    from segnet.deploy.quantize import quantize_openvino

    model = model_factory("segnet_basic")
    graph = openvino_core(ov).read_model(str(export_onnx_any_size(model, tmp_path / "m.onnx")))
    quantized = quantize_openvino(graph, [np.random.rand(1, 3, 32, 48).astype(np.float32)] * 2)
    ops = quantized.get_ordered_ops()
    fq = [op for op in ops if op.get_type_name() == "FakeQuantize"]
    assert fq, "nothing was quantized"
    for op in fq:
        users = {t.get_node().get_type_name() for o in op.outputs() for t in o.get_target_inputs()}
        assert users <= {"Convolution"}, users  # never the pools' Maximum/Greater/Select


# (model, int8 plan, input size): convolutions kept fp32 from the start and from the end. The
# accurate plan keeps every convolution reading a map at full or half resolution: SegNet-Basic's
# first two (one a stage) and last three (two decoder stages and the classifier), SegNet's first
# four (conv1_1 .. conv2_2) and last four (conv2_2_D .. the classifier) -- also on an odd size,
# where the pooled maps are ceil(H/2), ceil(H/4).
PLANS = [
    ("segnet_basic", "fast", (32, 48), (2, 1)),
    ("segnet_basic", "accurate", (32, 48), (2, 3)),
    ("segnet", "fast", (64, 64), (2, 1)),
    ("segnet", "accurate", (64, 64), (4, 4)),
    ("segnet", "accurate", (45, 61), (4, 4)),
]


@pytest.mark.parametrize("name, plan, size, float_ends", PLANS)
def test_onnxruntime_int8_keeps_the_plans_convolutions_float(
    name, plan, size, float_ends, model_factory, tmp_path
) -> None:
    _need("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from segnet.deploy.quantize import float_plan, quantize_onnx

    model = model_factory(name)
    path = export_onnx_any_size(model, tmp_path / "m.onnx")
    calibration = [np.random.rand(1, 3, *size).astype(np.float32)] * 2
    kept = float_plan(model, calibration, plan)
    assert tuple(kept) == float_ends
    graph = onnx.load(str(quantize_onnx(model, path, tmp_path / "q.onnx", calibration, kept))).graph
    producer = {out: node for node in graph.node for out in node.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    quantized = [producer.get(c.input[1]) is not None for c in convs]  # weight from a DQ node
    first, last = float_ends
    assert quantized == [False] * first + [True] * (len(convs) - first - last) + [False] * last


@pytest.mark.parametrize("plan, float_ends", [("fast", (2, 1)), ("accurate", (4, 4))])
def test_openvino_int8_keeps_the_plans_convolutions_float(plan, float_ends, model_factory) -> None:
    _need("openvino")
    pytest.importorskip("nncf")
    calibration = [torch.randn(1, 3, 64, 64) for _ in range(2)]
    model = model_factory("segnet")
    engine = optimize_for_inference(
        model, backend="openvino", precision="int8", calibration=calibration, int8_plan=plan
    )
    assert engine.int8_plan == plan and engine.runtime == f"openvino int8 ({plan} plan)"
    graph = engine.make_runner.args[0].graph  # the quantized model the engine compiles
    ops = graph.get_ordered_ops()
    convs = [op for op in ops if op.get_type_name() == "Convolution"]
    fed = [any(i.get_source_output().get_node().get_type_name() == "FakeQuantize"
               for i in op.inputs()) for op in convs]  # fmt: skip
    first, last = float_ends
    assert fed == [False] * first + [True] * (len(convs) - first - last) + [False] * last


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "auto"])
def test_int8_without_calibration_is_one_line(backend, model_factory) -> None:
    with pytest.raises(SegNetError, match="int8 needs calibration images") as error:
        optimize_for_inference(model_factory("segnet_basic"), backend=backend, precision="int8")
    assert "\n" not in str(error.value)


def test_engine_not_installed_is_one_line(model_factory, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    assert not engine_installed("openvino") and "openvino" not in installed_backends()
    with pytest.raises(SegNetError, match=r"pip install 'segnet\[openvino\]'") as error:
        optimize_for_inference(model_factory("segnet_basic"), backend="openvino")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "int8", "device": "cuda"}, "int8 runs on CPU"),
        ({"backend": "openvino", "precision": "fp16", "device": "cuda"}, "runs on CPU"),
        ({"backend": "torch", "precision": "int8"}, "int8 does not run on backend torch"),
        ({"backend": "onnxruntime", "precision": "bf16"}, "bf16 does not run on backend onnx"),
        ({"backend": "tensorrt"}, "must be one of auto, torch"),
        ({"precision": "int4"}, "must be one of"),
        ({"int8_plan": "best"}, "int8_plan.*fast, accurate"),  # torch fp32 checks it too
    ],
)
def test_unsupported_requests_are_one_line(kwargs, message, model_factory) -> None:
    with pytest.raises(SegNetError, match=message) as error:
        optimize_for_inference(
            model_factory("segnet_basic"), calibration=[torch.randn(1, 3, 32, 32)], **kwargs
        )
    assert "\n" not in str(error.value)


def test_auto_picks_an_installed_backend_and_caches_the_ranking(
    model_factory, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model = model_factory("segnet_basic")
    calibration = [torch.randn(1, 3, 32, 48) for _ in range(2)]
    first = optimize_for_inference(model, backend="auto", precision="fp32", calibration=calibration)
    assert first.backend in installed_backends() and first.precision == "fp32"
    cache = json.loads((tmp_path / "segnet" / "backends.json").read_text())
    ((_key, entry),) = cache.items()
    assert entry["ranking"][0][0] == first.backend
    assert {b for b, _, _ in entry["ranking"]} == set(installed_backends())

    def measure_again(*args, **kwargs):
        raise AssertionError("the cached ranking was not used")

    monkeypatch.setattr(choose, "time_candidates", measure_again)
    again = optimize_for_inference(model, backend="auto", precision="fp32", calibration=calibration)
    assert again.backend == first.backend and "cached" in again.chosen


@pytest.mark.parametrize("amx", [False, True])
def test_auto_candidates_add_bf16_only_on_cpus_with_amx(amx, monkeypatch) -> None:
    monkeypatch.setattr(choose, "cpu_has_amx", lambda: amx)
    found = choose.candidates("auto", calibrated=True)
    precisions = {p for _, p in found}
    assert ("bf16" in precisions) == amx
    assert ("int8" in precisions) == (set(installed_backends()) != {"torch"})
    assert all(p in BACKEND_PRECISIONS[b] for b, p in found)
    assert {p for _, p in choose.candidates("fp32", calibrated=True)} == {"fp32"}


def test_auto_skips_a_candidate_that_disagrees(model_factory, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []

    def fake_agreement(model, optimized, images):
        calls.append(optimized.backend)
        return 0.5 if len(calls) == 1 else 1.0  # the fastest disagrees

    monkeypatch.setattr(choose, "agreement", fake_agreement)
    chosen = optimize_for_inference(model_factory("segnet_basic"), backend="auto")
    if len(installed_backends()) > 1:
        assert chosen.backend == calls[1] != calls[0]


def test_cli_export_int8_onnx_with_metadata(checkpoint, tmp_path, capsys) -> None:
    _need("onnxruntime")
    from segnet.deploy.export import run_onnx

    folder = tmp_path / "calibration"
    folder.mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image

    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "int8.onnx"
    code = main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--precision",
                 "int8", "--calibration", str(folder), "--out", str(out), "--no-check",
                 "--int8-plan", "accurate"])  # fmt: skip
    assert code == 0 and "onnx int8 (accurate plan)" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta["data"]["class_names"] == ["a", "b", "c"] and len(meta["data"]["palette"]) == 3
    assert "mean" in meta["data"] and "std" in meta["data"] and meta["precision"] == "int8"
    assert meta["int8_plan"] == "accurate"
    import onnx

    graph = onnx.load(str(out)).graph
    assert "QuantizeLinear" in {n.op_type for n in graph.node}
    producer = {out: node for node in graph.node for out in node.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    quantized = [producer.get(c.input[1]) is not None for c in convs]
    # the plan on SegNet-Basic: its first two and last three convolutions stay float
    assert quantized == [False] * 2 + [True] * (len(convs) - 5) + [False] * 3
    for size in [(37, 41), (64, 96)]:  # any size
        assert run_onnx(out, torch.randn(1, 3, *size)).shape == (1, 3, *size)


def test_cli_int8_without_training_data_is_one_line(checkpoint, tmp_path, capsys) -> None:
    code = main(["export", "--checkpoint", str(checkpoint), "--precision", "int8", "--out",
                 str(tmp_path / "m.onnx")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--calibration DIR" in err and "\n" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_predict_unsupported_combination_is_one_line(checkpoint, tmp_path, capsys) -> None:
    image = tmp_path / "in" / "x.png"
    image.parent.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    code = main(["predict", str(image), "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "out"), "--backend", "torch", "--precision", "int8"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "int8 does not run on backend torch" in err and "\n" not in err


def test_benchmark_engine_rows_with_peers(tmp_path, capsys) -> None:
    _need("onnxruntime")
    out = tmp_path / "bench.json"
    code = main(["benchmark", "--models", "segnet_basic", "--size", "32x48", "--repeats", "1",
                 "--no-training", "--backend", "torch,onnxruntime", "--json", str(out)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    (result,) = json.loads(out.read_text())["results"]
    rows = {(r["implementation"], r["precision"]) for r in result["rows"]}
    expected = {("reference", "fp32"), ("ours", "fp32"), ("onnxruntime", "fp32")}
    if engine_installed("openvino"):
        expected.add(("openvino", "fp32"))  # a peer, added unasked
    assert rows == expected
    assert all(r["agreement"] >= 0.99 for r in result["rows"] if r["implementation"] != "reference")
    assert "segnet_basic/onnxruntime fp32: forward" in text and "x reference" in text
