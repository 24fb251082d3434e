"""The exceptions dpr_hf raises on bad input: each names where the problem is and what is wrong."""

from __future__ import annotations


class DPRDataError(ValueError):
    """A file, record or field that cannot be used, named so the user can find it."""

    def __init__(
        self, message: str, path: str | None = None, record: int | str | None = None, field: str | None = None
    ):
        self.path, self.record, self.field = path, record, field
        where = ", ".join(
            part
            for part in (
                str(path) if path is not None else None,
                f"record {record}" if record is not None else None,
                f"field {field!r}" if field is not None else None,
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)


class MismatchError(ValueError):
    """Parts that do not belong together: an index and an encoder, a model and its role, dims or counts."""
