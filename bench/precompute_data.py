"""Synthetic but real-looking inputs and random-weight encoders for ``bench.precompute``.

Members (each ``fn(rng, **size) -> bytes``, the file a WebDataset shard would hold):

* :func:`photo_jpeg` -- gradients, blurred blobs and sensor noise (compresses like a photo);
* :func:`caption_txt` -- two template sentences over a small vocabulary, about 32 tokens;
* :func:`tone_flac` -- harmonic notes with vibrato and envelopes over coloured noise, 44.1 kHz FLAC;
* :func:`pan_mp4` -- a slow camera pan over a photo-like scene with a moving blob, H.264 (MPEG-4 without x264);
* :func:`shape_npy` -- points on the surfaces of a few primitives (sphere, box, cylinder, floor), xyz + rgb.

Models (each ``fn(folder, **config) -> folder``, saved with ``save_pretrained``, loaded as
``hf:<folder>``): :func:`save_vision` (``CLIPVisionConfig``), :func:`save_text`
(``CLIPTextConfig`` + a BPE tokenizer trained on the captions), :func:`save_audio`
(``ASTConfig`` + ``ASTFeatureExtractor``). Shards are written with ``tests.conftest.write_tar``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

# ----------------------------------------------------------------------------- members


def _photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """uint8 (h, w, 3): smooth gradients, a few blurred blobs, sensor noise."""
    from PIL import Image, ImageDraw, ImageFilter

    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([(c0 + c1 * x + c2 * y) for c0, c1, c2 in rng.uniform(0, 1, (3, 3)) * [200, 55, 55]], -1)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    side = min(h, w)
    for _ in range(6):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        r = int(rng.integers(side // 16, side // 4))
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    img = img.filter(ImageFilter.GaussianBlur(side / 100))
    arr = np.asarray(img).astype(np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
    return np.clip(arr, 0, 255).astype(np.uint8)


def photo_jpeg(rng: np.random.Generator, side: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_photo(rng, side, side)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


ADJ = "red small old wooden bright dark wet sunny busy quiet green tall narrow empty crowded snowy".split()
NOUN = "dog cat child man woman bicycle car street tree river bridge market kitchen table window boat".split()
VERB = "sits stands walks runs waits rests plays leans".split()
ADV = "quietly slowly happily calmly patiently alone".split()
PLACE = ("near", "next to", "behind", "in front of", "beside", "under", "across from", "along")
SCENE = ("in the afternoon light", "on a rainy morning", "at the edge of town", "during a summer festival",
         "while people pass by", "under a cloudy sky")


def caption_txt(rng: np.random.Generator) -> bytes:
    """Two sentences of about 15 words each: about 32 tokens with punctuation, start and end."""
    def sentence() -> str:
        a, b = rng.choice(ADJ, 2, replace=False)
        n1, n2 = rng.choice(NOUN, 2, replace=False)
        return f"a {a} {n1} {rng.choice(VERB)} {rng.choice(ADV)} {rng.choice(PLACE)} the {b} {n2} {rng.choice(SCENE)}"

    return f"{sentence().capitalize()}, and {sentence()}.".encode()


def tone_flac(rng: np.random.Generator, seconds: float, rate: int = 44_100) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    wav = np.cumsum(rng.normal(0, 1, t.size)) * 1e-3  # brown-ish noise floor
    wav -= np.convolve(wav, np.ones(4410) / 4410, mode="same")  # no DC drift
    for _ in range(int(rng.integers(2, 5))):  # notes: harmonics, vibrato, attack/decay envelope
        f0, start = rng.uniform(110, 880), rng.uniform(0, seconds * 0.7)
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))) / rate
        env = np.clip((t - start) * 20, 0, 1) * np.exp(-np.clip(t - start, 0, None) * rng.uniform(0.5, 3))
        wav += env * sum(0.3 / k * np.sin(k * phase) for k in range(1, 6))
    wav = 0.8 * wav / max(1e-6, float(np.abs(wav).max()))
    buf = io.BytesIO()
    sf.write(buf, wav.astype(np.float32), rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def pan_mp4(rng: np.random.Generator, width: int, height: int, frames: int, fps: int = 24) -> bytes:
    import av

    scene = _photo(rng, height + frames, width + 2 * frames)  # room to pan
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = scene[i // 2:i // 2 + height, 2 * i:2 * i + width].copy()
            y, x = int(height * (0.3 + 0.4 * i / frames)), int(width * (0.2 + 0.6 * i / frames))
            r = max(2, height // 8)
            frame[max(0, y - r):y + r, max(0, x - r):x + r] = (230, 200, 40)  # something moving
            noisy = frame.astype(np.int16) + rng.normal(0, 3, frame.shape).astype(np.int16)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.clip(noisy, 0, 255).astype(np.uint8),
                                                                   format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def shape_npy(rng: np.random.Generator, points: int) -> bytes:
    """(points, 6) float32 xyz + rgb on the surfaces of a floor and a few primitives."""
    def sphere(n):
        v = rng.normal(size=(n, 3))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def box(n):
        v = rng.uniform(-1, 1, (n, 3))
        axis = rng.integers(0, 3, n)
        v[np.arange(n), axis] = np.sign(rng.uniform(-1, 1, n))
        return v

    def cylinder(n):
        a = rng.uniform(0, 2 * np.pi, n)
        return np.stack([np.cos(a), rng.uniform(-1, 1, n), np.sin(a)], 1)

    parts = []
    count = int(rng.integers(2, 5))
    for shape in rng.choice([sphere, box, cylinder], count):
        n = points // (count + 1)
        scale = rng.uniform(0.25, 0.7, 3)
        p = shape(n) * scale + [rng.uniform(-0.8, 0.8), scale[1] - 1.0, rng.uniform(-0.8, 0.8)]  # on the floor
        parts.append(np.hstack([p, np.tile(rng.uniform(0, 1, 3), (n, 1))]))
    n = points - sum(len(p) for p in parts)
    floor = np.stack([rng.uniform(-1.2, 1.2, n), np.full(n, -1.0), rng.uniform(-1.2, 1.2, n)], 1)
    parts.append(np.hstack([floor, np.full((n, 3), 0.5)]))
    cloud = np.vstack(parts)
    cloud[:, :3] += rng.normal(0, 0.005, (len(cloud), 3))  # scanner noise
    buf = io.BytesIO()
    np.save(buf, cloud.astype(np.float32))
    return buf.getvalue()


def write_shards(folder: Path, ext: str, member: Callable[[np.random.Generator], bytes], n: int,
                 pool: int, per_shard: int = 512) -> str:
    """``n`` samples of one ``ext`` member in tars of ``per_shard``; returns the brace pattern.
    ``pool`` distinct members are made and reused (decoding them costs the same every time)."""
    from tests.conftest import write_tar

    rng = np.random.default_rng(0)
    made = [member(rng) for _ in range(min(n, pool))]
    folder.mkdir(parents=True, exist_ok=True)
    shards = (n + per_shard - 1) // per_shard
    for s in range(shards):
        keys = range(s * per_shard, min(n, (s + 1) * per_shard))
        write_tar(folder / f"bench-{s:04d}.tar", [(f"{i:08d}", {ext: made[i % len(made)]}) for i in keys])
    return str(folder / f"bench-{{0000..{shards - 1:04d}}}.tar")


# ----------------------------------------------------------------------------- models


def save_vision(folder: Path, **config) -> Path:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(**config)).save_pretrained(folder)
    side = config["image_size"]
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(folder)
    return folder


def save_text(folder: Path, max_tokens: int = 77, **config) -> Path:
    """A CLIP text tower and a byte-level BPE tokenizer trained here on generated captions."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    rng = np.random.default_rng(1)
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2048, special_tokens=["[PAD]", "[UNK]", "[BOS]", "[EOS]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((caption_txt(rng).decode() for _ in range(2000)), trainer)
    tok.post_processor = processors.TemplateProcessing(  # CLIP-style start/end tokens
        single="[BOS] $A [EOS]", special_tokens=[(t, tok.token_to_id(t)) for t in ("[BOS]", "[EOS]")])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]", model_max_length=max_tokens)
    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=max_tokens, pad_token_id=0,
                         bos_token_id=2, eos_token_id=3, **config)
    CLIPTextModel(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def save_audio(folder: Path, **config) -> Path:
    """An Audio Spectrogram Transformer and its feature extractor (16 kHz log-mel frames)."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    torch.manual_seed(0)
    cfg = ASTConfig(**config)
    ASTModel(cfg).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=cfg.num_mel_bins, max_length=cfg.max_length).save_pretrained(folder)
    return folder
