"""An object that writes a file, kept in a child process so that a refused write cannot crash us.

HDF5 cannot recover from a write the operating system refused (a file-size limit, a quota, an
I/O error): the open file stays dirty, every later close fails again, and at interpreter exit
the library crashes the process (exit 139, after two tracebacks from h5py's finalisers). The
features file claims its whole size when it is created, which moves most refusals there, but an
I/O error can come at any write. So the writing object lives in a child process. When one of its
calls fails with an error of the `fatal` kinds, the child sends that error back and leaves with
`os._exit`, skipping the cleanup that would crash; this process raises the error and goes on
(or exits) normally.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any


class WriterProcessError(RuntimeError):
    """The child process ended without answering (killed, out of memory, a crash)."""


# Calls after which the child has nothing left to do.
_LAST_CALLS = {"finish", "close"}

# This process's ends of its writers' pipes. A process forked from it later (a DataLoader worker)
# closes its copies: else closing ours would not reach the child as the end of the pipe
# (`_abandon`), and it would wait while those workers live.
_parent_ends: weakref.WeakSet[Connection] = weakref.WeakSet()


def _close_parent_ends_in_forked_child() -> None:
    for connection in list(_parent_ends):
        with contextlib.suppress(OSError):
            connection.close()  # this process's copy of the descriptor; the parent's stays open
    _parent_ends.clear()


os.register_at_fork(after_in_child=_close_parent_ends_in_forked_child)


def _context() -> multiprocessing.context.BaseContext:
    # fork: no re-import of the caller's modules (torch, the CLI) for a process that writes a
    # file; the child touches only the objects it builds itself.
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def _picklable(error: BaseException) -> BaseException:
    try:
        multiprocessing.reduction.ForkingPickler.dumps(error)
        return error
    except Exception:  # an exception type that cannot cross processes: keep its words
        return RuntimeError(f"{type(error).__name__}: {error}")


def _send(connection: Connection, message: tuple[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the parent is gone (BrokenPipeError): nobody to tell
        connection.send(message)


class _LogToParent(logging.Handler):
    """The child's log records go to the parent, which hands them to its own handlers (the
    console, Hydra's run log, pytest's capture), as if logged there."""

    def __init__(self, connection: Connection):
        super().__init__()
        self.connection = connection

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None  # what it says, not its arguments
        record.exc_info, record.exc_text = None, None
        _send(self.connection, ("log", record))


def _serve(connection: Connection, parent_end: Connection, fatal: tuple[type[BaseException], ...],
           factory: Callable[..., Any], args: tuple) -> None:
    # A fork inherits the parent's end too: closed here, the pipe ends when the parent does, and
    # the file is closed cleanly below.
    parent_end.close()
    # A terminal's Ctrl-C reaches the whole process group: the parent decides what to do. A
    # SIGTERM ends the child, whatever handler the parent had installed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    logging.getLogger().handlers = [_LogToParent(connection)]
    try:
        target = factory(*args)
    except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent
        _send(connection, ("ended", _picklable(error)))
        os._exit(1)
    _send(connection, ("ok", None))
    while True:
        try:
            name, call_args = connection.recv()
        except (EOFError, OSError):  # the parent is gone (OSError: mid-message), so leave the file
            # closed (resumable), and end
            with contextlib.suppress(BaseException):
                target.close()
            os._exit(0)
        try:
            result = getattr(target, name)(*call_args)
        except fatal as error:
            _send(connection, ("ended", _picklable(error)))
            os._exit(1)  # no cleanup: the library's state after a refused write crashes it
        except BaseException as error:  # noqa: BLE001 - a refused value, a bad call: the file is fine
            _send(connection, ("error", _picklable(error)))
            continue
        _send(connection, ("ok", result))
        if name in _LAST_CALLS:
            os._exit(0)


class WriterProcess:
    """`factory(*args)` built and called in a child process; `call(name, *args)` runs its method.

    An exception raised by the method is raised here. After one that is an instance of `fatal`
    (or after `finish`/`close`), the child has exited and every later call raises
    `WriterProcessError`. The object needs a `close()`: the child calls it when this process
    goes away without saying goodbye.
    """

    def __init__(self, factory: Callable[..., Any], *args: Any,
                 fatal: tuple[type[BaseException], ...] = (OSError,), name: str = "writer"):
        context = _context()
        self._connection, child_end = context.Pipe()
        _parent_ends.add(self._connection)
        self._process = context.Process(
            target=_serve, args=(child_end, self._connection, fatal, factory, args), name=name, daemon=True)
        self._process.start()
        child_end.close()
        self._name = name
        self._reply("starting")

    def call(self, method: str, *args: Any) -> Any:
        if self._connection.closed:
            raise WriterProcessError(f"the {self._name} process has ended; no more calls")
        try:
            self._connection.send((method, args))
        except OSError as error:  # BrokenPipeError: the child is gone
            raise self._ended(method) from error
        except BaseException as error:
            if not isinstance(error, Exception):  # a signal's exit mid-message: the child holds half
                self._abandon()
            raise
        try:
            return self._reply(method)
        except BaseException as error:
            if not isinstance(error, Exception):  # a signal's exit while the child works: no waiting
                self._abandon()
            raise

    def _reply(self, method: str) -> Any:
        while True:
            try:
                status, value = self._connection.recv()
            except (EOFError, OSError) as error:  # OSError: ConnectionResetError
                raise self._ended(method) from error
            if status != "log":
                break
            logging.getLogger(value.name).handle(value)
        if status == "ended" or method in _LAST_CALLS:  # the child has exited or is exiting
            self._stop()
        if status != "ok":
            raise value
        return value

    def _ended(self, method: str) -> WriterProcessError:
        self._stop()
        return WriterProcessError(f"the {self._name} process ended during `{method}` "
                                  f"(exit code {self._process.exitcode})")

    def _stop(self) -> None:
        self._process.join(timeout=30)
        self._connection.close()

    def _abandon(self) -> None:
        """End the child without another message: the pipe may hold half of one, and waiting for a
        reply would wait forever. Closing this end tells the child (EOF), which closes the file
        where it stands (resumable) and exits; one that does not within 30 s is terminated."""
        self._connection.close()
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)

    @property
    def alive(self) -> bool:
        return not self._connection.closed
