"""What every decoder shares: the error that carries a status, and the members each modality reads."""

from __future__ import annotations

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image": ("jpg", "jpeg", "png", "webp"),
    "text": ("txt",),
    "video": ("mp4", "webm", "mkv"),
    "audio": ("flac", "wav", "mp3", "ogg", "m4a"),
    "points": ("npy", "npz", "ply"),
}


class DecodeError(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
