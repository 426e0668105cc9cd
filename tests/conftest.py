"""Shared test fixtures: tiny offline encoders and tiny WebDataset shards with planted faults.

The builders are plain functions so other tests can call them:

* :func:`build_tiny_clip` -- a tiny CLIP (text + vision towers, a local word-level tokenizer,
  a 32-px image processor) saved with ``save_pretrained``; load it as ``hf:<folder>``.
* :func:`build_tiny_wav2vec2` -- a tiny Wav2Vec2 audio model with its feature extractor (16 kHz).
* :func:`build_shards` -- shards holding all five modalities, missing members, a corrupt JPEG,
  a corrupt audio file, a malformed ``.npy``, a truncated tar and an empty shard; returns the
  expected status of every (key, modality).
* :func:`write_manifest` -- a manifest TOML over those shards and encoders.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

MODS = ("image", "text", "video", "audio", "points")
WORDS = ["a", "photo", "of", "the", "cat", "dog", "bird", "red", "blue", "sound", "shape", "car", "tree"]


def build_tiny_clip(folder: str | Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    folder = Path(folder)
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[BOS]", "[EOS]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]", model_max_length=32)
    cfg = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 32, "pad_token_id": 0,
                     "bos_token_id": 2, "eos_token_id": 3},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=16)
    import torch

    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def build_tiny_wav2vec2(folder: str | Path) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = Path(folder)
    cfg = Wav2Vec2Config(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=31,
                         conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=4,
                         num_conv_pos_embedding_groups=2, vocab_size=10)
    torch.manual_seed(0)
    Wav2Vec2Model(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, feature_size=1, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------- media


def jpeg_bytes(seed: int, size: int = 40) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def wav_bytes(seed: int, seconds: float = 0.4, rate: int = 22050) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    wav = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, wav, rate, format="WAV")
    return buf.getvalue()


def mp4_bytes(seed: int, frames: int = 6, size: int = 32) -> bytes:
    import av

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray((rng.random((size, size, 3)) * 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def npy_bytes(seed: int, n: int = 300) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).standard_normal((n, 3)).astype(np.float32))
    return buf.getvalue()


def ply_bytes(seed: int, n: int = 200) -> bytes:
    pts = np.random.default_rng(seed).standard_normal((n, 3))
    head = f"ply\nformat ascii 1.0\nelement vertex {n}\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    return (head + "\n".join(" ".join(f"{v:.5f}" for v in p) for p in pts) + "\n").encode()


def sample_members(i: int, label: str) -> dict[str, bytes]:
    """All five modalities and a json label for sample number i."""
    return {
        "jpg": jpeg_bytes(i), "txt": f"a photo of the {label}".encode(), "mp4": mp4_bytes(i),
        "wav": wav_bytes(i), "npy" if i % 2 == 0 else "ply": npy_bytes(i) if i % 2 == 0 else ply_bytes(i),
        "json": json.dumps({"label": label, "license": "CC0"}).encode(),
    }


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))


def build_shards(folder: str | Path) -> dict:
    """Write shard-00000{0..3}.tar; return {"pattern", "expected": {modality: {key: status|"ok"}}, ...}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = ["cat", "dog", "bird"]
    expected: dict[str, dict[str, str]] = {m: {} for m in MODS}

    def add(samples, key, members, status=None):
        samples.append((key, members))
        for m in MODS:
            expected[m][key] = (status or {}).get(m, "ok")

    # shard 0: complete samples and missing members
    s0: list = []
    for i in range(5):
        add(s0, f"s0-{i:03d}", sample_members(i, labels[i % 3]))
    m = sample_members(5, "cat")
    del m["wav"], m["mp4"]
    add(s0, "s0-005", m, {"audio": "missing", "video": "missing"})
    m = sample_members(6, "dog")
    del m["txt"], m["npy"], m["json"]
    add(s0, "s0-006", m, {"text": "missing", "points": "missing"})
    write_tar(folder / "shard-000000.tar", s0)
    # shard 1: corrupt data
    s1: list = []
    add(s1, "s1-000", sample_members(10, "bird"))
    m = sample_members(12, "cat")
    m["jpg"] = m["jpg"][:30]  # header kept, data cut: undecodable
    add(s1, "s1-001", m, {"image": "corrupt"})
    m = sample_members(14, "dog")
    m["wav"] = b"RIFF\x00\x00not really audio at all"
    add(s1, "s1-002", m, {"audio": "corrupt"})
    m = sample_members(16, "bird")
    m["npy"] = b"\x93NUMPY garbage"
    add(s1, "s1-003", m, {"points": "corrupt"})
    m = sample_members(18, "cat")
    m["npy"] = _npy_wrong_shape()
    add(s1, "s1-004", m, {"points": "corrupt"})
    write_tar(folder / "shard-000001.tar", s1)
    # shard 2: truncated inside the third sample
    s2 = [(f"s2-{i:03d}", sample_members(20 + i, labels[i % 3])) for i in range(4)]
    path = folder / "shard-000002.tar"
    write_tar(path, s2)
    with tarfile.open(path) as tar:
        cut = next(t for t in tar.getmembers() if t.name == "s2-002.mp4")
    data = path.read_bytes()
    path.write_bytes(data[:cut.offset_data + 100])
    for i in range(2):
        for mod in MODS:
            expected[mod][f"s2-{i:03d}"] = "ok"
    for mod in MODS:
        expected[mod]["s2-002"] = "error"  # partially read when the fault hit
    # shard 3: empty
    write_tar(folder / "shard-000003.tar", [])
    return {"pattern": str(folder / "shard-{000000..000003}.tar"), "expected": expected,
            "labels": sorted(labels), "shards": 4}


def _npy_wrong_shape() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros((10, 4), np.float32))  # a valid .npy that is not an (N, 3|6) cloud
    return buf.getvalue()


def write_manifest(path: str | Path, shards: str, output: str | Path, clip: str | Path, audio: str | Path,
                   extra: str = "") -> Path:
    path = Path(path)
    path.write_text(f"""
[dataset]
name = "tiny"
shards = "{shards}"
output = "{output}"

[modalities.image]
encoder = "hf:{clip}"
batch_size = 4

[modalities.text]
encoder = "hf:{clip}"
batch_size = 4
class_prompt = "a photo of the {{}}"

[modalities.video]
encoder = "hf:{clip}"
batch_size = 2
frames = 3

[modalities.audio]
encoder = "hf:{audio}"
batch_size = 4
seconds = 0.25
dtype = "float32"

[modalities.points]
encoder = "hf:{clip}"
batch_size = 4
points = 256
views = 2

[precompute]
device = "cpu"
num_workers = 0
{extra}
""")
    return path


# ----------------------------------------------------------------------------- gpu tests

NEEDS_CUDA = "needs a CUDA device: run `just test-gpu` on a GPU machine"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A ``@pytest.mark.gpu`` test fails (before its fixtures are built) where CUDA is not available.

    CI deselects these tests (``-m "not gpu"``); anywhere they are selected, a machine without
    CUDA is an error to see, not a skip that reads as green.
    """
    if item.get_closest_marker("gpu") is None:
        return
    import torch

    if not torch.cuda.is_available():
        pytest.fail(NEEDS_CUDA, pytrace=False)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def tiny_audio(tmp_path_factory) -> Path:
    return build_tiny_wav2vec2(tmp_path_factory.mktemp("w2v"))


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> dict:
    return build_shards(tmp_path_factory.mktemp("shards"))
