"""``segnet serve`` tested for real: the server runs in a subprocess on a free 127.0.0.1 port
(``benchmarks/serve_load.py``'s launcher) and every test talks HTTP to it."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("starlette", reason="segnet[serve] not installed")
pytest.importorskip("uvicorn", reason="segnet[serve] not installed")
pytest.importorskip("multipart", reason="segnet[serve] not installed")
httpx = pytest.importorskip("httpx", reason="the tests' HTTP client (segnet[dev]) not installed")

from segnet.cli import main  # noqa: E402
from segnet.engine.inference import Tiling  # noqa: E402
from segnet.engine.legend import draw_legend  # noqa: E402
from segnet.engine.predict import Segmenter, colorize, overlay  # noqa: E402
from segnet.engine.weights import load_for_inference  # noqa: E402
from serve_helpers import serve_load, tiny_checkpoint, write_clip  # noqa: E402

png, bomb_png, sample_image = serve_load.png, serve_load.bomb_png, serve_load.sample_image
LIMITS = ["--max-bytes", "200000", "--max-pixels", "100000", "--max-frames", "4"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server for the read-only tests: the tiny checkpoint, small upload limits."""
    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("serve") / "model.pt")
    with serve_load.start_server(["--checkpoint", str(ckpt), *LIMITS]) as server:
        server.checkpoint = ckpt
        yield server


def post(server, data: bytes, *, field: str = "image", **params) -> httpx.Response:
    files = {field: ("x.png", data, "image/png")}
    return httpx.post(server.url + "/api/segment", files=files, params=params, timeout=120)


def decode(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_page_health_info_and_openapi(served):
    page = httpx.get(served.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # self-contained: no script, style, image or font fetched from elsewhere
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text
    assert all(f'id="{i}"' in page.text for i in ("file", "opacity", "legend", "overlay"))
    health = httpx.get(served.url + "/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    info = httpx.get(served.url + "/api/info").json()
    assert info["model"] == "segnet_basic" and info["classes"] == ["a", "b", "c"]
    assert len(info["palette"]) == 3 and info["limits"]["max_pixels"] == 100000
    assert "uncertainty" not in info["outputs"]  # not a Bayesian model
    assert info["tile"] is None and info["tile_overlap"] is None  # whole uploads by default
    spec = httpx.get(served.url + "/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    segment = spec["paths"]["/api/segment"]["post"]
    assert (
        "image" in segment["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    )
    assert set(segment["responses"]) >= {"200", "400", "413", "503"}


def test_outputs_match_predicting_locally(served):
    """labels = the Segmenter's labels for the image; color, overlay and opacity follow."""
    image = sample_image(72, 100, seed=3)
    model, config = load_for_inference(checkpoint=served.checkpoint)
    expected, _ = Segmenter(model, config, device=torch.device("cpu"))(image)
    labels = decode(post(served, png(image), output="labels"))
    assert labels.shape == (72, 100) and labels.dtype == np.uint8
    assert (labels == expected).mean() > 0.999  # thread counts may move a near-tie
    colors = colorize(labels, config.palette)
    np.testing.assert_array_equal(decode(post(served, png(image), output="color")), colors)
    np.testing.assert_array_equal(decode(post(served, png(image))), overlay(image, colors))
    np.testing.assert_array_equal(decode(post(served, png(image), opacity="1")), colors)
    np.testing.assert_array_equal(decode(post(served, png(image), opacity="0.25")),
                                  overlay(image, colors, opacity=0.25))  # fmt: skip
    with_legend = draw_legend(overlay(image, colors), config.class_names, config.palette)
    np.testing.assert_array_equal(decode(post(served, png(image), legend="1")), with_legend)


def test_json_answer_has_everything_the_page_needs(served):
    image = sample_image(48, 64, seed=1)
    response = post(served, png(image), output="json")
    assert response.status_code == 200 and "inference;dur=" in response.headers["server-timing"]
    answer = response.json()
    assert (answer["model"], answer["height"], answer["width"]) == ("segnet_basic", 48, 64)
    labels = decode(post(served, png(image), output="labels"))
    shares = np.bincount(labels.ravel(), minlength=3) / labels.size
    assert [c["name"] for c in answer["classes"]] == ["a", "b", "c"]
    assert [c["share"] for c in answer["classes"]] == pytest.approx(shares.tolist())
    assert set(answer["timings_ms"]) == {"queue", "decode", "inference", "encode"}
    color = answer["images"]["color"]
    assert color.startswith("data:image/png;base64,") and "uncertainty" not in answer["images"]
    import base64

    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(color.split(",", 1)[1]))))
    palette = np.array([c["color"] for c in answer["classes"]], dtype=np.uint8)
    np.testing.assert_array_equal(decoded, palette[labels])


def test_serve_on_an_int8_engine_with_two_workers(tmp_path):
    """--backend openvino --precision int8 --int8-plan accurate: calibrated once on
    --calibration, each worker with its own infer request; the labels are those of the same
    engine (same plan) built here."""
    pytest.importorskip("openvino", reason="segnet[openvino] not installed (CI installs it)")
    pytest.importorskip("nncf", reason="segnet[openvino] not installed (CI installs it)")
    from segnet.engine.calibration import calibration_images

    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    folder = tmp_path / "calibration"
    folder.mkdir()
    for seed in range(3):
        Image.fromarray(sample_image(48, 64, seed=seed)).save(folder / f"{seed}.png")
    args = ["--checkpoint", str(ckpt), "--backend", "openvino", "--precision", "int8",
            "--calibration", str(folder), "--workers", "2", "--int8-plan", "accurate"]  # fmt: skip
    with serve_load.start_server(args) as server:
        info = httpx.get(server.url + "/api/info").json()
        assert info["runtime"] == "openvino int8 (accurate plan)"
        assert info["limits"]["workers"] == 2
        assert "openvino int8 (accurate plan)" in server.log_text()
        model, config = load_for_inference(checkpoint=ckpt)
        local = Segmenter(model, config, device=torch.device("cpu"), precision="int8",
                          backend="openvino", calibration=calibration_images(folder=folder),
                          int8_plan="accurate")  # fmt: skip
        images = [sample_image(40, 56, seed=s) for s in (5, 6, 7, 8)]

        async def both_workers() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=120) as client:
                return await asyncio.gather(*[
                    client.post(server.url + "/api/segment", params={"output": "labels"},
                                files={"image": ("x.png", png(image), "image/png")})
                    for image in images
                ])  # fmt: skip

        for image, response in zip(images, asyncio.run(both_workers())):
            assert (decode(response) == local(image)[0]).mean() > 0.999


def test_serve_engine_flag_errors_are_one_line(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    assert main(["serve", "--checkpoint", str(ckpt), "--backend", "onnxruntime",
                 "--precision", "bf16"]) == 2  # fmt: skip
    assert "bf16 does not run on backend onnxruntime" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(ckpt), "--precision", "int8", "--backend",
                 "openvino"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "calibration" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P"])
def test_other_image_modes_are_accepted(served, mode):
    image = Image.fromarray(sample_image(40, 56)).convert("L" if mode == "I;16" else mode)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert decode(post(served, buffer.getvalue())).shape == (40, 56, 3)


def _corrupt(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :]


VALID = png(sample_image(32, 48))
BAD_UPLOADS = {
    "not an image": (dict(files={"image": ("x.png", b"hello " * 50, "image/png")}), 400),
    "truncated": (dict(files={"image": ("x.png", VALID[: len(VALID) // 2], "image/png")}), 400),
    "corrupt": (dict(files={"image": ("x.png", _corrupt(VALID), "image/png")}), 400),
    "empty": (dict(files={"image": ("x.png", b"", "image/png")}), 400),
    "wrong field": (dict(files={"file": ("x.png", VALID, "image/png")}), 400),
    "text field": (dict(data={"image": "not a file"}, files={"other": ("a", b"b")}), 400),
    "bomb": (dict(files={"image": ("x.png", bomb_png(), "image/png")}), 413),
    "too many pixels": (dict(files={"image": ("x.png", png(np.zeros((400, 400, 3), np.uint8)))}), 413),
    "too many bytes": (dict(files={"image": ("x.png", b"\x89PNG" + bytes(300_000))}), 413),
    "not multipart": (dict(json={"image": "x"}), 415),
    "no boundary": (dict(content=b"xx", headers={"content-type": "multipart/form-data"}), 400),
    "bad output": (dict(files={"image": ("x.png", VALID)}, params={"output": "svg"}), 400),
    "bad opacity": (dict(files={"image": ("x.png", VALID)}, params={"opacity": "2"}), 400),
    "no uncertainty": (dict(files={"image": ("x.png", VALID)}, params={"output": "uncertainty"}), 400),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=str)
def test_bad_upload_is_a_4xx_with_a_json_error(served, case):
    kwargs, status = BAD_UPLOADS[case]
    response = httpx.post(served.url + "/api/segment", timeout=60, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and error and "\n" not in error
    assert httpx.get(served.url + "/healthz").status_code == 200  # still serving


def test_streamed_upload_is_cut_off_at_the_byte_limit(served):
    """No Content-Length (chunked) and a body that never ends: the server answers 413 once the
    limit is passed instead of reading (and holding) the rest."""
    port = int(served.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(
            b"POST /api/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n"
        )
        for _ in range(8):  # 512 KiB, over the 200 kB limit plus multipart allowance
            client.sendall(b"10000\r\n" + b"0" * 0x10000 + b"\r\n")
        answer = b""
        while not answer.endswith(b"}"):  # no final chunk sent: only a server that stopped answers
            answer += client.recv(4096) or b"}"
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"this server accepts 200,000" in answer


def test_unknown_routes_and_methods_answer_json(served):
    for response, status in ((httpx.get(served.url + "/nope"), 404),
                             (httpx.get(served.url + "/api/segment"), 405)):  # fmt: skip
        assert response.status_code == status and "error" in response.json()


def test_video_upload_answers_the_overlay_as_mp4(served, tmp_path):
    """A 6-frame clip, --max-frames 4: the first 4 frames, at the clip's size and frame rate."""
    av = pytest.importorskip("av", reason="segnet[video] not installed")
    clip = write_clip(tmp_path / "clip.mp4", frames=6, size=(48, 64), fps=10)
    files = {"video": ("clip.mp4", clip.read_bytes(), "video/mp4")}
    response = httpx.post(served.url + "/api/segment-video", files=files, timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4" and response.headers["x-frames"] == "4"
    (tmp_path / "out.mp4").write_bytes(response.content)
    with av.open(str(tmp_path / "out.mp4")) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert stream.average_rate == 10
    assert len(frames) == 4 and frames[0].shape == (48, 64, 3)
    assert httpx.get(served.url + "/api/info").json()["video"] is True


@pytest.mark.parametrize(
    ("files", "status"),
    [({"video": ("a.mp4", b"not a video at all" * 20, "video/mp4")}, 400),
     ({"video": ("a.mp4", b"", "video/mp4")}, 400),
     ({"image": ("a.mp4", b"\0" * 100, "video/mp4")}, 400)],
    ids=["not a video", "empty", "wrong field"],
)  # fmt: skip
def test_bad_video_upload_is_a_4xx_with_a_json_error(served, files, status):
    pytest.importorskip("av", reason="segnet[video] not installed")
    response = httpx.post(served.url + "/api/segment-video", files=files, timeout=60)
    assert response.status_code == status and response.json()["error"], response.text


def _admitted(server) -> int:
    return httpx.get(server.url + "/healthz", timeout=10).json()["admitted"]


def _in_background(server, data: bytes) -> tuple[threading.Thread, list]:
    """POSTs ``data`` from a thread; the response lands in the returned list."""
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(post(server, data)))
    thread.start()
    return thread, answers


def _wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def slow_upload() -> bytes:
    """An image that keeps a worker busy for a second or more on a small CPU."""
    return png(sample_image(480, 640))


def test_full_queue_answers_503_with_retry_after_and_recovers(checkpoint, slow_upload):
    args = ["--checkpoint", str(checkpoint), "--workers", "1", "--queue", "1"]
    with serve_load.start_server(args) as server:
        running = [_in_background(server, slow_upload) for _ in range(2)]  # 1 running, 1 queued
        _wait_for(lambda: _admitted(server) == 2)
        refused = post(server, VALID)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1 and "busy" in refused.json()["error"]
        for thread, answers in running:
            thread.join(timeout=120)
            assert decode(answers[0]).shape == (480, 640, 3)
        assert decode(post(server, VALID)).shape == (32, 48, 3)  # the server carried on


def test_sigterm_drains_admitted_requests_then_exits(checkpoint, slow_upload):
    args = ["--checkpoint", str(checkpoint), "--workers", "1"]
    with serve_load.start_server(args) as server:
        running = [_in_background(server, slow_upload) for _ in range(2)]
        _wait_for(lambda: _admitted(server) == 2)
        server.process.terminate()  # SIGTERM
        for thread, answers in running:
            thread.join(timeout=120)
            assert decode(answers[0]).shape == (480, 640, 3)  # finished, not cut off
        assert server.process.wait(timeout=60) == 0
        log = server.log_text()
        assert "stopped by SIGTERM; 2 segment requests handled" in log and "Traceback" not in log
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url + "/healthz", timeout=5)


def test_bayesian_model_adds_the_uncertainty_view(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "bayes.pt", model="bayesian_segnet_basic")
    with serve_load.start_server(["--checkpoint", str(ckpt), "--mc-samples", "3"]) as server:
        info = httpx.get(server.url + "/api/info").json()
        assert info["mc_samples"] == 3 and "uncertainty" in info["outputs"]
        uncertainty = decode(post(server, VALID, output="uncertainty"))
        assert uncertainty.shape == (32, 48) and uncertainty.max() >= 254  # scaled to its max
        answer = post(server, VALID, output="json").json()
        assert answer["mc_samples"] == 3 and answer["images"]["uncertainty"].startswith("data:")


def test_tiled_serving_answers_the_tiled_segmentation(tmp_path):
    """--tile: every upload runs tile by tile, as predict --tile would label it."""
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    tiling = Tiling(size=(32, 40), overlap=8)
    image = sample_image(72, 100, seed=5)
    model, config = load_for_inference(checkpoint=ckpt)
    tiled, _ = Segmenter(model, config, device=torch.device("cpu"), tiling=tiling)(image)
    whole, _ = Segmenter(model, config, device=torch.device("cpu"))(image)
    assert (tiled != whole).mean() > 0.01  # the check below can tell tiled from whole
    args = ["--checkpoint", str(ckpt), "--tile", "32x40", "--tile-overlap", "8"]
    with serve_load.start_server(args) as server:
        info = httpx.get(server.url + "/api/info").json()
        assert info["tile"] == [32, 40] and info["tile_overlap"] == 8
        labels = decode(post(server, png(image), output="labels"))
        assert labels.shape == (72, 100)
        assert (labels == tiled).mean() > 0.999  # thread counts may move a near-tie
        assert "tiles 32x40" in server.log_text()


def _serve_error(capsys, *args: str) -> str:
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("segnet: error:") and "\n" not in err
    return err


def test_serve_flags_fail_in_one_line(checkpoint, capsys, monkeypatch):
    assert "either --checkpoint" in _serve_error(capsys, "--port", "8123")
    err = _serve_error(capsys, "--checkpoint", str(checkpoint), "--mc-samples", "2")
    assert "--mc-samples" in err and "no dropout" in err
    err = _serve_error(capsys, "--checkpoint", str(checkpoint), "--tile", "32x32",
                       "--tile-overlap", "32")  # fmt: skip
    assert "--tile-overlap" in err and "smaller than the tile" in err
    assert main(["serve", "--checkpoint", str(checkpoint), "--tile", "0x16"]) == 2
    assert "argument --tile: must be HxW" in capsys.readouterr().err  # argparse's one line
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert "--port" in _serve_error(capsys, "--checkpoint", str(checkpoint), "--port", port)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "uvicorn" else real(n, *a)
    )
    assert "pip install 'segnet[serve]'" in _serve_error(capsys, "--checkpoint", str(checkpoint))


@pytest.mark.slow
def test_load_1000_requests_16_concurrent_with_malformed_uploads(checkpoint):
    """1,000 requests (every 5th malformed), 16 in flight, default limits: zero 5xx, every
    valid upload 200 and every malformed one 4xx. 32x48 images keep it to ~30 s on 2 cores
    (benchmarks/serve_load.md has the 96x128 figures with the shipped weights)."""
    plan = serve_load.request_plan((32, 48), 1000, bad_every=5)
    with serve_load.start_server(["--checkpoint", str(checkpoint)]) as server:
        result = asyncio.run(serve_load.run_load(server.url, plan, concurrency=16))
        assert "Traceback" not in server.log_text()
    assert result.server_errors == 0 and not result.wrong, (result.statuses, result.wrong[:5])
    assert result.statuses[200] == 800 and sum(result.statuses.values()) == 1000
    print(json.dumps({"seconds": round(result.seconds, 1), "statuses": dict(result.statuses)}))
