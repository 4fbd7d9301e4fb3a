"""The job's speed limits while the engine runs, and whether the shares
of bandwidth must be worked out again (their one owner)."""

from __future__ import annotations


class Limits:
    """``max_speed`` (all files) and ``max_file_speed`` (each file), in
    bytes/s (None: no limit), and a flag: something changed that moves
    the connections' shares (a limit, a file's cap, a connection that
    started or ended)."""

    KEYS = ("max_speed", "max_file_speed")

    def __init__(self, max_speed: int | None = None, max_file_speed: int | None = None) -> None:
        self._values = {"max_speed": max_speed or None, "max_file_speed": max_file_speed or None}
        self._stale = True

    def get(self, key: str) -> int | None:
        return self._values[key]

    def values(self) -> dict[str, int | None]:
        return dict(self._values)

    def set(self, **values: int | None) -> bool:
        """Change some limits (0 or None: none).  True if any changed."""
        new = {**self._values, **{k: v or None for k, v in values.items() if k in self.KEYS}}
        if new == self._values:
            return False
        self._values = new
        self._stale = True
        return True

    def changed(self) -> None:
        """The shares must be worked out again."""
        self._stale = True

    def take_stale(self) -> bool:
        """Must the shares be worked out again?  (Asking clears it.)"""
        stale, self._stale = self._stale, False
        return stale

    def stale(self) -> bool:
        return self._stale
