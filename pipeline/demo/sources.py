"""Readers for the demo dataset's real sources (Debian packages) and the pure helpers the
builder uses: caption cleaning, Inventor point parsing and sampling, media conversion.

Sources (``apt-get install`` them; :func:`missing_packages` checks):

* ``tuxpaint-stamps-default``: stamp images (PNG) with English captions (first line of the
  ``.txt``) in 17 category folders; some have a sound effect (``<stamp>.ogg``);
* ``asterisk-core-sounds-en`` (+ ``-wav``): English telephony prompts with transcripts
  (``core-sounds-en.txt.gz``);
* ``inventor-data`` (+ ``inventor-clients`` for ``ivcat``): named 3D models (Open Inventor);
* ``espeak-ng``: speaks the 3D models' captions (audio for the points samples).
"""

from __future__ import annotations

import gzip
import io
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PACKAGES = ("tuxpaint-stamps-default", "asterisk-core-sounds-en-wav", "asterisk-core-sounds-en",
            "inventor-data", "inventor-clients", "espeak-ng")
STAMPS = Path("/usr/share/tuxpaint/stamps")
ASTERISK = Path("/usr/share/asterisk/sounds/en")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
INVENTOR = Path("/usr/share/inventor/data/models")
MIN_MODEL_POINTS = 32  # models with fewer distinct vertices (primitives only) are skipped
LICENSES = {
    "tuxpaint-stamps-default": ("GPL-2.0", "Tux Paint stamps, (c) 2002-2022 Bill Kendrick and contributors"),
    "asterisk-core-sounds-en": ("CC-BY-SA-3.0", "Asterisk core sounds (en), (c) 2003-2010 Allison Smith"),
    "inventor-data": ("LGPL-2.0-or-later", "Open Inventor data, (c) 2000 Silicon Graphics, Inc."),
    "espeak-ng": ("GPL-3.0-or-later", "speech synthesised with eSpeak NG"),
}


@dataclass(frozen=True)
class Item:
    """One source item before encoding into shard members."""

    key: str  # WebDataset __key__ (no dots)
    group: str  # stamp-sfx | stamp | speech | model
    label: str  # class name
    caption: str
    path: Path  # main source file (png, wav or iv)
    package: str
    extra: dict[str, Path] = field(default_factory=dict)  # e.g. {"ogg": sound effect}


def missing_packages() -> list[str]:
    """The Debian packages among :data:`PACKAGES` that are not installed (dpkg status)."""
    status = Path("/var/lib/dpkg/status")
    text = status.read_text(errors="replace") if status.exists() else ""
    installed = set(re.findall(r"^Package: (\S+)\nStatus: install ok installed", text, flags=re.M))
    return [p for p in PACKAGES if p not in installed]


def make_key(*parts: str) -> str:
    """A WebDataset-safe key: lower-case, [a-z0-9_-] only (a dot would split the member name)."""
    return "-".join(re.sub(r"[^a-z0-9_]+", "_", p.lower()).strip("_") for p in parts)


def clean_caption(text: str) -> str:
    """Whitespace collapsed, bracketed stage directions kept as words, a final full stop."""
    text = re.sub(r"\s+", " ", text.replace("[", "").replace("]", "")).strip()
    if text and text[-1] not in ".!?":
        text += "."
    return text[:1].upper() + text[1:]


def words_from_name(name: str) -> str:
    """'slotMachine' / 'fine_gear-2' -> 'slot machine' / 'fine gear 2'."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


def stamp_caption(txt: Path) -> str:
    """The English caption: the first line of a stamp's .txt (later lines are translations)."""
    for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip() and "=" not in line.split(" ")[0]:
            return clean_caption(line)
    return ""


def stamps() -> list[Item]:
    items = []
    for txt in sorted(STAMPS.rglob("*.txt")):
        png = txt.with_suffix(".png")
        caption = stamp_caption(txt)
        if not png.exists() or not caption:
            continue
        rel = txt.relative_to(STAMPS).with_suffix("")
        sound = txt.with_suffix(".ogg")
        extra = {"ogg": sound} if sound.exists() else {}
        items.append(Item(make_key("stamp", *rel.parts), "stamp-sfx" if extra else "stamp", rel.parts[0],
                          caption, png, "tuxpaint-stamps-default", extra))
    return items


def parse_transcripts(text: str) -> dict[str, str]:
    """``name: transcript`` lines of core-sounds-en.txt (``;`` starts a comment)."""
    out = {}
    for line in text.splitlines():
        name, sep, said = line.partition(":")
        if sep and name.strip() and not line.startswith(";") and " " not in name.strip():
            out[name.strip()] = said.strip()
    return out


def speech() -> list[Item]:
    transcripts = parse_transcripts(gzip.decompress(ASTERISK_TRANSCRIPTS.read_bytes()).decode("utf-8", "replace"))
    items = []
    for name, said in sorted(transcripts.items()):
        wav = ASTERISK / f"{name}.wav"
        caption = clean_caption(said)
        if wav.exists() and caption and not name.startswith("silence/"):
            label = name.split("/")[0] if "/" in name else "prompt"
            items.append(Item(make_key("speech", *name.split("/")), "speech", label, caption, wav,
                              "asterisk-core-sounds-en"))
    return items


def inventor_points(ascii_iv: str) -> np.ndarray:
    """Every vertex of an ASCII Inventor scene (``point [...]`` / ``vertex [...]`` fields), (N, 3).

    Transforms are not applied: the demo uses models whose geometry sits in one frame."""
    rows = []
    for body in re.findall(r"\b(?:point|vertex)\s*\[([^\]]*)\]", ascii_iv):
        nums = np.array(re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", body), dtype=np.float64)
        rows.append(nums[: len(nums) // 3 * 3].reshape(-1, 3))
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 3), np.float32)


def sample_points(vertices: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` points from the distinct vertices (without replacement when there are enough),
    centred and scaled into the unit sphere, float32 (n, 3)."""
    distinct = np.unique(vertices, axis=0)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(distinct), size=n, replace=len(distinct) < n)
    pts = distinct[np.sort(idx)].astype(np.float64)
    pts -= (distinct.max(0) + distinct.min(0)) / 2
    radius = np.linalg.norm(pts, axis=1).max()
    return (pts / (radius if radius > 0 else 1.0)).astype(np.float32)


def ivcat(path: Path) -> str:
    """The scene as ASCII Inventor ("" when ivcat cannot read it, e.g. a missing include)."""
    done = subprocess.run(["ivcat", str(path)], capture_output=True, text=True, errors="replace")
    return done.stdout if done.returncode == 0 else ""


def models() -> list[Item]:
    items = []
    for iv in sorted(INVENTOR.rglob("*.iv")):
        folder = iv.parent.relative_to(INVENTOR).parts
        label = words_from_name(folder[0]) if folder else "object"
        items.append(Item(make_key("model", *folder, iv.stem), "model", label,
                          clean_caption(f"a 3D model of a {words_from_name(iv.stem)}"), iv, "inventor-data"))
    return items


# ----------------------------------------------------------------------------- media


def stamp_rgb(png: Path, size: int):
    """A stamp on a white background, longest side ``size`` (PIL RGB)."""
    from PIL import Image

    with Image.open(png) as im:
        im = im.convert("RGBA")
        im.thumbnail((size, size), Image.LANCZOS)
        canvas = Image.new("RGB", im.size, (255, 255, 255))
        canvas.paste(im, mask=im.getchannel("A"))
        return canvas


def jpeg_bytes(image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def pan_zoom_mp4(image, frames: int = 16, fps: int = 8, size: int = 128) -> bytes:
    """An h264 mp4 of a slow zoom (1.0 -> 1.4) drifting across ``image`` (PIL RGB)."""
    import av
    from PIL import Image

    square = Image.new("RGB", (max(image.size),) * 2, (255, 255, 255))
    square.paste(image, ((square.width - image.width) // 2, (square.height - image.height) // 2))
    side = square.width
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "30", "preset": "medium"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1  # deterministic output
        for i in range(frames):
            t = i / max(frames - 1, 1)
            crop = side / (1.0 + 0.4 * t)
            x0 = (side - crop) * (0.5 + 0.4 * (t - 0.5))
            y0 = (side - crop) * 0.5
            frame = square.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + crop, y0 + crop))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.asarray(frame), format="rgb24")))
        container.mux(stream.encode(None))
    return buf.getvalue()


def flac_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format="FLAC")
    return buf.getvalue()


def wav_to_flac(path: Path) -> bytes:
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="int16")
    return flac_bytes(audio, rate)


def espeak_flac(text: str, voice: str = "en", speed: int = 150) -> bytes:
    """``text`` spoken by espeak-ng (22,050 Hz mono), as FLAC."""
    import soundfile as sf

    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install -y espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "say.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out), text], check=True,
                       capture_output=True)
        audio, rate = sf.read(str(out), dtype="int16")
    return flac_bytes(audio, rate)
