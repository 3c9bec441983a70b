"""Probe: PyTorch's own int8 path (PT2E with the x86 inductor quantizer, torchao) on SegNet.

Not a backend of segnet (torchao is not a dependency): this measures whether it would be worth
one. SegNet (untrained, 11 classes, BN folded) is captured with ``torch.export`` in the graph
pooling form (as ``segnet export`` does), annotated by ``X86InductorQuantizer`` (static,
per-channel weights), calibrated on 4 random images, converted, then ``torch.compile``d with
inductor freezing. Prints compile time, the share of labels equal to eager fp32 (random input:
a probe of speed, not of accuracy), and the median of 5 forwards at 1x3x360x480, alternating in
one process with the plain PyTorch SegNet (``segnet benchmark``'s reference) and segnet's
OpenVINO int8 backend (calibrated on the same 4 images).

    pip install torchao   # 0.18.0 was used
    python benchmarks/epyc_zen4_engines/pt2e_int8_probe.py
"""

import statistics
import time

import torch
import torch._inductor.config as inductor_config
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

import segnet
from segnet.benchmark import reference_model
from segnet.deploy import optimize_for_inference
from segnet.deploy.export import prepare

SIZE = (1, 3, 360, 480)


def median_ms(function: object, x: torch.Tensor, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@torch.no_grad()
def main() -> None:
    torch.set_num_threads(2)
    model = segnet.build_model("segnet", num_classes=11).eval()
    x = torch.randn(*SIZE, generator=torch.Generator().manual_seed(0))
    net = prepare(model)
    captured = torch.export.export(net, (x,)).module()  # the pools take their graph path
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(captured, quantizer)
    calibration = [
        torch.randn(*SIZE, generator=torch.Generator().manual_seed(i)) for i in (1, 2, 3, 4)
    ]
    for image in calibration:
        prepared(image)
    quantized = convert_pt2e(prepared)
    inductor_config.freezing = True
    compiled = torch.compile(quantized)
    start = time.perf_counter()
    labels = compiled(x).argmax(1)
    print(f"compile + first forward: {time.perf_counter() - start:.1f} s", flush=True)
    eager = model(x).argmax(1)
    print(f"labels as eager fp32: {100 * (labels == eager).float().mean():.3f}% (random input)")
    plain = reference_model("segnet", num_classes=11).eval()
    plain.load_state_dict(model.state_dict())
    openvino = optimize_for_inference(
        model, backend="openvino", precision="int8", calibration=calibration
    )
    openvino(x)
    for _ in range(2):  # alternate, as segnet benchmark does
        print(f"plain PyTorch fp32 {median_ms(plain, x):.1f} ms, "
              f"OpenVINO int8 {median_ms(openvino, x):.1f} ms, "
              f"PT2E int8 {median_ms(compiled, x):.1f} ms", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
