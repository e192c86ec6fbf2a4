"""Kafka's default partitioner: which partition a record key goes to.

The Java client and aiokafka hash a key with MurmurHash2 (32-bit, seed
``0x9747b28c``), clear the sign bit and take it modulo the number of
partitions. Computing it here, in pure Python, lets every transport (the
in-memory one included) place keyed records where Kafka's own clients
would, so that consumers of a key see one partition.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = ["murmur2", "partition_for_key"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 of ``data`` as Kafka computes it (an unsigned 32-bit int)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length // 4
    for (k,) in struct.iter_unpack("<I", data[: whole * 4]):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = data[whole * 4 :]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for_key(key: bytes, partitions: Sequence[int]) -> int:
    """The partition Kafka's default partitioner gives ``key``."""
    ordered = sorted(partitions)
    return ordered[(murmur2(key) & 0x7FFFFFFF) % len(ordered)]
