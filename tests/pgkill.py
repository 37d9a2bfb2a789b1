"""Lost PostgreSQL connections on purpose, for the tests that prove one loses and repeats
nothing: a commit whose connection kills itself, and a thread that terminates server
sessions at random (pg_terminate_backend)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import psycopg
import pytest

from tests.conftest import POSTGRES_DSN
from tests.processes import ctx

# A worker keeps writing past its own count until the killer has fired this often (a
# fast machine would otherwise finish first), within ten times its count.
ENOUGH_KILLS = 6


class BackendKiller:
    """While the block runs, terminate one of the sessions named ``names`` (their
    ``application_name``) every ``pause`` seconds (a random span); ``busy_only`` spares
    idle ones. ``fired`` is a shared counter of the kills, for worker processes to read."""

    def __init__(
        self,
        names: Sequence[str],
        *,
        pause: tuple[float, float] = (0.01, 0.1),
        busy_only: bool = False,
    ) -> None:
        self.names = [name[:63] for name in names]  # the server cuts them there
        self.pause = pause
        self.seed = random.randrange(1 << 30)
        self.kills: list[int] = []
        self.fired: Any = ctx.Value("i", 0)
        self._busy_only = busy_only
        self._rng = random.Random(self.seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backend-killer")

    def _run(self) -> None:
        query = "SELECT pid FROM pg_stat_activity WHERE application_name = ANY(%s)"
        if self._busy_only:
            query += " AND state <> 'idle'"
        with psycopg.connect(POSTGRES_DSN or "", autocommit=True) as conn:
            while not self._stop.wait(self._rng.uniform(*self.pause)):
                pids = conn.execute(query, (self.names,)).fetchall()
                if pids:
                    pid = self._rng.choice(pids)[0]
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    self.kills.append(pid)
                    self.fired.value = len(self.kills)

    def __enter__(self) -> BackendKiller:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def check_fired(self, enough: int = ENOUGH_KILLS) -> None:
        assert len(self.kills) >= enough, f"seed {self.seed}: the killer hardly ran"


def keep_going(done: int, count: int, fired: Any, enough: int = ENOUGH_KILLS) -> bool:
    """Whether a worker that has done ``done`` of its ``count`` writes goes on: until both
    its count is done and the killer has fired ``enough`` times, at most 10 x count."""
    return done < 10 * count and (done < count or fired.value < enough)


@contextmanager
def self_terminating(when: str, min_writes: int = 0) -> Iterator[list[int]]:
    """The next commit of more than ``min_writes`` writes (a multi-statement query ending in
    COMMIT) has its connection kill itself just ``when`` ("before" or "after") the COMMIT.
    Yields the list of such commits (1 once fired)."""
    fired: list[int] = []
    real = psycopg.ClientCursor.execute
    kill = "SELECT pg_terminate_backend(pg_backend_pid())"

    def execute(self: psycopg.ClientCursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        if (
            isinstance(query, str)
            and query.endswith("; COMMIT")
            and query.count(";") > min_writes
            and not fired
        ):
            fired.append(1)
            if when == "before":
                query = query.removesuffix("COMMIT") + kill + "; COMMIT"
            else:
                query = query + "; " + kill
        return real(self, query, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(psycopg.ClientCursor, "execute", execute)
        yield fired
