"""The benchmark's report: the machine it ran on, and a Table 6-style text table of every row
beside the reference, with the gain of each column for ours and the forward-time ratios of
each engine row against the reference and the fp32 engine peers."""

from __future__ import annotations

import os

import torch

from ..deploy.runtime import cpu_has_amx, cpu_has_native_bf16, cpu_name


def environment(
    device: torch.device, size: tuple[int, int], batch: int, repeats: int, compile: bool
) -> dict:
    env = {
        "device": device.type, "size": list(size), "batch": batch, "repeats": repeats, "compile": compile,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_name(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cpu_amx": cpu_has_amx(),
        "thp_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0"),
    }  # fmt: skip
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


_COLUMNS = (  # (key, header, format); times and memory: lower is better, images/s: higher
    ("parameters", "params", "{:,.0f}"), ("size_mb", "size MB", "{:.1f}"),
    ("forward_ms", "fwd ms", "{:.1f}"), ("images_per_s", "img/s", "{:.2f}"),
    ("train_forward_ms", "train fwd ms", "{:.1f}"), ("backward_ms", "bwd ms", "{:.1f}"),
    ("train_images_per_s", "train img/s", "{:.2f}"), ("inference_mb", "infer MB", "{:.1f}"),
    ("training_mb", "train MB", "{:.1f}"), ("indices_mb", "indices MB", "{:.2f}"),
)  # fmt: skip
_HIGHER_IS_BETTER = {"images_per_s", "train_images_per_s"}


def format_table(report: dict) -> str:
    """Table 6-style text: every row per model, a gain row for ours, then the ratios and the
    agreement of each row with eager fp32."""
    env = report["environment"]
    lines = [
        f"{env['size'][0]}x{env['size'][1]}, batch {env['batch']}, {env['device']} ({env['cpu']}, "
        f"{env['threads']} threads, native bf16: {env['cpu_native_bf16']}, "
        f"AMX: {env['cpu_amx']}), torch {env['torch']}, "
        f"median of {env['repeats']} repeat(s); sizes and memory in MB (1e6 bytes)",
    ]
    header = ["model", "impl", "prec"] + [h for _, h, _ in _COLUMNS]
    table = [header]
    for result in report["results"]:
        rows = {row["implementation"]: row for row in result["rows"]}
        for row in result["rows"]:
            table.append([result["model"], row["implementation"], row.get("precision", "fp32")]
                         + [_cell(fmt, row[key]) for key, _, fmt in _COLUMNS])  # fmt: skip
        if "reference" in rows and "ours" in rows:
            table.append(
                [result["model"], "gain", ""] + [_gain(key, rows) for key, _, _ in _COLUMNS]
            )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines += [
        "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in table
    ]
    lines.append(
        "gain = how many times better ours is (time, memory: reference / ours; img/s: ours / reference)"
    )
    for result in report["results"]:
        if result["agreement"] is not None:
            lines.append(f"{result['model']}: optimized ({result['precision']}) vs fp32 eager: "
                         f"{100 * result['agreement']:.3f}% of pixels with the same class "
                         f"({result.get('agreement_on', 'random input')})")  # fmt: skip
        lines += _row_lines(result)
    return "\n".join(lines)


def _row_lines(result: dict) -> list[str]:
    """Per measured row: forward-time ratios against the reference and the fp32 engine peers
    (same alternating run), and agreement with eager fp32 (and mIoU with --data)."""
    rows = result["rows"]
    peers = [r for r in rows if r["implementation"] in ("reference", "onnxruntime", "openvino")
             and r.get("precision", "fp32") == "fp32"]  # fmt: skip
    lines = []
    eager = result.get("eager_miou")
    for row in rows:
        if row["implementation"] == "reference":
            continue
        name = f"{result['model']}/{row['implementation']} {row.get('precision', 'fp32')}"
        ratios = ", ".join(f"{p['forward_ms'] / row['forward_ms']:.2f}x {p['implementation']}"
                           + ("" if p["implementation"] == "reference" else " fp32")
                           for p in peers if p is not row)  # fmt: skip
        quality = (
            ""
            if row.get("agreement") is None
            else (
                f"; {100 * row['agreement']:.3f}% of pixels as fp32 eager ({result['agreement_on']})"
            )
        )
        if row.get("miou") is not None and eager is not None:
            quality += f", mIoU {100 * row['miou']:.2f} (fp32 eager {100 * eager:.2f})"
        lines.append(f"{name}: forward {ratios or '-'}{quality}")
    return lines


def _cell(fmt: str, value: float | None) -> str:
    return "-" if value is None else fmt.format(value)


def _gain(key: str, rows: dict) -> str:
    ours, ref = rows["ours"][key], rows["reference"][key]
    if key in ("parameters", "size_mb") or ours is None or ref is None or min(ours, ref) <= 0:
        return ""
    return f"{(ours / ref if key in _HIGHER_IS_BETTER else ref / ours):.2f}x"
