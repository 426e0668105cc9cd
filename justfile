# bindery: batch ETL for binding frozen encoders' embedding spaces.
# Every stage takes a manifest; the default is the embedded demo.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv/bin"
default_manifest := "manifests/demo.toml"

# list recipes
default:
    @just --list

# create .venv and install bindery, its encoders and dev tools
setup:
    bash scripts/setup.sh

# encode every shard's modalities into Parquet embedding stores
precompute manifest=default_manifest *overrides:
    {{venv}}/bindery precompute {{manifest}} {{overrides}}

# auto-pair items across modalities (kNN -> neighbors + quintuples)
pair manifest=default_manifest *overrides:
    {{venv}}/bindery pair {{manifest}} {{overrides}}

# BrokenBind: pseudo partners for two modalities that never co-occur -> <output>/bridge/<name>/
bridge manifest=default_manifest *overrides:
    {{venv}}/bindery bridge {{manifest}} {{overrides}}

# train projection heads on the cached vectors
train manifest=default_manifest *overrides:
    {{venv}}/bindery train {{manifest}} {{overrides}}

# evaluate a run: Recall@K, zero-shot, EShot -> runs/<run>/metrics.json
eval manifest=default_manifest *overrides:
    {{venv}}/bindery eval {{manifest}} {{overrides}}

# fused-embedding analysis of a bound space -> analysis/<name>/ (report.md, report.json, clusters.parquet, PNGs)
analyze manifest=default_manifest *overrides:
    {{venv}}/bindery analyze {{manifest}} {{overrides}}

# ImageBindDC: condense labelled pairs into [condense] per_class synthetic pairs -> condensed/<name>-<n>/
condense manifest=default_manifest *overrides:
    {{venv}}/bindery condense {{manifest}} {{overrides}}

# train on the condensed sets, test on real held-out pairs -> condensed/<name>/report.json
condense-eval manifest=default_manifest *overrides:
    {{venv}}/bindery condense-eval {{manifest}} {{overrides}}

# write a publishable dataset bundle
publish manifest=default_manifest *overrides:
    {{venv}}/bindery publish {{manifest}} {{overrides}}

# the main job on the embedded default: precompute, bootstrap heads on own captions, pair
# through them, retrain on captions + pairs from those heads, evaluate, publish, analyse the fused image+text space
demo manifest=default_manifest:
    {{just_executable()}} precompute {{manifest}}
    {{just_executable()}} train {{manifest}} --set train.run=captions --set train.use_quintuples=false
    {{just_executable()}} pair {{manifest}} --set pair.head_run=captions
    {{just_executable()}} train {{manifest}} --set train.warm_start=captions
    {{just_executable()}} eval {{manifest}}
    {{just_executable()}} publish {{manifest}}
    {{just_executable()}} analyze {{manifest}}

# the CPU test suite (what CI runs)
test *args:
    {{venv}}/python -m pytest -q -m "not gpu" {{args}}

# the GPU tests (on a CUDA machine)
test-gpu *args:
    {{venv}}/python -m pytest -q -m gpu {{args}}

# ruff lint
lint:
    {{venv}}/ruff check .

# benchmarks: bare encoder vs pipeline, kNN queries/s, training samples/s -> bench/results/<device>.json
bench *args:
    {{venv}}/python -m bench.run {{args}}

# the same on the CPU with small configs (minutes)
bench-small *args:
    {{venv}}/python -m bench.run --small --device cpu {{args}}

# re-check a published bundle (checksums, counts, schemas, joins); names the first problem
verify dir:
    {{venv}}/bindery publish --verify {{dir}}

# build the held-out real benchmark from Debian packages (needs root for apt-get) -> bench-data/
bench-data:
    apt-get update -qq && apt-get install -y -qq tuxpaint-stamps-default asterisk-core-sounds-en-wav asterisk-core-sounds-en inventor-data inventor-clients espeak-ng
    {{venv}}/python -m pipeline.demo.build --bench --out bench-data

# rebuild the shipped demo shards (byte-identical) -> data/demo/
demo-data:
    {{venv}}/python -m pipeline.demo.build --out data/demo

# BrokenBind on the real benchmark: image <-> sound through captions, every route (needs just bench-data)
brokenbind *args:
    {{venv}}/python -m bench.brokenbind {{args}}

# bare vs end to end for EBind's backbones at their real sizes, random weights, small inputs, on the CPU
bench-ebind *args:
    {{venv}}/python -m bench.precompute --small --device cpu --only pe-core,imagebind,uni3d {{args}}

# EBind's five backbones (PE-Core-L14-336, ImageBind-huge audio, Uni3D-g) with random weights on a
# few demo samples, on the CPU: checks the architectures and conventions end to end (minutes)
ebind-smoke:
    {{venv}}/python -m pipeline.demo.subset --per-modality 1 --out out/ebind-smoke/data/smoke-000000.tar
    {{venv}}/bindery precompute manifests/ebind.toml --set dataset.shards=../out/ebind-smoke/data/smoke-000000.tar --set dataset.output=../out/ebind-smoke --set precompute.device=cpu --set modalities.points.points=2048 --set modalities.text.weights=random --set modalities.image.weights=random --set modalities.video.weights=random --set modalities.audio.weights=random --set modalities.points.weights=random

# retrieval quality on the real held-out benchmark: heads vs ridge vs chance (needs just bench-data)
bench-quality *args:
    {{venv}}/python -m bench.quality {{args}}
