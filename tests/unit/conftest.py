from __future__ import annotations

import pytest

from processors.ingest import IngestContext
from schemas.domain import Domain
from streams.settings import Settings
from streams.topics import kinds_by_topic


@pytest.fixture(scope="session")
def domain() -> Domain:
    return Domain.load(Settings().domain_file)


@pytest.fixture(scope="session")
def ctx(domain: Domain) -> IngestContext:
    settings = Settings(topic_prefix="")
    return IngestContext(
        domain=domain,
        kinds_by_topic=kinds_by_topic(settings),
        max_text_chars=settings.max_text_chars,
        max_message_bytes=settings.max_message_bytes,
    )
