"""The engine thread's hand-off of pieces to the event loop (engine/worker.py): every piece
arrives in order, the loop is woken once per batch rather than once per piece, and with a
minimum interval between wake-ups nothing is held back for longer than that interval."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from engine.worker import _DONE, _Handoff


class CountingLoop:
    """The running loop, counting the wake-ups the engine thread schedules."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.wakes = 0

    def call_soon_threadsafe(self, callback: Any, *args: Any) -> Any:
        self.wakes += 1
        return self.loop.call_soon_threadsafe(callback, *args)

    def call_later(self, delay: float, callback: Any, *args: Any) -> Any:
        return self.loop.call_later(delay, callback, *args)


async def drain(handoff: _Handoff) -> list[object]:
    """Everything up to the end marker."""
    items = []
    while (item := await asyncio.wait_for(handoff.get(), 30)) is not _DONE:
        items.append(item)
    return items


async def produce(handoff: _Handoff, count: int, pause: float) -> tuple[list[object], float]:
    """`count` pieces from another thread, `pause` seconds apart; what arrived and how long
    the producer took."""
    took: list[float] = []

    def engine() -> None:
        start = time.monotonic()
        for index in range(count):
            handoff.put(index)
            time.sleep(pause)
        took.append(time.monotonic() - start)
        handoff.put(_DONE)

    thread = threading.Thread(target=engine)
    thread.start()
    items = await drain(handoff)
    thread.join()
    return items, took[0]


async def test_a_backlog_arrives_in_order_with_one_wake_up() -> None:
    loop = CountingLoop(asyncio.get_running_loop())
    handoff = _Handoff(loop)  # type: ignore[arg-type]
    for index in range(500):  # the loop is busy (not awaiting) while the engine queues these
        handoff.put(index)
    handoff.put(_DONE)
    assert await drain(handoff) == list(range(500))
    assert loop.wakes == 1


async def test_a_minimum_interval_spaces_the_wake_ups() -> None:
    loop = CountingLoop(asyncio.get_running_loop())
    handoff = _Handoff(loop, min_interval=0.05)  # type: ignore[arg-type]
    items, took = await produce(handoff, 200, 0.002)
    assert items == list(range(200))
    # a wake-up or two per interval (after the interval's timer, the next piece wakes the loop
    # at once) and one for the end, not one per piece
    assert loop.wakes <= 2 * took / 0.05 + 3 < 200


async def test_a_piece_between_wake_ups_is_not_held_until_the_next_one() -> None:
    handoff = _Handoff(asyncio.get_running_loop(), min_interval=0.2)
    handoff.put("first")  # wakes the loop
    assert await asyncio.wait_for(handoff.get(), 5) == "first"
    waiting = asyncio.create_task(handoff.get())
    await asyncio.sleep(0.01)  # the loop waits for the next piece
    handoff.put("second")  # too soon for a wake-up, and nothing follows it
    assert await asyncio.wait_for(waiting, 5) == "second"


async def test_the_end_wakes_the_loop_at_once() -> None:
    handoff = _Handoff(asyncio.get_running_loop(), min_interval=3600)
    handoff.put("first")
    assert await asyncio.wait_for(handoff.get(), 5) == "first"
    waiting = asyncio.create_task(handoff.get())
    await asyncio.sleep(0.01)
    handoff.put("last")  # no wake-up for an hour...
    handoff.put(_DONE)  # ...but the end brings it
    assert await asyncio.wait_for(waiting, 5) == "last"
    assert await asyncio.wait_for(handoff.get(), 5) is _DONE
