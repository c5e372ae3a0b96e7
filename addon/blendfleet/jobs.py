"""Work off Blender's main thread, and the way results come back to it.

`run_in_thread` runs a blocking call (every farm call is one) in a daemon thread and hands
its outcome to a callback on the main thread. `call_on_main` does the reverse for code in a
render thread that must touch Blender data (saving the copy of the .blend). One timer,
registered with the add-on, pumps both queues; the main thread never waits for the network.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

import bpy

PUMP_INTERVAL = 0.1

_to_main: "queue.Queue[Callable[[], None]]" = queue.Queue()
_ticks = 0  # timer ticks since registration; tests read it to see the main thread run


class Outcome:
    """What a call in a thread produced: `value`, or `error` when it raised."""

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def run_in_thread(fn: Callable[..., Any], *args: Any,
                  on_done: Callable[[Outcome], None] | None = None, name: str = "blendfleet") -> Outcome:
    """Runs `fn(*args)` in a daemon thread; `on_done(outcome)` then runs on the main thread."""
    outcome = Outcome()

    def work() -> None:
        try:
            outcome.value = fn(*args)
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            outcome.error = error
        outcome.done.set()
        if on_done is not None:
            _to_main.put(lambda: on_done(outcome))

    threading.Thread(target=work, name=name, daemon=True).start()
    return outcome


def wait(outcome: Outcome, timeout: float, should_stop: Callable[[], bool] | None = None,
         step: float = 0.1) -> bool:
    """Waits for `outcome` up to `timeout` seconds; False when it is not done (or
    `should_stop()` said to give up)."""
    deadline = time.monotonic() + timeout
    while not outcome.done.wait(step):
        if time.monotonic() >= deadline or (should_stop is not None and should_stop()):
            return False
    return True


def call_on_main(fn: Callable[[], Any], should_stop: Callable[[], bool] | None = None,
                 timeout: float = 600.0) -> Any:
    """Runs `fn` on the main thread and returns its value (at once when called there)."""
    if is_main_thread():
        return fn()
    outcome = Outcome()

    def job() -> None:
        try:
            outcome.value = fn()
        except BaseException as error:  # noqa: BLE001
            outcome.error = error
        outcome.done.set()

    _to_main.put(job)
    if not wait(outcome, timeout, should_stop):
        raise TimeoutError("Blender's main thread did not get to the request")
    return outcome.result()


def post_to_main(fn: Callable[[], None]) -> None:
    """Runs `fn` on the main thread soon (at once when called there)."""
    if is_main_thread():
        fn()
    else:
        _to_main.put(fn)


def pump() -> None:
    """Runs what is queued for the main thread."""
    while True:
        try:
            job = _to_main.get_nowait()
        except queue.Empty:
            return
        try:
            job()
        except Exception:  # noqa: BLE001 - one bad callback must not stop the pump
            import traceback

            traceback.print_exc()


def _timer() -> float:
    global _ticks
    _ticks += 1
    pump()
    return PUMP_INTERVAL


def ticks() -> int:
    return _ticks


def register() -> None:
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=PUMP_INTERVAL, persistent=True)


def unregister() -> None:
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
