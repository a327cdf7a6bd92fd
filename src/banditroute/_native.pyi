"""Type stubs of the optional C extension (``_native.c``)."""

from collections.abc import Sequence

HARDWARE_CRC: int

def crc32c(data: bytes | bytearray | memoryview, /) -> int: ...

class Builder:
    def __init__(
        self,
        magic: int,
        compression_type: int,
        is_transactional: int,
        producer_id: int,
        producer_epoch: int,
        base_sequence: int,
        batch_size: int,
    ) -> None: ...
    def append(
        self,
        offset: int,
        timestamp: int | None,
        key: bytes | bytearray | memoryview | None,
        value: bytes | bytearray | memoryview | None,
        headers: Sequence[tuple[str, bytes | None]],
    ) -> bool | None: ...
    def build(self) -> bytearray: ...
    def size(self) -> int: ...
    def set_producer_state(self, producer_id: int, producer_epoch: int, base_sequence: int) -> None: ...

class IdTable:
    def __init__(self, size: int, generation: int) -> None: ...
    def seen(self, value: object, /) -> bool: ...
    def __len__(self) -> int: ...

def short_groups(raw: bytes | bytearray | memoryview, at: int, /) -> tuple[bytes | None, ...] | None: ...
def sdk_groups(raw: bytes | bytearray | memoryview, at: int, /) -> tuple[bytes | None, ...] | None: ...
