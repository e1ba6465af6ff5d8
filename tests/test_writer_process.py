"""The child process that owns a file being written: errors come back, a fatal one ends it alone."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest

from captioner.features.writer_process import WriterProcess, WriterProcessError


class Notebook:
    """A stand-in for a file writer: it keeps lines, refuses some, and can break."""

    def __init__(self, first: str):
        self.lines = [first]

    def add(self, line: str) -> int:
        if not line:
            raise ValueError("an empty line")
        if line == "disk error":
            raise OSError(5, "Input/output error")
        self.lines.append(line)
        return len(self.lines)

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> list[str]:
        if self.lines[0].startswith("/"):  # a path: the notebook is saved there, whole or not at all
            saved = Path(self.lines[0])  # (a reader polling for it must never find it half-written)
            partial = saved.with_name(saved.name + ".partial")
            partial.write_text("\n".join(self.lines))
            partial.replace(saved)
        return self.lines


def test_calls_run_in_a_child_and_their_results_and_ordinary_errors_come_back():
    notebook = WriterProcess(Notebook, "first")
    assert notebook.call("pid") != os.getpid()
    assert notebook.call("add", "second") == 2
    with pytest.raises(ValueError, match="an empty line"):
        notebook.call("add", "")
    assert notebook.call("add", "third") == 3  # an ordinary error leaves the child working
    assert notebook.call("close") == ["first", "second", "third"]
    assert not notebook.alive
    with pytest.raises(WriterProcessError, match="has ended"):
        notebook.call("add", "late")


def test_a_fatal_error_comes_back_and_the_child_exits_without_cleanup():
    notebook = WriterProcess(Notebook, "first")
    child = notebook.call("pid")
    with pytest.raises(OSError, match="Input/output error"):
        notebook.call("add", "disk error")
    assert not notebook.alive
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # gone (and reaped), not left behind
    with pytest.raises(WriterProcessError, match="has ended"):
        notebook.call("add", "more")


def test_a_child_killed_from_outside_is_an_error_that_says_so():
    notebook = WriterProcess(Notebook, "first", name="notebook writer")
    os.kill(notebook.call("pid"), signal.SIGKILL)
    with pytest.raises(WriterProcessError, match=r"the notebook writer process ended during `add` "
                                                 r"\(exit code -9\)"):
        notebook.call("add", "second")


def test_a_parent_that_goes_away_leaves_the_file_closed(tmp_path):
    saved = tmp_path / "notebook.txt"
    notebook = WriterProcess(Notebook, str(saved))
    notebook.call("add", "kept")
    del notebook  # as when the parent dies: its end of the pipe closes
    deadline = time.monotonic() + 30
    while not saved.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert saved.read_text() == f"{saved}\nkept"


def test_a_signal_that_stops_the_parent_mid_message_ends_the_child_without_a_wait(tmp_path):
    # A signal's Preempted raised between two writes of one message: the child waited for the rest,
    # and the `close` that followed (extraction's `finally`) waited for its reply forever.
    import struct
    import threading

    saved = tmp_path / "notebook.txt"
    notebook = WriterProcess(Notebook, str(saved))
    notebook.call("add", "kept")
    connection = notebook._connection

    def half_then_signal(buf):
        connection._send(struct.pack("!i", len(buf)) + bytes(buf)[: len(buf) // 2])
        raise SystemExit(143)

    connection._send_bytes = half_then_signal
    with pytest.raises(SystemExit):
        notebook.call("add", "x" * 100_000)
    ended = []

    def close():  # as FeatureFileWriter.close in extraction's `finally`
        if notebook.alive:
            notebook.call("close")
        ended.append(notebook.alive)

    closing = threading.Thread(target=close, daemon=True)
    closing.start()
    closing.join(timeout=10)
    assert ended == [False]  # no call waits on a child that holds half a message
    assert saved.read_text() == f"{saved}\nkept"  # which closed the file where it stood


def test_a_process_forked_later_does_not_keep_the_child_waiting_after_a_signal(tmp_path):
    # A loader worker forked after the writer held a copy of this end of the pipe: closing ours
    # did not reach the child, which was killed after 30 s instead of closing its file.
    saved = tmp_path / "notebook.txt"
    notebook = WriterProcess(Notebook, str(saved))
    notebook.call("add", "kept")
    worker = os.fork()
    if worker == 0:  # a DataLoader worker, say
        time.sleep(20)
        os._exit(0)
    try:
        began = time.monotonic()
        notebook._abandon()  # as after a signal mid-message
        assert time.monotonic() - began < 5 and notebook._process.exitcode == 0
        assert saved.read_text() == f"{saved}\nkept"
    finally:
        os.kill(worker, signal.SIGKILL)
        os.waitpid(worker, 0)


def test_a_failing_constructor_is_raised_here():
    # the child's own error: Notebook(), made there, missing its argument
    missing = r"Notebook\.__init__\(\) missing 1 required positional argument: 'first'"
    with pytest.raises(TypeError, match=missing):
        WriterProcess(Notebook)  # `first` missing


def test_ctrl_c_is_left_to_the_parent():
    notebook = WriterProcess(Notebook, "first")
    os.kill(notebook.call("pid"), signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
    assert notebook.call("add", "second") == 2
    assert notebook.call("close") == ["first", "second"]


class Talker:
    """No `close()`: a child serving it must still end when its parent goes."""

    def say(self, words: str) -> None:
        logging.getLogger("captioner.test.talker").warning("the child says %s", words)

    def pid(self) -> int:
        return os.getpid()


def test_what_the_child_logs_is_logged_here(caplog):
    with caplog.at_level(logging.INFO):
        talker = WriterProcess(Talker)
        talker.call("say", "hello")
    (record,) = [r for r in caplog.records if r.name == "captioner.test.talker"]
    assert record.getMessage() == "the child says hello" and record.levelno == logging.WARNING
    assert record.process != os.getpid()


def _running(pid: int) -> bool:
    """Alive and not a zombie (exited, not yet reaped)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_child_ends_when_its_parent_goes_even_if_closing_fails():
    talker = WriterProcess(Talker)
    child = talker.call("pid")
    del talker  # its end of the pipe closes; Talker has no close() to call
    deadline = time.monotonic() + 30
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child)


def test_sigterm_ends_the_child_whatever_the_parent_handles():
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # as a trainer's preemption handler
    try:
        notebook = WriterProcess(Notebook, "first")
    finally:
        signal.signal(signal.SIGTERM, previous)
    child = notebook.call("pid")
    os.kill(child, signal.SIGTERM)
    with pytest.raises(WriterProcessError, match=r"exit code -15"):
        notebook.call("add", "second")
