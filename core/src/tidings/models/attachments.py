"""Attachments as they cross the plugin boundary: name, type, size and a content hash.

The hash is what makes deduplication and "the same file" checks possible without loading
contents; it is computed here so every channel gets it right the same way.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def safe_filename(name: str) -> str:
    """Strip path separators and control characters: a filename is never a path."""
    cleaned = _UNSAFE.sub("_", name).strip().lstrip(".")
    return cleaned[:255] or "attachment"


class Attachment(BaseModel):
    """A file attached to a message.

    Exactly one of ``data`` (the bytes) or ``url`` (where the channel can fetch them) is set.
    ``size`` and ``sha256`` are derived from ``data`` when it is given, and checked when both
    are given.
    """

    model_config = ConfigDict(frozen=True)

    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(default="application/octet-stream", max_length=255)
    size: int | None = Field(default=None, ge=0)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    data: bytes | None = Field(default=None, repr=False)
    url: str | None = Field(default=None, max_length=2000)
    inline: bool = False
    content_id: str | None = Field(default=None, max_length=300)

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        out = dict(values)
        if isinstance(out.get("filename"), str):
            out["filename"] = safe_filename(out["filename"])
        content_type = out.get("content_type")
        if isinstance(content_type, str):
            out["content_type"] = content_type.split(";")[0].strip().lower() or (
                "application/octet-stream"
            )
        data = out.get("data")
        if isinstance(data, bytes | bytearray):
            digest = hashlib.sha256(data).hexdigest()
            if out.get("sha256") not in (None, digest):
                raise ValueError("sha256 does not match the attachment's data")
            if out.get("size") not in (None, len(data)):
                raise ValueError("size does not match the attachment's data")
            out["sha256"] = digest
            out["size"] = len(data)
        return out

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.data is None) == (self.url is None):
            raise ValueError("an attachment has either data or a url, not both or neither")
        return self
