"""The published bundle: loads with datasets/polars/faiss as it is, verifies, fails loudly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from pipeline.core.heads_file import plain_head, save_heads
from pipeline.core.manifest import ManifestError, from_dict
from pipeline.core.store import atomic_write_table, embedding_table, read_store, write_status
from pipeline.pair import stage as pair
from pipeline.publish import stage as publish
from pipeline.publish.verify import BundleError, verify, write_checksums
from tests.planted import write_planted_stores

REPO = Path(__file__).resolve().parents[3]
N = 120
DIMS = {"text": 32, "image": 32, "audio": 24}
AUDIO_DROPPED = [3, 50, 97]
SOURCES = [
    {"source": "tuxpaint", "license": "GPL-2.0", "attribution": "Tux Paint authors", "url": "https://tuxpaint.org"},
    {"source": "asterisk", "license": "CC-BY-SA-3.0", "attribution": "Allison Smith", "url": ""},
]


def _manifest(output: Path, **publish_keys):
    return from_dict({
        "dataset": {"name": "tiny", "shards": "shards-{0..1}.tar", "output": str(output), "license": "cc0-1.0"},
        "modalities": {m: {"encoder": f"planted-{m}"} for m in DIMS},
        # accept_quantile 0: every raw neighbour is kept, so the bundle's row counts are N * k per target
        "pair": {"query": "text", "k": 3, "head_run": "r1", "accept_quantile": 0.0},
        "publish": {"part_mb": 0.01, "run": "r1", **publish_keys},
    })


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("run") / "out"
    vectors = write_planted_stores(out, n=N, dims=DIMS, parts=3, dtype="float16", drop={"audio": AUDIO_DROPPED})
    write_status(out / "status" / "audio" / "part-000000.parquet",
                 [(f"s{i:05d}", "missing", "") for i in AUDIO_DROPPED])
    (out / "precompute.json").write_text(json.dumps({"world_size": 1, "counts": {"audio": {"missing": 3}}}))
    for p, chunk in enumerate(np.array_split(np.arange(N), 2)):
        js = [json.dumps({"label": "cat", **SOURCES[i % 2], **({"source": f"tuxpaint:/stamps/{i}.png"} if i % 2 == 0
                                                                else {})}) if i % 10 else "" for i in chunk]
        js[0] = "{not json"
        atomic_write_table(pa.table({"key": [f"s{i:05d}" for i in chunk], "json": js}),
                           out / "metadata" / f"part-{p:06d}.parquet")
    classes = vectors["text"][:2].astype(np.float32)
    atomic_write_table(embedding_table(["cat", "dog"], classes, "float32", {"encoder": "planted-text"}),
                       out / "classes" / "text.parquet")
    save_heads(out / "runs" / "r1", {"audio": plain_head([[24, 16], [16, 32]])}, {"epochs": 1}, "text")
    pair.run(_manifest(out))  # the real pairing stage writes pairs/ (audio through the r1 head)
    return out, vectors


@pytest.fixture(scope="module")
def bundle(outputs) -> Path:
    out, _ = outputs
    result = publish.run(_manifest(out))
    assert result["bundle"] == str(out / "publish")
    return out / "publish"


def _bundle_json(folder: Path) -> dict:
    return json.loads((folder / "bundle.json").read_text())


def test_bundle_loads_with_datasets_and_polars(bundle, outputs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets
    import polars as pl

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # in case datasets was imported earlier
    _, vectors = outputs
    spec = _bundle_json(bundle)["tables"]
    expected = {"embeddings/text": N, "embeddings/image": N, "embeddings/audio": N - len(AUDIO_DROPPED),
                "classes": 2, "samples": N, "pairs/neighbors": N * 6, "pairs/quintuples": N}
    assert {name: t["rows"] for name, t in spec.items()} == expected
    for name, rows in expected.items():
        assert pl.scan_parquet(str(bundle / name / "*.parquet")).select(pl.len()).collect().item() == rows
    ds = datasets.load_dataset("parquet", data_files=str(bundle / "embeddings/audio/*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == N - len(AUDIO_DROPPED)
    row = ds[10]
    i = int(row["key"][1:])
    np.testing.assert_allclose(np.array(row["embedding"]), vectors["audio"][i].astype(np.float16), rtol=1e-3)
    nb = datasets.load_dataset("parquet", data_files=str(bundle / "pairs/neighbors/*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert nb.num_rows == N * 6 and set(nb.unique("modality")) == {"image", "audio"}
    # the folder itself, by config name, as from the Hub: the card's `configs` say where each table is
    assert datasets.get_dataset_config_names(str(bundle))[:3] == ["audio", "image", "text"]
    qt = datasets.load_dataset(str(bundle), "quintuples", split="train", cache_dir=str(tmp_path / "hf"))
    assert qt.num_rows == N and qt.column_names == ["query_key", "audio_key", "audio_score", "image_key", "image_score"]


def test_stores_are_repartitioned_by_size_keeping_rows_and_metadata(bundle, outputs):
    out, _ = outputs
    spec = _bundle_json(bundle)["tables"]["embeddings/text"]
    assert len(spec["files"]) == 2  # 120 x 32 float16 rows (~16 KB) at ~10 KB per file
    sizes = [(bundle / f).stat().st_size for f in spec["files"]]
    assert max(sizes[:-1]) < 0.01 * 2**20 * 1.5
    table = pa.concat_tables([pq.read_table(bundle / f) for f in spec["files"]])
    source = read_store(out, "text")
    assert table.column("key").to_pylist() == list(source.keys)
    np.testing.assert_array_equal(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)),
                                  source.vectors)
    assert json.loads(pq.read_schema(bundle / spec["files"][-1]).metadata[b"bindery.encoder"]) == "planted-text"
    assert spec["dim"] == 32 and spec["dtype"] == "float16" and spec["encoder"] == "planted-text"


def test_faiss_index_answers_with_the_expected_key(bundle, outputs):
    _, vectors = outputs
    index = faiss.read_index(str(bundle / "index" / "image.faiss"))
    keys = pq.read_table(bundle / "index" / "image.keys.parquet").column("key").to_pylist()
    _, ids = index.search(np.ascontiguousarray(vectors["image"][[7, 42]], dtype=np.float32), 1)
    assert [keys[i] for i in ids[:, 0]] == ["s00007", "s00042"]


def test_card_yaml_lists_every_table_with_its_features(bundle):
    import datasets

    text = (bundle / "README.md").read_text()
    _, header, body = text.split("---\n", 2)
    card = yaml.safe_load(header)
    tables = _bundle_json(bundle)["tables"]
    configs = {c["config_name"]: c["data_files"][0]["path"] for c in card["configs"]}
    assert configs == {t["config"]: f"{name}/*.parquet" for name, t in tables.items()}
    assert set(configs) == {"text", "image", "audio", "classes", "samples", "neighbors", "quintuples"}
    for info in card["dataset_info"]:
        path = next((bundle / configs[info["config_name"]].rsplit("/", 1)[0]).glob("*.parquet"))
        want = datasets.Features.from_arrow_schema(pq.read_schema(path))
        assert datasets.Features._from_yaml_list(info["features"]) == want, info["config_name"]
        assert info["splits"][0]["num_examples"] == tables[next(n for n, t in tables.items()
                                                                 if t["config"] == info["config_name"])]["rows"]
    assert card["license"] == ["cc-by-sa-3.0", "cc0-1.0", "gpl-2.0"]
    assert "feature-extraction" in card["task_categories"] and "audio" in card["tags"]
    assert "`planted-audio`" in body and "Tux Paint authors" in body and "https://tuxpaint.org" in body
    assert "![scores_image](figures/scores_image.png)" in body and (bundle / "figures/scores_image.png").is_file()
    assert "| mutual | `false` |" in body and "| audio | 117 | 3 |" in body


def test_bundle_json_records_sources_heads_and_manifest(bundle):
    info = _bundle_json(bundle)
    by_source = {s["source"]: s for s in info["sources"]}
    assert by_source["tuxpaint:/stamps/*"]["samples"] == 48 and by_source["asterisk"]["samples"] == 60
    assert by_source["tuxpaint:/stamps/*"]["license"] == "GPL-2.0"
    assert by_source[""]["license"] == "cc0-1.0" and by_source[""]["samples"] == 12
    assert info["heads"]["files"] == ["heads/r1/heads.safetensors", "heads/r1/config.json"]
    assert info["manifest"]["publish"]["part_mb"] == 0.01 and info["indexes"]["image"]["ntotal"] == N
    assert json.loads((bundle / "provenance" / "precompute.json").read_text())["world_size"] == 1


def test_bundle_json_reads_into_dataclasses_and_writes_back_byte_for_byte(bundle):
    from pipeline.publish.bundle import Bundle

    text = (bundle / "bundle.json").read_text()
    typed = Bundle.read(bundle / "bundle.json")
    assert typed.to_json() == text
    assert list(json.loads(text)) == ["format", "name", "created", "query", "tables", "indexes", "figures",
                                      "heads", "status", "pair_summary", "sources", "manifest"]
    assert typed.tables["embeddings/audio"].store.dim == 24 and typed.heads.run == "r1"


def test_checksums_are_sha256sum_compatible(bundle):
    if shutil.which("sha256sum") is None:  # coreutils; present on every Linux CI image
        pytest.fail("sha256sum not found")
    done = subprocess.run(["sha256sum", "--quiet", "-c", "checksums.sha256"], cwd=bundle, capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = (bundle / "checksums.sha256").read_text().count("\n")
    assert listed == sum(1 for p in bundle.rglob("*") if p.is_file()) - 1


def test_verify_passes_fresh_and_names_a_changed_or_deleted_file(bundle, tmp_path):
    assert verify(bundle)["rows"]["pairs/quintuples"] == N
    changed = tmp_path / "changed"
    shutil.copytree(bundle, changed)
    victim = changed / _bundle_json(changed)["tables"]["embeddings/image"]["files"][1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "publish", "--verify", str(changed)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 1
    assert f"{victim}: checksum mismatch" in done.stderr
    deleted = tmp_path / "deleted"
    shutil.copytree(bundle, deleted)
    (deleted / "index" / "image.keys.parquet").unlink()
    with pytest.raises(BundleError, match="image.keys.parquet: listed in checksums.sha256 but missing"):
        verify(deleted)
    (changed / "extra.txt").write_text("x")
    victim.unlink()
    shutil.copy2(bundle / victim.relative_to(changed), victim)
    with pytest.raises(BundleError, match="extra.txt: not listed"):
        verify(changed)


def test_verify_finds_keys_that_do_not_join_and_bad_key_maps(bundle, tmp_path):
    broken = tmp_path / "b"
    shutil.copytree(bundle, broken)
    nb_file = broken / _bundle_json(broken)["tables"]["pairs/neighbors"]["files"][0]
    nb = pq.read_table(nb_file)
    keys = nb.column("target_key").to_pylist()
    keys[5] = "nowhere"
    pq.write_table(nb.set_column(3, "target_key", pa.array(keys, pa.string())), nb_file)
    write_checksums(broken)
    with pytest.raises(BundleError, match="target_key .* key 'nowhere' is not in the"):
        verify(broken)
    shutil.rmtree(broken)
    shutil.copytree(bundle, broken)
    key_map = broken / "index" / "image.keys.parquet"
    pq.write_table(pq.read_table(key_map).slice(1), key_map)
    write_checksums(broken)
    with pytest.raises(BundleError, match=f"image.faiss: {N} vectors but index/image.keys.parquet has {N - 1}"):
        verify(broken)
    shutil.rmtree(broken)
    shutil.copytree(bundle, broken)
    text_file = broken / _bundle_json(broken)["tables"]["embeddings/text"]["files"][0]
    table = pq.read_table(text_file)
    keys = table.column("key").to_pylist()
    keys[1] = keys[0]
    pq.write_table(table.set_column(0, "key", pa.array(keys, pa.string())), text_file)
    write_checksums(broken)
    with pytest.raises(BundleError, match="embeddings/text: key 's00000' occurs more than once"):
        verify(broken)


def test_republish_replaces_and_a_crash_keeps_the_old_bundle(outputs, tmp_path, monkeypatch):
    out, _ = outputs
    folder = tmp_path / "pub"
    manifest = _manifest(out, folder=str(folder), part_mb=1.0, run="")
    publish.run(manifest)
    assert len(_bundle_json(folder)["tables"]["embeddings/text"]["files"]) == 1
    assert not (folder / "heads").exists()
    before = (folder / "checksums.sha256").read_text()

    def crash(bundle):
        raise RuntimeError("disk full")

    monkeypatch.setattr(publish, "render_card", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        publish.run(_manifest(out, folder=str(folder), part_mb=0.01))
    assert (folder / "checksums.sha256").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pub"]
    verify(folder)


def test_bad_config_is_a_manifest_error(outputs, tmp_path):
    out, _ = outputs
    with pytest.raises(ManifestError, match="publish.run: run 'nope'"):
        publish.run(_manifest(out, run="nope", folder=str(tmp_path / "a")))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("x")
    with pytest.raises(ManifestError, match="publish.folder: .* is not a bindery bundle"):
        publish.run(_manifest(out, folder=str(tmp_path / "busy")))
    with pytest.raises(ManifestError, match="publish.repo_id: required with --upload"):
        publish.run(_manifest(out, folder=str(tmp_path / "b")), upload=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_upload_without_token_or_hub_fails_before_writing(outputs, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    out, _ = outputs
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    manifest = _manifest(out, folder=str(tmp_path / "pub"), repo_id="someone/tiny")
    with pytest.raises(BundleError, match="needs a Hugging Face token: set HF_TOKEN"):
        publish.run(manifest, upload=True)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: no network
    with pytest.raises(BundleError, match="cannot reach the Hugging Face Hub"):
        publish.run(manifest, upload=True)
    assert list(tmp_path.iterdir()) == []


def test_heads_in_bundle_load_and_project(bundle):
    from pipeline.core.heads_file import load_heads, project

    heads, config = load_heads(bundle / "heads" / "r1")
    assert config["heads"]["audio"]["layers"] == [[24, 16], [16, 32]]
    out = project(heads["audio"], torch.ones(2, 24))
    assert out.shape == (2, 32) and torch.allclose(out.norm(dim=-1), torch.ones(2))


def test_ebind_manifest_loads_with_the_papers_recipe():
    from pipeline.core.manifest import load

    m = load(REPO / "manifests" / "ebind.toml")
    assert set(m.modalities) == {"text", "image", "video", "audio", "points"}
    assert (m.train.hidden, m.train.depth, m.modalities["video"].frames) == (2048, 2, 8)
    assert m.train.anchor_passthrough == ("image", "video") and m.train.modalities == ("audio", "points")
    assert m.publish.run == m.train.run == "ebind" and m.publish.part_mb == 256.0
    # pairing searches through round 1's heads (trained on own captions), a run of its own
    assert m.pair.head_run == "ebind-captions" != m.train.run


def test_upload_pushes_the_finished_bundle_in_one_commit(outputs, tmp_path, monkeypatch):
    """The Hub client is replaced by a recorder (no network here); what it is handed is checked for real."""
    import huggingface_hub

    calls = []

    class RecordingApi:
        def __init__(self, token):
            calls.append(("init", token))

        def whoami(self):
            calls.append(("whoami",))
            return {"name": "someone"}

        def create_repo(self, repo_id, repo_type, private, exist_ok):
            calls.append(("create_repo", repo_id, repo_type, private, exist_ok))

        def upload_folder(self, folder_path, repo_id, repo_type, commit_message):
            calls.append(("upload_folder", repo_id, repo_type, verify(folder_path)["files"]))
            return type("Commit", (), {"oid": "abc123"})()

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    out, folder = outputs[0], tmp_path / "pub"
    result = publish.run(_manifest(out, folder=str(folder), repo_id="someone/tiny", private=False), upload=True)
    n_files = sum(1 for p in folder.rglob("*") if p.is_file())
    assert calls == [("init", "hf_test"), ("whoami",), ("create_repo", "someone/tiny", "dataset", False, True),
                     ("upload_folder", "someone/tiny", "dataset", n_files - 1)]
    assert result["uploaded"] == {"repo_id": "someone/tiny", "commit": "abc123"} and out.is_dir()


def test_hub_license_ids_pass_and_free_text_becomes_other():
    from pipeline.publish.card import hub_license

    assert [hub_license(x) for x in ("CC-BY-4.0", "lgpl-2.0-or-later", "mixed: GPL-2.0, CC-BY-SA-3.0", "")] == \
        ["cc-by-4.0", "lgpl-2.0-or-later", "other", "other"]
