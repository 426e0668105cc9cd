"""The shipped demo shards, and the builder's pure helpers on tiny inputs."""

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from pipeline.demo import build as demo_data
from pipeline.demo import sources as src

DEMO = Path(__file__).resolve().parents[3] / "data" / "demo"
EXPECTED = {"image": 112, "text": 242, "video": 48, "audio": 162, "points": 34}  # documented in docs/demo.md
MEMBERS = {"image": ("jpg", "png"), "text": ("txt",), "video": ("mp4",), "audio": ("flac", "wav", "ogg"),
           "points": ("npy",)}

TINY_IV = """#Inventor V2.1 ascii

Separator {
    Info { string "Object Creator: test" }
    Coordinate3 {
        point [ 0 0 0, 1 0 0,
                0 2 0, 0 0 -3.5e0 ]
    }
    IndexedFaceSet { coordIndex [ 0, 1, 2, -1 ] }
    VertexProperty { vertex [ 1 1 1, 2 2 2 ] }
}
"""


@pytest.fixture(scope="module")
def samples():
    shards = sorted(str(p) for p in DEMO.glob("demo-*.tar"))
    assert len(shards) == demo_data.SHARDS
    return list(wds.WebDataset(shards, shardshuffle=False))


def test_demo_has_five_modalities_with_documented_counts(samples):
    counts = Counter(m for s in samples for m, exts in MEMBERS.items() if any(e in s for e in exts))
    assert dict(counts) == EXPECTED
    assert len({s["__key__"] for s in samples}) == len(samples) == EXPECTED["text"]
    triples = [s for s in samples if "jpg" in s and "txt" in s and "ogg" in s]
    assert len(triples) == demo_data.DEMO_COUNTS["stamp-sfx"]


def test_demo_members_decode_to_real_content(samples):
    import av
    import soundfile as sf
    from PIL import Image

    by_kind = {}
    for s in samples:
        meta = json.loads(s["json"])
        assert meta["label"] and meta["license"] and meta["attribution"] and meta["source"].startswith("debian:")
        by_kind.setdefault(meta["group"], s)
    image = np.asarray(Image.open(io.BytesIO(by_kind["stamp-sfx"]["jpg"])))
    assert 32 <= max(image.shape[:2]) <= demo_data.IMAGE_SIZE and image.std() > 10
    audio, rate = sf.read(io.BytesIO(by_kind["speech"]["flac"]))
    assert rate == 8000 and np.abs(audio).max() > 0.05
    pts = np.load(io.BytesIO(by_kind["model"]["npy"]))
    assert pts.shape == (demo_data.POINTS, 3) and pts.dtype == np.float32
    assert np.linalg.norm(pts, axis=1).max() == pytest.approx(1.0, abs=1e-5)
    with av.open(io.BytesIO(by_kind["stamp-video"]["mp4"])) as clip:
        frames = [f.to_ndarray(format="rgb24") for f in clip.decode(video=0)]
    assert len(frames) == 16 and frames[0].shape == (128, 128, 3)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1  # it moves


def test_notice_and_size():
    notice = (DEMO / "NOTICE").read_text()
    for pkg in ("tuxpaint-stamps-default", "asterisk-core-sounds-en", "inventor-data", "espeak-ng"):
        assert pkg in notice
    assert "CC-BY-SA-3.0" in notice and "GPL-2.0" in notice
    assert sum(p.stat().st_size for p in DEMO.iterdir()) <= 20 * 1024 * 1024


def test_inventor_points_parses_point_and_vertex_fields():
    pts = src.inventor_points(TINY_IV)
    assert pts.tolist() == [[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, -3.5], [1, 1, 1], [2, 2, 2]]
    assert src.inventor_points("Separator { Cube {} }").shape == (0, 3)


def test_sample_points_is_seeded_centred_and_in_the_unit_sphere():
    pts = src.inventor_points(TINY_IV)
    a, b = src.sample_points(pts, 64, seed=3), src.sample_points(pts, 64, seed=3)
    assert np.array_equal(a, b) and a.shape == (64, 3) and a.dtype == np.float32
    assert np.linalg.norm(a, axis=1).max() == pytest.approx(1.0)
    few = src.sample_points(pts, 4, seed=0)  # enough distinct vertices: no repeats
    assert len(np.unique(few, axis=0)) == 4


def test_captions_keys_and_transcripts(tmp_path):
    assert src.clean_caption("  a   frog ") == "A frog."
    assert src.clean_caption("[this is a simple beep tone]") == "This is a simple beep tone."
    assert src.clean_caption("Hello?") == "Hello?"
    assert src.words_from_name("slotMachine") == "slot machine"
    assert src.make_key("stamp", "animals", "frog-1.x") == "stamp-animals-frog_1_x"
    txt = tmp_path / "frog.txt"
    txt.write_text("A frog\nfr.utf8=Une grenouille.\n")
    assert src.stamp_caption(txt) == "A frog."
    table = src.parse_transcripts("; comment\nbeep: [beep]\ndigits/1: One.\nnot a name: x\n")
    assert table == {"beep": "[beep]", "digits/1": "One."}


def test_write_tar_is_reproducible(tmp_path):
    files = [("k1", {"txt": b"a", "json": b"{}"}), ("k2", {"txt": b"b"})]
    demo_data.write_tar(tmp_path / "a.tar", files)
    demo_data.write_tar(tmp_path / "b.tar", files)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        assert tar.getnames() == ["k1.json", "k1.txt", "k2.txt"]


def test_demo_and_bench_are_disjoint():
    items = [src.Item(f"k{i}", "speech", "x", "c.", Path("/x"), "espeak-ng") for i in range(60)]
    groups = {g: [] for g in demo_data.DEMO_COUNTS} | {"speech": items}
    demo = {it.key for _, it in demo_data.select(groups, bench=False)}
    bench = {it.key for _, it in demo_data.select(groups, bench=True)}
    assert len(demo) == demo_data.DEMO_COUNTS["speech"] and not demo & bench and len(demo | bench) == 60


def test_missing_packages_fail_with_the_install_line(monkeypatch, tmp_path):
    monkeypatch.setattr(src, "missing_packages", lambda: ["inventor-data", "espeak-ng"])
    with pytest.raises(SystemExit, match="apt-get install -y inventor-data espeak-ng"):
        demo_data.build(tmp_path)
