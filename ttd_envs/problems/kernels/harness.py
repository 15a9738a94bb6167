"""Runs inside the sandbox, in the program's own process: compute, never judge.

The sandbox bootstrap calls `serve(...)` with the channel to the judge (judge.py, on the trusted
side) at descriptor `CHANNEL_FD`. It loads the program, then answers the judge's requests one
call at a time: `prepare` (a seed and a shape: generate the inputs, clone them for the program),
`go` (call `custom_kernel`, wait for the device, answer `done`), then either `slice` (a range of
one output's values, for a checked call) or `digest` (signed sums of every output element under
signs and groups the judge just drew, plus the elements it names: a timed call). Nothing here
decides the reward: no tolerance, no reference output, no plan and no clock the judge uses lives
in this process, so a program that patches, walks or replaces anything here changes only what
it hands over, and the judge checks that against its own reference on inputs it made itself.

What the harness still enforces is the contract an honest program can misread or a naive hack
trips over: at least one Triton launch per call, no thread left running, the output's type and
shape, no patched clock, torch or harness function, and (on a GPU) NaN in freed memory and a
flushed L2 cache before every call. Those messages help the model; the judge relies on none.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import os
import socket
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator
from typing import Any

from ttd_envs.problems.kernels import channel

TASKS = {"trimul": "ttd_envs.problems.kernels.trimul_task", "mla_decode": "ttd_envs.problems.kernels.mla_task"}
HIDDEN_PACKAGE = "ttd_envs"
SUBMISSION_FILE = "submission.py"
POISON_BYTE = 0xFF  # every fp32 / bf16 / fp16 word of 0xFF bytes is a NaN
MIN_FLUSH_BYTES = 64 << 20
REQUEST_BYTES = 64 << 20
"""The judge's largest request (the sampled indices of a digest) with room to spare."""
SHADOWABLE = {"torch.Tensor": (), "torch._C.TensorBase": (), "Worker": (), "the harness": ("entry",)}
"""Owners where a newly added callable shadows a watched one (a method defined on the class the
real one is inherited from, or an instance attribute over a method), with the names allowed."""


class Rejected(Exception):
    """The program broke a rule of the contract; the message says which, and is what the model sees."""


def serve(task: str, source: str, channel_fd: int, device: str, interpret: bool, gpu: str | None) -> None:
    """Load `source`, answer the judge on `channel_fd` until it says `end`."""
    _configure_process(interpret, gpu)
    import torch

    sock = socket.socket(fileno=channel_fd)
    worker = Worker(importlib.import_module(TASKS[task]), torch, device, sock)
    channel.send(sock, {"op": "hello", "l2_flush_bytes": worker.flush_bytes})
    try:
        with worker.program_loaded(source):
            worker.answer_requests()
    except Rejected as exc:
        channel.send(sock, {"op": "rejected", "error": str(exc)})
    except channel.ChannelError:
        pass  # the judge hung up (its verdict is in) or timed out: nothing left to say
    finally:
        sock.close()


def _configure_process(interpret: bool, gpu: str | None) -> None:
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    if interpret:
        os.environ["TRITON_INTERPRET"] = "1"
        if "triton" in sys.modules:
            raise RuntimeError("the interpreter must be chosen before triton is imported")


class _HideHarness(importlib.abc.MetaPathFinder):
    """While the program is loaded, `import ttd_envs...` fails: nothing there is the program's to use."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == HIDDEN_PACKAGE or name.startswith(HIDDEN_PACKAGE + "."):
            raise ImportError(f"{name} is not importable from the program: the harness, the reference and "
                              "the checks are not the program's to use")
        return None


class Worker:
    """One loaded program and the state of the call in progress."""

    def __init__(self, task: types.ModuleType, torch: types.ModuleType, device: str, sock: socket.socket) -> None:
        self.task, self.torch, self.device, self.sock = task, torch, device, sock
        self.cuda = device.startswith("cuda")
        self.sync: Callable[[], None] = torch.cuda.synchronize if self.cuda else (lambda: None)
        self.flush_buffer: Any = None
        if self.cuda:  # CUDA starts here, before the program exists
            l2 = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0))
            self.flush_buffer = torch.empty(max(2 * l2, MIN_FLUSH_BYTES), dtype=torch.uint8, device=device)
        self.flush_bytes = None if self.flush_buffer is None else int(self.flush_buffer.numel())
        self._count_triton_launches()
        self.watched = self._watched_bindings()  # after CUDA's start-up; before the mutable state
        self.launches = 0
        self.entry: Callable[[Any], Any] | None = None
        self.threads_before: set[threading.Thread] = set()

    # -- guards installed before the program loads ---------------------------------------------
    def _count_triton_launches(self) -> None:
        """Wrap Triton's launch paths (compiled and interpreted) so each call's launches are counted."""
        worker = self
        classes = [importlib.import_module("triton.runtime.jit").JITFunction]
        with contextlib.suppress(ImportError, AttributeError):
            classes.append(importlib.import_module("triton.runtime.interpreter").InterpretedFunction)
        for cls in classes:
            original = cls.run

            def counted(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
                launched = _original(self, *args, **kwargs)  # a launch that raised does not count
                if not kwargs.get("warmup", False):
                    worker.launches += 1
                return launched

            cls.run = counted

    def _watched_bindings(self) -> dict[tuple[str, str], Any]:
        """Every function the contract checks go through, by (owner, name)."""
        torch = self.torch
        owners: dict[str, Any] = {"time": time, "os": os, "threading": threading, "socket": socket, "torch": torch,
                                  "torch.nn.functional": torch.nn.functional, "torch.cuda": torch.cuda,
                                  "torch.Tensor": torch.Tensor, "torch._C.TensorBase": torch._C.TensorBase,
                                  "torch._C": torch._C, "harness": sys.modules[__name__], "channel": channel,
                                  "task": self.task, "Worker": Worker, "the harness": self}
        for name in ("triton.runtime.jit", "triton.runtime.interpreter"):
            with contextlib.suppress(ImportError):
                module = importlib.import_module(name)
                for cls_name in ("JITFunction", "InterpretedFunction"):
                    if hasattr(module, cls_name):
                        owners[f"{name}.{cls_name}"] = getattr(module, cls_name)
        watched = {}
        for owner_name, owner in owners.items():
            for attr, value in list(vars(owner).items()):
                if callable(value) and not isinstance(value, types.ModuleType) or owner is self:
                    watched[(owner_name, attr)] = value  # the harness's own attributes: all of them
        self._owners = owners
        return watched

    def tampered(self) -> str | None:
        """The first watched binding the program replaced, or a callable it added where it
        would shadow one (e.g. Tensor.__sub__ over TensorBase's), or None."""
        for (owner_name, attr), value in self.watched.items():
            if vars(self._owners[owner_name]).get(attr) is not value:
                return f"{owner_name}.{attr}"
        for owner_name, allowed in SHADOWABLE.items():
            for attr, value in vars(self._owners[owner_name]).items():
                if callable(value) and attr not in allowed and (owner_name, attr) not in self.watched:
                    return f"{owner_name}.{attr}"
        return None

    def _refuse_tampering(self, when: str) -> None:
        replaced = self.tampered()
        if replaced:
            raise Rejected(f"the program replaced {replaced} {when}: the harness, clocks and torch functions are "
                           "not the program's to patch (and would change nothing: the judge runs outside this "
                           "process)")

    # -- loading -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def program_loaded(self, source: str) -> Iterator[None]:
        """Load the program with the harness hidden from `import`; unload it afterwards."""
        hidden = {name: sys.modules.pop(name) for name in list(sys.modules)
                  if name in (HIDDEN_PACKAGE, "program") or name.startswith(HIDDEN_PACKAGE + ".")}
        blocker = _HideHarness()
        sys.meta_path.insert(0, blocker)
        self.threads_before = set(threading.enumerate())
        try:
            self.entry = self._load(source)
            yield
        finally:
            sys.meta_path.remove(blocker)
            sys.modules.update(hidden)

    def _load(self, source: str) -> Callable[[Any], Any]:
        path = os.path.join(os.getcwd(), SUBMISSION_FILE)
        with open(path, "w") as handle:
            handle.write(source)
        module = types.ModuleType("submission")
        module.__file__ = path
        sys.modules["submission"] = module
        try:
            exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102 - the sandbox's purpose
        except Exception as exc:  # noqa: BLE001 - what the program raised is the message
            raise Rejected(f"the program failed while loading:\n{_program_traceback(exc, path)}") from None
        self._refuse_tampering("while loading")
        entry = module.__dict__.get("custom_kernel")
        if not callable(entry):
            raise Rejected("the program must define a function `custom_kernel(data)`")
        return entry

    # -- the requests --------------------------------------------------------------------------
    def answer_requests(self) -> None:
        inputs: Any = None
        data: Any = None
        outputs: tuple[Any, ...] = ()
        label = ""
        while True:
            request = channel.receive(self.sock, REQUEST_BYTES, deadline=float("inf"))
            op = request["op"]
            if op == "end":
                return
            if op == "prepare":
                label = str(request["label"])
                outputs = ()
                inputs = self.task.generate(request["spec"], int(request["seed"]), self.device)
                data = self.task.program_data(inputs)
                self._poison(self.task.output_nbytes(inputs))
                if self.flush_buffer is not None:
                    self.flush_buffer.zero_()
                self.sync()
                self._refuse_threads(label, "before the call")
                channel.send(self.sock, {"op": "ready"})
            elif op == "go":
                outputs = self._call(data, inputs, label)
                channel.send(self.sock, {"op": "done", "modified": self.task.modified_inputs(inputs, data)})
            elif op == "slice":
                flat = channel.comparable(self.torch, outputs[int(request["output"])], self.task.COMPARE_DTYPE)
                values = flat[int(request["start"]):int(request["stop"])].cpu().numpy()
                channel.send(self.sock, {"op": "slice", "values": values})
            elif op == "digest":
                flats = [channel.comparable(self.torch, t, self.task.COMPARE_DTYPE) for t in outputs]
                sums = [channel.signed_sums(self.torch, flat, int(request["seed"])) for flat in flats]
                values = [flat[self.torch.as_tensor(picks, device=flat.device)].cpu().numpy()
                          for flat, picks in zip(flats, request["picks"])]
                channel.send(self.sock, {"op": "digest", "sums": sums, "values": values})
            else:
                raise Rejected(f"the harness got an unknown request {op!r}")

    def _call(self, data: Any, inputs: Any, label: str) -> tuple[Any, ...]:
        assert self.entry is not None
        launches_before = self.launches
        try:
            result = self.entry(data)
        except Exception as exc:  # noqa: BLE001 - what the program raised is the message
            raise Rejected(f"{label}: custom_kernel raised\n{_program_traceback(exc, SUBMISSION_FILE)}") from None
        self.sync()  # device-wide: work left on any stream finishes before `done`
        self._refuse_tampering(f"during {label}")
        self._refuse_threads(label, "after it returned")
        if self.launches == launches_before:
            raise Rejected(f"{label}: custom_kernel returned without launching any @triton.jit kernel (a "
                           "try/except that falls back to PyTorch does this); at least part of the work must run "
                           "in a Triton kernel")
        try:
            return self.task.outputs(result, inputs)
        except ValueError as exc:
            raise Rejected(f"{label}: {exc}") from None

    def _refuse_threads(self, label: str, when: str) -> None:
        running = [t for t in threading.enumerate() if t not in self.threads_before and t.is_alive()]
        if running:
            raise Rejected(f"{label}: custom_kernel left {len(running)} thread(s) running {when}; all work must "
                           "be finished when it returns (it is timed up to the judge's check of every element)")

    def _poison(self, sizes: list[int]) -> None:
        """Fill blocks the size of the coming outputs with NaN and free them again, so memory the
        allocator hands out next holds NaN, never an earlier (correct) result."""
        torch = self.torch
        blocks = [torch.full((size,), POISON_BYTE, dtype=torch.uint8, device=self.device) for size in sizes]
        del blocks


def _program_traceback(exc: BaseException, path: str) -> str:
    """The program's own frames (last 8) and the exception, not the harness's."""
    name = os.path.basename(path)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.basename(f.filename) == name]
    lines = traceback.format_list(frames[-8:]) + traceback.format_exception_only(type(exc), exc)
    return "".join(lines).replace(os.path.join(os.getcwd(), name), name).strip()[-3000:]
