"""Logging set-up shared by the API, the workers and the launcher."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from app.core.config import Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id:
            payload["job_id"] = job_id
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload)


class JobTag(logging.Filter):
    """Adds ` [job <id>]` to text lines logged with `extra={"job_id": ...}`."""

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = getattr(record, "job_id", None)
        record.job_tag = f" [job {job_id}]" if job_id else ""
        return True


def configure_logging(settings: Settings) -> None:
    # The real stderr: Celery's pool children replace sys.stderr with a proxy that logs back
    # into the root logger, which would swallow our lines.
    handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
    handler.addFilter(JobTag())
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s%(job_tag)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
