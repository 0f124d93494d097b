"""What a heartbeat says about this process: host, pid, resident memory, and the
utilisation and memory of the GPUs it may use."""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import Any

import psutil

MB = 1024 * 1024


class GpuProbe:
    """GPU utilisation/memory of the GPUs this process may use: NVML (``pynvml``) when it is
    importable and works, else ``torch.cuda`` memory when the caller already imported torch and
    initialised CUDA (never imported or initialised here), else None."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[tuple[int, Any]] | None = None
        self._nvml_failed = False
        self._lock = threading.Lock()  # every reporter thread of the process shares this probe

    def __call__(self) -> list[dict] | None:
        with self._lock:
            if not self._nvml_failed:
                try:
                    return self._from_nvml()
                except Exception:
                    self._nvml_failed = True
            return self._from_torch()

    def _from_nvml(self) -> list[dict] | None:
        if self._handles is None:
            import pynvml  # nvidia-ml-py; ImportError disables this path

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = self._visible_handles(pynvml)
        if not self._handles:
            return None
        nv = self._nvml
        out = []
        for index, handle in self._handles:
            mem = nv.nvmlDeviceGetMemoryInfo(handle)
            util = nv.nvmlDeviceGetUtilizationRates(handle)
            out.append(
                {
                    "index": index,
                    "util_pct": float(util.gpu),
                    "mem_used_mb": round(mem.used / MB, 1),
                    "mem_total_mb": round(mem.total / MB, 1),
                }
            )
        return out

    @staticmethod
    def _visible_handles(nv: Any) -> list[tuple[int, Any]]:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        count = nv.nvmlDeviceGetCount()
        if visible is None:
            return [(i, nv.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
        handles = []
        for token in (t.strip() for t in visible.split(",") if t.strip()):
            if token.isdigit():
                if int(token) < count:
                    handles.append((int(token), nv.nvmlDeviceGetHandleByIndex(int(token))))
            else:  # GPU-<uuid> / MIG-<uuid>
                handle = nv.nvmlDeviceGetHandleByUUID(token)
                handles.append((nv.nvmlDeviceGetIndex(handle), handle))
        return handles

    @staticmethod
    def _from_torch() -> list[dict] | None:
        torch = sys.modules.get("torch")
        cuda = getattr(torch, "cuda", None)
        try:
            if cuda is None or not cuda.is_initialized():
                return None
            out = []
            for i in range(cuda.device_count()):
                out.append(
                    {
                        "index": i,
                        "util_pct": None,
                        "mem_used_mb": round(cuda.memory_reserved(i) / MB, 1),
                        "mem_total_mb": round(cuda.get_device_properties(i).total_memory / MB, 1),
                    }
                )
            return out
        except Exception:
            return None


_GPU_PROBE = GpuProbe()
_PROCESS: tuple[int, Any] | None = None


def heartbeat_fields() -> dict:
    """The kind fields of a heartbeat for this process: host, pid, rss_mb, gpus (a list of
    {index, util_pct, mem_used_mb, mem_total_mb}, or None where no GPU is visible)."""
    global _PROCESS
    pid = os.getpid()
    if _PROCESS is None or _PROCESS[0] != pid:
        _PROCESS = (pid, psutil.Process(pid))
    rss = _PROCESS[1].memory_info().rss
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "rss_mb": round(rss / MB, 1),
        "gpus": _GPU_PROBE(),
    }


def fallback_heartbeat_fields(exc: BaseException) -> dict:
    """A heartbeat's fields when the probe failed: host and pid, no RSS or GPUs, the error."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "rss_mb": None,
        "gpus": None,
        "probe_error": repr(exc),
    }
