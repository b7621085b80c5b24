"""The place a launcher gave this process: torchrun's RANK, WORLD_SIZE and LOCAL_RANK, or
srun's SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID (as open_clip's ``world_info_from_env``
reads them). embed splits its rows by it; adapt runs one DistributedDataParallel replica per
process by it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from cxrprobe.cores import usable_cores
from cxrprobe.errors import InputError

# (rank, world size, local rank, processes on this node), torchrun's names first
LAUNCHERS = (("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
             ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"))


@dataclass(frozen=True)
class Place:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # the processes of this launch on this node, which share its cores

    @property
    def first(self) -> bool:
        """Rank 0: the one that writes what the launch shares, and says what it does."""
        return self.rank == 0

    def cores(self) -> int:
        """This process's share of the usable cores (its decoding workers, say): the node's
        processes must not each take them all."""
        return max(1, usable_cores() // self.local_size)


def share(n: int, rank: int, ranks: int) -> range:
    """Rank ``rank``'s contiguous share of ``n`` items among ``ranks``: sizes differ by one at most."""
    return range(rank * n // ranks, (rank + 1) * n // ranks)


def launch_place(environ: Mapping[str, str] = os.environ) -> Place:
    """This process's place in its launch; one process of one where no launcher set one."""
    for rank, world, local, local_world in LAUNCHERS:
        if rank in environ and world in environ:
            try:
                place = Place(int(environ[rank]), int(environ[world]), int(environ.get(local, environ[rank])),
                              _leading_int(environ.get(local_world, "1")))
            except ValueError:
                raise InputError(f"{rank}={environ[rank]!r}, {world}={environ[world]!r} are not a rank and a world "
                                 "size") from None
            if not 0 <= place.rank < place.size:
                raise InputError(f"{rank}={place.rank} is not a rank of {world}={place.size}")
            return place
    return Place()


def _leading_int(text: str) -> int:
    """SLURM_NTASKS_PER_NODE may read '4(x2)' (four tasks on each of two nodes)."""
    return max(1, int(text.split("(")[0].split(",")[0]))
