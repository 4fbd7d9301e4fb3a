"""What ``--ray`` hands back: progress per node, results with their node.
Plain values, no Ray: the CLI renders them."""

from __future__ import annotations

from dataclasses import dataclass

from ..values.results import Results


@dataclass(frozen=True, slots=True)
class NodeProgress:
    name: str
    alive: bool
    finished: int  # files of this node in a final state
    files: int  # files handed to it
    done: int  # bytes: files ended here plus the running batch's progress
    size: int  # bytes of its files whose size is known
    speed: float  # bytes/s now


@dataclass(frozen=True, slots=True)
class ClusterProgress:
    nodes: tuple[NodeProgress, ...]
    elapsed: float

    @property
    def finished(self) -> int:
        return sum(n.finished for n in self.nodes)

    @property
    def files(self) -> int:
        return sum(n.files for n in self.nodes)

    @property
    def done(self) -> int:
        return sum(n.done for n in self.nodes)

    @property
    def size(self) -> int:
        return sum(n.size for n in self.nodes)

    @property
    def speed(self) -> float:
        return sum(n.speed for n in self.nodes if n.alive)


class ClusterResults(Results):
    """Results in collection order (replicate mode: each file once per
    node); ``nodes[i]`` is where result ``i`` landed."""

    def __init__(self, pairs=()) -> None:
        pairs = list(pairs)
        super().__init__(r for r, _ in pairs)
        self.nodes = [n for _, n in pairs]
