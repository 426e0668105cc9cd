"""Video decode alone: the sequential decode (every frame up to the last sampled one) against
the keyframe-seeking one of :mod:`pipeline.ingest.decode.video`, CPU ms per clip and frames
decoded, on 320x240 H.264 clips: the feed bench's (48 frames, x264's default GOP) and 30 s
at 30 fps with a keyframe every 30 and every 250 frames. Both return the same frames (checked).
``python -m bench.video_decode [--frames 8] [--repeat 5] [--seconds 30]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time

import numpy as np

from bench import precompute_data as data


def clip(seconds: float, fps: int, gop: int, width: int = 320, height: int = 240) -> bytes:
    """A panning, noisy H.264 clip (x264 defaults: B-frames, b-pyramid) with a keyframe every ``gop``."""
    import av

    rng = np.random.default_rng(gop)
    frames = int(seconds * fps)
    scene = data._photo(rng, height + 64, width + 256)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps, options={"g": str(gop), "crf": "30", "preset": "medium"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            x, y = i % 256, (i // 4) % 64
            frame = scene[y:y + height, x:x + width].astype(np.int16) + rng.normal(0, 3, (height, width, 3))
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.clip(frame, 0, 255).astype(np.uint8), format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def measure(frames: int = 8, repeat: int = 5, seconds: float = 30.0) -> dict:
    from pipeline.core.manifest import VideoConfig
    from pipeline.ingest.decode import video

    clips = {
        "feed-48-frames": data.pan_mp4(np.random.default_rng(0), width=320, height=240, frames=48),
        f"{seconds:g}s-30fps-gop30": clip(seconds, 30, 30),
        f"{seconds:g}s-30fps-gop250": clip(seconds, 30, 250),
    }
    cfg = VideoConfig(encoder="x", frames=frames, max_seconds=max(60.0, seconds + 1))
    out = {}
    for name, blob in clips.items():
        row = {"kb": round(len(blob) / 1024)}
        results = {}
        for label, seek in (("sequential", False), ("seek", True)):
            times = []
            for _ in range(repeat):
                t = time.process_time()
                arr, decoded = video._decode(blob, cfg, seek=seek)
                times.append(time.process_time() - t)
            results[label] = arr
            row[f"{label}_ms"] = round(1000 * float(np.median(times)), 2)
            row[f"{label}_decoded"] = decoded
        row["same_frames"] = bool(np.array_equal(results["sequential"], results["seek"]))
        row["speedup"] = round(row["sequential_ms"] / row["seek_ms"], 2)
        out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(json.dumps(measure(args.frames, args.repeat, args.seconds), indent=2))


if __name__ == "__main__":
    main()
