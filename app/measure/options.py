"""The flags with which `picsearch bench` and `picsearch eval` override the configured Settings
for one run, and the copy of the Settings that follows from them.

A flag left out (None) keeps the configured value (PICSEARCH_* or its default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.core.config import Settings


@dataclass(frozen=True)
class SettingsFlags:
    """`--model`, `--weights` (both commands) and `--device`, `--batch-size`, `--precision`,
    `--index-type`, `--int8` (the bench)."""

    model: str | None = None
    weights: str | None = None
    device: str | None = None
    batch_size: int | None = None
    precision: str | None = None
    index_type: str | None = None
    int8: str | None = None

    def overrides(self) -> dict[str, Any]:
        """The flags given, as Settings field values."""
        return {key: value for key, value in asdict(self).items() if value is not None}


def settings_with(base: Settings, **overrides: Any) -> Settings:
    """A validated copy of `base` with `overrides` (the environment is not read again)."""
    from app.core.config import Settings

    return Settings.model_validate({**base.model_dump(), **overrides})
