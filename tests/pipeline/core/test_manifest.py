from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.manifest import AudioConfig, ManifestError, apply_overrides, from_dict, load

BASE = """
[dataset]
name = "d"
shards = "shards/s-{000..003}.tar"
output = "out"

[modalities.image]
encoder = "mobilenet-v2"

[modalities.audio]
encoder = "aisfx"
"""


def write(tmp_path: Path, text: str = BASE) -> Path:
    path = tmp_path / "sub" / "m.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_and_relative_paths(tmp_path):
    m = load(write(tmp_path))
    assert m.dataset.shards == str(tmp_path / "sub" / "shards/s-{000..003}.tar")
    assert m.output == tmp_path / "sub" / "out"
    assert isinstance(m.modalities["audio"], AudioConfig) and m.modalities["audio"].seconds == 10.0
    assert m.modalities["image"].dtype == "float16" and m.precompute.handler == "record"
    assert m.to_dict()["precompute"]["num_workers"] == -1


def test_pipe_and_absolute_paths_are_kept(tmp_path):
    text = BASE.replace('"shards/s-{000..003}.tar"', '"pipe:curl -s http://h/s-{0..1}.tar"')
    text = text.replace('output = "out"', f'output = "{tmp_path}/abs"')
    m = load(write(tmp_path, text))
    assert m.dataset.shards == "pipe:curl -s http://h/s-{0..1}.tar"
    assert m.dataset.output == f"{tmp_path}/abs"


@pytest.mark.parametrize("edit, key", [
    (("[modalities.audio]", "[modalities.audio]\nsecs = 3"), "modalities.audio.secs"),
    (("[dataset]", "[datasett]\nx = 1\n[dataset]"), "datasett"),
    (("[modalities.image]", "[modalities.smell]\nencoder = 'x'\n[modalities.image]"), "modalities.smell"),
    (('encoder = "aisfx"', 'encoder = "aisfx"\nbatch_size = "big"'), "modalities.audio.batch_size"),
    (('encoder = "aisfx"', 'encoder = "aisfx"\nbatch_size = 0'), "modalities.audio.batch_size"),
    (('encoder = "aisfx"', 'encoder = "aisfx"\ndtype = "int8"'), "modalities.audio.dtype"),
    (('name = "d"\n', ''), "dataset.name"),
    (('encoder = "aisfx"', 'encoder = "aisfx"\n[precompute]\nhandler = "ignore"'), "precompute.handler"),
    (('encoder = "aisfx"', 'encoder = "aisfx"\n[precompute]\ndevice = "tpu"'), "precompute.device"),
    (('encoder = "aisfx"', 'encoder = "aisfx"\n[precompute]\ncompile = "yes"'), "precompute.compile"),
])
def test_bad_manifests_name_the_key(tmp_path, edit, key):
    with pytest.raises(ManifestError) as exc:
        load(write(tmp_path, BASE.replace(*edit, 1)))
    assert str(exc.value).startswith(key), str(exc.value)


def test_overrides_are_typed_and_checked(tmp_path):
    path = write(tmp_path)
    m = load(path, ["modalities.audio.seconds=2.5", "precompute.num_workers=0", "precompute.compile=true",
                    "pair.targets=image,audio", "dataset.output=elsewhere"])
    assert m.modalities["audio"].seconds == 2.5 and m.precompute.num_workers == 0 and m.precompute.compile
    assert m.pair.targets == ("image", "audio")
    assert m.dataset.output == str(tmp_path / "sub" / "elsewhere")
    with pytest.raises(ManifestError, match="^precompute.num_workers: expected an integer"):
        load(path, ["precompute.num_workers=many"])
    with pytest.raises(ManifestError, match="^precompute.nothing: unknown key"):
        load(path, ["precompute.nothing=1"])
    with pytest.raises(ManifestError, match="expected KEY=VALUE"):
        load(path, ["precompute.num_workers"])
    with pytest.raises(ManifestError, match="^modalities.audio.sample_rate"):
        load(path, ["modalities.audio.sample_rate=-1"])


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        load(tmp_path / "none.toml")
    with pytest.raises(ManifestError, match="not valid TOML"):
        load(write(tmp_path, "[dataset\n"))


def test_from_dict_needs_a_modality():
    raw = {"dataset": {"name": "d", "shards": "a.tar", "output": "o"}}
    with pytest.raises(ManifestError, match="^modalities: declare"):
        from_dict(raw)
    assert apply_overrides({}, ["a.b=1"]) == {"a": {"b": 1}}


@pytest.mark.parametrize("url", ["https://h/s-{0..1}.tar", "s3://b/s-{0..1}.tar", "gs://b/s.tar",
                                 "http://h/s.tar"])
def test_url_shards_are_rejected_with_the_pipe_form(tmp_path, url):
    with pytest.raises(ManifestError) as exc:
        load(write(tmp_path, BASE.replace('"shards/s-{000..003}.tar"', f'"{url}"')))
    assert str(exc.value).startswith("dataset.shards") and "pipe:curl -s URL" in str(exc.value)
    assert "pipe:aws s3 cp URL -" in str(exc.value)


@pytest.mark.parametrize("override", ["modalities.audio.max_seconds=nan", "modalities.audio.seconds=inf",
                                      "pair.min_score=-inf", "train.lr=nan"])
def test_nan_and_inf_are_refused_naming_the_key(tmp_path, override):
    text = BASE + "\n[modalities.audio]\nencoder = \"aisfx\"\n" if "[modalities.audio]" not in BASE else BASE
    key = override.split("=")[0]
    with pytest.raises(ManifestError, match=rf"^{key.replace('.', '[.]')}: expected a finite number"):
        load(write(tmp_path, text), [override])
