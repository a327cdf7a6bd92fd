"""The aiokafka release banditroute's patches of its private code were checked against.

``raw_fetch``, ``fetch_cycles``, ``backoff`` and ``fast_send`` replace or wrap private parts of aiokafka (its
fetcher's record generator, ``FetchResult.getall``, the client's ``_metadata_update``, the connection's ``send``); ``outbox.record_writer`` reads a
``BatchBuilder``'s private fields. The package allows any 0.14.x; under a release other than :data:`CHECKED`
each of them keeps aiokafka's own code, with a warning, rather than break every fetch, refresh or append on a
renamed field. ``tests/test_aiokafka_release.py`` fails on an upgrade until the patches are
checked again.
"""

from __future__ import annotations

import logging

import aiokafka

log = logging.getLogger("banditroute.kafka")

CHECKED = "0.14.0"
"""The aiokafka release the patches were checked against; they patch no other."""


def checked(patch: str, version: str = aiokafka.__version__) -> bool:
    """Whether ``patch`` (a module's name, for the warning) may patch aiokafka ``version``; warns when not."""
    if version == CHECKED:
        return True
    log.warning(
        "aiokafka %s, not %s: %s keeps aiokafka's own code (it is checked against %s only)",
        version,
        CHECKED,
        patch,
        CHECKED,
    )
    return False


__all__ = ["CHECKED", "checked"]
