"""One embed split across processes that share a filesystem (torchrun, srun, job arrays): no
collective, no scheduler. Rank ``i`` of ``n`` embeds a contiguous run of the manifest's rows
into its own shard beside the cache, ``CACHE.shard-I-of-N.partial``; once every shard is
finished, they are merged in row order into the cache by the last rank to finish, or by
``cxrprobe merge``.

A rank's rows start and stop on the single-process run's batch boundaries (the batches
[b*B, (b+1)*B), shared out contiguously), so every image is embedded in the very batch it
would be alone, and the merged cache is byte-identical to a one-process embed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from cxrprobe.cache.final import CacheSummary, write_cache
from cxrprobe.cache.schema import STATUS_PENDING
from cxrprobe.errors import CacheError, InputError
from cxrprobe.fsutil import exclusive_lock, reporting_no_room
from cxrprobe.launch import launch_place, share

SHARD_FLAG = re.compile(r"([0-9]+)/([0-9]+)\Z")
SHARD_NAME = re.compile(r"\.shard-([0-9]+)-of-([0-9]+)\.partial\Z")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    local_rank: int | None = None  # the GPU of this node a launcher gave the process, where one did

    def rows(self, n_rows: int, batch_size: int) -> range:
        """This shard's rows: a contiguous run of whole batches of the one-process run."""
        batches = share(-(-n_rows // batch_size), self.index, self.count)
        return range(min(batches.start * batch_size, n_rows), min(batches.stop * batch_size, n_rows))

    def path(self, out: Path) -> Path:
        return out.with_name(f"{out.name}.shard-{self.index}-of-{self.count}.partial")


def parse_shard(text: str) -> Shard:
    match = SHARD_FLAG.match(text.strip())
    if match is None:
        raise InputError(f"--shard takes I/N (this process's shard, from 0, of N), got {text!r}")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise InputError(f"--shard {text}: the shard index must be 0 to {count - 1}" if count else
                         f"--shard {text}: N must be at least 1")
    return Shard(index, count)


def shard_from(flag: str | None, environ: Mapping[str, str] = os.environ) -> Shard | None:
    """This process's shard: ``--shard I/N``, else a launcher's rank and world size (more than
    one process), else None (the whole manifest, one process)."""
    if flag is not None:
        return parse_shard(flag)
    place = launch_place(environ)
    return Shard(place.rank, place.size, place.local_rank) if place.size > 1 else None


def shard_progress(out: Path) -> dict | None:
    """A sharded embed of ``out`` not merged yet: each shard's rows done of its rows (None
    for one not started); None where there is no shard."""
    splits = sorted({int(m[2]) for p in out.parent.glob(f"{out.name}.shard-*-of-*.partial")
                     if (m := SHARD_NAME.search(p.name)) and p.name == f"{out.name}{m[0]}"})
    if not splits:
        return None
    count = splits[-1]
    return {"cache": str(out), "shards": count, "progress": [_rows_done(Shard(i, count).path(out)) for i in range(count)]}


def _rows_done(path: Path) -> dict | None:
    try:
        with h5py.File(path, "r", locking=False) as f:  # read while its rank writes: a snapshot is enough
            status = f["status"][()]
    except (OSError, KeyError):
        return None
    return {"done": int(np.count_nonzero(status != STATUS_PENDING)), "rows": int(len(status))}


def shard_files(out: Path) -> tuple[int, list[Path]]:
    """(N, the shard files 0..N-1) of a sharded embed of ``out``; each missing one, and files of
    two different splits, refused in one line."""
    found: dict[int, dict[int, Path]] = {}
    for path in out.parent.glob(f"{out.name}.shard-*-of-*.partial"):
        match = SHARD_NAME.search(path.name)
        if match and path.name == f"{out.name}{match[0]}":
            found.setdefault(int(match[2]), {})[int(match[1])] = path
    if not found:
        raise CacheError(f"no shard of {out} ({out.name}.shard-I-of-N.partial) is in {out.parent}")
    if len(found) > 1:
        raise CacheError(f"shards of {out} from splits into {' and '.join(map(str, sorted(found)))} lie side by side; "
                         "remove the ones of the split you abandoned")
    count, shards = next(iter(found.items()))
    missing = [i for i in range(count) if i not in shards]
    if missing:
        raise CacheError(f"shard {missing[0]} of {count} of {out} is missing ({out.name}.shard-{missing[0]}-of-{count}"
                         ".partial); run that rank, or rerun the whole launch with --resume")
    return count, [shards[i] for i in range(count)]


def finished(path: Path) -> bool:
    """Whether a shard has no row left pending (a shard another process still writes, or one
    that cannot be read, is not)."""
    try:
        with h5py.File(path, "r") as f:
            return not bool(np.any(f["status"][()] == STATUS_PENDING))
    except (OSError, KeyError):
        return False


def unfinished_shards(out: Path, count: int) -> list[int]:
    """The shards of a split into ``count`` that are absent or not finished."""
    return [i for i in range(count) if not finished(Shard(i, count).path(out))]


def merge_shards(out: Path | str) -> CacheSummary:
    """The finished shards of ``out`` merged, in row order, into the cache (under its lock;
    ``write_cache`` checks they tile the manifest and share one identity), then removed."""
    out = Path(out)
    with reporting_no_room(out), exclusive_lock(out, "merging"):
        count, shards = shard_files(out)
        waiting = [path for path in shards if not finished(path)]
        if waiting:
            raise CacheError(f"{waiting[0].name} is not finished: run its rank again (the same launch, with --resume)")
        summary = write_cache(out, shards)
        for path in shards:
            path.unlink()
    return summary
