"""``segdl ui``'s app: a picker first for a collection, then the live
screen of the job it starts (or of the jobs still running)."""

from __future__ import annotations

import asyncio

from textual.app import App

from ..console import shown
from .client import ClientError
from .live import LiveScreen
from .picker import PickerScreen
from .sources import Collection


class SegdlUI(App):
    """``collection``: pick from it, then start the job of the chosen
    files; ``body``: start that job at once; neither: show the jobs the
    engine runs that have not finished."""

    TITLE = "segdl"
    ENABLE_COMMAND_PALETTE = False

    def __init__(self, client, *, collection: Collection | None = None, body: dict | None = None,
                 poll: float = 0.5, job_fields: dict | None = None) -> None:
        super().__init__()
        self.client, self.collection, self.body, self.poll = client, collection, body, poll
        self.job_fields = job_fields  # of the jobs added later (a URL): their dest
        self.live: LiveScreen | None = None

    async def on_mount(self) -> None:
        if self.collection is not None:
            self.push_screen(PickerScreen(self.collection), self._picked)
        elif self.body is not None:
            await self._start(self.body)
        else:
            try:
                jobs = await asyncio.to_thread(self.client.jobs)
            except ClientError as e:
                self.exit(return_code=2, message=f"segdl: {shown(e.message)}")
                return
            self._live({j["id"] for j in jobs if j["state"] != "finished"})

    async def _picked(self, chosen: list[int] | None) -> None:
        if chosen is None:
            self.exit()
            return
        await self._start(self.collection.job(chosen))

    async def _start(self, body: dict) -> None:
        try:
            answer = await asyncio.to_thread(self.client.add_job, body)
        except ClientError as e:
            self.exit(return_code=2, message=f"segdl: {shown(e.message)}")
            return
        self._live({answer["job"]})

    def _live(self, jobs: set[int]) -> None:
        self.live = LiveScreen(self.client, jobs, poll=self.poll, job_fields=self.job_fields)
        self.push_screen(self.live)
